//! The proposer on a real node (redb on disk): concurrent proposals share log entries, each
//! caller gets its own command's outcome, and entries that cannot commit do not keep what is
//! proposed behind them out of the log.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{timing, vm};
use openraft::{BasicNode, ServerState};
use quiver_raft::network::Network;
use quiver_raft::proposer::SLOW_AFTER;
use quiver_raft::{Command, ProposeError, RaftNode};
use quiver_rpc::iroh::SecretKey;

const WAIT: Duration = Duration::from_secs(20);
const PROPOSALS: usize = 300;

async fn node(dir: &std::path::Path) -> RaftNode {
    RaftNode::start(dir, 1, Network::grpc(None), timing())
        .await
        .expect("node")
}

/// A node that leads a group of one (initializing returns before it is elected).
async fn leader(dir: &std::path::Path) -> RaftNode {
    let node = node(dir).await;
    node.initialize(BasicNode::new("n1"))
        .await
        .expect("initialize");
    node.raft
        .wait(Some(WAIT))
        .state(ServerState::Leader, "node 1 leads")
        .await
        .expect("node 1 leads its group of one");
    node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_proposals_share_entries_and_each_gets_its_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = leader(dir.path()).await;
    node.propose(
        Command::RegisterHost {
            name: "h".into(),
            cpus: 1_000,
            memory_mib: 1_000_000,
            labels: BTreeMap::new(),
        },
        WAIT,
    )
    .await
    .expect("host");
    let first_index = node.machine.applied_index();

    let writes: Vec<_> = (0..PROPOSALS)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                let uid = format!("vm-{i}");
                (uid.clone(), node.proposer.write(vm(&uid)).await)
            })
        })
        .collect();
    let mut indexes = Vec::new();
    for write in writes {
        let (uid, outcome) = write.await.expect("join");
        let outcome = outcome.unwrap_or_else(|e| panic!("{uid}: {e}"));
        // Its own outcome: the VM it put, placed on the one host.
        assert_eq!(outcome.moved.len(), 1, "{uid}: {outcome:?}");
        assert_eq!(outcome.moved[0].0, uid);
        assert_eq!(
            outcome.moved[0].1.as_ref().map(|a| a.host.as_str()),
            Some("h")
        );
        indexes.push(outcome.index);
    }

    let ledger = node.machine.ledger();
    assert_eq!(ledger.vms.len(), PROPOSALS);
    assert_eq!(ledger.assignments.len(), PROPOSALS);
    let entries = node.machine.applied_index() - first_index;
    indexes.sort_unstable();
    indexes.dedup();
    assert_eq!(usize::try_from(entries).expect("count"), indexes.len());
    assert!(
        indexes.len() < PROPOSALS / 2,
        "{PROPOSALS} concurrent proposals took {} log entries: they were not batched",
        indexes.len()
    );
}

#[tokio::test]
async fn a_node_that_does_not_lead_refuses_with_not_leader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node(dir.path()).await;
    // Never initialized: no group, no leader.
    let refused = node.proposer.write(vm("a")).await;
    assert_eq!(refused, Err(ProposeError::NotLeader { leader: None }));
}

/// A member that never answers: a gRPC address nothing listens on.
fn unreachable_member() -> BasicNode {
    let id = SecretKey::generate().public();
    BasicNode::new(format!("{id}@127.0.0.1:9;grpc=gone@127.0.0.1:9"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_that_cannot_commit_free_their_slots_for_what_follows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = leader(dir.path()).await;
    for id in [2, 3] {
        node.raft
            .add_learner(id, unreachable_member(), false)
            .await
            .expect("learner");
    }
    // Voters {1, 2, 3}, two of which never answer: from the joint membership on, nothing
    // commits, while node 1 stays the leader and appends what it is given.
    let raft = node.raft.clone();
    tokio::spawn(async move {
        raft.change_membership(BTreeSet::from([1, 2, 3]), false)
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = node.metrics().last_log_index.expect("a log");
    assert!(node.is_leader());

    // More stalled proposals than slots, each in an entry of its own.
    const STALLED: u64 = 4;
    let mut writes = Vec::new();
    for i in 0..STALLED {
        let proposer = node.proposer.clone();
        let write = async move { proposer.write(vm(&format!("stalled-{i}"))).await };
        writes.push(tokio::spawn(write));
        tokio::time::sleep(SLOW_AFTER + Duration::from_millis(300)).await;
    }
    assert!(
        writes.iter().all(|w| !w.is_finished()),
        "a write finished: the group was not stalled"
    );
    let appended = node.metrics().last_log_index.expect("a log") - before;
    assert_eq!(
        appended,
        STALLED,
        "{STALLED} proposals made {:?} apart appended {appended} entries: stalled entries kept \
         their slots",
        SLOW_AFTER + Duration::from_millis(300)
    );
}
