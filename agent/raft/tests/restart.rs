//! A node stopped and started again on its database: the committed log id is saved with the
//! next durable write only, so the node may come back knowing less committed than it had
//! applied. It reports the last index of its log at start (the agent follows its ledger only
//! once it has applied that far again), and every acknowledged write is in its ledger again.

mod common;

use std::time::Duration;

use common::{timing, vm};
use openraft::{BasicNode, ServerState};
use quiver_raft::RaftNode;
use quiver_raft::network::Network;

const WAIT: Duration = Duration::from_secs(20);

async fn leads(node: &RaftNode) {
    node.raft
        .wait(Some(WAIT))
        .state(ServerState::Leader, "node 1 leads")
        .await
        .expect("node 1 leads its group of one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_knows_its_last_logged_index_and_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = RaftNode::start(dir.path(), 1, Network::grpc(None), timing())
        .await
        .expect("node");
    assert_eq!(node.last_logged_at_start, 0, "a new node has no log");
    node.initialize(BasicNode::new("n1"))
        .await
        .expect("initialize");
    leads(&node).await;
    let mut last = 0;
    for i in 0..10 {
        let outcome = node
            .propose(vm(&format!("vm-{i}")), WAIT)
            .await
            .expect("acknowledged");
        last = outcome.index;
    }
    node.raft.shutdown().await.expect("shutdown");
    drop(node);

    let node = RaftNode::start(dir.path(), 1, Network::grpc(None), timing())
        .await
        .expect("restarted");
    assert!(
        node.last_logged_at_start >= last,
        "the log's last index at start ({}) covers every acknowledged write ({last})",
        node.last_logged_at_start
    );
    leads(&node).await;
    let caught_up = tokio::time::timeout(WAIT, async {
        while node.machine.applied_index() < node.last_logged_at_start {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(caught_up.is_ok(), "the ledger reaches the log's last index");
    let known = node.machine.with_ledger(|l| l.vms.len());
    assert_eq!(known, 10, "every acknowledged put is in the ledger again");
    node.raft.shutdown().await.expect("shutdown");
}
