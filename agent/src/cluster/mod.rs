//! The agent's part in the Raft group that owns placement (`quiver-raft`): the node itself,
//! how the group forms from registered Hosts, leases with self-fencing, and this host's VMs
//! following the ledger.
//!
//! # Layout
//! - [`bootstrap`]: the first agent of a fleet makes the group (a ConfigMap created once
//!   decides which); every other one is added by the leader when its Host appears.
//! - [`leader`]: membership from Hosts, the ledger's hosts from Hosts, `HostDown` for hosts
//!   whose lease lapsed.
//! - [`follow`]: what this host runs = what the ledger assigns it, while its lease holds.
//! - [`watchdog`]: the lease deadline on disk and the detached process that kills this host's
//!   QEMUs when it passes, also when the agent itself is dead.
//!
//! # Fencing, in one place
//! Every [`LeaseConfig::renew_every`] the agent commits `RenewLease` through the leader; the
//! lease then runs `ttl` from when the renewal was sent. Past the deadline the agent starts
//! nothing, kills its VMs at once (no ACPI grace), and so does the watchdog. The leader
//! declares a host down only `ttl + margin` after the last renewal it saw, so the old copy of
//! a VM is dead before the new one is assigned elsewhere under a higher epoch; agents refuse
//! lower epochs per VM.

pub mod bootstrap;
pub mod follow;
pub mod leader;
pub mod watchdog;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use quiver_crds::{Host, Service, Transport, TransportTarget};
use quiver_raft::addr::{GrpcAddr, NodeAddr};
use quiver_raft::lease::{Holder, LeaseConfig};
use quiver_raft::ledger::{Assignment, DesiredVm};
use quiver_raft::{Command, Outcome, ProposeError, RaftNode, Timing, node_id};
use quiver_rpc::{ServiceName, TransportMode, TransportModes};
use tokio::sync::watch;

use crate::services::ServingModes;
use crate::vm::VmManager;
use crate::{Error, Result};

/// Raft and lease settings (the same on every agent of a fleet).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub lease: LeaseConfig,
    pub timing: Timing,
    /// Where the bootstrap ConfigMap lives.
    pub namespace: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            lease: LeaseConfig::default(),
            timing: Timing::default(),
            namespace: "default".into(),
        }
    }
}

/// A registered Host as the group sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub node: BasicNode,
    pub host: String,
    pub cpus: u32,
    pub memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    /// `spec.unschedulable` (cordon) and `spec.drain` of the Host.
    pub unschedulable: bool,
    pub drain: bool,
    /// `spec.transport` of the Host: every service's transport by name (empty when unset).
    pub transports: BTreeMap<String, String>,
}

impl Member {
    /// The member a Host describes; `None` for a Host whose endpoint id does not parse.
    #[must_use]
    pub fn of(host: &Host) -> Option<Self> {
        let name = host.metadata.name.clone()?;
        let iroh = quiver_rpc::peer_addr(
            &host.spec.endpoint_id,
            &host.spec.iroh_addresses,
            host.spec.iroh_relay_url.as_deref(),
        )
        .ok()?;
        let endpoint = iroh.id;
        // A gRPC address by host name (not ip:port) is left out; the network then finds it
        // among the Hosts when it dials.
        let grpc = host.spec.grpc_address.parse().ok().map(|socket| GrpcAddr {
            name: name.clone(),
            socket,
        });
        Some(Self {
            id: node_id(&endpoint),
            node: NodeAddr { iroh, grpc }.to_node(),
            host: name,
            cpus: host.spec.capacity.cpus,
            memory_mib: host.spec.capacity.memory_mib,
            labels: host.metadata.labels.clone().unwrap_or_default(),
            unschedulable: host.spec.unschedulable,
            drain: host.spec.drain,
            transports: host
                .spec
                .transport
                .as_ref()
                .map(transports_by_name)
                .unwrap_or_default(),
        })
    }
}

/// A Host's `spec.transport` as the ledger keeps it: every service's transport, by name.
fn transports_by_name(target: &TransportTarget) -> BTreeMap<String, String> {
    Service::ALL
        .into_iter()
        .map(|s| {
            let mode = match target.for_service(s) {
                Transport::Grpc => TransportMode::Grpc,
                Transport::Iroh => TransportMode::Iroh,
                Transport::Dual => TransportMode::Dual,
            };
            (s.as_str().to_owned(), mode.as_str().to_owned())
        })
        .collect()
}

/// What this host serves: its own setting (`--transport`), with each service the ledger
/// names for it on the ledger's transport. Entries that do not parse are skipped and named.
#[must_use]
pub fn serving(
    own: &TransportModes,
    ledger: &BTreeMap<String, String>,
) -> (TransportModes, Vec<String>) {
    let mut modes = own.clone();
    let mut skipped = Vec::new();
    for (service, mode) in ledger {
        match (
            service.parse::<ServiceName>(),
            mode.parse::<TransportMode>(),
        ) {
            (Ok(service), Ok(mode)) => modes.set(service, mode),
            _ => skipped.push(format!("{service}={mode}")),
        }
    }
    (modes, skipped)
}

/// How long a proposal may wait for a leader.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest time between two passes over this host's VMs that new commits start, after a
/// pass that had work (a burst); after an idle pass, and on lease changes and removals, the
/// next one starts at once.
const FOLLOW_COMMITS_EVERY: Duration = Duration::from_millis(100);

/// This agent's membership; clones share it.
#[derive(Clone)]
pub struct Cluster {
    pub node: RaftNode,
    host: String,
    config: Arc<ClusterConfig>,
    /// The lease: its deadline (`CLOCK_BOOTTIME` ms) and the renewal's log index.
    lease: watch::Receiver<Holder>,
    /// Registered Hosts (names of node ids).
    hosts: watch::Receiver<Option<Vec<Host>>>,
}

/// What the cluster needs from the rest of the agent.
pub struct Wiring {
    pub data_dir: PathBuf,
    pub host: String,
    /// This node's own address (`<endpoint id>@<ip:port>,…`).
    pub me: BasicNode,
    pub kube: kube::Client,
    /// Registered Hosts, `None` until first listed.
    pub hosts: watch::Receiver<Option<Vec<Host>>>,
    pub manager: VmManager,
    /// The transports served now, which follow the ledger's entry for this host, and the
    /// agent's own setting they fall back to.
    pub modes: ServingModes,
    pub own_modes: TransportModes,
}

impl Cluster {
    /// Starts the node and its tasks. The lease resumes from the deadline file, so an agent
    /// restarted within its lease keeps its VMs.
    ///
    /// # Errors
    /// The Raft database cannot be opened (corrupt or truncated: the agent refuses to start).
    pub async fn start(config: ClusterConfig, node: RaftNode, wiring: Wiring) -> Result<Self> {
        config.lease.check().map_err(Error::Config)?;
        let resumed = Holder::resume(
            watchdog::read_deadline(&wiring.data_dir),
            node.last_logged_at_start,
        );
        let (lease_tx, lease) = watch::channel(resumed);
        let cluster = Self {
            node,
            host: wiring.host.clone(),
            config: Arc::new(config),
            lease,
            hosts: wiring.hosts.clone(),
        };
        watchdog::ensure_running(&wiring.data_dir)?;
        tokio::spawn(bootstrap::run(
            cluster.node.clone(),
            wiring.kube.clone(),
            cluster.config.namespace.clone(),
            wiring.host.clone(),
            wiring.me.clone(),
        ));
        tokio::spawn(
            cluster
                .clone()
                .renew(lease_tx, wiring.data_dir.clone(), resumed),
        );
        tokio::spawn(cluster.clone().follow(wiring.manager.clone()));
        tokio::spawn(
            cluster
                .clone()
                .serve_transports(wiring.modes, wiring.own_modes),
        );
        tokio::spawn(cluster.clone().lead(wiring.hosts));
        Ok(cluster)
    }

    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether this host's lease holds now.
    #[must_use]
    pub fn lease_valid(&self) -> bool {
        self.lease.borrow().valid_at(watchdog::boottime_ms())
    }

    /// Commits a command through the leader.
    ///
    /// # Errors
    /// No leader committed it within the proposal timeout.
    pub async fn propose(&self, command: Command) -> Result<Outcome> {
        self.node
            .propose(command, PROPOSE_TIMEOUT)
            .await
            .map_err(|e| match e {
                ProposeError::NoLeader(_) | ProposeError::NotLeader { .. } => {
                    Error::Unavailable(e.to_string())
                }
                ProposeError::Failed(m) => Error::Unavailable(m),
            })
    }

    pub async fn put(&self, vm: DesiredVm) -> Result<Outcome> {
        self.propose(Command::PutVm(vm)).await
    }

    /// Where the ledger has `uid` now.
    #[must_use]
    pub fn assignment(&self, uid: &str) -> Option<Assignment> {
        self.node
            .machine
            .with_ledger(|l| l.assignments.get(uid).cloned())
    }

    /// Why the ledger has no host for `uid` (`None` when it does not know the VM).
    #[must_use]
    pub fn unplaced(&self, uid: &str) -> Option<quiver_raft::ledger::Unplaced> {
        self.node.machine.with_ledger(|l| {
            l.vms
                .get(uid)
                .map(|vm| quiver_raft::ledger::unplaced(l, vm))
        })
    }

    #[must_use]
    pub fn knows(&self, uid: &str) -> bool {
        self.node.machine.with_ledger(|l| l.vms.contains_key(uid))
    }

    /// Renews the lease every `renew_every` and records each committed renewal in the
    /// deadline file (the watchdog's) before anyone relies on it.
    async fn renew(self, published: watch::Sender<Holder>, data_dir: PathBuf, resumed: Holder) {
        let lease = self.config.lease;
        let mut holder = resumed;
        let mut tick = tokio::time::interval(lease.renew_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !self.node.is_member() {
                continue;
            }
            let sent = watchdog::boottime_ms();
            let command = Command::RenewLease {
                host: self.host.clone(),
                now_ms: u64::try_from(crate::vm::now_ms()).unwrap_or(0),
                ttl_ms: u64::try_from(lease.ttl.as_millis()).unwrap_or(u64::MAX),
            };
            match self.node.propose(command, lease.renew_every).await {
                Ok(Outcome {
                    note: None, index, ..
                }) => {
                    holder.renewed(sent, index, &lease);
                    if let Err(e) = watchdog::write_deadline(&data_dir, holder.deadline_ms()) {
                        tracing::error!(error = %e, "cannot record the lease deadline");
                        continue;
                    }
                    published.send_replace(holder);
                }
                Ok(Outcome {
                    note: Some(note), ..
                }) => {
                    tracing::debug!(%note, "renewal not counted (host not in the ledger yet?)");
                }
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    }

    /// Keeps this host's VMs equal to the ledger's assignments while the lease holds, and
    /// kills them all the moment it lapses.
    async fn follow(self, manager: VmManager) {
        let mut applied = self.node.raft.metrics();
        let mut lease = self.lease.clone();
        let mut updates = manager.shared.subscribe();
        loop {
            let pass_started = tokio::time::Instant::now();
            let holder = *lease.borrow_and_update();
            let now = watchdog::boottime_ms();
            let valid = holder.valid_at(now);
            manager.set_fenced(!valid);
            let local = follow::local(&manager);
            let state = holder.state(now, self.node.machine.applied_index());
            // The plan is made under the ledger's lock, and only the puts' requests are
            // copied: a fleet's ledger holds thousands of VMs and this runs at every commit.
            let (steps, requests, to_release) = self.node.machine.with_ledger(|l| {
                let to_release: Vec<String> = l.to_release(&self.host).map(str::to_owned).collect();
                let steps = follow::plan(l.runnable_on(&self.host), &local, state);
                let requests: BTreeMap<String, Vec<u8>> = steps
                    .iter()
                    .filter_map(|step| match step {
                        follow::Step::Put { uid, .. } => {
                            Some((uid.clone(), l.vms.get(uid)?.request.clone()))
                        }
                        follow::Step::Delete { .. } => None,
                    })
                    .collect();
                (steps, requests, to_release)
            });
            for uid in follow::released(&to_release, &local) {
                self.release(uid).await;
            }
            if !valid && !steps.is_empty() {
                tracing::warn!(
                    vms = steps.len(),
                    "lease lapsed: fencing, every VM is killed"
                );
            }
            let had_work = !steps.is_empty();
            follow::apply(&manager, steps, |uid| requests.get(uid).cloned()).await;
            // Wake at the next ledger change, lease change, or when the lease would lapse.
            let left = holder.deadline_ms().saturating_sub(watchdog::boottime_ms());
            let wake = if valid {
                Duration::from_millis(left).min(Duration::from_secs(1))
            } else {
                Duration::from_secs(1)
            };
            // Also when a VM is gone: a drained one is released at once.
            let woken_by_commit = tokio::select! {
                _ = applied.changed() => true,
                _ = lease.changed() => false,
                () = next_removal(&mut updates) => false,
                () = tokio::time::sleep(wake) => false,
            };
            if woken_by_commit && had_work {
                // In a burst commits come dozens a second and each pass costs this host's
                // VMs: a pass then takes in every commit of the last FOLLOW_COMMITS_EVERY.
                tokio::time::sleep_until(pass_started + FOLLOW_COMMITS_EVERY).await;
            }
        }
    }

    /// Serves the transports the ledger holds for this host, from the first applied entry
    /// on (so a restarted agent serves them again before anyone asks).
    async fn serve_transports(self, modes: ServingModes, own: TransportModes) {
        let mut applied = self.node.raft.metrics();
        let mut warned = Vec::new();
        loop {
            let wanted = self.node.machine.with_ledger(|l| {
                l.hosts
                    .get(&self.host)
                    .map(|h| h.transports.clone())
                    .unwrap_or_default()
            });
            let (next, skipped) = serving(&own, &wanted);
            if !skipped.is_empty() && skipped != warned {
                tracing::warn!(
                    ?skipped,
                    "the ledger names transports this agent does not know"
                );
                warned = skipped;
            }
            modes.replace(next);
            if applied.changed().await.is_err() {
                return;
            }
        }
    }

    /// Tells the group this host's copy of `uid` is gone, so its new copy may start.
    async fn release(&self, uid: String) {
        let host = self.host.clone();
        match self
            .propose(Command::Released {
                uid: uid.clone(),
                host,
            })
            .await
        {
            Ok(_) => tracing::info!(%uid, "released: the VM may start on its new host"),
            Err(e) => tracing::warn!(%uid, error = %e, "cannot release a drained VM; retrying"),
        }
    }

    async fn lead(self, mut hosts: watch::Receiver<Option<Vec<Host>>>) {
        let mut duties = leader::Duties::new(self.node.clone(), self.config.lease);
        let mut tick = tokio::time::interval(leader::TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // A changed Host (a cordon, a transport) is acted on at once, not at the next tick.
            tokio::select! {
                _ = tick.tick() => {}
                changed = hosts.changed() => {
                    if changed.is_err() {
                        tick.tick().await;
                    }
                }
            }
            let members: Option<Vec<Member>> = hosts
                .borrow_and_update()
                .as_ref()
                .map(|hosts| hosts.iter().filter_map(Member::of).collect());
            duties.tick(members.as_deref()).await;
        }
    }
}

/// Resolves when the VM manager dropped a VM (or missed updates, which may include one).
async fn next_removal(updates: &mut tokio::sync::broadcast::Receiver<quiver_rpc::proto::VmStatus>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match updates.recv().await {
            Ok(status) if status.deleted => return,
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => return,
            Err(RecvError::Closed) => std::future::pending().await,
        }
    }
}

impl Cluster {
    /// This agent's view of the group, for the Status service.
    #[must_use]
    pub fn info(&self) -> quiver_rpc::proto::RaftInfo {
        use openraft::ServerState;
        let m = self.node.metrics();
        let member = m.membership_config.membership();
        let role = match m.state {
            _ if member.get_node(&self.node.id).is_none() => "joining",
            ServerState::Leader => "leader",
            ServerState::Candidate => "candidate",
            ServerState::Follower if member.voter_ids().any(|v| v == self.node.id) => "follower",
            ServerState::Follower | ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let leader = m
            .current_leader
            .and_then(|id| {
                self.hosts
                    .borrow()
                    .as_ref()?
                    .iter()
                    .filter_map(Member::of)
                    .find(|member| member.id == id)
                    .map(|member| member.host)
            })
            .unwrap_or_default();
        quiver_rpc::proto::RaftInfo {
            role: role.into(),
            term: m.current_term,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            leader,
            lease_valid: self.lease_valid(),
            schedulable: self.node.machine.with_ledger(|l| {
                l.hosts
                    .get(&self.host)
                    .is_some_and(quiver_raft::ledger::HostEntry::takes_new_vms)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_transport_names_every_service_and_overrides_the_agents_own_setting() {
        let target = TransportTarget {
            raft: Some(Transport::Iroh),
            ..TransportTarget::all(Transport::Dual)
        };
        let names = transports_by_name(&target);
        assert_eq!(names.len(), Service::ALL.len());
        assert_eq!(names["raft"], "iroh");
        assert_eq!(names["vm"], "dual");
        let own = TransportModes::all(TransportMode::Grpc);
        let (modes, skipped) = serving(&own, &names);
        assert!(skipped.is_empty());
        assert_eq!(modes.get(ServiceName::Raft), TransportMode::Iroh);
        assert_eq!(modes.get(ServiceName::Admin), TransportMode::Dual);
        assert_eq!(serving(&own, &BTreeMap::new()).0, own, "no entry: its own");
        let garbled = BTreeMap::from([
            ("vm".to_owned(), "pigeon".to_owned()),
            ("nope".to_owned(), "grpc".to_owned()),
        ]);
        let (modes, skipped) = serving(&own, &garbled);
        assert_eq!(modes, own);
        assert_eq!(skipped, ["nope=grpc", "vm=pigeon"]);
    }
}
