//! Three Raft nodes over real loopback networking, each with its redb store: they elect a
//! leader, replicate ledger commands to identical ledgers, and when the leader is stopped the
//! other two elect a new one and keep committing. Run over Iroh only, over gRPC only (mutual
//! TLS from one CA), and with dual clients where one node serves gRPC only (its peers fall
//! back from Iroh).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::{Config, Raft};
use quiver_raft::ledger::DesiredVm;
use quiver_raft::network::{GrpcAddr, Network, NodeAddr, RaftDispatch};
use quiver_raft::service::serve_grpc;
use quiver_raft::{Batch, Command, LogStore, Proposer, RaftDb, StateMachine, TypeConfig};
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::iroh::{EndpointAddr, SecretKey};
use quiver_rpc::pki::{Ca, TlsFiles};
use quiver_rpc::{
    ALPN, Allowlist, CallContext, ClientConfig, Code, Dispatch, EndpointOptions, Reply, RpcClient,
    RpcError, RpcServer, ServerConfig, Wire,
};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// What a node serves Raft on and how it calls its peers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Iroh,
    Grpc,
    /// Calls over both (Iroh first); serves over both unless `serves_iroh` is false, when
    /// its Iroh listener answers `UNIMPLEMENTED`, as an agent serving Raft on gRPC only does.
    Dual {
        serves_iroh: bool,
    },
}

/// An Iroh listener whose node does not serve Raft there.
#[derive(Clone)]
struct NotServed;

impl Dispatch for NotServed {
    async fn call(&self, service: u16, _: u16, _: bytes::Bytes, _: CallContext) -> Reply {
        let message = format!("service {service} is not served over iroh here");
        Reply::Unary(Err(RpcError::new(Code::Unimplemented, message)))
    }

    fn changes_state(&self, _: u16, _: u16) -> bool {
        true
    }
}

struct Node {
    id: u64,
    raft: Raft<TypeConfig>,
    machine: StateMachine,
    router: Router,
    grpc: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    addr: NodeAddr,
    _dir: tempfile::TempDir,
}

impl Node {
    async fn stop(self) {
        self.raft.shutdown().await.expect("shutdown");
        self.router.shutdown().await.expect("router");
        if let Some((stop, served)) = self.grpc {
            let _ = stop.send(());
            served.await.expect("gRPC server task");
        }
    }
}

async fn start(id: u64, key: SecretKey, allowed: &Allowlist, ca: &Ca, how: Transport) -> Node {
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
    let name = format!("node-{id}");
    let tls = ca
        .issue_server(std::slice::from_ref(&name))
        .expect("certificate")
        .write(ca, dir.path(), "node")
        .expect("write certificate");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind gRPC");
    let grpc_addr = GrpcAddr {
        name,
        socket: listener.local_addr().expect("gRPC address"),
    };
    let addr = NodeAddr {
        iroh: EndpointAddr::new(endpoint.id()).with_ip_addr(socket),
        grpc: (how != Transport::Iroh).then_some(grpc_addr),
    };
    let config = Config {
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        ..Config::default()
    };
    let client = RpcClient::new(endpoint.clone(), ClientConfig::default());
    let network = match how {
        Transport::Iroh => Network::iroh(client),
        Transport::Grpc => Network::grpc(Some(tls.clone())),
        Transport::Dual { .. } => Network::dual(client, Some(tls.clone()), Wire::Iroh),
    };
    let raft = Raft::new(
        id,
        Arc::new(config.validate().expect("config")),
        network,
        LogStore::new(db),
        machine.clone(),
    )
    .await
    .expect("raft");
    let serves_iroh = matches!(how, Transport::Iroh | Transport::Dual { serves_iroh: true });
    let router = if serves_iroh {
        let server = RpcServer::new(
            RaftDispatch::new(Proposer::start(raft.clone())),
            ServerConfig::default(),
        );
        Router::builder(endpoint).accept(ALPN, server).spawn()
    } else {
        let server = RpcServer::new(NotServed, ServerConfig::default());
        Router::builder(endpoint).accept(ALPN, server).spawn()
    };
    let grpc = (how != Transport::Iroh).then(|| {
        let (stop, stopped) = oneshot::channel::<()>();
        let server_tls = TlsFiles::server_config(&tls).expect("server TLS");
        let served = tokio::spawn(serve_grpc(
            Proposer::start(raft.clone()),
            listener,
            Some(server_tls),
            async {
                let _ = stopped.await;
            },
        ));
        let served = tokio::spawn(async move {
            served.await.expect("join").expect("gRPC server");
        });
        (stop, served)
    });
    Node {
        id,
        raft,
        machine,
        router,
        grpc,
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
    let written = leader
        .raft
        .client_write(Batch(vec![command]))
        .await
        .expect("write");
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
async fn over_iroh_three_nodes_replicate_the_ledger_and_survive_losing_the_leader() {
    replicate_and_survive_losing_the_leader([Transport::Iroh; 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_grpc_three_nodes_replicate_the_ledger_and_survive_losing_the_leader() {
    replicate_and_survive_losing_the_leader([Transport::Grpc; 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dual_nodes_reach_a_node_serving_grpc_only_and_survive_losing_the_leader() {
    let both = Transport::Dual { serves_iroh: true };
    let grpc_only = Transport::Dual { serves_iroh: false };
    replicate_and_survive_losing_the_leader([both, both, grpc_only]).await;
}

async fn replicate_and_survive_losing_the_leader(transports: [Transport; 3]) {
    let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let allowed = Allowlist::new(keys.iter().map(SecretKey::public));
    let ca = Ca::generate().expect("CA");
    let mut nodes = Vec::new();
    for (key, how) in keys.into_iter().zip(transports) {
        // As in an agent: the node id is the key's, so the Iroh caller check can match them.
        let id = quiver_raft::node_id(&key.public());
        nodes.push(start(id, key, &allowed, &ca, how).await);
    }
    let members: BTreeMap<u64, openraft::BasicNode> =
        nodes.iter().map(|n| (n.id, n.addr.to_node())).collect();
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
        node.stop().await;
    }
    let live: Vec<&Node> = rest.iter().collect();
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
    commit(&live, new_leader, vm("v2")).await;
    let (a, b) = (rest[0].machine.ledger(), rest[1].machine.ledger());
    assert_eq!(a, b);
    assert!(a.assignments.contains_key("v2"));
    for node in rest {
        node.stop().await;
    }
}
