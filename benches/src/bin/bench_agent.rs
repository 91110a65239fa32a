//! Agent VM start benchmark: put → QEMU process, put → GuestReady through the agent's gRPC API,
//! next to a raw `qemu-system-x86_64` launch with the identical command line → readiness
//! marker, in the same run; 1 and 10 concurrent VMs, TCG.
//!
//! Needs the guest image (`scripts/guest-image.sh`; `QUIVER_GUEST_DIR`).
//! Run: `cargo run --release -p quiver-benches --bin bench-agent` (`-- --no-write` to leave
//! docs/benchmarks.md alone, `-- --smoke` to boot one VM each way and write nothing).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use quiver_agent::config::{Accel, AgentConfig};
use quiver_agent::vm::qemu::QemuDriver;
use quiver_agent::vm::rundir::RunDir;
use quiver_agent::vm::spec::{RunStrategy, VmSpec};
use quiver_benches::{Samples, docs_path, fmt_duration, write_section};
use quiver_rpc::AgentClient;
use quiver_rpc::proto;

const MARKER: &str = "QUIVER_GUEST_READY";
const CMDLINE: &str = "console=ttyS0 edd=off quiet panic=-1 reboot=t tsc=reliable tsc_early_khz=2000000 no_timer_check";
const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Default)]
struct Run {
    to_process: Samples,
    to_ready: Samples,
}

fn guest_dir() -> PathBuf {
    std::env::var_os("QUIVER_GUEST_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/quiver/guest"), PathBuf::from)
}

fn spec(guest: &Path) -> VmSpec {
    VmSpec {
        run_strategy: RunStrategy::Always,
        cpus: 1,
        memory_mib: 256,
        kernel: guest.join("vmlinuz"),
        initrd: Some(guest.join("initrd.gz")),
        cmdline: CMDLINE.into(),
        disks: vec![],
        network: quiver_agent::vm::network::Network::None,
        readiness: Some(quiver_agent::vm::spec::ReadinessSpec {
            marker: MARKER.into(),
            timeout: None,
        }),
    }
}

async fn wait_file(path: &Path, needle: Option<&str>) -> anyhow::Result<()> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = match needle {
            None => path.exists(),
            Some(n) => std::fs::read(path).is_ok_and(|b| String::from_utf8_lossy(&b).contains(n)),
        };
        if found {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "timeout waiting for {}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Raw QEMU, same arguments as the agent uses, no agent: spawn → pid file, spawn → marker.
async fn raw(guest: &Path, n: usize) -> anyhow::Result<Run> {
    let tmp = tempfile::tempdir()?;
    let driver = QemuDriver::new(Accel::Tcg);
    let spec = spec(guest);
    let mut tasks = Vec::new();
    for i in 0..n {
        let dir = RunDir::new(tmp.path(), &format!("raw-{i}"));
        dir.create()?;
        let args = driver.args(&dir, &spec, &[]);
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let mut child = tokio::process::Command::new("qemu-system-x86_64")
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()?;
            wait_file(&dir.pid_file(), None).await?;
            let process = start.elapsed();
            wait_file(&dir.console_log(), Some(MARKER)).await?;
            let ready = start.elapsed();
            child.kill().await?;
            anyhow::Ok((process, ready))
        }));
    }
    let mut run = Run::default();
    for t in tasks {
        let (process, ready) = t.await??;
        run.to_process.push(process);
        run.to_ready.push(ready);
    }
    Ok(run)
}

/// Through the agent: put → pid file, put → GuestReady seen on the watch stream.
async fn via_agent(
    client: &AgentClient,
    data: &Path,
    guest: &Path,
    n: usize,
    round: usize,
) -> anyhow::Result<Run> {
    let mut watch = Box::pin(client.watch().await?);
    let uids: Vec<String> = (0..n).map(|i| format!("bench-{round}-{i}")).collect();
    let start = Instant::now();
    let mut pid_waits = Vec::new();
    for uid in &uids {
        let req = proto::PutVmRequest {
            uid: uid.clone(),
            namespace: "bench".into(),
            name: uid.clone(),
            generation: 1,
            epoch: 1,
            node_selector: Default::default(),
            spec: Some(proto::VmSpec {
                run_strategy: proto::RunStrategy::Always as i32,
                cpus: 1,
                memory_mib: 256,
                kernel: guest.join("vmlinuz").display().to_string(),
                initrd: guest.join("initrd.gz").display().to_string(),
                cmdline: CMDLINE.into(),
                disks: vec![],
                network: None,
                readiness: Some(proto::Readiness {
                    serial_marker: MARKER.into(),
                    timeout_seconds: 0,
                }),
            }),
        };
        let (client, pid_file) = (client.clone(), RunDir::new(data, uid).pid_file());
        let put_start = Instant::now();
        pid_waits.push(tokio::spawn(async move {
            client.put_vm(req).await?;
            wait_file(&pid_file, None).await?;
            anyhow::Ok(put_start.elapsed())
        }));
    }
    let mut ready: HashMap<String, Duration> = HashMap::new();
    while ready.len() < n {
        let next = tokio::time::timeout(TIMEOUT, watch.next()).await?;
        let Some(status) = next else {
            anyhow::bail!("watch ended")
        };
        let status = status?;
        if status.guest_ready && uids.contains(&status.uid) {
            ready
                .entry(status.uid.clone())
                .or_insert_with(|| start.elapsed());
        }
    }
    let mut run = Run::default();
    for t in pid_waits {
        run.to_process.push(t.await??);
    }
    for d in ready.values() {
        run.to_ready.push(*d);
    }
    for uid in &uids {
        client.delete_vm(uid).await?;
    }
    while !client.list_vms().await?.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(run)
}

fn row(label: &str, agent: &mut Samples, raw: &mut Samples) -> String {
    let (a50, r50) = (agent.percentile(50.0), raw.percentile(50.0));
    let overhead = if a50 >= r50 {
        fmt_duration(a50 - r50)
    } else {
        format!("−{} (within noise)", fmt_duration(r50 - a50))
    };
    format!(
        "| {label} | {} / {} | {} / {} | {overhead} |\n",
        fmt_duration(a50),
        fmt_duration(agent.percentile(100.0)),
        fmt_duration(r50),
        fmt_duration(raw.percentile(100.0)),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    // (VMs at once, rounds); a smoke run boots one VM each way and writes nothing.
    let levels: &[(usize, usize)] = if smoke { &[(1, 1)] } else { &[(1, 5), (10, 2)] };
    let guest = guest_dir();
    anyhow::ensure!(
        guest.join("vmlinuz").is_file(),
        "run scripts/guest-image.sh first"
    );
    let data = tempfile::tempdir()?;
    let config = AgentConfig {
        data_dir: data.path().to_path_buf(),
        grpc_listen: "127.0.0.1:0".parse()?,
        iroh_listen: "127.0.0.1:0".parse()?,
        accel: Accel::Tcg,
        capacity_cpus: 64,
        capacity_memory_mib: 64 * 1024,
        // In-process on loopback, measuring the VM runtime rather than TLS.
        insecure_plaintext: true,
        ..AgentConfig::default()
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(quiver_agent::runtime::run(config, async {
        let _ = stop_rx.await;
    }));
    let addr_file = data.path().join(quiver_agent::runtime::GRPC_ADDR_FILE);
    wait_file(&addr_file, None).await?;
    let addr = std::fs::read_to_string(&addr_file)?;
    let client = AgentClient::connect(format!("http://{}", addr.trim())).await?;

    let mut table = String::new();
    for &(n, rounds) in levels {
        let (mut agent_run, mut raw_run) = (Run::default(), Run::default());
        for round in 0..rounds {
            let r = raw(&guest, n).await?;
            raw_run.to_process.extend(&r.to_process);
            raw_run.to_ready.extend(&r.to_ready);
            let a = via_agent(&client, data.path(), &guest, n, round).await?;
            agent_run.to_process.extend(&a.to_process);
            agent_run.to_ready.extend(&a.to_ready);
        }
        println!("{n} concurrent: done");
        table += &row(
            &format!("{n} VM(s): put → QEMU process (pid file) vs spawn → pid file"),
            &mut agent_run.to_process,
            &mut raw_run.to_process,
        );
        table += &row(
            &format!("{n} VM(s): put → GuestReady vs spawn → marker on console"),
            &mut agent_run.to_ready,
            &mut raw_run.to_ready,
        );
    }
    let _ = stop_tx.send(());
    agent.await??;

    let body = format!(
        "## Agent: VM start\n\n\
         Command: `cargo run --release -p quiver-benches --bin bench-agent` (in-process agent, \
         gRPC on loopback, QEMU 7.2 `-M microvm` under TCG, busybox initramfs guest, 2 cores). \
         Baseline: the same QEMU command line spawned directly, in the same run. Times are \
         p50 / max over 5 rounds (1 VM) and 2 rounds (10 VMs started at once).\n\n\
         | measure | through the agent | raw QEMU (same run) | agent overhead (p50) |\n\
         |---|---|---|---|\n{table}"
    );
    println!("{body}");
    if write {
        write_section(&docs_path(), "agent", &body)?;
    }
    Ok(())
}
