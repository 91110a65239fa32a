//! The MicroVM controller: `reconcile` → finalizer → `apply` / `cleanup`.
//!
//! `apply` hands the VM to the agents' placement ledger whenever no agent reports this
//! generation yet ([`super::ledger`]: the Raft leader picks the host), then writes the status
//! [`crate::status::desired_status`] computes, only if it differs from the stored one.
//! `cleanup` deletes the VM through every agent (the ledger drops it, its host stops it) and
//! succeeds once no agent runs it any more.
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
use quiver_crds::{API_VERSION, MicroVM, MicroVMPhase, MicroVMStatus, VM_FINALIZER};
use quiver_rpc::proto;

use super::{Context, FIELD_MANAGER};
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
    let (assignment, agent) = super::ledger::place(vm, &uid, ctx).await?;
    let desired = publish(vm, vm.status.clone(), assignment, agent.as_ref(), ctx, api).await?;
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

/// Whether `host` heartbeats: `Some(false)` also when its Host was deleted (the VM may still
/// run there, nobody watches it), `None` before the first heartbeat.
fn host_ready(ctx: &Context, host: &str) -> Option<bool> {
    let Some(object) = ctx.hosts.state().into_iter().find(|h| h.name_any() == host) else {
        return Some(false);
    };
    if let Some(ready) = ctx.host_ready(host) {
        return Some(ready);
    }
    object.status.as_ref()?.readiness()
}

/// The host running the VM, as the agents' reports or the VM's status name it.
fn assigned_host(ctx: &Context, vm: &MicroVM, uid: &str) -> Option<String> {
    ctx.cluster
        .vm_host(uid)
        .or_else(|| vm.status.as_ref().and_then(|s| s.host.clone()))
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
    ctx.taken_puts().forget(&uid);
    if outcome.existed {
        return Err(Error::StillRemoving { uid });
    }
    if let Some(host) = assigned_host(ctx, vm, &uid)
        && outcome.unreachable.contains(&host)
    {
        return Err(Error::Unreachable(format!(
            "cannot confirm that host {host} removed vm {uid}"
        )));
    }
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
