//! Agents register their own Host; the operator heartbeats it, and forgets the agent of a
//! Host that is deleted.

use std::time::Duration;

use quiver_tests::cluster::{TestCluster, guest_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_register_their_host_and_the_operator_marks_it_ready() -> anyhow::Result<()> {
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    let host: serde_json::Value = serde_json::from_str(
        &k.run(&[
            "get",
            "qh",
            "agent-0",
            "-o",
            "json",
            "--show-managed-fields",
        ])
        .await?,
    )?;
    assert_eq!(
        host["spec"]["grpcAddress"],
        cluster.agents[0].address().as_str()
    );
    assert_eq!(host["spec"]["capacity"]["memoryMiB"], 8192);
    let managers: Vec<&str> = host["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["fieldsV1"].get("f:spec").is_some())
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(managers, ["quiver-agent"], "the agent owns its Host's spec");
    cluster.wait_host_ready("agent-0").await?;
    cluster.shutdown().await;
    Ok(())
}

/// Runs on the simulated driver: what is under test is the operator's set of agents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_host_takes_no_new_vms_and_its_vms_say_their_host_is_gone() -> anyhow::Result<()>
{
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start_simulated(1).await?;
    let k = cluster.kubectl();
    cluster.apply_vm(&guest, "before", "").await?;
    let before = k
        .wait_vm_phase("before", "Running", Duration::from_secs(60))
        .await?;
    assert_eq!(before.host, "agent-0");

    k.run(&["delete", "qh", "agent-0"]).await?;
    let orphan = k
        .wait_vm("before", "HostNotReady", Duration::from_secs(30), |v| {
            v.ready.1 == "HostNotReady"
        })
        .await?;
    assert_eq!(orphan.ready.0, "False");
    assert!(
        orphan.message.contains("may still be running"),
        "{}",
        orphan.message
    );

    cluster.apply_vm(&guest, "after", "").await?;
    let waiting = k
        .wait_vm(
            "after",
            "waiting for a host",
            Duration::from_secs(30),
            |v| !v.phase.is_empty(),
        )
        .await?;
    assert_eq!(waiting.phase, "Pending");
    assert_eq!(waiting.scheduled, ("False".into(), "NoHosts".into()));
    assert!(!waiting.message.is_empty());
    let reasons = k.event_reasons("after").await?;
    assert!(reasons.contains("FailedScheduling"), "{reasons}");
    let vms = cluster.agent_client(0).await?.list_vms().await?;
    assert!(
        vms.iter().all(|v| v.name != "after"),
        "the deleted Host's agent got a new VM"
    );
    cluster.shutdown().await;
    Ok(())
}

/// Simulated driver: a cordoned Host (`spec.unschedulable`)
/// takes no new VM and keeps its own; a drained one (`spec.drain`) loses its VM, which is
/// stopped there and then placed on the other host under the next epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cordoned_host_takes_no_new_vm_and_a_drained_one_hands_its_vm_over() -> anyhow::Result<()>
{
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start_simulated(2).await?;
    let k = cluster.kubectl();
    let patch = |host: &str, spec: &str| {
        let body = format!(r#"{{"spec":{spec}}}"#);
        let k = k.clone();
        let host = host.to_owned();
        async move {
            k.run(&["patch", "qh", &host, "--type", "merge", "-p", &body])
                .await
        }
    };
    // A cordon takes effect once the agents' Raft leader committed it to the ledger, which
    // the host's status says.
    let committed = |host: &str, schedulable: &str| {
        let (k, host, schedulable) = (k.clone(), host.to_owned(), schedulable.to_owned());
        async move {
            quiver_tests::eventually(
                Duration::from_secs(30),
                &format!("{host} schedulable: {schedulable}"),
                || async {
                    let now = k
                        .run(&[
                            "get",
                            "qh",
                            &host,
                            "-o",
                            "jsonpath={.status.raft.schedulable}",
                        ])
                        .await?;
                    Ok((now == schedulable).then_some(()))
                },
            )
            .await
        }
    };
    cluster.wait_host_ready("agent-1").await?;
    committed("agent-1", "true").await?;
    patch("agent-1", r#"{"unschedulable":true}"#).await?;
    committed("agent-1", "false").await?;
    cluster.apply_vm(&guest, "first", "").await?;
    let first = k
        .wait_vm_phase("first", "Running", Duration::from_secs(60))
        .await?;
    assert_eq!(first.host, "agent-0", "agent-1 is cordoned");

    patch("agent-0", r#"{"unschedulable":true}"#).await?;
    committed("agent-0", "false").await?;
    cluster.apply_vm(&guest, "second", "").await?;
    let waiting = k
        .wait_vm(
            "second",
            "a placement verdict",
            Duration::from_secs(30),
            |v| !v.scheduled.1.is_empty(),
        )
        .await?;
    assert_eq!(
        waiting.scheduled,
        ("False".into(), "NoUsableHosts".into()),
        "{waiting:?}"
    );
    let still = k
        .wait_vm_phase("first", "Running", Duration::from_secs(5))
        .await?;
    assert_eq!(still.host, "agent-0", "a cordon moves nothing");

    patch("agent-1", r#"{"unschedulable":false}"#).await?;
    patch("agent-0", r#"{"drain":true}"#).await?;
    let moved = k
        .wait_vm(
            "first",
            "Running on agent-1",
            Duration::from_secs(60),
            |v| v.phase == "Running" && v.host == "agent-1",
        )
        .await?;
    assert_eq!(moved.host, "agent-1");
    let epoch = k
        .run(&["get", "mvm", "first", "-o", "jsonpath={.status.epoch}"])
        .await?;
    assert_eq!(epoch, "2", "moved under the next epoch");
    assert!(
        cluster.agent_client(0).await?.list_vms().await?.is_empty(),
        "the drained host still has a VM"
    );
    let second = k
        .wait_vm_phase("second", "Running", Duration::from_secs(60))
        .await?;
    assert_eq!(second.host, "agent-1");
    cluster.shutdown().await;
    Ok(())
}
