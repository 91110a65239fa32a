//! Failover benchmark: three agents in one Raft group, real QEMU guests under TCG,
//! the operator in Raft mode. Each trial boots a MicroVM to GuestReady, kills its host's agent
//! with SIGKILL (its QEMU keeps running until the lease watchdog kills it), and times:
//! - kill → the VM Running on another host (lease ttl + margin + election, reassign, spawn);
//! - kill → GuestReady on the other host (the above plus the guest's own boot);
//!
//! next to a raw QEMU boot to the marker measured in the same run (the part no control plane
//! can remove). Then the killed agent is restarted, the VM deleted, and the next trial starts.
//!
//! Run: `cargo build --release -p quiver-agent && cargo run --release -p quiver-benches --bin
//! bench-failover` (`-- --smoke`: one trial, writes nothing; `-- --no-write`).

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams};
use quiver_benches::{Samples, docs_path, fmt_duration, raw_boots, write_section};
use quiver_crds::MicroVM;
use quiver_crds::condition::GUEST_READY;
use quiver_tests::cluster::{TestCluster, guest_dir, vm_manifest};

const TIMEOUT: Duration = Duration::from_secs(120);

/// (host, Running, GuestReady) of MicroVM `name`.
async fn view(vms: &Api<MicroVM>, name: &str) -> anyhow::Result<(String, bool, bool)> {
    let vm = vms.get(name).await?;
    let status = vm.status.unwrap_or_default();
    let running = status.phase == Some(quiver_crds::MicroVMPhase::Running);
    let ready = status
        .condition(GUEST_READY)
        .is_some_and(|c| c.status == "True");
    Ok((status.host.unwrap_or_default(), running, ready))
}

async fn wait_for<T>(
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every host's Host object reads Ready (its agent answers and holds a lease).
async fn all_ready(cluster: &TestCluster) -> anyhow::Result<()> {
    let k = cluster.kubectl();
    let ready =
        r#"jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {end}"#;
    wait_for("every host Ready", async || {
        let row = k.run(&["get", "qh", "-o", ready]).await?;
        Ok((row.matches("True").count() == cluster.agents.len()).then_some(()))
    })
    .await
}

/// One trial: (kill → Running elsewhere, kill → GuestReady elsewhere).
async fn trial(
    cluster: &mut TestCluster,
    guest: &std::path::Path,
    i: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let vms: Api<MicroVM> = Api::namespaced(cluster.client.clone(), "default");
    let name = format!("fo-{i}");
    cluster
        .kubectl()
        .apply(&vm_manifest(guest, &name, ""))
        .await?;
    let host = wait_for("GuestReady", async || {
        let (host, _, ready) = view(&vms, &name).await?;
        Ok(ready.then_some(host))
    })
    .await?;
    cluster.kill_agent(&host).await?;
    let killed = Instant::now();
    let running = wait_for("Running elsewhere", async || {
        let (now, running, _) = view(&vms, &name).await?;
        Ok((running && now != host).then(|| killed.elapsed()))
    })
    .await?;
    let ready = wait_for("GuestReady elsewhere", async || {
        let (now, _, ready) = view(&vms, &name).await?;
        Ok((ready && now != host).then(|| killed.elapsed()))
    })
    .await?;
    cluster.restart_agent(&host).await?;
    all_ready(cluster).await?;
    vms.delete(&name, &DeleteParams::default()).await?;
    wait_for("deleted", async || {
        Ok(vms.get_opt(&name).await?.is_none().then_some(()))
    })
    .await?;
    Ok((running, ready))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    let trials = if smoke { 1 } else { 10 };
    let guest =
        guest_dir().ok_or_else(|| anyhow::anyhow!("no guest image: run scripts/guest-image.sh"))?;
    let mut raw = Samples::default();
    for _ in 0..trials {
        raw.extend(&raw_boots(&guest, 1, TIMEOUT).await?);
    }
    let mut cluster = TestCluster::start(3).await?;
    all_ready(&cluster).await?;
    let (mut running, mut ready) = (Samples::default(), Samples::default());
    for i in 0..trials {
        let (r, g) = trial(&mut cluster, &guest, i).await?;
        println!("trial {i}: Running elsewhere after {r:?}, GuestReady after {g:?}");
        running.push(r);
        ready.push(g);
    }
    cluster.shutdown().await;
    let boot = raw.percentile(50.0);
    let row = |label: &str, s: &mut Samples| {
        format!(
            "| {label} | {} | {} | {} | {:.2}× |",
            fmt_duration(s.percentile(50.0)),
            fmt_duration(s.percentile(0.0)),
            fmt_duration(s.percentile(100.0)),
            s.percentile(50.0).as_secs_f64() / boot.as_secs_f64().max(1e-9),
        )
    };
    // The build profile barely matters here (lease timers and guest boots dominate); the
    // section says which one produced it.
    let release = if cfg!(debug_assertions) {
        ""
    } else {
        "--release "
    };
    let body = format!(
        "## Failover: a host's agent killed, its VM back on another host\n\n\
         Command: `cargo build {release}-p quiver-agent && cargo run {release}-p quiver-benches --bin bench-failover` \
         (dev control plane and operator in-process, three `quiver-agent` processes in one Raft group on loopback, QEMU `microvm` \
         under TCG, 2 cores; {trials} trials). Each trial kills the agent of the VM's host with SIGKILL; its QEMU keeps \
         running until the lease watchdog kills it. Lease: ttl 6 s, renewed every 1 s, margin 2 s (the defaults), so a \
         host is declared down 8 s after the last renewal the leader saw.\n\n\
         | from the kill to | p50 | min | max | p50 ÷ raw boot |\n|---|---|---|---|---|\n{}\n{}\n\
         | raw QEMU spawn → marker, same run (baseline) | {} | {} | {} | 1.00× |\n\n\
         Target: failover ≤ 10 s plus the guest's boot. What would change it: the lease parameters (a shorter ttl \
         fails over sooner but forgives shorter stalls), KVM instead of TCG (the boot), and load on the machine.\n",
        row("the VM Running on another host", &mut running),
        row("GuestReady on another host", &mut ready),
        fmt_duration(raw.percentile(50.0)),
        fmt_duration(raw.percentile(0.0)),
        fmt_duration(raw.percentile(100.0)),
    );
    println!("{body}");
    if write {
        write_section(&docs_path(), "failover", &body)?;
    }
    Ok(())
}
