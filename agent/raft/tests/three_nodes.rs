//! Three Raft nodes over real Iroh on loopback, each with its redb store: they elect a leader,
//! replicate ledger commands to identical ledgers, and when the leader is stopped the other two
//! elect a new one and keep committing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Raft};
use quiver_raft::ledger::DesiredVm;
use quiver_raft::network::{Network, RaftDispatch, node};
use quiver_raft::{Command, LogStore, RaftDb, StateMachine, TypeConfig};
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::iroh::{EndpointAddr, SecretKey};
use quiver_rpc::{
    ALPN, Allowlist, ClientConfig, EndpointOptions, RpcClient, RpcServer, ServerConfig,
};

const WAIT: Duration = Duration::from_secs(30);

struct Node {
    id: u64,
    raft: Raft<TypeConfig>,
    machine: StateMachine,
    router: Router,
    addr: EndpointAddr,
    _dir: tempfile::TempDir,
}

async fn start(id: u64, key: SecretKey, allowed: &Allowlist) -> Node {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = RaftDb::open(&dir.path().join("raft.redb")).expect("db");
    let machine = StateMachine::open(db.clone()).await.expect("state machine");
    let endpoint = EndpointOptions::new(key)
        .bind_addr("127.0.0.1:0".parse().expect("addr"))
        .allowlist(allowed.clone())
        .bind()
        .await
        .expect("endpoint");
    let socket = endpoint.bound_sockets()[0];
    let addr = EndpointAddr::new(endpoint.id()).with_ip_addr(socket);
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        ..Config::default()
    };
    let network = Network::new(RpcClient::new(endpoint.clone(), ClientConfig::default()));
    let raft = Raft::new(
        id,
        Arc::new(config.validate().expect("config")),
        network,
        LogStore::new(db),
        machine.clone(),
    )
    .await
    .expect("raft");
    let server = RpcServer::new(RaftDispatch::new(raft.clone()), ServerConfig::default());
    let router = Router::builder(endpoint).accept(ALPN, server).spawn();
    Node {
        id,
        raft,
        machine,
        router,
        addr,
        _dir: dir,
    }
}

async fn leader_among(nodes: &[&Node]) -> u64 {
    let first = &nodes[0].raft;
    let metrics = first
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader is elected");
    metrics.current_leader.expect("leader")
}

fn host(name: &str) -> Command {
    Command::RegisterHost {
        name: name.into(),
        cpus: 4,
        memory_mib: 4096,
        labels: BTreeMap::new(),
    }
}

fn vm(uid: &str) -> Command {
    Command::PutVm(DesiredVm {
        uid: uid.into(),
        generation: 1,
        cpus: 1,
        memory_mib: 512,
        ..DesiredVm::default()
    })
}

/// Writes `command` through the leader and waits until every node in `nodes` applied it.
async fn commit(nodes: &[&Node], leader: u64, command: Command) {
    let leader = nodes.iter().find(|n| n.id == leader).expect("leader node");
    let written = leader.raft.client_write(command).await.expect("write");
    let index = written.log_id.index;
    for node in nodes {
        node.raft
            .wait(Some(WAIT))
            .applied_index_at_least(Some(index), "applied")
            .await
            .expect("applied on every node");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_the_ledger_and_survive_losing_the_leader() {
    let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let allowed = Allowlist::new(keys.iter().map(SecretKey::public));
    let mut nodes = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        nodes.push(start(i as u64 + 1, key, &allowed).await);
    }
    let members: BTreeMap<u64, openraft::BasicNode> =
        nodes.iter().map(|n| (n.id, node(&n.addr))).collect();
    nodes[0].raft.initialize(members).await.expect("initialize");

    let all: Vec<&Node> = nodes.iter().collect();
    let leader = leader_among(&all).await;
    commit(&all, leader, host("a")).await;
    commit(&all, leader, host("b")).await;
    commit(&all, leader, vm("v1")).await;
    let ledgers: Vec<_> = nodes.iter().map(|n| n.machine.ledger()).collect();
    assert!(ledgers.windows(2).all(|w| w[0] == w[1]), "{ledgers:#?}");
    assert_eq!(ledgers[0].assignments["v1"].epoch, 1);

    // Stop the leader; the other two still make a quorum.
    let (gone, rest): (Vec<Node>, Vec<Node>) = nodes.into_iter().partition(|n| n.id == leader);
    for node in gone {
        node.raft.shutdown().await.expect("shutdown");
        node.router.shutdown().await.expect("router");
    }
    let rest: Vec<&Node> = rest.iter().collect();
    let new_leader = rest[0]
        .raft
        .wait(Some(WAIT))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != leader),
            "a new leader",
        )
        .await
        .expect("a new leader is elected")
        .current_leader
        .expect("leader");
    commit(&rest, new_leader, vm("v2")).await;
    let (a, b) = (rest[0].machine.ledger(), rest[1].machine.ledger());
    assert_eq!(a, b);
    assert!(a.assignments.contains_key("v2"));
}
