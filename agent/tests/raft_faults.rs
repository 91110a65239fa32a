//! Seeded randomized faults on a Raft fleet: three agents' placement logic (the real openraft
//! nodes with their redb stores, the real ledger, lease holder and watcher, follow plan and
//! drain release) on a simulated network and a simulated VM driver, under partitions (whole
//! hosts and single directed links), crashes and restarts, wall-clock jumps, drains, and VM
//! puts and deletes, drawn from a seed.
//!
//! Checked every tick (20 ms): never two running copies of one VM on hosts that both hold a
//! live lease (a copy on a host whose lease lapsed is killed, as the agent and its watchdog
//! do). Checked once the faults stop and the fleet is healed: every VM in the ledger runs
//! exactly where it is assigned, under its epoch and generation; no acknowledged put or delete
//! was lost; every node holds the same ledger.
//!
//! A failure names its seed. `QUIVER_FAULT_SEED=<n>` reruns one; `QUIVER_FAULT_SEEDS=<count>`
//! and `QUIVER_FAULT_STEPS=<steps>` set the size (CI: 12 seeds of 12 steps, four at a time;
//! `scripts/test.sh --long`: 200 seeds of 40 steps). The schedule is reproduced exactly from a seed;
//! thread timing is not, so a rare interleaving may need a few reruns.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use quiver_agent::cluster::follow;
use quiver_agent::cluster::leader::LeaseWatch;
use quiver_raft::lease::{Holder, LeaseConfig};
use quiver_raft::ledger::{DesiredVm, VmVersion};
use quiver_raft::{Batch, Command, Ledger, LogStore, Outcome, RaftDb, StateMachine, TypeConfig};
use tokio::sync::mpsc;
use tokio::time::Instant;

const HOSTS: u64 = 3;
const TICK: Duration = Duration::from_millis(20);
const LEASE: LeaseConfig = LeaseConfig {
    ttl: Duration::from_millis(1000),
    renew_every: Duration::from_millis(200),
    margin: Duration::from_millis(500),
};
/// How long a healed fleet may take to run every VM where the ledger says.
const SETTLE: Duration = Duration::from_secs(30);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SplitMix64: the whole schedule comes from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---- the network: live nodes and cut directed links -------------------------------------

#[derive(Default)]
struct Net {
    nodes: BTreeMap<u64, Raft<TypeConfig>>,
    cut: BTreeSet<(u64, u64)>,
}

impl Net {
    /// The node `to`, if a message from `from` gets there.
    fn reach(&self, from: u64, to: u64) -> Option<Raft<TypeConfig>> {
        if self.cut.contains(&(from, to)) || !self.nodes.contains_key(&from) {
            return None;
        }
        self.nodes.get(&to).cloned()
    }
}

type SharedNet = Arc<Mutex<Net>>;

struct Factory {
    me: u64,
    net: SharedNet,
}

impl RaftNetworkFactory<TypeConfig> for Factory {
    type Network = Link;

    async fn new_client(&mut self, target: u64, _: &BasicNode) -> Link {
        Link {
            from: self.me,
            to: target,
            net: self.net.clone(),
        }
    }
}

struct Link {
    from: u64,
    to: u64,
    net: SharedNet,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

fn cut<E: std::error::Error>() -> RPCError<u64, BasicNode, RaftError<u64, E>> {
    RPCError::Unreachable(Unreachable::new(&std::io::Error::other("link cut")))
}

impl Link {
    /// Delivers a call and its reply, each only over a link that is up at that moment.
    async fn deliver<T, E, F>(&self, option: &RPCOption, call: F) -> RpcResult<T, E>
    where
        E: std::error::Error,
        F: AsyncFnOnce(Raft<TypeConfig>) -> Result<T, RaftError<u64, E>>,
    {
        let target = lock(&self.net).reach(self.from, self.to).ok_or_else(cut)?;
        let reply = tokio::time::timeout(option.hard_ttl(), call(target))
            .await
            .map_err(|_| cut())?
            .map_err(|e| RPCError::RemoteError(RemoteError::new(self.to, e)))?;
        lock(&self.net).reach(self.to, self.from).ok_or_else(cut)?;
        Ok(reply)
    }
}

impl RaftNetwork<TypeConfig> for Link {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        self.deliver(&option, async |raft| raft.append_entries(rpc).await)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.deliver(&option, async |raft| raft.install_snapshot(rpc).await)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.deliver(&option, async |raft| raft.vote(rpc).await)
            .await
    }
}

/// Commits `command` from node `from` through the leader it knows, as an agent's proposal
/// does: only while the links both ways are up. `None` when it was not acknowledged (it may
/// still have committed).
async fn propose(net: SharedNet, from: u64, command: Command, within: Duration) -> Option<Outcome> {
    let until = Instant::now() + within;
    while Instant::now() < until {
        let leader = {
            let net = lock(&net);
            let me = net.nodes.get(&from)?;
            let leader = me.metrics().borrow().current_leader;
            leader.and_then(|l| {
                if l == from {
                    Some((l, me.clone()))
                } else {
                    net.reach(from, l).map(|r| (l, r))
                }
            })
        };
        if let Some((id, raft)) = leader {
            let left = until.saturating_duration_since(Instant::now());
            if let Ok(Ok(written)) =
                tokio::time::timeout(left, raft.client_write(Batch(vec![command.clone()]))).await
            {
                let back = id == from || lock(&net).reach(id, from).is_some();
                return written.data.into_iter().next().filter(|_| back);
            }
        }
        tokio::time::sleep(TICK).await;
    }
    None
}

// ---- the hosts ---------------------------------------------------------------------------

/// What one simulated agent and its machine hold.
struct Host {
    name: String,
    id: u64,
    dir: PathBuf,
    /// The node and its state machine; `None` while the agent is crashed.
    node: Option<(Raft<TypeConfig>, StateMachine)>,
    /// The lease as the deadline file keeps it (it survives a crash).
    holder: Holder,
    /// The VMs whose QEMU runs (they outlive the agent).
    running: BTreeMap<String, VmVersion>,
    /// Wall clock minus the monotonic clock: jumps do not move leases.
    wall_offset_ms: i64,
    watch: LeaseWatch,
    last_renewal: Option<u64>,
    renewing: bool,
    in_flight: BTreeSet<String>,
}

/// A host's running VMs as the follow loop takes them: a list in uid order.
fn in_uid_order(running: &BTreeMap<String, VmVersion>) -> Vec<(String, VmVersion)> {
    running.iter().map(|(u, v)| (u.clone(), *v)).collect()
}

fn config() -> Arc<Config> {
    let config = Config {
        cluster_name: "faults".into(),
        heartbeat_interval: 50,
        election_timeout_min: 250,
        election_timeout_max: 500,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(60),
        max_in_snapshot_log_to_keep: 20,
        ..Config::default()
    };
    Arc::new(config.validate().expect("raft config"))
}

/// A node on the database in `dir`, and the last index its log held at start (what the agent
/// resumes its lease with, as `RaftNode::start` reads it).
async fn start_node(
    dir: &Path,
    id: u64,
    net: &SharedNet,
) -> ((Raft<TypeConfig>, StateMachine), u64) {
    let db = RaftDb::open(&dir.join("raft.redb")).expect("raft db");
    let machine = StateMachine::open(db.clone()).await.expect("state machine");
    let factory = Factory {
        me: id,
        net: net.clone(),
    };
    let mut log = LogStore::new(db);
    let last_logged = log.last_index().await.expect("log state");
    let raft = Raft::new(id, config(), factory, log, machine.clone())
        .await
        .expect("raft");
    lock(net).nodes.insert(id, raft.clone());
    ((raft, machine), last_logged)
}

/// A proposal's result, back to the loop.
enum Done {
    Renewed {
        host: usize,
        sent: u64,
        outcome: Option<Outcome>,
    },
    Proposed {
        host: usize,
        key: String,
        command: Command,
        outcome: Option<Outcome>,
    },
}

/// What the test knows of a VM's writes. A delete is never followed by a put of the same uid
/// (Kubernetes never reuses one), and an unacknowledged write may still commit later.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// This generation was acknowledged: the ledger must hold it or a newer one.
    Put(i64),
    /// A delete was sent, not (yet) acknowledged: either outcome is right.
    Deleting,
    /// A delete was acknowledged: the ledger must not hold the VM.
    Deleted,
}

type Acked = BTreeMap<String, Known>;

struct Fleet {
    seed: u64,
    hosts: Vec<Host>,
    net: SharedNet,
    start: Instant,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    acked: Acked,
    log: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Fleet {
    async fn start(seed: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let net = SharedNet::default();
        let mut hosts = Vec::new();
        for id in 1..=HOSTS {
            let host_dir = dir.path().join(format!("h{id}"));
            std::fs::create_dir_all(&host_dir).expect("host dir");
            let (node, _) = start_node(&host_dir, id, &net).await;
            hosts.push(Host {
                name: format!("h{id}"),
                id,
                dir: host_dir,
                node: Some(node),
                holder: Holder::default(),
                running: BTreeMap::new(),
                wall_offset_ms: 0,
                watch: LeaseWatch::default(),
                last_renewal: None,
                renewing: false,
                in_flight: BTreeSet::new(),
            });
        }
        let members: BTreeMap<u64, BasicNode> = (1..=HOSTS)
            .map(|id| (id, BasicNode::new(format!("h{id}"))))
            .collect();
        let first = hosts[0].node.as_ref().expect("node").0.clone();
        first.initialize(members).await.expect("initialize");
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let fleet = Self {
            seed,
            hosts,
            net,
            start: Instant::now(),
            done_tx,
            done_rx,
            acked: Acked::new(),
            log: Vec::new(),
            _dir: dir,
        };
        for i in 0..fleet.hosts.len() {
            let register = Command::RegisterHost {
                name: fleet.hosts[i].name.clone(),
                cpus: 8,
                memory_mib: 1 << 20,
                labels: BTreeMap::new(),
            };
            let from = fleet.hosts[i].id;
            let done = propose(fleet.net.clone(), from, register, Duration::from_secs(20)).await;
            assert!(done.is_some(), "seed {seed}: cannot register h{from}");
        }
        fleet
    }

    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn note(&mut self, what: &str) {
        let line = format!("{:>6} ms  {what}", self.now());
        self.log.push(line);
    }

    fn fail(&self, why: &str) -> ! {
        panic!(
            "seed {}: {why}\nrerun: QUIVER_FAULT_SEED={} cargo test -p quiver-agent --test raft_faults\n{}",
            self.seed,
            self.seed,
            self.log.join("\n")
        );
    }

    fn spawn_proposal(&self, host: usize, key: String, command: Command) {
        let net = self.net.clone();
        let tx = self.done_tx.clone();
        let from = self.hosts[host].id;
        tokio::spawn(async move {
            let outcome = propose(net, from, command.clone(), Duration::from_millis(600)).await;
            let _ = tx.send(Done::Proposed {
                host,
                key,
                command,
                outcome,
            });
        });
    }

    /// One tick of every agent: results in, fencing, renewals, following the ledger,
    /// releases, the leader's lease watch; then the safety check.
    fn tick(&mut self) {
        while let Ok(done) = self.done_rx.try_recv() {
            self.finished(done);
        }
        let now = self.now();
        for i in 0..self.hosts.len() {
            self.run_host(i, now);
        }
        self.check_one_copy(now);
    }

    fn finished(&mut self, done: Done) {
        match done {
            Done::Renewed {
                host,
                sent,
                outcome,
            } => {
                let h = &mut self.hosts[host];
                h.renewing = false;
                if let Some(Outcome {
                    note: None, index, ..
                }) = outcome
                {
                    h.holder.renewed(sent, index, &LEASE);
                }
            }
            Done::Proposed {
                host,
                key,
                command,
                outcome,
            } => {
                self.hosts[host].in_flight.remove(&key);
                let Some(outcome) = outcome else { return };
                match &command {
                    Command::PutVm(vm)
                        if outcome.note.is_none()
                            && self.acked.get(&vm.uid).is_none_or(
                                |k| matches!(k, Known::Put(g) if *g < vm.generation),
                            ) =>
                    {
                        self.acked.insert(vm.uid.clone(), Known::Put(vm.generation));
                        self.note(&format!("acked put {} gen {}", vm.uid, vm.generation));
                    }
                    Command::DeleteVm { uid } => {
                        self.acked.insert(uid.clone(), Known::Deleted);
                        self.note(&format!("acked delete {uid}"));
                    }
                    Command::HostDown { host, .. } if outcome.note.is_none() => {
                        self.note(&format!("{host} declared down, moved {:?}", outcome.moved));
                    }
                    _ => {}
                }
            }
        }
    }

    fn run_host(&mut self, i: usize, now: u64) {
        let valid = self.hosts[i].holder.valid_at(now);
        if !valid && !self.hosts[i].running.is_empty() {
            // The agent fences, or its watchdog does when the agent is dead.
            let killed: Vec<String> = self.hosts[i].running.keys().cloned().collect();
            self.hosts[i].running.clear();
            let name = self.hosts[i].name.clone();
            self.note(&format!("{name}: lease lapsed, killed {killed:?}"));
        }
        let Some((raft, machine)) = self.hosts[i].node.clone() else {
            return;
        };
        let h = &mut self.hosts[i];
        let wall = u64::try_from(i64::try_from(now).unwrap_or(0) + h.wall_offset_ms).unwrap_or(0);
        let renew_due = h
            .last_renewal
            .is_none_or(|last| now.saturating_sub(last) >= LEASE.renew_every.as_millis() as u64);
        if renew_due && !h.renewing {
            h.renewing = true;
            h.last_renewal = Some(now);
            let command = Command::RenewLease {
                host: h.name.clone(),
                now_ms: wall,
                ttl_ms: LEASE.ttl.as_millis() as u64,
            };
            let (net, tx, from) = (self.net.clone(), self.done_tx.clone(), h.id);
            tokio::spawn(async move {
                let outcome = propose(net, from, command, LEASE.renew_every).await;
                let _ = tx.send(Done::Renewed {
                    host: i,
                    sent: now,
                    outcome,
                });
            });
        }

        let (assigned, to_release, due) = machine.with_ledger(|l| {
            let assigned: BTreeMap<String, VmVersion> = l
                .runnable_on(&h.name)
                .map(|(uid, version)| (uid.to_owned(), version))
                .collect();
            let to_release: Vec<String> = l.to_release(&h.name).map(str::to_owned).collect();
            let leads = raft.metrics().borrow().state == ServerState::Leader;
            let due = if leads {
                h.watch.due(l, now, wall, &LEASE)
            } else {
                h.watch.stepped_down();
                Vec::new()
            };
            (assigned, to_release, due)
        });
        let lease = h.holder.state(now, machine.applied_index());
        let running = in_uid_order(&h.running);
        let assigned_list = assigned.iter().map(|(u, v)| (u.as_str(), *v));
        for step in follow::plan(assigned_list, &running, lease) {
            match step {
                follow::Step::Put { uid, epoch } => {
                    let generation = assigned[&uid].generation;
                    h.running.insert(uid, VmVersion { generation, epoch });
                }
                follow::Step::Delete { uid } => {
                    h.running.remove(&uid);
                }
            }
        }
        let running = in_uid_order(&h.running);
        let releases: Vec<String> = follow::released(&to_release, &running).collect();
        let name = h.name.clone();
        let mut proposals = Vec::new();
        for uid in releases {
            let key = format!("release {uid}");
            if h.in_flight.insert(key.clone()) {
                proposals.push((
                    key,
                    Command::Released {
                        uid,
                        host: name.clone(),
                    },
                ));
            }
        }
        for command in due {
            let Command::HostDown { host, .. } = &command else {
                continue;
            };
            let key = format!("down {host}");
            if h.in_flight.insert(key.clone()) {
                proposals.push((key, command));
            }
        }
        for (key, command) in proposals {
            self.spawn_proposal(i, key, command);
        }
    }

    /// The safety property: at most one running copy per VM among hosts with a live lease.
    fn check_one_copy(&self, now: u64) {
        let mut copies: BTreeMap<&str, Vec<(&str, u64)>> = BTreeMap::new();
        for h in &self.hosts {
            if !h.holder.valid_at(now) {
                continue;
            }
            for (uid, version) in &h.running {
                copies
                    .entry(uid)
                    .or_default()
                    .push((&h.name, version.epoch));
            }
        }
        if let Some((uid, on)) = copies.iter().find(|(_, on)| on.len() > 1) {
            self.fail(&format!("{uid} runs twice under live leases: {on:?}"));
        }
    }

    async fn run_for(&mut self, span: Duration) {
        let until = Instant::now() + span;
        while Instant::now() < until {
            self.tick();
            tokio::time::sleep(TICK).await;
        }
    }

    fn alive(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|i| self.hosts[*i].node.is_some())
            .collect()
    }

    fn crash(&mut self, i: usize) {
        let Some((raft, _)) = self.hosts[i].node.take() else {
            return;
        };
        lock(&self.net).nodes.remove(&self.hosts[i].id);
        tokio::spawn(async move {
            let _ = raft.shutdown().await;
        });
        let h = &mut self.hosts[i];
        // Proposals it sent may still commit; their tasks report back as usual.
        h.watch.stepped_down();
        let name = h.name.clone();
        self.note(&format!("{name}: agent killed (its VMs run on)"));
    }

    async fn restart(&mut self, i: usize) {
        if self.hosts[i].node.is_some() {
            return;
        }
        // The old node's shutdown releases the database; wait for it.
        let mut node = None;
        let mut last_logged = 0;
        for _ in 0..100 {
            if let Ok(db) = RaftDb::open(&self.hosts[i].dir.join("raft.redb")) {
                drop(db);
                let (started, logged) =
                    start_node(&self.hosts[i].dir, self.hosts[i].id, &self.net).await;
                (node, last_logged) = (Some(started), logged);
                break;
            }
            tokio::time::sleep(TICK).await;
        }
        let Some(node) = node else {
            self.fail(&format!(
                "{} cannot reopen its database",
                self.hosts[i].name
            ));
        };
        self.hosts[i].node = Some(node);
        self.hosts[i].last_renewal = None;
        // What the deadline file keeps: the deadline, not the renewal's index.
        self.hosts[i].holder = Holder::resume(self.hosts[i].holder.deadline_ms(), last_logged);
        let name = self.hosts[i].name.clone();
        self.note(&format!("{name}: agent restarted"));
    }

    fn isolate(&mut self, i: usize) {
        let me = self.hosts[i].id;
        let mut net = lock(&self.net);
        for other in 1..=HOSTS {
            if other != me {
                net.cut.insert((me, other));
                net.cut.insert((other, me));
            }
        }
        drop(net);
        let name = self.hosts[i].name.clone();
        self.note(&format!("{name}: partitioned"));
    }

    fn heal(&mut self) {
        lock(&self.net).cut.clear();
        self.note("network healed");
    }

    /// One random fault or workload step.
    async fn step(&mut self, rng: &mut Rng, next_vm: &mut u32) {
        let host = usize::try_from(rng.below(HOSTS)).unwrap_or(0);
        let name = self.hosts[host].name.clone();
        match rng.below(11) {
            0 => self.isolate(host),
            1 => {
                let to = (self.hosts[host].id % HOSTS) + 1;
                lock(&self.net).cut.insert((self.hosts[host].id, to));
                self.note(&format!("link h{} → h{to} cut", self.hosts[host].id));
            }
            2 => self.heal(),
            3 => self.crash(host),
            4 => self.restart(host).await,
            5 => {
                let jump = i64::try_from(rng.below(7_200_000)).unwrap_or(0) - 3_600_000;
                self.hosts[host].wall_offset_ms += jump;
                self.note(&format!("{name}: wall clock jumps {jump} ms"));
            }
            6 => {
                let drain = rng.below(2) == 0;
                self.note(&format!("{name}: drain {drain}"));
                let command = Command::Schedule {
                    host: name.clone(),
                    unschedulable: false,
                    drain,
                };
                self.propose_from_any(rng, format!("schedule {name}"), command);
            }
            7 => {
                // Delete one acknowledged VM.
                let live: Vec<String> = self
                    .acked
                    .iter()
                    .filter(|(_, k)| matches!(k, Known::Put(_)))
                    .map(|(u, _)| u.clone())
                    .collect();
                if live.is_empty() {
                    return;
                }
                let uid = live[usize::try_from(rng.below(live.len() as u64)).unwrap_or(0)].clone();
                if self.propose_from_any(rng, uid.clone(), Command::DeleteVm { uid: uid.clone() }) {
                    self.acked.insert(uid, Known::Deleting);
                }
            }
            8 => {
                // A new generation of one acknowledged VM.
                let live: Vec<(String, i64)> = self
                    .acked
                    .iter()
                    .filter_map(|(u, k)| match k {
                        Known::Put(g) => Some((u.clone(), *g)),
                        Known::Deleting | Known::Deleted => None,
                    })
                    .collect();
                if live.is_empty() {
                    return;
                }
                let (uid, generation) =
                    live[usize::try_from(rng.below(live.len() as u64)).unwrap_or(0)].clone();
                self.propose_from_any(rng, uid.clone(), put(&uid, generation + 1));
            }
            _ => {
                *next_vm += 1;
                let uid = format!("vm-{next_vm}");
                self.propose_from_any(rng, uid.clone(), put(&uid, 1));
            }
        }
    }

    /// Proposes from a random live host, one proposal per key at a time; false when none
    /// was sent.
    fn propose_from_any(&mut self, rng: &mut Rng, key: String, command: Command) -> bool {
        let alive = self.alive();
        if alive.is_empty() || self.hosts.iter().any(|h| h.in_flight.contains(&key)) {
            return false;
        }
        let i = alive[usize::try_from(rng.below(alive.len() as u64)).unwrap_or(0)];
        self.hosts[i].in_flight.insert(key.clone());
        self.spawn_proposal(i, key, command);
        true
    }

    /// Faults stop: heal, restart, undrain; then every VM must run once, where the ledger
    /// says, and nothing acknowledged may be missing.
    async fn settle(&mut self) {
        self.heal();
        for i in 0..self.hosts.len() {
            self.restart(i).await;
        }
        for i in 0..self.hosts.len() {
            let name = self.hosts[i].name.clone();
            let command = Command::Schedule {
                host: name.clone(),
                unschedulable: false,
                drain: false,
            };
            let from = self.hosts[i].id;
            let mut done = None;
            let until = Instant::now() + SETTLE;
            while done.is_none() && Instant::now() < until {
                // Keep the fleet alive (renewals, fencing) while waiting.
                self.run_for(TICK * 5).await;
                done = propose(
                    self.net.clone(),
                    from,
                    command.clone(),
                    Duration::from_millis(500),
                )
                .await;
            }
            if done.is_none() {
                self.fail(&format!("cannot undrain {name} after healing"));
            }
        }
        let until = Instant::now() + SETTLE;
        let mut last = String::new();
        while Instant::now() < until {
            self.run_for(TICK * 10).await;
            match self.converged() {
                Ok(()) => return,
                Err(why) => last = why,
            }
        }
        self.fail(&format!("no convergence after healing: {last}"));
    }

    fn converged(&self) -> Result<(), String> {
        if self.hosts.iter().any(|h| !h.in_flight.is_empty()) {
            return Err("proposals still in flight".into());
        }
        let ledgers: Vec<Ledger> = self
            .hosts
            .iter()
            .filter_map(|h| h.node.as_ref())
            .map(|(_, m)| m.with_ledger(Ledger::clone))
            .collect();
        let ledger = &ledgers[0];
        if ledgers.iter().any(|l| l != ledger) {
            return Err("nodes hold different ledgers".into());
        }
        for (uid, known) in &self.acked {
            let has = ledger.vms.get(uid).map(|v| v.generation);
            match known {
                Known::Put(g) if has.is_none_or(|h| h < *g) => {
                    return Err(format!(
                        "acknowledged put of {uid} gen {g} lost: ledger has {has:?}"
                    ));
                }
                Known::Deleted if has.is_some() => {
                    return Err(format!("acknowledged delete of {uid} lost"));
                }
                _ => {}
            }
        }
        if !ledger.releases.is_empty() {
            return Err(format!("releases pending: {:?}", ledger.releases));
        }
        for uid in ledger.vms.keys() {
            let Some(a) = ledger.assignments.get(uid) else {
                return Err(format!("{uid} unplaced"));
            };
            let generation = ledger.vms[uid].generation;
            for h in &self.hosts {
                let copy = h.running.get(uid);
                let want = (h.name == a.host).then_some(VmVersion {
                    generation,
                    epoch: a.epoch,
                });
                if copy != want.as_ref() {
                    return Err(format!(
                        "{uid} on {}: runs {copy:?}, ledger wants {want:?}",
                        h.name
                    ));
                }
            }
        }
        for h in &self.hosts {
            if let Some(uid) = h.running.keys().find(|uid| !ledger.vms.contains_key(*uid)) {
                return Err(format!(
                    "{} runs {uid}, which the ledger does not have",
                    h.name
                ));
            }
        }
        Ok(())
    }

    async fn stop(self) {
        for h in self.hosts {
            if let Some((raft, _)) = h.node {
                let _ = raft.shutdown().await;
            }
        }
    }
}

fn put(uid: &str, generation: i64) -> Command {
    Command::PutVm(DesiredVm {
        uid: uid.to_owned(),
        generation,
        cpus: 1,
        memory_mib: 64,
        ..DesiredVm::default()
    })
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}

async fn run_seed(seed: u64, steps: u64) {
    let mut fleet = Fleet::start(seed).await;
    let mut rng = Rng(seed);
    let mut next_vm = 0;
    // A few VMs to begin with.
    for _ in 0..3 {
        next_vm += 1;
        let uid = format!("vm-{next_vm}");
        fleet.propose_from_any(&mut rng, uid.clone(), put(&uid, 1));
    }
    fleet.run_for(Duration::from_millis(500)).await;
    for _ in 0..steps {
        fleet.step(&mut rng, &mut next_vm).await;
        let span = Duration::from_millis(50 + rng.below(1500));
        fleet.run_for(span).await;
    }
    fleet.settle().await;
    eprintln!(
        "seed {seed}: {steps} steps, {} VMs acknowledged, converged after {} ms",
        fleet.acked.len(),
        fleet.now()
    );
    fleet.stop().await;
}

/// Seeds run this many at a time (they share the machine, which adds timing faults).
const CONCURRENT: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_vm_runs_twice_and_every_placement_is_acted_on_under_seeded_faults() {
    let steps = env_number("QUIVER_FAULT_STEPS").unwrap_or(12);
    let seeds: Vec<u64> = match env_number("QUIVER_FAULT_SEED") {
        Some(seed) => vec![seed],
        None => (1..=env_number("QUIVER_FAULT_SEEDS").unwrap_or(12)).collect(),
    };
    for batch in seeds.chunks(CONCURRENT) {
        let runs: Vec<_> = batch
            .iter()
            .map(|seed| tokio::spawn(run_seed(*seed, steps)))
            .collect();
        for run in runs {
            if let Err(e) = run.await {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    }
}
