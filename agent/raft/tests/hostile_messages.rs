//! The Raft service takes its requests from the network. This test sends a running node (a
//! group of one, with acknowledged writes) seeded random Raft messages: random bytes,
//! truncated messages, and well-formed votes, appends and snapshot chunks whose terms, log
//! indexes and offsets are extreme. After them the node must still be alive (no panic in
//! openraft's core, no abort from a huge allocation), commit a new write, and hold every
//! write it acknowledged before.
//!
//! A failure names its seed; `QUIVER_SEED=<n>` replays that one sequence.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, SnapshotMeta, StoredMembership, Vote,
};
use quiver_raft::network::Network;
use quiver_raft::service::RaftService;
use quiver_raft::{Batch, Command, RaftNode, Timing, TypeConfig, wire};
use quiver_rpc::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: u64 = 12;
const MESSAGES: usize = 60;
const WAIT: Duration = Duration::from_secs(20);

fn number(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..8) {
        0 => 0,
        1 => u64::MAX,
        2 => u64::MAX - 1,
        3 => 1 << 62,
        4 => 1 << 40,
        5 => rng.random(),
        _ => rng.random_range(1..64),
    }
}

fn node(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..4) {
        0 => 1,
        1 => u64::MAX,
        _ => rng.random_range(2..5),
    }
}

fn vote(rng: &mut StdRng) -> Vote<u64> {
    let mut vote = Vote::new(number(rng), node(rng));
    if rng.random() {
        vote.commit();
    }
    vote
}

fn log_id(rng: &mut StdRng) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(number(rng), node(rng)), number(rng))
}

fn message(rng: &mut StdRng) -> (Method, Vec<u8>) {
    let encoded = |v: Result<Vec<u8>, wire::Error>| v.expect("a request serializes");
    let (method, bytes) = match rng.random_range(0..4) {
        0 => (
            Method::RaftVote,
            encoded(wire::encode(&VoteRequest::new(
                vote(rng),
                rng.random::<bool>().then(|| log_id(rng)),
            ))),
        ),
        1 => {
            let entries = (0..rng.random_range(0..3))
                .map(|_| Entry::<TypeConfig> {
                    log_id: log_id(rng),
                    payload: EntryPayload::Normal(Batch(vec![Command::Rebalance])),
                })
                .collect();
            let request = AppendEntriesRequest::<TypeConfig> {
                vote: vote(rng),
                prev_log_id: rng.random::<bool>().then(|| log_id(rng)),
                entries,
                leader_commit: rng.random::<bool>().then(|| log_id(rng)),
            };
            (Method::RaftAppendEntries, encoded(wire::encode(&request)))
        }
        2 => {
            let request = InstallSnapshotRequest::<TypeConfig> {
                vote: vote(rng),
                meta: SnapshotMeta {
                    last_log_id: rng.random::<bool>().then(|| log_id(rng)),
                    last_membership: StoredMembership::default(),
                    // Few ids, so that later chunks often continue an earlier one.
                    snapshot_id: format!("s{}", rng.random_range(0..2)),
                },
                offset: if rng.random() { 0 } else { number(rng) },
                data: vec![7; rng.random_range(0..64)],
                done: rng.random_range(0..4) == 0,
            };
            (Method::RaftInstallSnapshot, encoded(wire::encode(&request)))
        }
        _ => (
            Method::RaftPropose,
            (0..rng.random_range(0..64)).map(|_| rng.random()).collect(),
        ),
    };
    // Sometimes cut short: the message is then malformed.
    if rng.random_range(0..5) == 0 && !bytes.is_empty() {
        let cut = rng.random_range(0..bytes.len());
        return (method, bytes[..cut].to_vec());
    }
    (method, bytes)
}

fn host(name: &str) -> Command {
    Command::RegisterHost {
        name: name.to_owned(),
        cpus: 2,
        memory_mib: 1024,
        labels: BTreeMap::new(),
    }
}

async fn run(seed: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let timing = Timing {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(200),
        election_max: Duration::from_millis(400),
    };
    let node = RaftNode::start(dir.path(), 1, Network::grpc(None), timing)
        .await
        .expect("node");
    node.initialize(BasicNode::new("n1"))
        .await
        .expect("initialize");
    for name in ["a", "b"] {
        node.propose(host(name), WAIT)
            .await
            .expect("an acknowledged write");
    }

    let service = RaftService::new(node.proposer.clone());
    let mut rng = StdRng::seed_from_u64(seed);
    for _ in 0..MESSAGES {
        let (method, bytes) = message(&mut rng);
        // Any answer will do (most are refusals); what counts is what follows.
        let _ = tokio::time::timeout(Duration::from_secs(2), service.handle(method, &bytes, None))
            .await;
    }

    let running = node.raft.metrics().borrow().running_state.clone();
    assert!(running.is_ok(), "seed {seed}: Raft stopped: {running:?}");
    node.propose(host("c"), WAIT)
        .await
        .unwrap_or_else(|e| panic!("seed {seed}: no write after the messages: {e}"));
    let hosts: Vec<String> = node.machine.ledger().hosts.into_keys().collect();
    for name in ["a", "b", "c"] {
        assert!(
            hosts.iter().any(|h| h == name),
            "seed {seed}: the acknowledged host {name} is gone: {hosts:?}"
        );
    }
    node.raft.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_raft_messages_leave_the_node_alive_and_its_writes_intact() {
    let seeds: Vec<u64> = match std::env::var("QUIVER_SEED") {
        Ok(seed) => vec![seed.parse().expect("QUIVER_SEED is a number")],
        Err(_) => (0..SEEDS).collect(),
    };
    for seed in seeds {
        eprintln!("seed {seed}");
        run(seed).await;
    }
}

/// The other side of the guard: a leader's real snapshot, sent in chunks through the service
/// to a fresh node, passes the checks and installs the same ledger. Sent by an authenticated
/// caller that is not the leader it names, the same snapshot is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_snapshot_in_chunks_is_installed() {
    use openraft::storage::RaftStateMachine as _;
    let timing = Timing::default();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = RaftNode::start(dir_a.path(), 1, Network::grpc(None), timing)
        .await
        .expect("node a");
    a.initialize(BasicNode::new("a")).await.expect("initialize");
    for name in ["h1", "h2", "h3"] {
        a.propose(host(name), WAIT).await.expect("a write");
    }
    a.raft.trigger().snapshot().await.expect("snapshot");
    let mut metrics = a.raft.metrics();
    tokio::time::timeout(WAIT, metrics.wait_for(|m| m.snapshot.is_some()))
        .await
        .expect("a snapshot in time")
        .expect("metrics");
    let mut machine = a.machine.clone();
    let snapshot = machine
        .get_current_snapshot()
        .await
        .expect("read snapshot")
        .expect("a snapshot");
    let data = snapshot.snapshot.into_inner();
    let vote = a.metrics().vote;

    let b = RaftNode::start(dir_b.path(), 2, Network::grpc(None), timing)
        .await
        .expect("node b");
    let service = RaftService::new(b.proposer.clone());
    let whole = InstallSnapshotRequest::<TypeConfig> {
        vote,
        meta: snapshot.meta.clone(),
        offset: 0,
        data: data.clone(),
        done: true,
    };
    let bytes = wire::encode(&whole).expect("serialize");
    let impostor = service
        .handle(Method::RaftInstallSnapshot, &bytes, Some(7))
        .await
        .expect_err("a snapshot sent on node 1's behalf by node 7");
    assert_eq!(
        impostor.code,
        quiver_rpc::Code::PermissionDenied,
        "{impostor}"
    );
    assert!(
        impostor.message.contains("vote.leader_id.node_id"),
        "{impostor}"
    );
    assert!(b.machine.ledger().hosts.is_empty());

    let chunks: Vec<&[u8]> = data.chunks(data.len().div_ceil(3)).collect();
    let mut offset = 0;
    for (i, chunk) in chunks.iter().enumerate() {
        let request = InstallSnapshotRequest::<TypeConfig> {
            vote,
            meta: snapshot.meta.clone(),
            offset,
            data: chunk.to_vec(),
            done: i + 1 == chunks.len(),
        };
        let bytes = wire::encode(&request).expect("serialize");
        service
            .handle(Method::RaftInstallSnapshot, &bytes, Some(a.id))
            .await
            .unwrap_or_else(|e| panic!("chunk {i} refused: {e}"));
        offset += chunk.len() as u64;
    }
    assert_eq!(b.machine.ledger(), a.machine.ledger());
    assert_eq!(b.machine.ledger().hosts.len(), 3);
    b.raft.shutdown().await.expect("shutdown");
    a.raft.shutdown().await.expect("shutdown");
}
