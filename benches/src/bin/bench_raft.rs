//! Raft commit latency and throughput: three `quiver-raft` nodes in one process on loopback,
//! each on its own redb file (durable commits: fsync), proposals through `RaftNode::propose`
//! on the leader (the path agents use) of a ledger `RenewLease`, with 1, 16 and 64 concurrent
//! writers, over Iroh (`quiver/rpc/1`) and over gRPC (mutual TLS). Next to two floors from the
//! same run: a bare redb write transaction committed durably (one writer: redb runs one write
//! transaction at a time), and the same three nodes over Iroh with redb in memory (the same
//! storage code with no disk: what openraft, the network and the ledger cost without fsync).
//!
//! Run: `cargo run --release -p quiver-benches --bin bench-raft` (`-- --smoke`: a few hundred
//! commits, writes nothing; `-- --no-write`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use quiver_benches::{Samples, docs_path, fmt_duration, write_section};
use quiver_raft::network::{GrpcAddr, Network, NodeAddr, RaftDispatch};
use quiver_raft::service::serve_grpc;
use quiver_raft::{Command, RaftDb, RaftNode, Timing};
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::iroh::{EndpointAddr, SecretKey};
use quiver_rpc::pki::Ca;
use quiver_rpc::{
    ALPN, Allowlist, ClientConfig, EndpointOptions, RpcClient, RpcServer, ServerConfig,
};
use tokio::sync::watch;

const WRITERS: [usize; 3] = [1, 16, 64];
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Wire {
    Iroh,
    Grpc,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Storage {
    Disk,
    Memory,
}

/// Three nodes, their servers, and the leader.
struct Group {
    leader: RaftNode,
    nodes: Vec<RaftNode>,
    routers: Vec<Router>,
    stop: watch::Sender<bool>,
    _dirs: Vec<tempfile::TempDir>,
}

impl Group {
    async fn start(wire: Wire, storage: Storage) -> anyhow::Result<Self> {
        let keys: Vec<SecretKey> = (0..3).map(|_| SecretKey::generate()).collect();
        let allowed = Allowlist::new(keys.iter().map(SecretKey::public));
        let ca = Ca::generate()?;
        let (stop, stopped) = watch::channel(false);
        let timing = Timing::default();
        let (mut nodes, mut routers, mut dirs, mut members) = (vec![], vec![], vec![], vec![]);
        for (i, key) in (1..).zip(keys) {
            // As in an agent: the node id is the key's (the Raft service checks Iroh callers).
            let id = quiver_raft::node_id(&key.public());
            let dir = tempfile::tempdir()?;
            let name = format!("node-{i}");
            let tls =
                ca.issue_server(std::slice::from_ref(&name))?
                    .write(&ca, dir.path(), "node")?;
            let endpoint = EndpointOptions::new(key)
                .bind_addr("127.0.0.1:0".parse()?)
                .allowlist(allowed.clone())
                .bind()
                .await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = NodeAddr {
                iroh: EndpointAddr::new(endpoint.id()).with_ip_addr(endpoint.bound_sockets()[0]),
                grpc: Some(GrpcAddr {
                    name,
                    socket: listener.local_addr()?,
                }),
            };
            let network = match wire {
                Wire::Iroh => {
                    Network::iroh(RpcClient::new(endpoint.clone(), ClientConfig::default()))
                }
                Wire::Grpc => Network::grpc(Some(tls.clone())),
            };
            let node = match storage {
                Storage::Disk => RaftNode::start(dir.path(), id, network, timing).await,
                Storage::Memory => {
                    RaftNode::start_in_memory(RaftDb::in_memory()?, id, network, timing).await
                }
            }
            .map_err(anyhow::Error::msg)?;
            let server = RpcServer::new(
                RaftDispatch::new(node.proposer.clone()),
                ServerConfig::default(),
            );
            routers.push(Router::builder(endpoint).accept(ALPN, server).spawn());
            if wire == Wire::Grpc {
                let mut stopped = stopped.clone();
                let shutdown = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                let served = serve_grpc(
                    node.proposer.clone(),
                    listener,
                    Some(tls.server_config()?),
                    shutdown,
                );
                tokio::spawn(async move {
                    if let Err(e) = served.await {
                        eprintln!("gRPC server: {e}");
                    }
                });
            }
            members.push((id, addr.to_node()));
            nodes.push(node);
            dirs.push(dir);
        }
        nodes[0]
            .raft
            .initialize(members.into_iter().collect::<BTreeMap<_, _>>())
            .await?;
        let leader = nodes[0]
            .raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await?
            .current_leader
            .ok_or_else(|| anyhow::anyhow!("no leader"))?;
        let leader = nodes
            .iter()
            .find(|n| n.id == leader)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("leader {leader} is not a node"))?;
        let host = Command::RegisterHost {
            name: "bench".into(),
            cpus: 1,
            memory_mib: 1024,
            labels: BTreeMap::new(),
        };
        leader.propose(host, PROPOSE_TIMEOUT).await?;
        Ok(Self {
            leader,
            nodes,
            routers,
            stop,
            _dirs: dirs,
        })
    }

    /// `commits` renewals from `writers` concurrent writers (each waiting for its commit
    /// before the next): every commit's latency, and the wall time of the whole run.
    async fn run(&self, writers: usize, commits: usize) -> anyhow::Result<(Samples, Duration)> {
        let per_writer = commits.div_ceil(writers);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..writers {
            let leader = self.leader.clone();
            tasks.push(tokio::spawn(async move {
                let mut samples = Samples::default();
                for _ in 0..per_writer {
                    let renew = Command::RenewLease {
                        host: "bench".into(),
                        now_ms: 0,
                        ttl_ms: 6000,
                    };
                    let sent = Instant::now();
                    leader.propose(renew, PROPOSE_TIMEOUT).await?;
                    samples.push(sent.elapsed());
                }
                anyhow::Ok(samples)
            }));
        }
        let mut all = Samples::default();
        for task in tasks {
            all.extend(&task.await??);
        }
        Ok((all, started.elapsed()))
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        for node in &self.nodes {
            let _ = node.raft.shutdown().await;
        }
        for router in self.routers {
            let _ = router.shutdown().await;
        }
    }
}

/// A bare redb write transaction (one small row) committed durably, `commits` times.
fn redb_floor(dir: &Path, commits: usize) -> anyhow::Result<(Samples, Duration)> {
    const TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("floor");
    let db = redb::Database::create(dir.join("floor.redb"))?;
    let row = [7_u8; 160];
    let mut samples = Samples::default();
    let started = Instant::now();
    for i in 0..commits as u64 {
        let sent = Instant::now();
        let txn = db.begin_write()?;
        txn.open_table(TABLE)?.insert(i, row.as_slice())?;
        txn.commit()?;
        samples.push(sent.elapsed());
    }
    Ok((samples, started.elapsed()))
}

struct Row {
    storage: &'static str,
    transport: &'static str,
    writers: usize,
    commits: usize,
    p50: Duration,
    p99: Duration,
    per_second: f64,
}

impl Row {
    fn new(
        storage: &'static str,
        transport: &'static str,
        writers: usize,
        (mut samples, wall): (Samples, Duration),
    ) -> Self {
        Self {
            storage,
            transport,
            writers,
            commits: samples.len(),
            p50: samples.percentile(50.0),
            p99: samples.percentile(99.0),
            per_second: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        }
    }

    fn markdown(&self, floor: Duration) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {:.0} | {:.1}× |",
            self.storage,
            self.transport,
            self.writers,
            self.commits,
            fmt_duration(self.p50),
            fmt_duration(self.p99),
            self.per_second,
            self.p50.as_secs_f64() / floor.as_secs_f64().max(1e-9),
        )
    }
}

/// The 1-minute load average (`/proc/loadavg`): how busy the shared cores were.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The file system the temporary directories live on, as `/proc/mounts` names it.
fn tmp_filesystem() -> String {
    let tmp = std::env::temp_dir();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_, point, fs) = (fields.next()?, fields.next()?, fields.next()?);
            tmp.starts_with(point)
                .then(|| (point.len(), format!("{fs} at {point}")))
        })
        .max()
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    let commits = |writers: usize| match (smoke, writers) {
        (true, w) => 32 * w.min(4),
        (false, 1) => 1000,
        (false, 16) => 8000,
        (false, _) => 16000,
    };

    let load_before = load_average();
    let floor_dir = tempfile::tempdir()?;
    let floor_commits = if smoke { 100 } else { 2000 };
    let floor = Row::new(
        "redb alone",
        "none",
        1,
        redb_floor(floor_dir.path(), floor_commits)?,
    );
    println!(
        "redb commit: p50 {:?}, {:.0}/s",
        floor.p50, floor.per_second
    );
    let mut rows = Vec::new();
    for (storage, wire, s, t) in [
        (Storage::Memory, Wire::Iroh, "redb in memory", "Iroh"),
        (Storage::Disk, Wire::Iroh, "redb on disk", "Iroh"),
        (Storage::Disk, Wire::Grpc, "redb on disk", "gRPC (mTLS)"),
    ] {
        let group = Group::start(wire, storage).await?;
        group.run(1, if smoke { 5 } else { 50 }).await?;
        for writers in WRITERS {
            let row = Row::new(s, t, writers, group.run(writers, commits(writers)).await?);
            println!(
                "{s}, {t}, {writers} writers: p50 {:?}, p99 {:?}, {:.0}/s",
                row.p50, row.p99, row.per_second
            );
            rows.push(row);
        }
        group.stop().await;
    }

    let disk = |t: &str, w: usize| {
        rows.iter()
            .find(|r| r.storage == "redb on disk" && r.transport.starts_with(t) && r.writers == w)
    };
    let verdict = |met: bool| if met { "met" } else { "missed" };
    let mut targets = String::new();
    for t in ["Iroh", "gRPC"] {
        if let (Some(one), Some(many)) = (disk(t, 1), disk(t, 64)) {
            targets.push_str(&format!(
                "- {t}: 1-writer p50 {} against ≤ 1 ms: {}; {:.0} commits/s at 64 writers against ≥ 20,000: {}.\n",
                fmt_duration(one.p50),
                verdict(one.p50 <= Duration::from_millis(1)),
                many.per_second,
                verdict(many.per_second >= 20_000.0),
            ));
        }
    }
    let table: Vec<String> = std::iter::once(&floor)
        .chain(rows.iter())
        .map(|r| r.markdown(floor.p50))
        .collect();
    let load_after = load_average();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let body = format!(
        "## Raft: commit latency and throughput\n\n\
         Command: `cargo run --release -p quiver-benches --bin bench-raft` ({profile} build; {cores} cores shared with \
         whatever else runs: 1-minute load average {load_before} before the run, {load_after} after; temporary \
         directories on {fs}). Three `quiver-raft` nodes in one process on loopback, \
         each with its own redb database (durable commits: redb's `Durability::Immediate`, an fsync per commit), \
         default timing (heartbeat 150 ms). Every commit is `RaftNode::propose` of a ledger `RenewLease` on the \
         leader, the path agents take, timed until it is applied on the leader and answered; each writer waits for \
         its commit before the next; commits/s is all commits over the wall time of the run. The leader's proposer \
         keeps up to two log entries in flight and puts what is proposed meanwhile into the next one, so under load \
         one entry (one fsync on each node) carries many commits. Floors from the same \
         run: a bare redb write transaction of one 160-byte row, committed durably (one writer: redb runs one write \
         transaction at a time), and the same nodes with redb in memory (the same storage code, nothing on disk).\n\n\
         | storage | transport | writers | commits | p50 | p99 | commits/s | p50 ÷ redb commit |\n\
         |---|---|---|---|---|---|---|---|\n{}\n\n\
         Targets (from the issue):\n{targets}",
        table.join("\n"),
        fs = tmp_filesystem(),
    );
    println!("{body}");
    if write {
        write_section(&docs_path(), "raft", &body)?;
    }
    Ok(())
}
