//! A MicroVM rollout's side of the executor: the selected MicroVMs as units, a move as a
//! write of their kernel / initrd / cmdline followed by a restart on it, and the analysis
//! from the canary VMs' readiness and restarts.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use quiver_crds::condition::GUEST_READY;
use quiver_crds::{AnalysisRecord, MicroVM, Rollout, Verdict, VmHealth, VmTemplate};

use crate::controller::Context;
use crate::rollout::machine::{Setting, Unit};
use crate::rollout::restart::{next_patch, running, template};
use crate::{Error, Result};

/// The MicroVMs of the rollout's namespace whose labels contain every selector pair, by name.
pub fn selected(ctx: &Context, rollout: &Rollout) -> Vec<MicroVM> {
    let namespace = rollout.namespace();
    let wanted = rollout
        .spec
        .micro_vms
        .as_ref()
        .map(|m| m.selector.match_labels.clone())
        .unwrap_or_default();
    let mut vms: Vec<MicroVM> = ctx
        .vms
        .state()
        .iter()
        .filter(|vm| vm.namespace() == namespace && vm.metadata.deletion_timestamp.is_none())
        .filter(|vm| {
            let labels = vm.labels();
            wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|vm| (**vm).clone())
        .collect();
    vms.sort_by_key(ResourceExt::name_any);
    vms
}

/// The VMs as the machine sees them.
#[must_use]
pub fn units(vms: &[MicroVM]) -> Vec<Unit> {
    vms.iter()
        .map(|vm| Unit {
            name: vm.name_any(),
            spec: Some(Setting::Template(template(vm))),
            saved: Some(Setting::Template(template(vm))),
            serving: running(vm).map(Setting::Template),
        })
        .collect()
}

/// Writes the VM's template fields: those `to` sets, and on a restore also removes those it
/// does not (the VM had none).
pub async fn move_vm(
    ctx: &Context,
    namespace: &str,
    name: &str,
    to: &VmTemplate,
    restore: bool,
) -> Result<()> {
    let mut spec = serde_json::Map::new();
    for (field, value) in [
        ("kernel", &to.kernel),
        ("initrd", &to.initrd),
        ("cmdline", &to.cmdline),
    ] {
        match value {
            Some(v) => {
                spec.insert(field.to_owned(), v.clone().into());
            }
            None if restore => {
                spec.insert(field.to_owned(), serde_json::Value::Null);
            }
            None => {}
        }
    }
    patch(ctx, namespace, name, &serde_json::json!({ "spec": spec })).await
}

/// Takes the next restart step of every VM the rollout touches (canaries and those moving
/// back), so each runs the template its spec names.
pub async fn restart_moved(ctx: &Context, rollout: &Rollout, vms: &[MicroVM]) -> Result<()> {
    let status = rollout.status.clone().unwrap_or_default();
    let namespace = rollout
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    for vm in vms {
        let name = vm.name_any();
        let touched =
            status.canaries.contains(&name) || status.previous.iter().any(|p| p.name == name);
        if let (true, Some(next)) = (touched, next_patch(vm)) {
            patch(ctx, &namespace, &name, &next).await?;
            tracing::info!(vm = %name, patch = %next, "restarting on the rollout's template");
        }
    }
    Ok(())
}

async fn patch(ctx: &Context, namespace: &str, name: &str, body: &serde_json::Value) -> Result<()> {
    let api: Api<MicroVM> = Api::namespaced(ctx.client.clone(), namespace);
    api.patch(name, &PatchParams::default(), &Patch::Merge(body))
        .await?;
    Ok(())
}

/// Restart counts of the VMs now, by name (the start of an analysis interval).
#[must_use]
pub fn restarts(vms: &[MicroVM]) -> HashMap<String, u32> {
    vms.iter()
        .map(|vm| {
            let count = vm.status.as_ref().map_or(0, |s| s.restart_count);
            (vm.name_any(), count)
        })
        .collect()
}

/// The verdict of an interval: every canary VM GuestReady, none restarted since `starts`.
#[must_use]
pub fn measure(
    rollout: &Rollout,
    vms: &[MicroVM],
    starts: &HashMap<String, u32>,
) -> AnalysisRecord {
    let canaries = rollout
        .status
        .as_ref()
        .map(|s| s.canaries.clone())
        .unwrap_or_default();
    let mut health = VmHealth::default();
    let (mut not_ready, mut restarted) = (Vec::new(), Vec::new());
    for vm in vms.iter().filter(|vm| canaries.contains(&vm.name_any())) {
        let name = vm.name_any();
        health.canaries += 1;
        let status = vm.status.clone().unwrap_or_default();
        if status
            .condition(GUEST_READY)
            .is_some_and(|c| c.status == "True")
        {
            health.guest_ready += 1;
        } else {
            not_ready.push(name.clone());
        }
        let before = starts.get(&name).copied().unwrap_or(status.restart_count);
        let more = status.restart_count.saturating_sub(before);
        if more > 0 {
            health.restarts += more;
            restarted.push(name);
        }
    }
    let mut missed = Vec::new();
    if !not_ready.is_empty() {
        missed.push(format!(
            "{} of {} canary VMs not GuestReady: {}",
            not_ready.len(),
            health.canaries,
            not_ready.join(", ")
        ));
    }
    if !restarted.is_empty() {
        missed.push(format!(
            "canary VMs restarted {} times during the interval: {}",
            health.restarts,
            restarted.join(", ")
        ));
    }
    let (verdict, message) = if missed.is_empty() {
        (
            Verdict::Passed,
            format!(
                "all {} canary VMs GuestReady, none restarted",
                health.canaries
            ),
        )
    } else {
        (Verdict::Failed, missed.join("; "))
    };
    AnalysisRecord {
        time: Time(Timestamp::now()),
        verdict,
        message,
        canary: None,
        micro_vms: Some(health),
        baseline: None,
    }
}
