//! Partitions between hosts in network namespaces, with real QEMU: each agent in its own
//! namespace on a bridge, the operator in a hub namespace, the Kubernetes API reachable from all
//! (see `quiver_tests::netns_fleet`). Needs root; skipped otherwise.
//!
//! One VM lives through a partition of its host (it moves, the cut-off copy dies first),
//! the healing (one copy stays, nothing flaps), then a drain of its new host (it moves again,
//! stopped there before it starts on the third host).

use std::time::Duration;

use anyhow::Context as _;
use quiver_tests::cluster::{guest_dir, qemus_mentioning, vm_manifest};
use quiver_tests::netns::root_or_skip;
use quiver_tests::netns_fleet::{FleetPlan, HubCluster, NetFleet};
use quiver_tests::procs::{alive, started_ms, uptime_ms, watch_last_alive};
use quiver_tests::{ControlPlane, Kubectl, eventually};

const WAIT: Duration = Duration::from_secs(90);

/// Live QEMUs of the VM `uid` (its run dir is in their command line), on any host.
fn qemus_of(uid: &str) -> Vec<u32> {
    qemus_mentioning(uid)
        .into_iter()
        .filter_map(|pid| u32::try_from(pid).ok())
        .collect()
}

/// `(phase, host, epoch)` of MicroVM `name`.
async fn placed(k: &Kubectl, name: &str) -> anyhow::Result<(String, String, u64)> {
    let row = k
        .run(&[
            "get",
            "mvm",
            name,
            "-o",
            "jsonpath={.status.phase} {.status.host} {.status.epoch}",
        ])
        .await?;
    let mut parts = row.split(' ');
    let phase = parts.next().unwrap_or_default().to_owned();
    let host = parts.next().unwrap_or_default().to_owned();
    let epoch = parts.next().and_then(|e| e.parse().ok()).unwrap_or(0);
    Ok((phase, host, epoch))
}

/// Waits for MicroVM `cut` (uid `uid`) to run on a host other than `from`, and checks it went
/// there under `epoch` with one copy; returns the new host and its QEMU's start time (ms).
async fn moved(k: &Kubectl, uid: &str, from: &str, epoch: u64) -> anyhow::Result<(String, u64)> {
    let (_, to, got) = eventually(WAIT, "cut Running on another host", || async {
        let p = placed(k, "cut").await?;
        Ok((p.0 == "Running" && p.1 != from).then_some(p))
    })
    .await?;
    assert_eq!(got, epoch, "moved from {from} under a higher epoch");
    let copies = qemus_of(uid);
    assert_eq!(
        copies.len(),
        1,
        "one copy runs after leaving {from}: {copies:?}"
    );
    let spawned_at = started_ms(copies[0]).context("the new QEMU's start")?;
    Ok((to, spawned_at))
}

async fn scenario(plan: FleetPlan, guest: std::path::PathBuf) -> anyhow::Result<()> {
    let cluster = HubCluster::start(&plan).await?;
    let k = plan.kubectl();
    let leader = "jsonpath={range .items[*]}{.status.raft.role} {end}";
    eventually(WAIT, "a Raft group of three", || async {
        let roles = k.run(&["get", "qh", "-o", leader]).await?;
        let voters = roles.matches("Leader").count() + roles.matches("Follower").count();
        Ok((roles.matches("Leader").count() == 1 && voters == 3).then_some(()))
    })
    .await?;
    k.apply(&vm_manifest(&guest, "cut", "")).await?;
    let (_, host, _) = eventually(WAIT, "cut Running", || async {
        let p = placed(&k, "cut").await?;
        Ok((p.0 == "Running").then_some(p))
    })
    .await?;
    let uid = k
        .run(&["get", "mvm", "cut", "-o", "jsonpath={.metadata.uid}"])
        .await?;
    let old = *qemus_of(&uid).first().context("the VM's QEMU")?;
    let index: usize = host.trim_start_matches("agent-").parse()?;

    plan.partition(index)?;
    let died_at = eventually(WAIT, "the partitioned copy killed", || async {
        Ok((!alive(old)).then(uptime_ms))
    })
    .await?;
    let (moved_to, spawned_at) = moved(&k, &uid, &host, 2).await?;
    eprintln!(
        "partitioned {host}: old copy dead at {died_at} ms, new on {moved_to} at {spawned_at} ms"
    );
    assert!(
        died_at <= spawned_at,
        "old copy died at {died_at} ms, new spawned at {spawned_at} ms"
    );

    plan.heal(index)?;
    let ready = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
    eventually(WAIT, "the healed host Ready", || async {
        Ok((k.run(&["get", "qh", &host, "-o", ready]).await? == "True").then_some(()))
    })
    .await?;
    // No flapping: for a while after healing, one copy, where it went, same epoch.
    for _ in 0..20 {
        let copies = qemus_of(&uid);
        assert_eq!(copies.len(), 1, "one copy after healing: {copies:?}");
        assert_eq!(
            placed(&k, "cut").await?,
            ("Running".into(), moved_to.clone(), 2)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Drain the host it moved to: it goes to the third host, stopped here first.
    let before_drain = *qemus_of(&uid).first().context("the VM's QEMU")?;
    let last_alive = watch_last_alive(before_drain, WAIT);
    let drain = r#"{"spec":{"drain":true}}"#;
    k.run(&["patch", "qh", &moved_to, "--type", "merge", "-p", drain])
        .await?;
    let (drained_to, spawned_at) = moved(&k, &uid, &moved_to, 3).await?;
    let last_alive = last_alive
        .join()
        .map_err(|_| anyhow::anyhow!("the watcher panicked"))?;
    eprintln!(
        "drained {moved_to}: copy last alive at {last_alive} ms, new on {drained_to} at {spawned_at} ms"
    );
    // Start times count in 10 ms clock ticks: allow one.
    assert!(
        last_alive <= spawned_at + 10,
        "the drained copy ran at {last_alive} ms, after the new one was spawned at {spawned_at} ms"
    );
    k.run(&["delete", "mvm", "cut", "--wait=true"]).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_moves_off_a_partitioned_then_a_drained_host_never_running_twice() -> anyhow::Result<()>
{
    if !root_or_skip("raft_netns") {
        return Ok(());
    }
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let _qemu = quiver_tests::vm::qemu_lock().await;
    let control_plane = ControlPlane::start().await?;
    quiver_operator::dev::install_crds(&control_plane.client().await?).await?;
    let dir = tempfile::tempdir()?;
    let fleet = NetFleet::new(&control_plane, 3, dir.path().to_owned()).await?;
    let plan = fleet.plan.clone();
    let result = fleet.hub.spawn(move || scenario(plan, guest)).join().await;
    // After a failure: no QEMU of this fleet outlives the test.
    quiver_tests::cluster::kill_now(&quiver_tests::cluster::qemus_naming(dir.path()));
    drop(fleet);
    result
}
