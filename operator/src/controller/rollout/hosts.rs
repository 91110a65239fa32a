//! A transport rollout's side of the executor: Hosts as units, a move as a write of
//! `Host.spec.transport`, and the analysis from the agents' Monitoring metrics.

use std::collections::HashMap;

use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use quiver_crds::{AnalysisRecord, Host, Rollout, Service, Transport, TransportTarget};
use quiver_rpc::proto::MetricsSnapshot;

use super::METRICS_TIMEOUT;
use crate::Result;
use crate::controller::Context;
use crate::rollout::analysis::{Interval, Traffic, judge};
use crate::rollout::machine::{Setting, Unit};

/// Writes the host's `spec.transport`; the Host controller then switches its agent.
pub async fn move_host(ctx: &Context, host: &str, to: &TransportTarget) -> Result<()> {
    let api: Api<Host> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"spec": {"transport": explicit(to)}});
    api.patch(host, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// The Hosts whose labels contain every `spec.hostSelector.matchLabels` pair, by name.
pub fn selected(ctx: &Context, rollout: &Rollout) -> Vec<Unit> {
    let wanted = &rollout.spec.host_selector.match_labels;
    let mut hosts: Vec<Unit> = ctx
        .hosts
        .state()
        .iter()
        .filter(|h| {
            let labels = h.labels();
            wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .map(|h| {
            let serving = serving(h).map(Setting::Transport);
            Unit {
                name: h.name_any(),
                spec: h.spec.transport.clone().map(Setting::Transport),
                saved: serving.clone(),
                serving,
            }
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

/// Each host's metrics now; hosts that did not answer in time are left out.
pub async fn snapshots(ctx: &Context, hosts: &[Unit]) -> HashMap<String, MetricsSnapshot> {
    join_all(hosts.iter().map(|host| async move {
        let snapshot = ctx.cluster.metrics(&host.name, METRICS_TIMEOUT).await;
        if let Err(e) = &snapshot {
            tracing::debug!(host = %host.name, error = %e, "GetMetrics failed");
        }
        (host.name.clone(), snapshot.ok())
    }))
    .await
    .into_iter()
    .filter_map(|(host, s)| s.map(|s| (host, s)))
    .collect()
}

/// The verdict of the interval that began with `starts`: canaries against the other hosts.
pub async fn measure(
    ctx: &Context,
    rollout: &Rollout,
    hosts: &[Unit],
    starts: &HashMap<String, MetricsSnapshot>,
) -> AnalysisRecord {
    let canaries = rollout
        .status
        .as_ref()
        .map(|s| s.canaries.clone())
        .unwrap_or_default();
    let canary = |h: &str| canaries.iter().any(|c| c == h);
    let ends = snapshots(ctx, hosts).await;
    let mut unanswered = Vec::new();
    let (mut canary_intervals, mut baseline) = (Vec::new(), Vec::new());
    for host in hosts {
        match (starts.get(&host.name), ends.get(&host.name)) {
            (Some(start), Some(end)) => {
                let interval = Interval { start, end };
                if canary(&host.name) {
                    canary_intervals.push(interval);
                } else {
                    baseline.push(interval);
                }
            }
            (_, None) if canary(&host.name) => unanswered.push(host.name.clone()),
            _ => {}
        }
    }
    let baseline_hosts = hosts.iter().filter(|h| !canary(&h.name)).count();
    let baseline = (baseline_hosts > 0).then(|| Traffic::of(&baseline));
    judge(
        &rollout.spec.analysis,
        &Traffic::of(&canary_intervals),
        baseline.as_ref(),
        &unanswered,
        &Time(Timestamp::now()),
    )
}
