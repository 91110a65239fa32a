//! What only the leader does, every [`TICK`] and whenever a Host changes: membership follows
//! the registered Hosts (new ones join as learners, up to [`MAX_VOTERS`] vote, deleted ones
//! leave), the ledger's hosts follow their Host objects (capacity, labels, cordon, drain,
//! transports), and hosts whose lease lapsed are declared down, which moves their VMs under a
//! higher epoch.
//!
//! [`membership_plan`] is pure; [`Duties`] runs it and the lease [`Watcher`] against openraft.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::BasicNode;
use openraft::ChangeMembers;
use quiver_raft::lease::{LeaseConfig, Watcher};
use quiver_raft::{Command, Ledger, RaftNode};

use super::Member;
use super::watchdog::boottime_ms;

pub const TICK: Duration = Duration::from_millis(200);
/// Voters beyond five slow every commit and add no safety a fleet needs.
pub const MAX_VOTERS: usize = 5;

/// The membership changes that bring the group to `wanted`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipPlan {
    pub add_learners: BTreeMap<u64, BasicNode>,
    /// The new voter set, when it changes.
    pub voters: Option<BTreeSet<u64>>,
    /// Nodes to drop once they no longer vote.
    pub remove: BTreeSet<u64>,
}

/// Voters: the current ones still registered and not down, then others by id, up to
/// [`MAX_VOTERS`]; the leader always stays one.
#[must_use]
pub fn membership_plan(
    leader: u64,
    voters: &BTreeSet<u64>,
    nodes: &BTreeMap<u64, BasicNode>,
    wanted: &BTreeMap<u64, BasicNode>,
    down: &BTreeSet<u64>,
) -> MembershipPlan {
    let add_learners: BTreeMap<u64, BasicNode> = wanted
        .iter()
        .filter(|(id, _)| !nodes.contains_key(id))
        .map(|(id, node)| (*id, node.clone()))
        .collect();
    let eligible = |id: &u64| {
        *id == leader || (nodes.contains_key(id) && wanted.contains_key(id) && !down.contains(id))
    };
    let mut next: BTreeSet<u64> = voters.iter().copied().filter(eligible).collect();
    next.insert(leader);
    for id in nodes.keys().copied().filter(eligible) {
        if next.len() >= MAX_VOTERS {
            break;
        }
        next.insert(id);
    }
    while next.len() > MAX_VOTERS {
        let Some(extra) = next.iter().copied().rev().find(|id| *id != leader) else {
            break;
        };
        next.remove(&extra);
    }
    let remove = nodes
        .keys()
        .copied()
        .filter(|id| !wanted.contains_key(id) && *id != leader && !next.contains(id))
        .collect();
    MembershipPlan {
        add_learners,
        voters: (next != *voters).then_some(next),
        remove,
    }
}

/// The leader's state between ticks.
pub struct Duties {
    node: RaftNode,
    lease: LeaseConfig,
    watch: LeaseWatch,
}

impl Duties {
    pub fn new(node: RaftNode, lease: LeaseConfig) -> Self {
        Self {
            node,
            lease,
            watch: LeaseWatch::default(),
        }
    }

    /// One tick; `members` are the registered Hosts (None until they were listed once).
    pub async fn tick(&mut self, members: Option<&[Member]>) {
        if !self.node.is_leader() {
            self.watch.stepped_down();
            return;
        }
        if let Some(members) = members {
            self.sync_membership(members).await;
            self.sync_hosts(members).await;
        }
        self.watch_leases().await;
    }

    async fn sync_membership(&self, members: &[Member]) {
        let metrics = self.node.metrics();
        let membership = metrics.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return; // a change is still in flight
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let nodes: BTreeMap<u64, BasicNode> =
            membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
        let wanted: BTreeMap<u64, BasicNode> =
            members.iter().map(|m| (m.id, m.node.clone())).collect();
        let down: BTreeSet<u64> = self.node.machine.with_ledger(|l| {
            members
                .iter()
                .filter(|m| l.hosts.get(&m.host).is_some_and(|h| h.down))
                .map(|m| m.id)
                .collect()
        });
        let plan = membership_plan(self.node.id, &voters, &nodes, &wanted, &down);
        let raft = &self.node.raft;
        for (id, node) in plan.add_learners {
            tracing::info!(node = id, addr = %node.addr, "adding a learner");
            if let Err(e) = raft.add_learner(id, node, false).await {
                tracing::warn!(node = id, error = %e, "cannot add learner");
            }
        }
        if let Some(next) = plan.voters {
            tracing::info!(?voters, ?next, "changing voters");
            if let Err(e) = raft
                .change_membership(ChangeMembers::ReplaceAllVoters(next), true)
                .await
            {
                tracing::warn!(error = %e, "cannot change voters");
                return;
            }
        }
        if !plan.remove.is_empty() {
            tracing::info!(remove = ?plan.remove, "removing nodes of deleted Hosts");
            if let Err(e) = raft
                .change_membership(ChangeMembers::RemoveNodes(plan.remove), true)
                .await
            {
                tracing::warn!(error = %e, "cannot remove nodes");
            }
        }
    }

    /// RegisterHost for Hosts the ledger lacks or has with other capacity or labels;
    /// Schedule for a changed cordon or drain; SetTransports for a changed `spec.transport`;
    /// RemoveHost for ledger hosts whose Host is gone.
    async fn sync_hosts(&self, members: &[Member]) {
        let commands: Vec<Command> = self.node.machine.with_ledger(|l| {
            let mut commands: Vec<Command> = members
                .iter()
                .filter(|m| {
                    l.hosts.get(&m.host).is_none_or(|h| {
                        h.cpus != m.cpus || h.memory_mib != m.memory_mib || h.labels != m.labels
                    })
                })
                .map(|m| Command::RegisterHost {
                    name: m.host.clone(),
                    cpus: m.cpus,
                    memory_mib: m.memory_mib,
                    labels: m.labels.clone(),
                })
                .collect();
            commands.extend(
                members
                    .iter()
                    .filter(|m| {
                        l.hosts.get(&m.host).is_some_and(|h| {
                            h.unschedulable != m.unschedulable || h.draining != m.drain
                        })
                    })
                    .map(|m| Command::Schedule {
                        host: m.host.clone(),
                        unschedulable: m.unschedulable,
                        drain: m.drain,
                    }),
            );
            // A host new to the ledger gets its transports in the same pass, after its
            // RegisterHost.
            commands.extend(
                members
                    .iter()
                    .filter(|m| {
                        l.hosts
                            .get(&m.host)
                            .map_or(!m.transports.is_empty(), |h| h.transports != m.transports)
                    })
                    .map(|m| Command::SetTransports {
                        host: m.host.clone(),
                        services: m.transports.clone(),
                    }),
            );
            let registered: BTreeSet<&str> = members.iter().map(|m| m.host.as_str()).collect();
            commands.extend(
                l.hosts
                    .keys()
                    .filter(|h| !registered.contains(h.as_str()))
                    .map(|h| Command::RemoveHost { name: h.clone() }),
            );
            commands
        });
        for command in commands {
            tracing::info!(?command, "ledger follows the Hosts");
            if let Err(e) = self.node.proposer.write(command).await {
                tracing::warn!(error = %e, "cannot update the ledger's hosts");
            }
        }
    }

    async fn watch_leases(&mut self) {
        let now = boottime_ms();
        let wall = crate::vm::now_ms().try_into().unwrap_or(0);
        let due = self
            .node
            .machine
            .with_ledger(|l| self.watch.due(l, now, wall, &self.lease));
        for command in due {
            let Command::HostDown { host, .. } = &command else {
                continue;
            };
            let host = host.clone();
            tracing::warn!(%host, "lease lapsed (with margin): declaring the host down");
            match self.node.proposer.write(command).await {
                Ok(outcome) => {
                    tracing::warn!(%host, moved = outcome.moved.len(), note = ?outcome.note, "host down");
                }
                Err(e) => tracing::warn!(%host, error = %e, "cannot declare the host down"),
            }
        }
    }
}

/// The leader's side of the leases, pure: a lease [`Watcher`] started at this node's
/// election, fed with the renewal counts the ledger holds, and the `HostDown` commands that
/// are due. Reset when the node stops leading.
#[derive(Debug, Default)]
pub struct LeaseWatch {
    /// The watcher and the renewal counts it has seen, while this node leads.
    state: Option<(Watcher, BTreeMap<String, u64>)>,
}

impl LeaseWatch {
    /// This node no longer leads: a later election starts every clock afresh.
    pub fn stepped_down(&mut self) {
        self.state = None;
    }

    /// The `HostDown` commands due at `now_ms` (monotonic) for hosts not down in `ledger`;
    /// `wall_ms` is the wall clock the commands carry (for people; fencing never reads it).
    pub fn due(
        &mut self,
        ledger: &Ledger,
        now_ms: u64,
        wall_ms: u64,
        lease: &LeaseConfig,
    ) -> Vec<Command> {
        let live: Vec<&str> = ledger.live_hosts().collect();
        let (watcher, seen) = self.state.get_or_insert_with(|| {
            let counts = ledger
                .hosts
                .iter()
                .map(|(h, e)| (h.clone(), e.renewals))
                .collect();
            (Watcher::elected(now_ms, live.iter().copied()), counts)
        });
        for (host, entry) in &ledger.hosts {
            if seen.get(host) != Some(&entry.renewals) {
                watcher.renewed(host, now_ms);
                seen.insert(host.clone(), entry.renewals);
            }
        }
        watcher
            .lapsed(now_ms, live.iter().copied(), lease)
            .into_iter()
            .map(|host| Command::HostDown {
                renewals: ledger.hosts.get(&host).map_or(0, |e| e.renewals),
                host,
                now_ms: wall_ms,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u64]) -> BTreeMap<u64, BasicNode> {
        ids.iter()
            .map(|id| (*id, BasicNode::new(format!("n{id}"))))
            .collect()
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn new_hosts_join_as_learners_and_vote_up_to_five() {
        let plan = membership_plan(1, &set(&[1]), &nodes(&[1]), &nodes(&[1, 2, 3]), &set(&[]));
        assert_eq!(
            plan.add_learners.keys().copied().collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(plan.voters, None, "learners vote once they are nodes");
        let plan = membership_plan(
            1,
            &set(&[1]),
            &nodes(&[1, 2, 3, 4, 5, 6, 7]),
            &nodes(&[1, 2, 3, 4, 5, 6, 7]),
            &set(&[]),
        );
        assert_eq!(plan.voters, Some(set(&[1, 2, 3, 4, 5])));
    }

    #[test]
    fn a_down_voter_is_replaced_by_a_learner_and_a_deleted_host_leaves() {
        let all = nodes(&[1, 2, 3, 4, 5, 6]);
        let plan = membership_plan(1, &set(&[1, 2, 3, 4, 5]), &all, &all, &set(&[3]));
        assert_eq!(plan.voters, Some(set(&[1, 2, 4, 5, 6])));
        assert!(
            plan.remove.is_empty(),
            "a down host stays a node: it may come back"
        );
        let registered = nodes(&[1, 2, 4, 5, 6]);
        let plan = membership_plan(1, &set(&[1, 2, 3, 4, 5]), &all, &registered, &set(&[]));
        assert_eq!(plan.voters, Some(set(&[1, 2, 4, 5, 6])));
        assert_eq!(plan.remove, set(&[3]));
    }

    #[test]
    fn the_leader_always_votes_and_a_settled_group_changes_nothing() {
        let all = nodes(&[1, 2, 3]);
        let plan = membership_plan(2, &set(&[1, 2, 3]), &all, &all, &set(&[2]));
        assert_eq!(plan.voters, None);
        assert_eq!(plan, MembershipPlan::default());
    }
}
