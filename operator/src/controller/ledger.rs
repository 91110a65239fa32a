//! MicroVMs when the agents' Raft group places them (`ControllerConfig::raft`): the operator
//! sends the VM to any reachable agent, which validates it and commits it to the placement
//! ledger through the leader; the leader picks the host. The operator then follows the VM
//! through the agents' status streams, keeping for each VM the report with the highest epoch,
//! so a VM that failed over shows its new host without any write from the operator.
//!
//! A put is sent once per generation: when no agent reports the current generation yet and no
//! agent took a put of it lately ([`TakenPuts`]). Until the VM's host reports it, the reply of
//! that put stands for it (a reconcile comes at every status write, dozens before a VM boots,
//! and each put is a Raft commit). Retries after a leader change are safe (the ledger ignores
//! a generation it has), and an unchanged VM costs no Raft write. A put the ledger could not
//! place does not stand: the VM is put again at each wake-up (a Host change, its requeue), so
//! its reason follows the Hosts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kube::ResourceExt;
use quiver_crds::MicroVM;
use quiver_rpc::proto;

use super::Context;
use crate::convert::put_request;
use crate::status::Assignment;
use crate::{Error, Result};

/// Why a VM no agent took waits: no Host at all, or none of their agents answered.
fn no_agent(ctx: &Context, why: &str) -> Assignment {
    if ctx.cluster.hosts().is_empty() {
        return Assignment::Unschedulable {
            reason: "NoHosts".to_owned(),
            message: "no Host is registered: no agent can take the VM".to_owned(),
        };
    }
    Assignment::Unschedulable {
        reason: "HostsUnreachable".to_owned(),
        message: format!("waiting for a host: no agent took the VM ({why}); retried"),
    }
}

/// The reason of an unplaced VM whose agent gave none.
const NO_HOST_FITS: &str = "NoHostFits";

/// How long the reply of a put an agent took stands for a VM no agent reports: past it, the
/// put is sent again (in case the ledger lost it, say a group rebuilt from empty data dirs).
pub const PUT_REPLY_STANDS_FOR: Duration = Duration::from_secs(10);

/// The reply to the last put an agent took, by VM uid: its generation, when, and the reply.
#[derive(Debug, Default)]
pub struct TakenPuts {
    by_uid: HashMap<String, (i64, Instant, proto::VmStatus)>,
}

impl TakenPuts {
    /// The reply to a put of `generation` taken within [`PUT_REPLY_STANDS_FOR`] before `now`.
    #[must_use]
    pub fn reply(&self, uid: &str, generation: i64, now: Instant) -> Option<proto::VmStatus> {
        let (taken_generation, at, reply) = self.by_uid.get(uid)?;
        let fresh = now.saturating_duration_since(*at) < PUT_REPLY_STANDS_FOR;
        (*taken_generation == generation && fresh).then(|| reply.clone())
    }

    /// Keeps `reply` if it placed the VM. An unplaced reply does not stand: its reason changes
    /// as Hosts come and go, and the Host changes that wake every VM must ask the ledger again.
    pub fn taken(&mut self, uid: &str, generation: i64, now: Instant, reply: proto::VmStatus) {
        if reply.host.is_empty() {
            self.by_uid.remove(uid);
        } else {
            self.by_uid.insert(uid.to_owned(), (generation, now, reply));
        }
    }

    /// The VM is gone.
    pub fn forget(&mut self, uid: &str) {
        self.by_uid.remove(uid);
    }
}

/// The assignment and the agent report to publish for `vm`.
pub async fn place(
    vm: &MicroVM,
    uid: &str,
    ctx: &Context,
) -> Result<(Assignment, Option<proto::VmStatus>)> {
    let generation = vm.metadata.generation.unwrap_or_default();
    let reported = ctx.cluster.vm(uid).filter(|s| !s.host.is_empty());
    let current = reported
        .as_ref()
        .is_some_and(|s| s.observed_generation >= generation);
    let now = Instant::now();
    let taken = ctx.taken_puts().reply(uid, generation, now);
    let status = if current {
        reported
    } else if taken.is_some() {
        taken
    } else {
        match ctx.cluster.put_vm_anywhere(put_request(vm, uid, 0)).await {
            Ok(status) => {
                ctx.taken_puts().taken(uid, generation, now, status.clone());
                Some(status)
            }
            Err(Error::Rejected { host, source }) => {
                let message = source.to_string();
                return Ok((Assignment::Rejected { host, message }, None));
            }
            Err(Error::Unreachable(why)) => {
                tracing::info!(vm = %vm.name_any(), %why, "no agent took the VM; will retry");
                if reported.is_none() {
                    return Ok((no_agent(ctx, &why), None));
                }
                reported
            }
            Err(other) => return Err(other),
        }
    };
    Ok(match status {
        Some(s) if s.host.is_empty() && !s.message.is_empty() => (
            Assignment::Unschedulable {
                reason: if s.reason.is_empty() {
                    NO_HOST_FITS.to_owned()
                } else {
                    s.reason
                },
                message: format!(
                    "{}; the Raft leader places it as soon as a host fits (check `kubectl get qh`)",
                    s.message
                ),
            },
            None,
        ),
        Some(s) if !s.host.is_empty() => {
            let assignment = Assignment::Assigned {
                host: s.host.clone(),
                epoch: s.epoch,
            };
            // A reply of the ledger's (Scheduling, no process) is not the agent's own report.
            let agent = (s.phase != proto::Phase::Scheduling as i32).then_some(s);
            (assignment, agent)
        }
        _ => (
            Assignment::Unschedulable {
                reason: NO_HOST_FITS.to_owned(),
                message: "no host has room for the VM or matches its nodeSelector; the Raft \
                          leader places it as soon as one does (check `kubectl get qh`)"
                    .to_owned(),
            },
            None,
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_put_stands_for_its_generation_for_a_while() {
        let mut puts = TakenPuts::default();
        let t0 = Instant::now();
        let reply = proto::VmStatus {
            host: "agent-1".into(),
            epoch: 3,
            ..Default::default()
        };
        assert!(puts.reply("u", 1, t0).is_none(), "nothing taken yet");
        puts.taken("u", 1, t0, reply.clone());
        assert_eq!(puts.reply("u", 1, t0 + Duration::from_secs(1)), Some(reply));
        assert!(puts.reply("u", 2, t0).is_none(), "a new generation is sent");
        assert!(puts.reply("other", 1, t0).is_none());
        assert!(
            puts.reply("u", 1, t0 + PUT_REPLY_STANDS_FOR).is_none(),
            "sent again once the reply is old"
        );
        puts.forget("u");
        assert!(puts.reply("u", 1, t0).is_none(), "forgotten with the VM");
    }

    #[test]
    fn an_unplaced_reply_never_stands() {
        let mut puts = TakenPuts::default();
        let t0 = Instant::now();
        let placed = proto::VmStatus {
            host: "agent-1".into(),
            ..Default::default()
        };
        let unplaced = proto::VmStatus {
            reason: "NoHosts".into(),
            message: "no host is registered yet".into(),
            ..Default::default()
        };
        puts.taken("u", 1, t0, unplaced.clone());
        assert!(
            puts.reply("u", 1, t0).is_none(),
            "asked again at the next wake-up"
        );
        puts.taken("u", 1, t0, placed);
        puts.taken("u", 1, t0, unplaced);
        assert!(
            puts.reply("u", 1, t0).is_none(),
            "the newer unplaced reply wins"
        );
    }
}
