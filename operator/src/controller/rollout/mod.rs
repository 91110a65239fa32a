//! The Rollout controller's executor: reads the selected units (Hosts, or MicroVMs) and what
//! the analysis needs, asks [`machine::decide`] what to do, and does it: writes the spec of the
//! units to move ([`hosts`]: `Host.spec.transport`, which the Host controller applies through
//! the agent's Admin service; [`vms`]: the VM's template, then a restart on it), takes the
//! analysis snapshots, writes the status and publishes the Events.
//!
//! Everything the machine needs survives in the Rollout's status, except the start snapshots
//! of an analysis interval, which live in memory: after an operator restart or a leader change
//! the interval in progress simply starts over.

mod hosts;
mod vms;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use quiver_crds::{AnalysisRecord, MicroVM, Rollout};
use quiver_rpc::proto::MetricsSnapshot;

use super::{Context, FIELD_MANAGER};
use crate::rollout::machine::{self, Decision, Observed, Setting, Unit, interval_due};
use crate::{Error, Result};

/// How long one GetMetrics may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// What an analysis interval started with: the agents' metrics (transport rollouts) or the
/// VMs' restart counts (MicroVM rollouts).
pub struct Window {
    started: Time,
    snapshots: HashMap<String, MetricsSnapshot>,
    restarts: HashMap<String, u32>,
}

/// The selected units, and for a MicroVM rollout the VMs behind them.
struct Selection {
    units: Vec<Unit>,
    vms: Option<Vec<MicroVM>>,
}

impl Selection {
    fn of(ctx: &Context, rollout: &Rollout) -> Self {
        if rollout.spec.micro_vms.is_some() {
            let vms = vms::selected(ctx, rollout);
            Selection {
                units: vms::units(&vms),
                vms: Some(vms),
            }
        } else {
            Selection {
                units: hosts::selected(ctx, rollout),
                vms: None,
            }
        }
    }
}

pub async fn reconcile(rollout: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action> {
    if ctx.hosts_listed().await.is_err() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    ctx.sync_agents();
    let namespace = rollout
        .namespace()
        .ok_or(Error::MissingField("namespace"))?;
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), &namespace);
    // The store may lag behind the status this controller wrote a moment ago; decisions build
    // on the last status, so read it fresh.
    let Some(rollout) = api.get_opt(&rollout.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let uid = rollout.uid().ok_or(Error::MissingField("uid"))?;
    let selection = Selection::of(&ctx, &rollout);
    let status = rollout.status.clone().unwrap_or_default();
    // Whole seconds, as the status stores times: the start of an interval written there must
    // match the one its snapshots are kept under.
    let now = crate::status::now().0;
    let measurement = if interval_due(&rollout.spec, &status, now) {
        measure(&ctx, &uid, &rollout, &selection).await
    } else {
        None
    };
    let decision = machine::decide(&Observed {
        spec: &rollout.spec,
        generation: rollout.metadata.generation,
        status: &status,
        hosts: &selection.units,
        measurement,
        now,
    });
    for m in &decision.moves {
        match &m.to {
            Setting::Transport(to) => hosts::move_host(&ctx, &m.name, to).await?,
            Setting::Template(to) => {
                vms::move_vm(&ctx, &namespace, &m.name, to, m.restore).await?;
            }
        }
        tracing::info!(rollout = %rollout.name_any(), unit = %m.name, restore = m.restore, "moved");
    }
    if let Some(vms) = &selection.vms {
        let moved = Rollout {
            status: Some(decision.status.clone()),
            ..rollout.clone()
        };
        vms::restart_moved(&ctx, &moved, vms).await?;
    }
    if decision.start_interval {
        start_interval(&ctx, &uid, &decision, &selection, now).await;
    }
    if let Some(paused) = decision.set_paused {
        set_paused(&api, &rollout.name_any(), paused).await?;
    }
    write_status(&api, &rollout, &decision).await?;
    super::publish(&ctx, &rollout.object_ref(&()), decision.events, "Rollout").await;
    Ok(Action::requeue(decision.requeue))
}

async fn start_interval(
    ctx: &Context,
    uid: &str,
    decision: &Decision,
    selection: &Selection,
    now: k8s_openapi::jiff::Timestamp,
) {
    let started = decision
        .status
        .analysis_started_at
        .clone()
        .unwrap_or(Time(now));
    let window = match &selection.vms {
        Some(vms) => Window {
            started,
            snapshots: HashMap::new(),
            restarts: vms::restarts(vms),
        },
        None => Window {
            started,
            snapshots: hosts::snapshots(ctx, &selection.units).await,
            restarts: HashMap::new(),
        },
    };
    ctx.windows().insert(uid.to_owned(), window);
}

/// The verdict of the interval in progress, from its start and now; `None` when this operator
/// did not see its start (it restarted, or just took over).
async fn measure(
    ctx: &Context,
    uid: &str,
    rollout: &Rollout,
    selection: &Selection,
) -> Option<AnalysisRecord> {
    let started = rollout.status.as_ref()?.analysis_started_at.as_ref()?;
    let (snapshots, restarts) = {
        let windows = ctx.windows();
        let window = windows.get(uid).filter(|w| &w.started == started)?;
        (window.snapshots.clone(), window.restarts.clone())
    };
    Some(match &selection.vms {
        Some(vms) => vms::measure(rollout, vms, &restarts),
        None => hosts::measure(ctx, rollout, &selection.units, &snapshots).await,
    })
}

async fn write_status(api: &Api<Rollout>, rollout: &Rollout, decision: &Decision) -> Result<()> {
    if rollout.status.as_ref() == Some(&decision.status) {
        return Ok(());
    }
    let apply = serde_json::json!({
        "apiVersion": quiver_crds::API_VERSION,
        "kind": "Rollout",
        "status": decision.status,
    });
    api.patch_status(
        &rollout.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&apply),
    )
    .await?;
    Ok(())
}

// The signature is the one `Controller::run` calls.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(rollout: Arc<Rollout>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(rollout = %rollout.name_any(), error = %error, kind = error.metric_label(), "rollout reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Sets `spec.paused` (a pause step without a duration began, or ended another way).
async fn set_paused(api: &Api<Rollout>, name: &str, paused: bool) -> Result<()> {
    let patch = serde_json::json!({"spec": {"paused": paused}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
