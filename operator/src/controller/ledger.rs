//! MicroVMs when the agents' Raft group places them (`ControllerConfig::raft`): the operator
//! sends the VM to any reachable agent, which validates it and commits it to the placement
//! ledger through the leader; the leader picks the host. The operator then follows the VM
//! through the agents' status streams, keeping for each VM the report with the highest epoch,
//! so a VM that failed over shows its new host without any write from the operator.
//!
//! A put is sent only when no agent reports the current generation yet: retries after a
//! leader change are safe (the ledger ignores a generation it has), and an unchanged VM costs
//! no Raft write.

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
    let status = if current {
        reported
    } else {
        match ctx.cluster.put_vm_anywhere(put_request(vm, uid, 0)).await {
            Ok(status) => Some(status),
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
