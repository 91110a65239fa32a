//! End-to-end VM start benchmark: `kubectl apply`-equivalent create → Running → GuestReady
//! through the dev control plane, the operator and a real agent booting QEMU under TCG, broken
//! into stages, for 1 and 10 VMs, next to raw QEMU boots measured in the same run.
//!
//! Stages per VM (agent timestamps are unix milliseconds read over gRPC):
//! - API write: create request → response;
//! - to QEMU: create → the agent spawned QEMU (watch, reconcile, placement, PutVm, run dir);
//! - guest boot: QEMU spawned → the agent saw the readiness marker (the VM's own time, QEMU's
//!   start included, counted from the same point as the raw boots of the baseline);
//! - status back: marker seen → GuestReady visible to a watcher of the MicroVM;
//! - control-plane overhead: total minus guest boot.
//!
//! Needs the guest image. Run: `cargo build --release -p quiver-agent && cargo run --release
//! -p quiver-benches --bin bench-e2e` (`-- --no-write` to leave docs/benchmarks.md alone,
//! `-- --smoke` for one VM once each way, writing nothing).

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use quiver_benches::{Samples, docs_path, fmt_duration, raw_boots, write_section};
use quiver_crds::{MicroVM, MicroVMPhase};
use quiver_rpc::AgentClient;
use quiver_tests::cluster::{TestCluster, guest_dir};

const TIMEOUT: Duration = Duration::from_secs(180);

/// (VMs started at once, rounds) for each level measured.
type Levels = &'static [(usize, usize)];

#[derive(Default)]
struct Stages {
    api_write: Samples,
    /// create → the operator's first write seen by a watcher (its finalizer): watch
    /// delivery to the operator, its queue, and the finalizer patch.
    to_finalizer: Samples,
    /// finalizer → the placement in the status seen by a watcher: placement and the status
    /// apply (the same reconcile; written before the VM is sent).
    to_placed: Samples,
    /// placement seen → the agent's first report of the VM (agent clock): PutVm over the
    /// RPC and the agent's admission.
    to_agent: Samples,
    /// the agent's first report → QEMU's process spawned (agent clock): the run directory,
    /// disk overlays and the exec.
    spawn: Samples,
    to_qemu: Samples,
    guest_boot: Samples,
    status_back: Samples,
    to_running: Samples,
    total: Samples,
    overhead: Samples,
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn ms(d: i64) -> Duration {
    Duration::from_millis(u64::try_from(d.max(0)).unwrap_or(0))
}

/// Creates `n` VMs at once and follows them to GuestReady.
async fn round(
    vms: &Api<MicroVM>,
    agent: &AgentClient,
    guest: &std::path::Path,
    n: usize,
    tag: &str,
    stages: &mut Stages,
) -> anyhow::Result<()> {
    let rv = vms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut events = vms.watch(&WatchParams::default(), &rv).await?.boxed();
    let mut reports = agent.watch().await?;
    let names: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
    let start = Instant::now();
    let start_unix = unix_ms(SystemTime::now());
    let creates = names.iter().map(|name| {
        let vms = vms.clone();
        let mut vm = MicroVM::test(name);
        vm.spec.kernel = guest.join("vmlinuz").to_string_lossy().into_owned();
        vm.spec.initrd = Some(guest.join("initrd.gz").to_string_lossy().into_owned());
        vm.metadata.uid = None;
        async move {
            vms.create(&PostParams::default(), &vm).await?;
            anyhow::Ok(start.elapsed())
        }
    });
    for ack in futures::future::try_join_all(creates).await? {
        stages.api_write.push(ack);
    }
    let mut seen = Seen::default();
    let (running, ready) = (&mut seen.running, &mut seen.ready);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while ready.len() < n {
        let ev = tokio::select! {
            ev = tokio::time::timeout_at(deadline, events.next()) => ev?,
            Some(report) = reports.next() => {
                let report = report?;
                if report.updated_at_ms > 0 && names.contains(&report.name) {
                    seen.agent_first.entry(report.name).or_insert(report.updated_at_ms);
                }
                continue;
            }
        };
        let ev = ev.ok_or_else(|| anyhow::anyhow!("watch ended"))??;
        let (WatchEvent::Added(vm) | WatchEvent::Modified(vm)) = ev else {
            continue;
        };
        let name = vm.metadata.name.clone().unwrap_or_default();
        let status = vm.status.clone().unwrap_or_default();
        if vm
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| !f.is_empty())
        {
            seen.finalizer
                .entry(name.clone())
                .or_insert_with(|| start.elapsed());
        }
        if status.host.is_some() {
            seen.placed
                .entry(name.clone())
                .or_insert_with(|| start.elapsed());
        }
        if status.phase == Some(MicroVMPhase::Running) {
            running
                .entry(name.clone())
                .or_insert_with(|| start.elapsed());
        }
        if status
            .condition(quiver_crds::condition::GUEST_READY)
            .is_some_and(|c| c.status == "True")
        {
            ready.entry(name).or_insert_with(|| start.elapsed());
        }
    }
    let reported: HashMap<String, quiver_rpc::proto::VmStatus> = agent
        .list_vms()
        .await?
        .into_iter()
        .map(|s| (s.name.clone(), s))
        .collect();
    for name in &names {
        let s = reported
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("agent does not know {name}"))?;
        let total = seen.ready[name];
        let boot = ms(s.guest_ready_at_ms - s.started_at_ms);
        let finalizer = seen.finalizer.get(name).copied().unwrap_or_default();
        let placed = seen.placed.get(name).copied().unwrap_or(finalizer);
        let agent_first = ms(seen
            .agent_first
            .get(name)
            .copied()
            .unwrap_or(s.started_at_ms)
            - start_unix);
        stages.to_finalizer.push(finalizer);
        stages.to_placed.push(placed.saturating_sub(finalizer));
        stages.to_agent.push(agent_first.saturating_sub(placed));
        stages
            .spawn
            .push(ms(s.started_at_ms - start_unix).saturating_sub(agent_first));
        stages.to_qemu.push(ms(s.started_at_ms - start_unix));
        stages.guest_boot.push(boot);
        stages
            .status_back
            .push(total.saturating_sub(ms(s.guest_ready_at_ms - start_unix)));
        stages
            .to_running
            .push(seen.running.get(name).copied().unwrap_or(total));
        stages.total.push(total);
        stages.overhead.push(total.saturating_sub(boot));
    }
    for name in &names {
        vms.delete(name, &DeleteParams::default()).await?;
    }
    let deadline = Instant::now() + TIMEOUT;
    while !vms.list(&ListParams::default()).await?.items.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "VMs were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// When a watcher (or the agent's stream) first saw each VM reach each point, by name.
#[derive(Default)]
struct Seen {
    finalizer: HashMap<String, Duration>,
    placed: HashMap<String, Duration>,
    /// The agent's first report (unix ms, the agent's clock: the same machine's).
    agent_first: HashMap<String, i64>,
    running: HashMap<String, Duration>,
    ready: HashMap<String, Duration>,
}

fn row(label: &str, s: &mut Samples) -> String {
    format!(
        "| {label} | {} | {} |",
        fmt_duration(s.percentile(50.0)),
        fmt_duration(s.percentile(99.0))
    )
}

/// The same path with agents on the simulated driver (no QEMU, so no CPU spent on guests):
/// what the control plane costs when it has the cores to itself.
async fn simulated_section(guest: &std::path::Path, levels: Levels) -> anyhow::Result<String> {
    let cluster = TestCluster::start_simulated(1).await?;
    let vms: Api<MicroVM> = Api::namespaced(cluster.client.clone(), "default");
    let agent = cluster.agent_client(0).await?;
    let mut out = String::from(
        "\n### Control plane alone: agent on the **simulated** driver (no QEMU)\n\n\
         Same path and stages, but the agent's driver only waits (launch 50 ms, ready 200 ms, \
         both counted as the VM's own boot, as QEMU's start is above): nothing emulates guest CPUs, \
         so this isolates what the control plane costs.\n\n\
         | VMs at once | samples | create → process launched p50 / p99 | control-plane overhead p50 / p99 |\n|---|---|---|---|\n",
    );
    for &(n, rounds) in levels {
        let mut stages = Stages::default();
        for r in 0..rounds {
            round(&vms, &agent, guest, n, &format!("s{n}-{r}"), &mut stages).await?;
        }
        out.push_str(&format!(
            "| {n} | {} | {} / {} | {} / {} |\n",
            stages.total.len(),
            fmt_duration(stages.to_qemu.percentile(50.0)),
            fmt_duration(stages.to_qemu.percentile(99.0)),
            fmt_duration(stages.overhead.percentile(50.0)),
            fmt_duration(stages.overhead.percentile(99.0)),
        ));
    }
    cluster.shutdown().await;
    Ok(out)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    // (VMs at once, rounds) with real guests, then on the simulated driver; a smoke run does
    // one VM once each way and writes nothing.
    let (real, simulated): (Levels, Levels) = if smoke {
        (&[(1, 1)], &[(1, 1)])
    } else {
        (&[(1, 8), (10, 2)], &[(1, 8), (10, 3)])
    };
    let guest =
        guest_dir().ok_or_else(|| anyhow::anyhow!("no guest image: run scripts/guest-image.sh"))?;
    let cluster = TestCluster::start(1).await?;
    let vms: Api<MicroVM> = Api::namespaced(cluster.client.clone(), "default");
    let agent = cluster.agent_client(0).await?;
    let mut body = String::from(
        "## End to end: MicroVM create → Running → GuestReady\n\n\
         Command: `cargo build --release -p quiver-agent && cargo run --release -p quiver-benches --bin bench-e2e` \
         (dev control plane + operator in-process, one real agent, QEMU `microvm` under TCG, 2 cores). \
         Control-plane overhead is everything but the VM's own boot: QEMU's process spawned → readiness marker, as the agent saw it, \
         counted from the same point as the raw boots of the baseline (QEMU's own start is part of both).\n",
    );
    for &(n, rounds) in real {
        let mut raw = Samples::default();
        for _ in 0..rounds {
            raw.extend(&raw_boots(&guest, n, TIMEOUT).await?);
        }
        let mut stages = Stages::default();
        for r in 0..rounds {
            round(&vms, &agent, &guest, n, &format!("b{n}-{r}"), &mut stages).await?;
        }
        let ratio = stages.total.percentile(50.0).as_secs_f64()
            / raw.percentile(50.0).as_secs_f64().max(1e-9);
        body.push_str(&format!(
            "\n### {n} VM{} at once ({} samples)\n\n| stage | p50 | p99 |\n|---|---|---|\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n\n\
             create → GuestReady is {ratio:.2}× a raw QEMU boot to the marker (p50). Target: control-plane overhead p50 ≤ 15 ms \
             (one VM), p99 ≤ 200 ms.\n",
            if n == 1 { "" } else { "s" },
            stages.total.len(),
            row("API write (create → response)", &mut stages.api_write),
            row("  create → finalizer seen (watch to the operator, queue, finalizer patch)", &mut stages.to_finalizer),
            row("  finalizer → placement seen (placement, status apply)", &mut stages.to_placed),
            row("  placement → agent's first report (PutVm, admission)", &mut stages.to_agent),
            row("  agent's first report → QEMU spawned (run dir, disks, exec)", &mut stages.spawn),
            row("create → QEMU spawned (the four stages above)", &mut stages.to_qemu),
            row("guest boot (QEMU spawned → marker seen by the agent)", &mut stages.guest_boot),
            row("status back (marker → GuestReady seen by a watcher)", &mut stages.status_back),
            row("create → Running seen by a watcher", &mut stages.to_running),
            row("**create → GuestReady seen by a watcher**", &mut stages.total),
            row("**control-plane overhead** (total − guest boot)", &mut stages.overhead),
            row("raw `qemu-system` spawn → marker, same run (baseline)", &mut raw),
        ));
    }
    cluster.shutdown().await;
    body.push_str(&simulated_section(&guest, simulated).await?);
    println!("{body}");
    if write {
        write_section(&docs_path(), "e2e", &body)?;
    }
    Ok(())
}
