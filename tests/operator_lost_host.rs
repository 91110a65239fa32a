//! A host is lost: on `quiver-operator dev`'s own three-agent cluster (one Raft group), the
//! agent of a VM's host is killed as a crash would (its QEMU lives on). The VM comes back on
//! another host and the orphaned QEMU is stopped by the host's lease watchdog; new VMs boot on
//! the survivors and say what they wait for at every moment; a VM only the lost host could
//! take waits and says why; stopping the cluster leaves no QEMU behind.

use std::time::{Duration, Instant};

use quiver_tests::cluster::{guest_dir, qemus_naming, vm_manifest};
use quiver_tests::dev::DevTestCluster;
use quiver_tests::vm::{BOOT, qemu_lock};

/// Lease ttl + margin (6 s + 2 s by default) with room for a loaded machine.
const DECLARED_DOWN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_hosts_vm_comes_back_elsewhere_new_vms_boot_and_stop_leaks_no_qemu()
-> anyhow::Result<()> {
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = DevTestCluster::start(3).await?;
    let k = cluster.kubectl();
    k.apply(&vm_manifest(&guest, "first", "")).await?;
    let first = k.wait_ready("first", BOOT).await?;
    k.apply(&vm_manifest(&guest, "second", "")).await?;
    let second = k.wait_ready("second", BOOT).await?;
    assert_ne!(first.host, second.host, "placement spreads by free memory");
    let lost = second.host;

    cluster.kill_agent(&lost).await?;

    // The lost host's VM runs again elsewhere, and only there: its old QEMU was stopped by the
    // watchdog when the lease lapsed, before the leader declared the host down.
    let moved = k
        .wait_vm(
            "second",
            "ready on another host",
            DECLARED_DOWN + BOOT,
            |v| v.host != lost && v.is_ready(),
        )
        .await?;
    assert_ne!(moved.host, lost);
    assert_eq!(
        qemus_naming(cluster.state_dir()).len(),
        2,
        "first, and second's new copy; the lost host's copy is stopped"
    );

    // A new VM goes to a surviving host; from its first status on, its row always says
    // where it stands.
    k.apply(&vm_manifest(&guest, "third", "")).await?;
    let applied = Instant::now();
    let third = loop {
        let view = k.vm("third").await?;
        if view.phase.is_empty() {
            assert!(
                applied.elapsed() < Duration::from_secs(20),
                "no phase 20 s after apply: a blank row"
            );
        } else {
            assert!(
                !view.message.is_empty(),
                "phase {} without a message",
                view.phase
            );
        }
        if view.is_ready() {
            break view;
        }
        assert!(applied.elapsed() < BOOT, "third never booted: {view:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(third.host, lost);

    // A VM only the lost host could take waits, and says why.
    k.run(&["label", "qh", &lost, "only=lost"]).await?;
    k.apply(&vm_manifest(
        &guest,
        "stranded",
        "  nodeSelector:\n    only: lost\n",
    ))
    .await?;
    let stranded = k
        .wait_vm("stranded", "Pending", Duration::from_secs(30), |v| {
            v.phase == "Pending"
        })
        .await?;
    assert_eq!(stranded.scheduled.0, "False");
    assert!(
        stranded.message.contains("nodeSelector"),
        "{}",
        stranded.message
    );
    assert!(
        k.event_reasons("stranded")
            .await?
            .contains("FailedScheduling")
    );

    let report = cluster.stop().await?;
    let said = report.to_string();
    println!("{said}");
    assert!(
        qemus_naming(cluster.state_dir()).is_empty(),
        "QEMU left: {said}"
    );
    assert_eq!(report.agents_dead, std::slice::from_ref(&lost), "{said}");
    assert!(
        report.not_deleted.is_empty(),
        "every VM runs on a live host or nowhere: {said}"
    );
    assert_eq!(
        report.deleted, 4,
        "first, second, third and stranded: {said}"
    );
    Ok(())
}
