//! The MicroVM controller: `reconcile` → finalizer → `apply` / `cleanup`.
//!
//! `apply` places the VM (once), sends it to its host's agent whenever the agent has not seen
//! this generation, then writes the status [`crate::status::desired_status`] computes, only if
//! it differs from the stored one. `cleanup` deletes the VM on every agent and succeeds once no
//! agent knows it any more (at once when it was never placed).
//!
//! Spec changes are passed through: the agent restarts QEMU when the machine changes (cpus,
//! memory, kernel, disks...) and only starts/stops it when `runStrategy` changes.
//! RestartRequired is True while the host still runs an older generation.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{self, finalizer};
use kube::{Api, Resource, ResourceExt};
use quiver_crds::condition::READY;
use quiver_crds::{API_VERSION, MicroVM, MicroVMPhase, MicroVMStatus, VM_FINALIZER};
use quiver_rpc::proto;

use super::allocations::Allocations;
use super::{Context, FIELD_MANAGER};
use crate::convert::put_request;
use crate::placement::{self, HostView, Placement, place};
use crate::status::{Assignment, Observation, Transition, desired_status, now, transitions};
use crate::{Error, Result};

pub async fn reconcile(vm: Arc<MicroVM>, ctx: Arc<Context>) -> Result<Action> {
    let ns = vm
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<MicroVM> = Api::namespaced(ctx.client.clone(), &ns);
    let vm = with_finalizer(&api, vm).await?;
    finalizer(&api, VM_FINALIZER, vm, |event| async {
        match event {
            finalizer::Event::Apply(vm) => apply(&vm, &ctx, &api).await,
            finalizer::Event::Cleanup(vm) => cleanup(&vm, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
        finalizer::Error::UnnamedObject => Error::MissingField("metadata.name"),
        finalizer::Error::InvalidFinalizer => Error::MissingField("a valid finalizer"),
    })
}

/// Adds the finalizer to a new VM and goes on with the patched object. kube's `finalizer`
/// helper would add it too, but then end the reconcile and wait for the patch's watch event:
/// a round trip through the API and the queue before every VM's first placement.
async fn with_finalizer(api: &Api<MicroVM>, vm: Arc<MicroVM>) -> Result<Arc<MicroVM>> {
    if vm.meta().deletion_timestamp.is_some() || vm.finalizers().iter().any(|f| f == VM_FINALIZER) {
        return Ok(vm);
    }
    // The same guarded patch as kube's helper: it fails, and the reconcile is retried, when
    // someone else changed the finalizers meanwhile.
    let current = vm.finalizers();
    let patch = if current.is_empty() {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [VM_FINALIZER]},
        ])
    } else {
        serde_json::json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": VM_FINALIZER},
        ])
    };
    let patch: json_patch::Patch = serde_json::from_value(patch).map_err(Error::Serialize)?;
    let patched = api
        .patch::<MicroVM>(&vm.name_any(), &PatchParams::default(), &Patch::Json(patch))
        .await?;
    Ok(Arc::new(patched))
}

// The signature is the one `Controller::run` calls.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(vm: Arc<MicroVM>, error: &Error, _ctx: Arc<Context>) -> Action {
    match error {
        Error::StillRemoving { .. } => Action::requeue(Duration::from_millis(500)),
        other => {
            tracing::warn!(vm = %vm.name_any(), error = %other, kind = other.metric_label(), "reconcile failed");
            Action::requeue(Duration::from_secs(5))
        }
    }
}

fn uid(vm: &MicroVM) -> Result<String> {
    vm.uid().ok_or(Error::MissingField("metadata.uid"))
}

async fn apply(vm: &MicroVM, ctx: &Context, api: &Api<MicroVM>) -> Result<Action> {
    // Until the Host store has listed, "no Host" and "Host gone" would both be wrong.
    if ctx.hosts_listed().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    ctx.sync_agents();
    let uid = uid(vm)?;
    if ctx.config.raft {
        let (assignment, agent) = super::ledger::place(vm, &uid, ctx).await?;
        let desired = publish(vm, vm.status.clone(), assignment, agent.as_ref(), ctx, api).await?;
        return Ok(requeue_for(&desired));
    }
    let mut current = vm.status.clone();
    let mut known = known_host(vm, &uid, ctx);
    if let Some(host) = known.as_deref()
        && draining(ctx, host)
    {
        // Stopped there first (every agent asked); placement below then picks another host.
        let outcome = ctx.cluster.delete_vm(&uid).await;
        if outcome.existed || !outcome.unreachable.is_empty() {
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        tracing::info!(vm = %vm.name_any(), %host, "stopped on a draining host; placing it anew");
        ctx.forget(&uid);
        known = None;
    }
    let (host, epoch) = if let Some(host) = known {
        let stored = current.as_ref().map_or(0, |s| s.epoch);
        let epoch = ctx.cluster.vm(&uid).map_or(stored, |c| c.epoch).max(1);
        (host, epoch)
    } else {
        let placed = {
            let mut allocations = ctx.placing.lock().await;
            let now = std::time::Instant::now();
            if allocations.stale(now) {
                allocations.recount(now, allocated(ctx));
            }
            let placed = place(&vm.spec, &host_views(ctx, &uid, &allocations));
            if let Placement::Host(host) = &placed {
                ctx.assign(&uid, host);
                allocations.add(uid.clone(), host.clone(), u64::from(vm.spec.memory_mib));
            }
            placed
        };
        match placed {
            Placement::Host(host) => {
                let epoch = current.as_ref().map_or(0, |s| s.epoch) + 1;
                // The choice is stored before the VM is sent: an operator restarted meanwhile
                // finds the host in the status, even when that agent cannot be reached then.
                let assignment = Assignment::Assigned {
                    host: host.clone(),
                    epoch,
                };
                current = Some(publish(vm, current, assignment, None, ctx, api).await?);
                (host, epoch)
            }
            Placement::Unschedulable {
                reason: placement::CONNECTING,
                ..
            } => {
                // Bounded by the connect timeout; the agent's first list wakes this VM.
                return Ok(Action::requeue(Duration::from_millis(250)));
            }
            Placement::Unschedulable { reason, message } => {
                let waiting = Assignment::Unschedulable { reason, message };
                let desired = publish(vm, current, waiting, None, ctx, api).await?;
                return Ok(requeue_for(&desired));
            }
        }
    };
    let (assignment, agent) = put(vm, &uid, host, epoch, ctx).await?;
    let desired = publish(vm, current, assignment, agent.as_ref(), ctx, api).await?;
    Ok(requeue_for(&desired))
}

/// Computes the status for `assignment` and `agent` against `current` (the stored status, or
/// the one this reconcile just wrote) and writes it, with its Events, when it differs.
async fn publish(
    vm: &MicroVM,
    current: Option<MicroVMStatus>,
    assignment: Assignment,
    agent: Option<&proto::VmStatus>,
    ctx: &Context,
    api: &Api<MicroVM>,
) -> Result<MicroVMStatus> {
    let host_ready = match &assignment {
        Assignment::Assigned { host, .. } => host_ready(ctx, host),
        _ => None,
    };
    let obs = Observation {
        assignment,
        agent,
        host_ready,
        now: now(),
    };
    let seen;
    let vm = if current == vm.status {
        vm
    } else {
        seen = MicroVM {
            status: current.clone(),
            ..vm.clone()
        };
        &seen
    };
    let desired = desired_status(vm, &obs);
    if current.as_ref() != Some(&desired) {
        write_status(vm, &desired, api).await?;
        publish_events(vm, current.as_ref(), &desired, ctx).await;
    }
    Ok(desired)
}

/// The host the VM was placed on, as the agents, this operator or the VM's status know it.
fn known_host(vm: &MicroVM, uid: &str, ctx: &Context) -> Option<String> {
    let status = vm.status.as_ref();
    ctx.cluster
        .vm(uid)
        .map(|c| c.host)
        .or_else(|| ctx.assignment(uid))
        .or_else(|| status.filter(|s| s.epoch > 0).and_then(|s| s.host.clone()))
}

/// Sends the VM to `host` unless its agent already runs this generation and epoch; returns
/// the assignment and what the agent says.
async fn put(
    vm: &MicroVM,
    uid: &str,
    host: String,
    epoch: u64,
    ctx: &Context,
) -> Result<(Assignment, Option<proto::VmStatus>)> {
    let cached = ctx.cluster.vm(uid);
    let generation = vm.metadata.generation.unwrap_or_default();
    let fresh = cached
        .as_ref()
        .is_some_and(|c| c.observed_generation == generation && c.epoch == epoch);
    if fresh {
        return Ok((Assignment::Assigned { host, epoch }, cached));
    }
    ctx.assign(uid, &host);
    match ctx.cluster.put_vm(&host, put_request(vm, uid, epoch)).await {
        Ok(reported) => Ok((Assignment::Assigned { host, epoch }, Some(reported))),
        Err(Error::Unreachable(why)) => {
            tracing::info!(vm = %vm.name_any(), %host, %why, "host unreachable; will retry");
            Ok((Assignment::Assigned { host, epoch }, cached))
        }
        Err(Error::Agent(refused)) => {
            let message = refused.to_string();
            Ok((Assignment::Rejected { host, message }, None))
        }
        Err(other) => Err(other),
    }
}

/// `(uid, host, memory)` of every VM that holds memory on a host (Halted ones hold none).
fn allocated(ctx: &Context) -> Vec<(String, String, u64)> {
    ctx.vms
        .state()
        .iter()
        .filter(|vm| vm.spec.run_strategy != quiver_crds::RunStrategy::Halted)
        .filter_map(|vm| {
            let host = assigned_host(ctx, vm)?;
            Some((vm.uid()?, host, u64::from(vm.spec.memory_mib)))
        })
        .collect()
}

/// Every registered Host as placement sees it, with the memory the other VMs hold on it.
fn host_views(ctx: &Context, placing_uid: &str, allocations: &Allocations) -> Vec<HostView> {
    ctx.hosts
        .state()
        .iter()
        .map(|h| {
            let name = h.name_any();
            let status = h.status.clone().unwrap_or_default();
            HostView {
                labels: h.labels().clone(),
                capacity: status.capacity.unwrap_or(h.spec.capacity),
                allocated_memory_mib: allocations.on_host_without(&name, placing_uid),
                ready: status.condition(READY).is_some_and(|c| c.status == "True"),
                schedulable: !h.spec.unschedulable && !h.spec.drain,
                reach: ctx.cluster.reach(&name),
                name,
            }
        })
        .collect()
}

fn assigned_host(ctx: &Context, vm: &MicroVM) -> Option<String> {
    let uid = vm.uid()?;
    ctx.cluster
        .vm_host(&uid)
        .or_else(|| ctx.assignment(&uid))
        .or_else(|| vm.status.as_ref().and_then(|s| s.host.clone()))
}

fn draining(ctx: &Context, host: &str) -> bool {
    ctx.hosts
        .state()
        .iter()
        .any(|h| h.spec.drain && h.name_any() == host)
}

/// Whether `host` heartbeats: `Some(false)` also when its Host was deleted (the VM may still
/// run there, nobody watches it), `None` before the first heartbeat.
fn host_ready(ctx: &Context, host: &str) -> Option<bool> {
    let Some(object) = ctx.hosts.state().into_iter().find(|h| h.name_any() == host) else {
        return Some(false);
    };
    if let Some(ready) = ctx.host_ready(host) {
        return Some(ready);
    }
    let status = object.status.as_ref()?;
    status.condition(READY).map(|c| c.status == "True")
}

async fn write_status(vm: &MicroVM, status: &MicroVMStatus, api: &Api<MicroVM>) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": API_VERSION,
        "kind": "MicroVM",
        "status": status,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch_status(&vm.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    Ok(())
}

async fn publish_events(
    vm: &MicroVM,
    old: Option<&MicroVMStatus>,
    new: &MicroVMStatus,
    ctx: &Context,
) {
    super::publish(ctx, &vm.object_ref(&()), transitions(old, new), "Reconcile").await;
}

/// A safety net only: agent status streams and Host changes wake the controller earlier.
fn requeue_for(status: &MicroVMStatus) -> Action {
    match status.phase {
        Some(MicroVMPhase::Running | MicroVMPhase::Stopped) => {
            Action::requeue(Duration::from_secs(300))
        }
        Some(MicroVMPhase::Pending) => Action::requeue(Duration::from_secs(30)),
        _ => Action::requeue(Duration::from_secs(10)),
    }
}

async fn cleanup(vm: &MicroVM, ctx: &Context) -> Result<Action> {
    ctx.sync_agents();
    let uid = uid(vm)?;
    let outcome = ctx.cluster.delete_vm(&uid).await;
    if outcome.existed {
        return Err(Error::StillRemoving { uid });
    }
    if let Some(host) = assigned_host(ctx, vm)
        && outcome.unreachable.contains(&host)
    {
        return Err(Error::Unreachable(format!(
            "cannot confirm that host {host} removed vm {uid}"
        )));
    }
    ctx.forget(&uid);
    let deleted = Transition {
        warning: false,
        reason: "Deleted",
        note: "the VM is stopped and its files removed".to_owned(),
    };
    if let Err(e) = ctx
        .events
        .publish(&deleted, "Delete", &vm.object_ref(&()))
        .await
    {
        tracing::debug!(error = %e, "could not publish event");
    }
    Ok(Action::await_change())
}
