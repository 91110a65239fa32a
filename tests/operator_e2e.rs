//! End to end: real kubectl against the dev control plane, the operator in-process, real
//! `quiver-agent` processes booting the test guest in QEMU (TCG).
//!
//! Tests take a process-wide lock: each boots QEMUs and the machine has few cores.

use std::time::Duration;

use anyhow::Context as _;

use quiver_tests::cluster::{TestCluster, guest_dir};
use quiver_tests::eventually;
use quiver_tests::vm::{BOOT, qemu_lock};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_vm_boots_shows_its_host_and_delete_removes_qemu_and_object() -> anyhow::Result<()>
{
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    cluster.apply_vm(&guest, "web", "").await?;
    let web = k.wait_ready("web", BOOT).await?;
    assert_eq!(web.host, "agent-0");

    let row = k.vm_row("web").await?;
    assert!(
        row.contains("Running") && row.contains("agent-0") && row.contains("True"),
        "{row}"
    );

    let rv = || {
        k.run(&[
            "get",
            "mvm",
            "web",
            "-o=jsonpath={.metadata.resourceVersion}",
        ])
    };
    let before = rv().await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(rv().await?, before, "an unchanged VM was written to");

    let reasons = k.event_reasons("web").await?;
    for reason in ["Scheduled", "Started", "GuestReady"] {
        assert!(reasons.contains(reason), "no {reason} event in: {reasons}");
    }
    let finalizers = k
        .run(&["get", "mvm", "web", "-o", "jsonpath={.metadata.finalizers}"])
        .await?;
    assert!(finalizers.contains("quiver.dev/vm"), "{finalizers}");
    assert_eq!(cluster.qemu_pids().len(), 1);

    k.run(&["delete", "mvm", "web", "--timeout=60s"]).await?;
    let gone = k.fail(&["get", "mvm", "web"], None).await?;
    assert!(
        gone.contains("NotFound") || gone.contains("not found"),
        "{gone}"
    );
    assert!(cluster.qemu_pids().is_empty(), "QEMU left after delete");
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halted_stops_the_vm_and_always_starts_it_again() -> anyhow::Result<()> {
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    cluster.apply_vm(&guest, "toggle", "").await?;
    k.wait_ready("toggle", BOOT).await?;

    let halt = r#"{"spec":{"runStrategy":"Halted"}}"#;
    k.run(&["patch", "mvm", "toggle", "--type=merge", "-p", halt])
        .await?;
    let stopped = k
        .wait_vm_phase("toggle", "Stopped", Duration::from_secs(60))
        .await?;
    assert_eq!(stopped.guest_ready.0, "False");
    assert!(stopped.message.contains("Halted"), "{}", stopped.message);
    eventually(Duration::from_secs(10), "QEMU to exit", || async {
        Ok(cluster.qemu_pids().is_empty().then_some(()))
    })
    .await?;

    let run = r#"{"spec":{"runStrategy":"Always"}}"#;
    k.run(&["patch", "mvm", "toggle", "--type=merge", "-p", run])
        .await?;
    k.wait_ready("toggle", BOOT).await?;
    assert_eq!(cluster.qemu_pids().len(), 1);
    k.run(&["delete", "mvm", "toggle", "--timeout=60s"]).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_mid_boot_runs_no_duplicate_and_status_converges() -> anyhow::Result<()> {
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    cluster.apply_vm(&guest, "survivor", "").await?;
    k.wait_vm("survivor", "placed", Duration::from_secs(30), |v| {
        v.host == "agent-0"
    })
    .await?;
    cluster.kill_operator();
    // The same identity takes its own lease back at once.
    cluster.start_operator();
    k.wait_ready("survivor", BOOT + Duration::from_secs(20))
        .await
        .with_context(|| cluster.diagnostics())?;
    assert_eq!(cluster.qemu_pids().len(), 1, "a second QEMU was started");
    let agent = cluster.agent_client(0).await?;
    assert_eq!(agent.list_vms().await?.len(), 1);
    k.run(&["delete", "mvm", "survivor", "--timeout=60s"])
        .await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_within_its_lease_keeps_the_vm_and_a_silent_host_is_fenced_and_surfaced()
-> anyhow::Result<()> {
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    cluster.apply_vm(&guest, "steady", "").await?;
    k.wait_ready("steady", BOOT).await?;
    let pids = cluster.qemu_pids();

    // Back within its lease (6 s): the agent re-adopts the QEMU it left running.
    cluster.agents[0].stop().await;
    assert_eq!(cluster.qemu_pids(), pids, "QEMU must outlive its agent");
    cluster.restart_agent("agent-0").await?;
    k.wait_vm("steady", "Ready again", Duration::from_secs(60), |v| {
        v.is_ready() && v.ready == ("True".into(), "Running".into())
    })
    .await?;
    assert_eq!(
        cluster.qemu_pids(),
        pids,
        "the VM was restarted instead of re-adopted"
    );

    // Gone for longer: the VM stops claiming to be ready and says it may still run, and the
    // host's lease watchdog stops the QEMU once the lease lapses (nobody renews it).
    cluster.agents[0].stop().await;
    let lost = k
        .wait_vm("steady", "HostNotReady", Duration::from_secs(30), |v| {
            v.ready.1 == "HostNotReady"
        })
        .await?;
    assert_eq!(lost.ready.0, "False");
    assert_eq!(lost.guest_ready.0, "Unknown", "READY must not stay True");
    assert!(
        lost.message.contains("may still be running"),
        "{}",
        lost.message
    );
    let host_ready = k
        .run(&[
            "get",
            "qh",
            "agent-0",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ])
        .await?;
    assert_eq!(host_ready, "False");
    eventually(
        Duration::from_secs(30),
        "the watchdog stops the QEMU",
        || async { Ok(cluster.qemu_pids().is_empty().then_some(())) },
    )
    .await?;

    // Back after its lease: the host runs what the ledger assigns it again, in a new QEMU.
    cluster.restart_agent("agent-0").await?;
    k.wait_ready("steady", BOOT).await?;
    assert_eq!(cluster.qemu_pids().len(), 1);
    k.run(&["delete", "mvm", "steady", "--timeout=60s"]).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_vms_applied_at_once_all_reach_guest_ready() -> anyhow::Result<()> {
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    let names: Vec<String> = (0..10).map(|i| format!("fleet-{i}")).collect();
    let all = names
        .iter()
        .map(|n| quiver_tests::cluster::vm_manifest(&guest, n, ""))
        .collect::<Vec<_>>()
        .join("---\n");
    k.apply(&all).await?;
    for name in &names {
        k.wait_ready(name, Duration::from_secs(400)).await?;
    }
    assert_eq!(cluster.qemu_pids().len(), 10);
    k.run(&["delete", "mvm", "--all", "--timeout=120s"]).await?;
    eventually(Duration::from_secs(30), "every QEMU gone", || async {
        Ok(cluster.qemu_pids().is_empty().then_some(()))
    })
    .await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unschedulable_vms_wait_pending_with_a_reason_and_run_once_a_fitting_host_appears()
-> anyhow::Result<()> {
    let _serial = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start(0).await?;
    cluster.add_agent("small", Some(512)).await?;
    let k = cluster.kubectl();
    let big = quiver_tests::cluster::vm_manifest(&guest, "big", "")
        .replace("memoryMiB: 256", "memoryMiB: 2048");
    k.apply(&big).await?;
    cluster
        .apply_vm(&guest, "picky", "  nodeSelector:\n    gpu: \"true\"\n")
        .await?;
    for (vm, reason) in [("big", "InsufficientMemory"), ("picky", "NoMatchingHost")] {
        let waiting = k
            .wait_vm(vm, reason, Duration::from_secs(30), |v| {
                v.scheduled.1 == reason
            })
            .await?;
        assert_eq!(waiting.phase, "Pending");
        assert_eq!(waiting.scheduled.0, "False");
    }
    let big_view = k.vm("big").await?;
    assert!(
        big_view.message.contains("spec.memoryMiB 2048"),
        "{}",
        big_view.message
    );
    let reasons = k.event_reasons("picky").await?;
    assert!(reasons.contains("FailedScheduling"), "{reasons}");

    cluster.add_agent("roomy", Some(8192)).await?;
    assert_eq!(k.wait_ready("big", BOOT).await?.host, "roomy");
    k.run(&["label", "qh", "small", "gpu=true"]).await?;
    assert_eq!(k.wait_ready("picky", BOOT).await?.host, "small");
    k.run(&["delete", "mvm", "--all", "--timeout=120s"]).await?;
    assert!(cluster.qemu_pids().is_empty(), "QEMU left after delete");
    cluster.shutdown().await;
    Ok(())
}
