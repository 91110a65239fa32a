//! The Raft service behind the agent's own transport adapters, as an agent in a Raft group runs
//! it: three members on loopback, each serving every service over gRPC (mutual TLS from one
//! CA) and Iroh with per-service modes, each calling its peers over both (Iroh first, the
//! other transport when a peer refuses). The group forms and commits with Raft served on
//! gRPC only, on Iroh only, and on both; and commits keep succeeding while the Admin service
//! moves the Raft service of the two members that make the quorum between transports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quiver_agent::metrics::Metrics;
use quiver_agent::services::{AgentInfo, IrohHealth, Services, ServingModes};
use quiver_agent::transport::{grpc, iroh::IrohAdapter};
use quiver_agent::vm::simulated::SimulatedDriver;
use quiver_agent::vm::spec::Limits;
use quiver_agent::vm::{ImageRoots, ManagerConfig, VmManager};
use quiver_raft::network::{GrpcAddr, Network, NodeAddr};
use quiver_raft::service::RaftService;
use quiver_raft::{Command, RaftNode, Timing};
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::iroh::{EndpointAddr, SecretKey};
use quiver_rpc::pki::Ca;
use quiver_rpc::{
    ALPN, AgentClient, Allowlist, ClientConfig, EndpointOptions, PeerTable, RpcClient, RpcServer,
    ServerConfig, TransportMode, TransportModes, Wire, proto,
};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(30);

struct Member {
    node: RaftNode,
    metrics: Arc<Metrics>,
    /// The Admin service's client, over gRPC with the operator's certificate.
    admin: AgentClient,
    router: Router,
    stop: watch::Sender<bool>,
    grpc: tokio::task::JoinHandle<()>,
    addr: NodeAddr,
    _dir: tempfile::TempDir,
}

impl Member {
    async fn start(
        i: u64,
        key: SecretKey,
        allowed: &Allowlist,
        ca: &Ca,
        raft: TransportMode,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("agent-{i}");
        let tls = ca
            .issue_server(std::slice::from_ref(&name))
            .expect("certificate")
            .write(ca, dir.path(), "agent")
            .expect("write certificate");
        let endpoint = EndpointOptions::new(key)
            .bind_addr("127.0.0.1:0".parse().expect("addr"))
            .allowlist(allowed.clone())
            .bind()
            .await
            .expect("endpoint");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gRPC");
        let grpc_socket = listener.local_addr().expect("gRPC address");
        let addr = NodeAddr {
            iroh: EndpointAddr::new(endpoint.id()).with_ip_addr(endpoint.bound_sockets()[0]),
            grpc: Some(GrpcAddr {
                name: name.clone(),
                socket: grpc_socket,
            }),
        };
        let client = RpcClient::new(endpoint.clone(), ClientConfig::default());
        let network = Network::dual(client, Some(tls.clone()), Wire::Iroh);
        let timing = Timing {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(500),
            election_max: Duration::from_millis(1000),
        };
        // As in an agent: the node id is the key's, which the Iroh caller check matches.
        let id = quiver_raft::node_id(&endpoint.id());
        let node = RaftNode::start(dir.path(), id, network, timing)
            .await
            .expect("raft node");
        let manager = VmManager::new(
            Arc::new(SimulatedDriver::new(Default::default())),
            ManagerConfig {
                data_dir: dir.path().to_owned(),
                host: name.clone(),
                limits: Limits {
                    max_cpus: 4,
                    max_memory_mib: 4096,
                },
                stop_grace: Duration::from_secs(1),
                image_roots: ImageRoots::new(vec![]),
                forward_address: Ipv4Addr::LOCALHOST.into(),
            },
        );
        let mut modes = TransportModes::all(TransportMode::Grpc);
        modes.set(quiver_rpc::ServiceName::Raft, raft);
        let metrics = Arc::new(Metrics::new());
        let peers = PeerTable::default();
        let services = Services::new(
            manager,
            AgentInfo {
                host_name: name.clone(),
                grpc_endpoint: grpc_socket.to_string(),
                endpoint_id: endpoint.id().to_string(),
                iroh_addresses: vec![],
                version: "test".into(),
                started_at_ms: 0,
            },
            metrics.clone(),
            ServingModes::new(modes),
            IrohHealth {
                peers: peers.clone(),
                access: allowed.clone(),
            },
            None,
            Some(RaftService::new(node.proposer.clone())),
        );
        let server = RpcServer::with_peers(
            IrohAdapter::new(services.clone()),
            ServerConfig::default(),
            peers,
        );
        let router = Router::builder(endpoint).accept(ALPN, server).spawn();
        let (stop, stopped) = watch::channel(false);
        let server_tls = tls.server_config().expect("server TLS");
        let grpc = tokio::spawn(async move {
            let mut stopped = stopped;
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            grpc::serve(services, listener, 4 << 20, Some(server_tls), shutdown)
                .await
                .expect("gRPC server");
        });
        let operator = ca
            .issue_client("quiver-operator")
            .expect("client certificate")
            .write(ca, &dir.path().join("operator"), "client")
            .expect("write client certificate");
        let admin = AgentClient::connect_tls(format!("https://{grpc_socket}"), &operator, &name)
            .await
            .expect("admin client");
        Self {
            node,
            metrics,
            admin,
            router,
            stop,
            grpc,
            addr,
            _dir: dir,
        }
    }

    /// Moves this member's Raft service through the Admin service, as the operator does.
    async fn serve_raft_on(&self, mode: TransportMode) {
        let change = proto::ServiceTransport {
            service: "raft".into(),
            mode: mode.to_proto() as i32,
        };
        let after = self
            .admin
            .set_transports(vec![change])
            .await
            .expect("SetTransports");
        let raft = after
            .iter()
            .find(|s| s.service == "raft")
            .expect("raft listed");
        assert_eq!(TransportMode::from_proto(raft.mode), Some(mode));
    }

    /// Raft calls this member answered on `wire` without an error.
    fn answered(&self, wire: Wire) -> u64 {
        self.metrics
            .methods()
            .iter()
            .filter(|m| m.transport == wire.as_str() && m.service == "Raft")
            .map(|m| m.requests - m.errors)
            .sum()
    }

    async fn stop(self) {
        self.node.raft.shutdown().await.expect("raft shutdown");
        self.router.shutdown().await.expect("router");
        let _ = self.stop.send(true);
        self.grpc.await.expect("gRPC server task");
    }
}

async fn group(raft: TransportMode) -> Vec<Member> {
    let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
    let allowed = Allowlist::new(keys.iter().map(SecretKey::public));
    let ca = Ca::generate().expect("CA");
    let mut members = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        members.push(Member::start(i as u64 + 1, key, &allowed, &ca, raft).await);
    }
    let nodes: BTreeMap<u64, openraft::BasicNode> = members
        .iter()
        .map(|m| (m.node.id, m.addr.to_node()))
        .collect();
    members[0]
        .node
        .raft
        .initialize(nodes)
        .await
        .expect("initialize");
    members[0]
        .node
        .raft
        .wait(Some(WAIT))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader is elected");
    members
}

fn host(n: u64) -> Command {
    Command::RegisterHost {
        name: format!("h{n}"),
        cpus: 1,
        memory_mib: 512,
        labels: BTreeMap::new(),
    }
}

/// Proposes from every member (followers forward to the leader), then checks that every
/// member applied all of it.
async fn commit_from_each(members: &[Member], first: u64) {
    for (n, member) in (first..).zip(members) {
        member.node.propose(host(n), WAIT).await.expect("committed");
    }
    let last = members[0].node.metrics().last_applied;
    for member in members {
        member
            .node
            .raft
            .wait(Some(WAIT))
            .applied_index_at_least(last.map(|l| l.index), "applied")
            .await
            .expect("applied everywhere");
    }
    let ledgers: Vec<_> = members.iter().map(|m| m.node.machine.ledger()).collect();
    assert!(ledgers.windows(2).all(|w| w[0] == w[1]), "{ledgers:#?}");
}

async fn forms_and_commits_with_raft_on(mode: TransportMode) {
    let members = group(mode).await;
    commit_from_each(&members, 0).await;
    for member in &members {
        let (grpc, iroh) = (member.answered(Wire::Grpc), member.answered(Wire::Iroh));
        match mode {
            TransportMode::Grpc => assert!(grpc > 0 && iroh == 0, "grpc {grpc}, iroh {iroh}"),
            TransportMode::Iroh => assert!(iroh > 0 && grpc == 0, "grpc {grpc}, iroh {iroh}"),
            // Iroh is preferred while both answer.
            TransportMode::Dual => assert!(iroh > 0, "grpc {grpc}, iroh {iroh}"),
        }
    }
    for member in members {
        member.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_serving_raft_on_grpc_only_forms_and_commits() {
    forms_and_commits_with_raft_on(TransportMode::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_serving_raft_on_iroh_only_forms_and_commits() {
    forms_and_commits_with_raft_on(TransportMode::Iroh).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_serving_raft_on_both_forms_and_commits() {
    forms_and_commits_with_raft_on(TransportMode::Dual).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_keep_succeeding_while_the_quorum_moves_raft_between_transports() {
    let members = group(TransportMode::Dual).await;
    commit_from_each(&members, 0).await;
    // Stop one follower: every commit now needs the leader and the other follower, so both
    // must keep reaching each other through every switch.
    let leader = members[0].node.metrics().current_leader.expect("leader");
    let (mut quorum, mut rest): (Vec<Member>, Vec<Member>) =
        members.into_iter().partition(|m| m.node.id == leader);
    let stopped = rest.pop().expect("a follower");
    stopped.stop().await;
    quorum.push(rest.pop().expect("the other follower"));
    let [lead, follower] = [&quorum[0], &quorum[1]];

    // The follower proposes without pause (forwarding to the leader, which replicates back).
    let committed = Arc::new(AtomicU64::new(0));
    let (done_tx, done) = watch::channel(false);
    let writer = {
        let node = follower.node.clone();
        let committed = committed.clone();
        tokio::spawn(async move {
            let mut n = 1000;
            while !*done.borrow() {
                node.propose(host(n), Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("proposal {n} failed during a switch: {e}"));
                committed.fetch_add(1, Ordering::SeqCst);
                n += 1;
            }
        })
    };
    let steps = [
        (follower, TransportMode::Grpc),
        (lead, TransportMode::Grpc),
        (follower, TransportMode::Iroh),
        (lead, TransportMode::Iroh),
        (follower, TransportMode::Dual),
        (lead, TransportMode::Grpc),
    ];
    for (member, mode) in steps {
        let before_answered = member.answered(Wire::Grpc) + member.answered(Wire::Iroh);
        member.serve_raft_on(mode).await;
        let before = committed.load(Ordering::SeqCst);
        let more = async {
            while committed.load(Ordering::SeqCst) < before + 5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, more)
            .await
            .unwrap_or_else(|_| panic!("no commits after moving raft to {mode}"));
        assert!(
            member.answered(Wire::Grpc) + member.answered(Wire::Iroh) > before_answered,
            "the member answered Raft calls after moving to {mode}"
        );
        if mode != TransportMode::Dual {
            let other = if mode == TransportMode::Grpc {
                Wire::Iroh
            } else {
                Wire::Grpc
            };
            let on_other = member.answered(other);
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(
                member.answered(other),
                on_other,
                "no Raft call is answered over {} once raft is on {mode}",
                other.as_str()
            );
        }
    }
    done_tx.send_replace(true);
    writer.await.expect("every proposal committed");
    assert!(committed.load(Ordering::SeqCst) >= 30);
    for member in quorum {
        member.stop().await;
    }
}
