//! The Raft service's transport in a fleet of agent processes: the group forms over gRPC
//! (the default transport; mutual TLS from the cluster CA, each member's gRPC address taken
//! from its Host), and `Host.spec.transport.raft` (a `kubectl patch`, which the leader commits
//! to the placement ledger; no operator runs) moves one agent's Raft service to Iroh and
//! another's to both while the group keeps committing puts and renewing every lease. A
//! restarted agent serves the ledger's transports again by itself, and an agent in the group
//! refuses the Admin service's `SetTransports`: the ledger is the one source.

use std::collections::BTreeMap;
use std::time::Duration;

use quiver_crds::MicroVM;
use quiver_rpc::proto;
use quiver_tests::cluster::{TestCluster, guest_dir};
use quiver_tests::eventually;

const WAIT: Duration = Duration::from_secs(60);
const HOSTS: [&str; 3] = ["agent-0", "agent-1", "agent-2"];

/// Each live agent's status, by host name.
async fn statuses(cluster: &TestCluster) -> BTreeMap<String, proto::AgentStatus> {
    let mut all = BTreeMap::new();
    for agent in &cluster.agents {
        let Ok(client) = agent.client().await else {
            continue;
        };
        if let Ok(status) = client.status().await {
            all.insert(agent.options.name.clone(), status);
        }
    }
    all
}

/// Waits until every host follows one leader and holds its lease; returns the leader.
async fn formed(cluster: &TestCluster) -> anyhow::Result<String> {
    eventually(WAIT, "a formed Raft group", || async {
        let all = statuses(cluster).await;
        let raft: Vec<&proto::RaftInfo> = all.values().filter_map(|s| s.raft.as_ref()).collect();
        let leader = raft.first().map(|r| r.leader.clone()).unwrap_or_default();
        let ok = raft.len() == HOSTS.len()
            && !leader.is_empty()
            && raft.iter().all(|r| {
                r.leader == leader && r.lease_valid && (r.role == "leader" || r.role == "follower")
            });
        Ok(ok.then_some(leader))
    })
    .await
}

/// The mode of `service` an agent reports serving.
fn serving(status: &proto::AgentStatus, service: &str) -> Option<quiver_rpc::TransportMode> {
    let entry = status.transports.iter().find(|t| t.service == service)?;
    quiver_rpc::TransportMode::from_proto(entry.mode)
}

/// Raft calls `host`'s agent answered over `transport` without an error.
async fn raft_answered(
    cluster: &TestCluster,
    index: usize,
    transport: &str,
) -> anyhow::Result<u64> {
    let metrics = cluster.agent_client(index).await?.metrics().await?;
    Ok(metrics
        .methods
        .iter()
        .filter(|m| m.service == "Raft" && m.transport == transport)
        .map(|m| m.requests - m.errors)
        .sum())
}

fn put(name: &str) -> proto::PutVmRequest {
    let vm = MicroVM::test(name).memory_mib(256);
    let uid = vm.metadata.uid.clone().expect("uid");
    quiver_operator::convert::put_request(&vm, &uid, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_patch_moves_raft_between_transports_while_the_group_commits() -> anyhow::Result<()>
{
    if guest_dir().is_none() {
        return Ok(());
    }
    let mut cluster = TestCluster::start_simulated(3).await?;
    cluster.stop_operator().await;
    formed(&cluster).await?;
    // Formed over gRPC: the default transport of every service, Raft included.
    for i in 0..HOSTS.len() {
        assert!(raft_answered(&cluster, i, "grpc").await? > 0, "agent-{i}");
    }

    let k = cluster.kubectl();
    for (host, raft) in [("agent-1", "iroh"), ("agent-2", "dual")] {
        let patch = format!(r#"{{"spec":{{"transport":{{"default":"grpc","raft":"{raft}"}}}}}}"#);
        k.run(&["patch", "qh", host, "--type", "merge", "-p", &patch])
            .await?;
    }
    eventually(WAIT, "raft moved on agent-1 and agent-2", || async {
        let all = statuses(&cluster).await;
        let mode = |h: &str| all.get(h).and_then(|s| serving(s, "raft"));
        let moved = mode("agent-0") == Some(quiver_rpc::TransportMode::Grpc)
            && mode("agent-1") == Some(quiver_rpc::TransportMode::Iroh)
            && mode("agent-2") == Some(quiver_rpc::TransportMode::Dual);
        Ok(moved.then_some(()))
    })
    .await?;
    let iroh_before = raft_answered(&cluster, 1, "iroh").await?;

    // Puts commit through the leader from every agent, and every lease keeps being renewed.
    let mut uids = Vec::new();
    for (i, host) in HOSTS.iter().enumerate() {
        let req = put(&format!("after-{host}"));
        uids.push(req.uid.clone());
        cluster.agent_client(i).await?.put_vm(req).await?;
    }
    formed(&cluster).await?;
    eventually(WAIT, "agent-1 answers Raft over Iroh", || async {
        Ok((raft_answered(&cluster, 1, "iroh").await? > iroh_before).then_some(()))
    })
    .await?;
    let grpc_on_1 = raft_answered(&cluster, 1, "grpc").await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        raft_answered(&cluster, 1, "grpc").await?,
        grpc_on_1,
        "agent-1 answers no Raft call over gRPC once its Raft service is on Iroh"
    );
    let refused = cluster
        .agent_client(0)
        .await?
        .set_transports(vec![proto::ServiceTransport {
            service: "vm".into(),
            mode: proto::TransportMode::Iroh as i32,
        }])
        .await
        .expect_err("SetTransports in a group");
    assert!(refused.to_string().contains("Raft group"), "{refused}");

    cluster.restart_agent("agent-1").await?;
    eventually(WAIT, "restarted agent-1 serving Raft over Iroh", || async {
        let all = statuses(&cluster).await;
        let mode = all.get("agent-1").and_then(|s| serving(s, "raft"));
        Ok((mode == Some(quiver_rpc::TransportMode::Iroh)).then_some(()))
    })
    .await?;
    formed(&cluster).await?;
    for uid in &uids {
        eventually(WAIT, "a put VM running", || async {
            for i in 0..HOSTS.len() {
                let vms = cluster.agent_client(i).await?.list_vms().await?;
                if vms
                    .iter()
                    .any(|v| &v.uid == uid && v.phase == proto::Phase::Running as i32)
                {
                    return Ok(Some(()));
                }
            }
            Ok(None)
        })
        .await?;
    }
    cluster.shutdown().await;
    Ok(())
}
