//! The Rollout controller's executor: reads the selected Hosts and the agents' metrics, asks
//! [`machine::decide`] what to do, and does it: writes `Host.spec.transport` of the hosts to
//! move (the Host controller then switches each agent through its Admin service), takes the
//! analysis snapshots, writes the status and publishes the Events.
//!
//! Everything the machine needs survives in the Rollout's status, except the start snapshots
//! of an analysis interval, which live in memory: after an operator restart or a leader change
//! the interval in progress simply starts over.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use quiver_crds::{Host, Rollout, Service, Transport, TransportTarget};
use quiver_rpc::proto::MetricsSnapshot;

use super::{Context, FIELD_MANAGER};
use crate::rollout::analysis::{Interval, Traffic, judge};
use crate::rollout::machine::{self, HostView, Observed, interval_due};
use crate::{Error, Result};

/// How long one GetMetrics may take.
const METRICS_TIMEOUT: Duration = Duration::from_secs(2);

/// The start snapshots of a rollout's analysis interval.
pub struct Window {
    started: Time,
    snapshots: HashMap<String, MetricsSnapshot>,
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
    let hosts = selected_hosts(&ctx, &rollout);
    let status = rollout.status.clone().unwrap_or_default();
    // Whole seconds, as the status stores times: the start of an interval written there must
    // match the one its snapshots are kept under.
    let now = crate::status::now().0;
    let measurement = if interval_due(&rollout.spec, &status, now) {
        measure(&ctx, &uid, &rollout, &hosts).await
    } else {
        None
    };
    let decision = machine::decide(&Observed {
        spec: &rollout.spec,
        generation: rollout.metadata.generation,
        status: &status,
        hosts: &hosts,
        measurement,
        now,
    });
    for m in &decision.moves {
        move_host(&ctx, m).await?;
        tracing::info!(rollout = %rollout.name_any(), host = %m.host, "host transport set");
    }
    if decision.start_interval {
        let started = decision
            .status
            .analysis_started_at
            .clone()
            .unwrap_or(Time(now));
        let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
        let snapshots = snapshots(&ctx, &names)
            .await
            .into_iter()
            .filter_map(|(host, s)| s.map(|s| (host, s)))
            .collect();
        ctx.windows()
            .insert(uid.clone(), Window { started, snapshots });
    }
    if let Some(paused) = decision.set_paused {
        set_paused(&api, &rollout.name_any(), paused).await?;
    }
    if rollout.status.as_ref() != Some(&decision.status) {
        let patch = serde_json::json!({"status": decision.status});
        api.patch_status(
            &rollout.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&serde_json::json!({
                "apiVersion": quiver_crds::API_VERSION,
                "kind": "Rollout",
                "status": patch["status"],
            })),
        )
        .await?;
    }
    let reference = rollout.object_ref(&());
    for t in decision.events {
        let event = Event {
            type_: if t.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.reason.to_owned(),
            note: Some(t.note),
            action: "Rollout".to_owned(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            tracing::warn!(rollout = %rollout.name_any(), error = %e, "could not publish event");
        }
    }
    Ok(Action::requeue(decision.requeue))
}

// The signature is the one `Controller::run` calls.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(rollout: Arc<Rollout>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(rollout = %rollout.name_any(), error = %error, kind = error.metric_label(), "rollout reconcile failed");
    Action::requeue(Duration::from_secs(2))
}

/// Writes the host's `spec.transport`; the Host controller then switches its agent.
async fn move_host(ctx: &Context, m: &machine::Move) -> Result<()> {
    let api: Api<Host> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"spec": {"transport": explicit(&m.to)}});
    api.patch(&m.host, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The Hosts whose labels contain every `spec.hostSelector.matchLabels` pair, by name.
fn selected_hosts(ctx: &Context, rollout: &Rollout) -> Vec<HostView> {
    let wanted = &rollout.spec.host_selector.match_labels;
    let mut hosts: Vec<HostView> = ctx
        .hosts
        .state()
        .iter()
        .filter(|h| {
            let labels = h.labels();
            wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|h| HostView {
            name: h.name_any(),
            spec: h.spec.transport.clone(),
            serving: serving(h),
        })
        .collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    hosts
}

/// What the host's agent serves per service (`status.transports[].actual`), when every
/// service has settled.
fn serving(host: &Host) -> Option<TransportTarget> {
    let reported = &host.status.as_ref()?.transports;
    let actual = |service: Service| -> Option<Transport> {
        reported.iter().find(|t| t.service == service)?.actual
    };
    Some(TransportTarget {
        default: actual(Service::Health)?,
        health: Some(actual(Service::Health)?),
        status: Some(actual(Service::Status)?),
        vm: Some(actual(Service::Vm)?),
        monitoring: Some(actual(Service::Monitoring)?),
        raft: Some(actual(Service::Raft)?),
        admin: Some(actual(Service::Admin)?),
    })
}

/// The target as a merge patch value: unset services become `null`, so that a service the
/// old value listed does not survive the merge.
fn explicit(target: &TransportTarget) -> serde_json::Value {
    let mut value = serde_json::json!({"default": target.default});
    for service in Service::ALL {
        let listed = match service {
            Service::Health => target.health,
            Service::Status => target.status,
            Service::Vm => target.vm,
            Service::Monitoring => target.monitoring,
            Service::Raft => target.raft,
            Service::Admin => target.admin,
        };
        value[service.as_str()] = serde_json::to_value(listed).unwrap_or_default();
    }
    value
}

/// Each host's metrics now (`None` for a host that did not answer in time).
async fn snapshots(ctx: &Context, hosts: &[String]) -> Vec<(String, Option<MetricsSnapshot>)> {
    join_all(hosts.iter().map(|host| async move {
        let snapshot = ctx.cluster.metrics(host, METRICS_TIMEOUT).await;
        if let Err(e) = &snapshot {
            tracing::debug!(%host, error = %e, "GetMetrics failed");
        }
        (host.clone(), snapshot.ok())
    }))
    .await
}

/// The verdict of the interval in progress, from its start snapshots and fresh ones; `None`
/// when this operator did not take the start snapshots (it restarted, or just took over).
async fn measure(
    ctx: &Context,
    uid: &str,
    rollout: &Rollout,
    hosts: &[HostView],
) -> Option<quiver_crds::AnalysisRecord> {
    let status = rollout.status.as_ref()?;
    let started = status.analysis_started_at.as_ref()?;
    let starts = {
        let windows = ctx.windows();
        let window = windows.get(uid).filter(|w| &w.started == started)?;
        window.snapshots.clone()
    };
    let names: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let ends = snapshots(ctx, &names).await;
    let canary = |h: &str| status.canary_hosts.iter().any(|c| c == h);
    let mut unanswered = Vec::new();
    let (mut canaries, mut baseline) = (Vec::new(), Vec::new());
    for (host, end) in &ends {
        match (starts.get(host), end) {
            (Some(start), Some(end)) => {
                let interval = Interval { start, end };
                if canary(host) {
                    canaries.push(interval);
                } else {
                    baseline.push(interval);
                }
            }
            (_, None) if canary(host) => unanswered.push(host.clone()),
            _ => {}
        }
    }
    let baseline_hosts = hosts.iter().filter(|h| !canary(&h.name)).count();
    let baseline = (baseline_hosts > 0).then(|| Traffic::of(&baseline));
    Some(judge(
        &rollout.spec.analysis,
        &Traffic::of(&canaries),
        baseline.as_ref(),
        &unanswered,
        &Time(Timestamp::now()),
    ))
}

/// Sets `spec.paused` (a pause step without a duration began, or ended another way).
async fn set_paused(api: &Api<Rollout>, name: &str, paused: bool) -> Result<()> {
    let patch = serde_json::json!({"spec": {"paused": paused}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}
