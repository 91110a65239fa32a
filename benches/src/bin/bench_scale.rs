//! Scale benchmark: thousands of MicroVMs through the dev control plane, the operator (its own
//! process, `quiver-operator run`, as the Helm chart runs it) and agents on the **simulated
//! driver** (no QEMU: the VMs are records and timers; what is measured is the control plane).
//! For each size, in a fresh cluster of three agents whose Raft group places the VMs:
//! - create every VM (64 creates in flight), then time from the last create to all Running (as
//!   a watch sees it);
//! - the operator's reconcile time p50 / p99 from its own `/metrics` histogram;
//! - peak RSS (`VmHWM`) and CPU seconds of the operator, of each agent, and of this process
//!   (the in-process control plane plus the benchmark's client);
//!
//! and how each grows from the smallest size to the largest.
//!
//! Run: `cargo build --release -p quiver-agent -p quiver-operator && cargo run --release -p
//! quiver-benches --bin bench-scale` (`-- --smoke`: 50 VMs, writes nothing; `-- --no-write`;
//! `-- --sizes 1000,10000`).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::{StreamExt as _, stream};
use kube::ResourceExt as _;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use quiver_benches::{docs_path, fmt_duration, write_section};
use quiver_crds::{MicroVM, MicroVMPhase};
use quiver_raft::{LogStore, RaftDb, StateMachine};
use quiver_rpc::TransportMode;
use quiver_tests::cluster::TestCluster;
use tokio::process::{Child, Command};

const IN_FLIGHT: usize = 64;

/// Peak RSS (MiB) and CPU seconds of a process, from `/proc`.
fn usage(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15: indices 11 and 12 after the name.
    let hz = 100.0;
    Ok((hwm_kib / 1024.0, (ticks(11) + ticks(12)) / hz))
}

fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Ok(path) = std::env::var("QUIVER_OPERATOR_BIN") {
        return Ok(path.into());
    }
    let me = std::env::current_exe()?;
    let dir = me.parent().ok_or_else(|| anyhow::anyhow!("no dir"))?;
    Ok(dir.join("quiver-operator"))
}

/// `quiver-operator run` against the cluster, metrics on `port`.
fn spawn_operator(
    cluster: &TestCluster,
    dir: &std::path::Path,
    port: u16,
) -> anyhow::Result<Child> {
    let log = std::fs::File::create(dir.join("operator.log"))?;
    Ok(Command::new(operator_binary()?)
        .arg("run")
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .arg("--iroh-key")
        .arg(dir.join("iroh.key"))
        .arg("--metrics-address")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", cluster.control_plane.kubeconfig_path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()?)
}

/// p50 and p99 of the MicroVM controller's reconcile time, from the Prometheus histogram.
async fn reconcile_quantiles(port: u16) -> anyhow::Result<(f64, f64, u64)> {
    let body = reqwest_lite(port).await?;
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for line in body.lines() {
        let Some(rest) = line.strip_prefix("quiver_reconcile_duration_seconds_bucket{") else {
            continue;
        };
        if !rest.contains("controller=\"microvm\"") {
            continue;
        }
        let le = rest
            .split("le=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("+Inf");
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse()?
        };
        let count: u64 = line.rsplit(' ').next().unwrap_or("0").parse()?;
        buckets.push((bound, count));
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0, |b| b.1);
    let at = |q: f64| {
        let rank = (q * total as f64).ceil() as u64;
        buckets
            .iter()
            .find(|b| b.1 >= rank.max(1))
            .map_or(f64::NAN, |b| b.0)
    };
    Ok((at(0.5), at(0.99), total))
}

/// The highest `quiver_raft_applied_index` among the agents' `/metrics` (the leader's, or
/// close to it).
async fn applied_index(ports: &[u16]) -> anyhow::Result<u64> {
    let mut highest = 0;
    for port in ports {
        let body = reqwest_lite(*port).await?;
        let index = body
            .lines()
            .find_map(|l| l.strip_prefix("quiver_raft_applied_index "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        highest = highest.max(index);
    }
    Ok(highest)
}

/// GET /metrics over plain HTTP/1.1.
async fn reqwest_lite(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Agents per cluster: a Raft group that survives the loss of one.
const AGENTS: usize = 3;

/// What the Raft group did during one run.
struct RaftRun {
    /// Log entries applied from the first create to all Running.
    entries: u64,
    /// The final ledger, rebuilt from agent-0's database after the run.
    ledger: LedgerSize,
}

struct Run {
    vms: usize,
    raft: RaftRun,
    create: Duration,
    to_running: Duration,
    reconcile_p50: f64,
    reconcile_p99: f64,
    reconciles: u64,
    operator: (f64, f64),
    agents: Vec<(f64, f64)>,
    this_process: (f64, f64),
}

fn vm(name: &str) -> MicroVM {
    let mut vm = MicroVM::new(
        name,
        serde_json::from_value(serde_json::json!({
            "cpus": 1,
            "memoryMiB": 64,
            "kernel": "/var/lib/quiver/guest/vmlinuz"
        }))
        .expect("a valid spec"),
    );
    vm.metadata.namespace = Some("default".to_owned());
    vm
}

async fn run(vms: usize) -> anyhow::Result<Run> {
    // This process runs every size in turn: its peak RSS is reset (`clear_refs`
    // 5) and its CPU counted from here.
    std::fs::write("/proc/self/clear_refs", "5")?;
    let cpu_before = usage(std::process::id())?.1;
    let mut cluster = TestCluster::start_with(0, true, TransportMode::Grpc).await?;
    cluster.stop_operator().await;
    let memory = u64::try_from(vms).unwrap_or(u64::MAX) * 64;
    let mut metrics_ports = Vec::new();
    for i in 0..AGENTS {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        cluster
            .add_agent_with(
                &format!("agent-{i}"),
                Some(memory),
                &["--metrics-listen", &listen],
            )
            .await?;
        metrics_ports.push(port);
    }
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut operator = spawn_operator(&cluster, dir.path(), port)?;
    let applied_before = applied_index(&metrics_ports).await?;
    let api: Api<MicroVM> = Api::namespaced(cluster.client.clone(), "default");
    let started = Instant::now();
    stream::iter(0..vms)
        .map(|i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &vm(&format!("s-{i:05}")))
                    .await
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .for_each(|r| {
            if let Err(e) = r {
                eprintln!("create failed: {e}");
            }
            futures::future::ready(())
        })
        .await;
    let create = started.elapsed();
    let last_create = Instant::now();
    // A watch, not repeated lists: listing 10,000 objects every second would load the machine
    // being measured.
    let mut running = std::collections::HashSet::new();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let deadline = Duration::from_secs(900);
    while running.len() < vms {
        let next = tokio::time::timeout(
            deadline.saturating_sub(last_create.elapsed()),
            events.next(),
        );
        let Ok(Some(event)) = next.await else {
            anyhow::bail!("{} of {vms} Running after 15 min", running.len());
        };
        if let watcher::Event::Apply(vm) | watcher::Event::InitApply(vm) = event? {
            let name = vm.name_any();
            if vm.status.as_ref().and_then(|s| s.phase) == Some(MicroVMPhase::Running) {
                running.insert(name);
            } else {
                running.remove(&name);
            }
        }
    }
    let to_running = last_create.elapsed();
    let (reconcile_p50, reconcile_p99, reconciles) = reconcile_quantiles(port).await?;
    let operator_usage = usage(operator.id().unwrap_or(0))?;
    let agents = cluster
        .agents
        .iter()
        .filter_map(|a| a.pid())
        .map(usage)
        .collect::<anyhow::Result<Vec<_>>>()?;
    let this_process = usage(std::process::id()).map(|(rss, cpu)| (rss, cpu - cpu_before))?;
    let entries = applied_index(&metrics_ports)
        .await?
        .saturating_sub(applied_before);
    // The agent holds its database open: stop it first.
    let database = cluster.agents[0].options.data_dir.join("raft.redb");
    cluster.kill_agent("agent-0").await?;
    let raft = RaftRun {
        entries,
        ledger: LedgerSize::measure(&database).await?,
    };
    let _ = operator.kill().await;
    cluster.shutdown().await;
    Ok(Run {
        vms,
        raft,
        create,
        to_running,
        reconcile_p50,
        reconcile_p99,
        reconciles,
        operator: operator_usage,
        agents,
        this_process,
    })
}

/// The ledger at the end of a run, as the agent's own snapshot would hold it.
struct LedgerSize {
    vms: usize,
    /// The snapshot: the JSON of the applied state.
    snapshot_bytes: usize,
    /// `build_snapshot`: serialize the ledger and store it in redb, durably.
    build: Duration,
    /// The whole database file (log, snapshot, metadata).
    file_bytes: u64,
}

impl LedgerSize {
    /// Rebuilds the ledger from a stopped agent's database (its last snapshot plus every log
    /// entry after it: the run is over, so all of them are committed) and snapshots it.
    async fn measure(database: &std::path::Path) -> anyhow::Result<Self> {
        use openraft::storage::{RaftLogStorage as _, RaftStateMachine as _};
        use openraft::{RaftLogReader as _, RaftSnapshotBuilder as _};
        let file_bytes = std::fs::metadata(database)?.len();
        let db = RaftDb::open(database)?;
        let mut log = LogStore::new(db.clone());
        let mut machine = StateMachine::open(db).await?;
        let (applied, _) = machine.applied_state().await?;
        let last = log.get_log_state().await?.last_log_id;
        let (from, to) = (
            applied.map_or(0, |l| l.index + 1),
            last.map_or(0, |l| l.index + 1),
        );
        if to > from {
            let entries = log.try_get_log_entries(from..to).await?;
            machine.apply(entries).await?;
        }
        let vms = machine.ledger().vms.len();
        let started = Instant::now();
        let snapshot = machine.build_snapshot().await?;
        let build = started.elapsed();
        Ok(Self {
            vms,
            snapshot_bytes: snapshot.snapshot.get_ref().len(),
            build,
            file_bytes,
        })
    }
}

/// A histogram bound as a duration; past the last finite bucket (+Inf), "> 10 s" (the
/// operator's largest bucket: 1 ms × 2^14).
fn ms(seconds: f64) -> String {
    if seconds.is_finite() {
        fmt_duration(Duration::from_secs_f64(seconds.max(0.0)))
    } else {
        "> 16.4 s".to_owned()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let smoke = args.iter().any(|a| a == "--smoke");
    let write = !smoke && !args.iter().any(|a| a == "--no-write");
    let sizes: Vec<usize> = match args.iter().position(|a| a == "--sizes") {
        Some(i) => args
            .get(i + 1)
            .map(|s| s.split(',').filter_map(|n| n.parse().ok()).collect())
            .unwrap_or_default(),
        None if smoke => vec![50],
        None => vec![1000, 10_000],
    };
    let mut runs = Vec::new();
    for &n in &sizes {
        let r = run(n).await?;
        println!(
            "{n} VMs: created in {:?}, all Running {:?} after the last create",
            r.create, r.to_running
        );
        runs.push(r);
    }
    let runs: Vec<&Run> = runs.iter().collect();
    let mut body = String::from("## Scale: thousands of MicroVMs (simulated driver)\n\n");
    body.push_str(&describe());
    body.push_str(&table(&runs));
    body.push_str(&growth(&runs));
    body.push_str(&raft_table(&runs));
    body.push_str(
        "Targets: 10,000 VMs Running ≤ 60 s after the last create; operator peak RSS ≤ 200 MB at 10,000. What would \
         change it: the build profile (a debug build is several times slower), real QEMU (each VM then costs a \
         process and its memory), more agents, and the disk (every commit waits for fsyncs on two of the three \
         agents, which here share one disk).\n",
    );
    println!("{body}");
    if write {
        write_section(&docs_path(), "scale", &body)?;
    }
    Ok(())
}

fn describe() -> String {
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        "--release "
    };
    format!(
        "Command: `cargo build {release}-p quiver-agent -p quiver-operator && cargo run {release}-p quiver-benches --bin bench-scale` \
         (dev control plane in the benchmark's process, `quiver-operator run` as its own process, `quiver-agent` \
         processes on the **simulated driver**: no QEMU runs, each VM is a record and two timers (launch 50 ms, \
         ready 200 ms); 2 cores). Each size runs in a fresh cluster of {AGENTS} agents whose Raft group places \
         the VMs (the operator sends each VM to an agent, which commits it to the ledger; redb on disk, fsync \
         on). RSS is the kernel's peak (`VmHWM`); CPU seconds are user + system \
         over the whole run divided by the number of VMs.\n\n"
    )
}

fn table(runs: &[&Run]) -> String {
    let mut table = String::from(
        "| VMs | create all (64 in flight) | last create → all Running | reconcile p50 / p99 (count) | operator peak RSS | operator CPU s / VM | agents peak RSS (each) | agents CPU s / VM | this process (control plane + client) peak RSS | its CPU s / VM |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let n = r.vms as f64;
        let agents_rss: Vec<String> = r.agents.iter().map(|a| format!("{:.0} MB", a.0)).collect();
        let agents_cpu: f64 = r.agents.iter().map(|a| a.1).sum();
        table.push_str(&format!(
            "| {} | {} | {} | {} / {} ({}) | {:.0} MB | {:.4} | {} | {:.4} | {:.0} MB | {:.4} |\n",
            r.vms,
            fmt_duration(r.create),
            fmt_duration(r.to_running),
            ms(r.reconcile_p50),
            ms(r.reconcile_p99),
            r.reconciles,
            r.operator.0,
            r.operator.1 / n,
            agents_rss.join(", "),
            agents_cpu / n,
            r.this_process.0,
            r.this_process.1 / n,
        ));
    }
    table.push('\n');
    table
}

fn growth(runs: &[&Run]) -> String {
    match (runs.first(), runs.last()) {
        (Some(a), Some(b)) if b.vms > a.vms => {
            let k = b.vms as f64 / a.vms as f64;
            format!(
                "From {} to {} VMs ({k:.0}×): last create → all Running grew {:.1}×, operator peak RSS {:.1}×, \
                 operator CPU {:.1}×, control-plane process peak RSS {:.1}×. Linear would be {k:.0}× for time and CPU.\n\n",
                a.vms,
                b.vms,
                b.to_running.as_secs_f64() / a.to_running.as_secs_f64().max(1e-9),
                b.operator.0 / a.operator.0.max(1e-9),
                b.operator.1 / a.operator.1.max(1e-9),
                b.this_process.0 / a.this_process.0.max(1e-9),
            )
        }
        _ => String::new(),
    }
}

/// The Raft group's side of each run: commit rate during the burst and the ledger's size.
fn raft_table(runs: &[&Run]) -> String {
    let mut table = String::from(
        "| VMs | log entries applied (first create → all Running) | entries / s | VMs / s (first create → all Running) | ledger VMs | snapshot size | snapshot build (serialize + durable write) | raft.redb size |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let raft = &r.raft;
        let burst = (r.create + r.to_running).as_secs_f64().max(1e-9);
        table.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {} | {:.1} MB | {} | {:.1} MB |\n",
            r.vms,
            raft.entries,
            raft.entries as f64 / burst,
            r.vms as f64 / burst,
            raft.ledger.vms,
            raft.ledger.snapshot_bytes as f64 / 1e6,
            fmt_duration(raft.ledger.build),
            raft.ledger.file_bytes as f64 / 1e6,
        ));
    }
    table.push_str(
        "\nEntries are log entries: under load the leader's proposer puts many commands in one, so VMs placed \
         per second can exceed entries per second. The ledger is rebuilt after the run from agent-0's database \
         (its last snapshot plus the log after it) and snapshotted as the agent would (openraft snapshots every \
         5,000 entries).\n\n",
    );
    table
}
