//! End to end: real kubectl against the dev control plane, the operator in-process, real
//! `quiver-agent` processes booting the test guest in QEMU (TCG).
//!
//! Tests take a process-wide lock: each boots QEMUs and the machine has few cores.

use std::time::Duration;

use anyhow::{Context as _, bail};
use quiver_tests::cluster::{TestCluster, guest_dir, vm_manifest};
use quiver_tests::{Kubectl, eventually};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const BOOT: Duration = Duration::from_secs(120);

/// `phase/host/GuestReady` as kubectl shows them.
async fn summary(k: &Kubectl, name: &str) -> anyhow::Result<String> {
    let path = r#"jsonpath={.status.phase}/{.status.host}/{.status.conditions[?(@.type=="GuestReady")].status}"#;
    k.run(&["get", "mvm", name, "-o", path]).await
}

async fn wait_for(k: &Kubectl, name: &str, want: &str, timeout: Duration) -> anyhow::Result<()> {
    eventually(timeout, &format!("mvm {name} to be {want}"), || async {
        let got = summary(k, name).await?;
        Ok((got == want).then_some(()).or_else(|| {
            eprintln!("  {name}: {got}");
            None
        }))
    })
    .await
}

async fn apply(k: &Kubectl, manifest: &str) -> anyhow::Result<()> {
    k.run_with_stdin(&["apply", "-f", "-"], Some(manifest))
        .await
        .map(drop)
}

/// Reasons of the events.k8s.io/v1 Events about `name` (filtered on the client: the dev
/// control plane's field selectors for that API are in flux).
async fn event_reasons(k: &Kubectl, name: &str) -> anyhow::Result<String> {
    let path =
        format!(r#"jsonpath={{range .items[?(@.regarding.name=="{name}")]}}{{.reason}} {{end}}"#);
    k.run(&["get", "events.v1.events.k8s.io", "-o", &path])
        .await
}

async fn resource_version(k: &Kubectl, name: &str) -> anyhow::Result<String> {
    k.run(&[
        "get",
        "mvm",
        name,
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_vm_boots_shows_its_host_and_delete_removes_qemu_and_object() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    apply(&k, &vm_manifest(&guest, "web", "")).await?;
    wait_for(&k, "web", "Running/agent-0/True", BOOT).await?;

    let table = k.run(&["get", "mvm"]).await?;
    let row = table
        .lines()
        .find(|l| l.starts_with("web"))
        .context("web row")?;
    assert!(
        row.contains("Running") && row.contains("agent-0") && row.contains("True"),
        "{table}"
    );

    let before = resource_version(&k, "web").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        resource_version(&k, "web").await?,
        before,
        "an unchanged VM was written to"
    );

    let reasons = event_reasons(&k, "web").await?;
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
    let _serial = SERIAL.lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    apply(&k, &vm_manifest(&guest, "toggle", "")).await?;
    wait_for(&k, "toggle", "Running/agent-0/True", BOOT).await?;

    let halt = r#"{"spec":{"runStrategy":"Halted"}}"#;
    k.run(&["patch", "mvm", "toggle", "--type=merge", "-p", halt])
        .await?;
    wait_for(
        &k,
        "toggle",
        "Stopped/agent-0/False",
        Duration::from_secs(60),
    )
    .await?;
    eventually(Duration::from_secs(10), "QEMU to exit", || async {
        Ok(cluster.qemu_pids().is_empty().then_some(()))
    })
    .await?;
    let message = k
        .run(&["get", "mvm", "toggle", "-o", "jsonpath={.status.message}"])
        .await?;
    assert!(message.contains("Halted"), "{message}");

    let run = r#"{"spec":{"runStrategy":"Always"}}"#;
    k.run(&["patch", "mvm", "toggle", "--type=merge", "-p", run])
        .await?;
    wait_for(&k, "toggle", "Running/agent-0/True", BOOT).await?;
    assert_eq!(cluster.qemu_pids().len(), 1);
    k.run(&["delete", "mvm", "toggle", "--timeout=60s"]).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_restart_mid_boot_runs_no_duplicate_and_status_converges() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    apply(&k, &vm_manifest(&guest, "survivor", "")).await?;
    eventually(Duration::from_secs(30), "the VM to be placed", || async {
        let s = summary(&k, "survivor").await?;
        Ok(s.contains("/agent-0/").then_some(()))
    })
    .await?;
    cluster.kill_operator();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The Lease of the killed replica must expire before the new one leads.
    cluster.start_operator();
    wait_for(
        &k,
        "survivor",
        "Running/agent-0/True",
        BOOT + Duration::from_secs(20),
    )
    .await?;
    assert_eq!(cluster.qemu_pids().len(), 1, "a second QEMU was started");
    let agent = cluster.agent_client(0).await?;
    assert_eq!(agent.list_vms().await?.len(), 1);
    k.run(&["delete", "mvm", "survivor", "--timeout=60s"])
        .await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restart_keeps_the_vm_running_and_a_silent_host_is_surfaced() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    apply(&k, &vm_manifest(&guest, "steady", "")).await?;
    wait_for(&k, "steady", "Running/agent-0/True", BOOT).await?;
    let pids = cluster.qemu_pids();

    cluster.agents[0].stop().await;
    let ready = r#"jsonpath={.status.conditions[?(@.type=="Ready")].reason}"#;
    eventually(
        Duration::from_secs(30),
        "HostNotReady on the VM",
        || async {
            let reason = k.run(&["get", "mvm", "steady", "-o", ready]).await?;
            Ok((reason == "HostNotReady").then_some(()))
        },
    )
    .await?;
    let hosts = k
        .run(&[
            "get",
            "qh",
            "agent-0",
            "-o",
            r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
        ])
        .await?;
    assert_eq!(hosts, "False");
    assert_eq!(cluster.qemu_pids(), pids, "QEMU must outlive its agent");

    let options = cluster.agents[0].options.clone();
    cluster.agents[0] = quiver_operator::agents::AgentProcess::start(options).await?;
    wait_for(
        &k,
        "steady",
        "Running/agent-0/True",
        Duration::from_secs(60),
    )
    .await?;
    eventually(Duration::from_secs(30), "Ready=True again", || async {
        let reason = k.run(&["get", "mvm", "steady", "-o", ready]).await?;
        Ok((reason == "Running").then_some(()))
    })
    .await?;
    assert_eq!(
        cluster.qemu_pids(),
        pids,
        "the VM was restarted instead of re-adopted"
    );
    k.run(&["delete", "mvm", "steady", "--timeout=60s"]).await?;
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_vms_applied_at_once_all_reach_guest_ready() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    let names: Vec<String> = (0..10).map(|i| format!("fleet-{i}")).collect();
    let all = names
        .iter()
        .map(|n| vm_manifest(&guest, n, ""))
        .collect::<Vec<_>>()
        .join("---\n");
    apply(&k, &all).await?;
    eventually(Duration::from_secs(400), "10 VMs GuestReady", || async {
        let out = k.run(&["get", "mvm", "--no-headers"]).await?;
        let ready = out
            .lines()
            .filter(|l| l.contains("Running") && l.contains("True"))
            .count();
        eprintln!("  {ready}/10 ready");
        Ok((ready == 10).then_some(()))
    })
    .await?;
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
    let _serial = SERIAL.lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let mut cluster = TestCluster::start(0).await?;
    cluster.add_agent("small", Some(512)).await?;
    let k = cluster.kubectl();
    apply(
        &k,
        &vm_manifest(&guest, "big", "").replace("memoryMiB: 256", "memoryMiB: 2048"),
    )
    .await?;
    apply(
        &k,
        &vm_manifest(&guest, "picky", "  nodeSelector:\n    gpu: \"true\"\n"),
    )
    .await?;
    let scheduled = r#"jsonpath={.status.phase}/{.status.conditions[?(@.type=="Scheduled")].status}/{.status.conditions[?(@.type=="Scheduled")].reason}"#;
    for (vm, reason) in [("big", "InsufficientMemory"), ("picky", "NoMatchingHost")] {
        let want = format!("Pending/False/{reason}");
        eventually(Duration::from_secs(30), &format!("{vm} {want}"), || async {
            let got = k.run(&["get", "mvm", vm, "-o", scheduled]).await?;
            Ok((got == want).then_some(()))
        })
        .await?;
    }
    let message = k
        .run(&["get", "mvm", "big", "-o", "jsonpath={.status.message}"])
        .await?;
    assert!(message.contains("spec.memoryMiB 2048"), "{message}");
    let reasons = event_reasons(&k, "picky").await?;
    assert!(reasons.contains("FailedScheduling"), "{reasons}");

    cluster.add_agent("roomy", Some(8192)).await?;
    wait_for(&k, "big", "Running/roomy/True", BOOT).await?;
    k.run(&["label", "qh", "small", "gpu=true"]).await?;
    wait_for(&k, "picky", "Running/small/True", BOOT).await?;
    k.run(&["delete", "mvm", "--all", "--timeout=120s"]).await?;
    if !cluster.qemu_pids().is_empty() {
        bail!("QEMU left after delete");
    }
    cluster.shutdown().await;
    Ok(())
}
