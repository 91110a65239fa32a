//! The Host controller: the operator's side of host registration.
//!
//! Registration is split: each agent writes its own Host `spec` (`agent/src/registration.rs`,
//! from the agent's `--kubeconfig`), and this controller heartbeats it: it polls the agent's Status service every
//! `heartbeat_interval` and writes `status` (addresses, endpoint id, capacity, allocation,
//! transports, heartbeat, Ready). The agents' Raft leader commits `spec.transport` to the
//! placement ledger and each agent serves what it holds for its host; while a host serves
//! other transports than its spec asks for, this controller polls it every
//! [`SWITCH_POLL`] to report the switch promptly. After more than three missed intervals the
//! host turns NotReady, which the MicroVM controller surfaces on the VMs placed there.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use quiver_crds::condition::READY;
use quiver_crds::{API_VERSION, Host, HostResources, HostSpec, HostStatus};
use quiver_rpc::proto;

use super::{Context, FIELD_MANAGER};
use crate::convert;
use crate::status::{Conditions, now};
use crate::{Error, Result};

/// How often a host is polled while it switches transports.
pub const SWITCH_POLL: Duration = Duration::from_millis(50);

/// Heartbeats missed before a host is NotReady.
pub const MISSED_HEARTBEATS: u32 = 3;

pub async fn reconcile(host: Arc<Host>, ctx: Arc<Context>) -> Result<Action> {
    let name = host.name_any();
    let interval = ctx.config.heartbeat_interval;
    ctx.sync_agents();
    let report = ctx.cluster.agent_status(&name, interval).await;
    if let Err(e) = &report {
        tracing::debug!(host = %name, error = %e, "heartbeat failed");
    }
    let desired = host_status(
        &host.spec,
        host.status.as_ref(),
        report.as_ref().ok(),
        &now(),
        interval,
    );
    if host.status.as_ref() != Some(&desired) {
        let patch =
            serde_json::json!({"apiVersion": API_VERSION, "kind": "Host", "status": desired});
        let api: Api<Host> = Api::all(ctx.client.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        api.patch_status(&name, &params, &Patch::Apply(&patch))
            .await?;
        ctx.host_status_changed();
    }
    let ready = desired.readiness();
    ctx.host_seen(
        &name,
        ready,
        &format!(
            "{ready:?}/{:?}/{:?}/{}/{}",
            host.labels(),
            desired.capacity,
            host.spec.unschedulable,
            host.spec.drain
        ),
    );
    let switching = desired
        .transports
        .iter()
        .any(|t| t.actual != Some(t.desired));
    Ok(Action::requeue(if switching && report.is_ok() {
        SWITCH_POLL.min(interval)
    } else {
        interval
    }))
}

// The signature is the one `Controller::run` calls.
#[allow(clippy::needless_pass_by_value)]
pub fn error_policy(host: Arc<Host>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(host = %host.name_any(), error = %error, kind = error.metric_label(), "host reconcile failed");
    Action::requeue(ctx.config.heartbeat_interval)
}

/// The Host status after a heartbeat poll that returned `report` (or failed: `None`).
#[must_use]
pub fn host_status(
    spec: &HostSpec,
    old: Option<&HostStatus>,
    report: Option<&proto::AgentStatus>,
    now: &Time,
    interval: Duration,
) -> HostStatus {
    let old = old.cloned().unwrap_or_default();
    let mut conds = Conditions {
        old: &old.conditions,
        new: Vec::new(),
        now,
    };
    let mut status = HostStatus {
        conditions: Vec::new(),
        ..old.clone()
    };
    status.endpoint_id = Some(spec.endpoint_id.clone());
    if let Some(r) = report {
        if !r.endpoint_id.is_empty() {
            status.endpoint_id = Some(r.endpoint_id.clone());
        }
        status.iroh_addresses.clone_from(&r.iroh_addresses);
        status.transports = convert::transport_status(spec.transport.as_ref(), &r.transports);
        let res = |r: Option<&proto::Resources>| {
            r.map(|r| HostResources {
                cpus: r.cpus,
                memory_mib: r.memory_mib,
            })
        };
        status.grpc_address = Some(r.grpc_endpoint.clone());
        status.capacity = res(r.capacity.as_ref()).or(Some(spec.capacity));
        status.allocated = res(r.allocated.as_ref());
        status.vms = r.vm_count;
        status.raft = r.raft.as_ref().and_then(convert::raft_status);
        status.heartbeat_time = Some(now.clone());
        let msg = format!(
            "agent {} answers ({} driver, {} accel)",
            r.version, r.driver, r.accel
        );
        match r.raft.as_ref() {
            Some(raft) if !raft.lease_valid => conds.set(
                READY,
                "False",
                "NoLease",
                "the agent answers but holds no Raft lease, so none of its VMs may run \
                 (still joining the group, or cut off from its quorum)",
            ),
            _ => conds.set(READY, "True", "Heartbeating", &msg),
        }
    } else {
        let budget = interval * MISSED_HEARTBEATS;
        let silent_for = old.heartbeat_time.as_ref().map(|t| {
            let secs = now.0.as_second() - t.0.as_second();
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        });
        match silent_for {
            None => conds.set(
                READY,
                "False",
                "NotConnected",
                &format!(
                    "the operator has not reached the agent at {} yet",
                    spec.grpc_address
                ),
            ),
            Some(silent) if silent > budget => conds.set(
                READY,
                "False",
                "HeartbeatMissed",
                &format!(
                    "no heartbeat for {}s (more than {MISSED_HEARTBEATS} intervals of {}s); check \
                     the agent at {}",
                    silent.as_secs(),
                    interval.as_secs(),
                    spec.grpc_address
                ),
            ),
            Some(_) => conds.new.extend(old.condition(READY).cloned()),
        }
    }
    status.conditions = conds.new;
    status
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(1_767_225_600 + secs).expect("valid"))
    }

    fn spec() -> HostSpec {
        HostSpec {
            endpoint_id: "a".repeat(64),
            grpc_address: "127.0.0.1:7443".into(),
            iroh_addresses: vec![],
            iroh_relay_url: None,
            capacity: HostResources {
                cpus: 2,
                memory_mib: 4096,
            },
            transport: None,
            unschedulable: false,
            drain: false,
        }
    }

    fn report() -> proto::AgentStatus {
        proto::AgentStatus {
            grpc_endpoint: "127.0.0.1:7443".into(),
            capacity: Some(proto::Resources {
                cpus: 2,
                memory_mib: 4096,
            }),
            allocated: Some(proto::Resources {
                cpus: 1,
                memory_mib: 256,
            }),
            vm_count: 1,
            ..proto::AgentStatus::default()
        }
    }

    fn ready(s: &HostStatus) -> (String, String) {
        let c = s.condition(READY).expect("Ready");
        (c.status.clone(), c.reason.clone())
    }

    const INTERVAL: Duration = Duration::from_secs(2);

    #[test]
    fn answering_agent_is_ready_with_its_capacity_and_heartbeat() {
        let s = host_status(&spec(), None, Some(&report()), &at(0), INTERVAL);
        assert_eq!(ready(&s).0, "True");
        assert_eq!(s.heartbeat_time, Some(at(0)));
        assert_eq!(s.allocated.map(|a| a.memory_mib), Some(256));
        assert_eq!(s.vms, 1);
    }

    #[test]
    fn a_few_missed_heartbeats_keep_the_host_ready() {
        let up = host_status(&spec(), None, Some(&report()), &at(0), INTERVAL);
        let s = host_status(&spec(), Some(&up), None, &at(6), INTERVAL);
        assert_eq!(ready(&s).0, "True");
        assert_eq!(s.heartbeat_time, Some(at(0)));
    }

    #[test]
    fn more_than_three_missed_heartbeats_make_the_host_not_ready() {
        let up = host_status(&spec(), None, Some(&report()), &at(0), INTERVAL);
        let s = host_status(&spec(), Some(&up), None, &at(7), INTERVAL);
        assert_eq!(ready(&s), ("False".into(), "HeartbeatMissed".into()));
        let back = host_status(&spec(), Some(&s), Some(&report()), &at(8), INTERVAL);
        assert_eq!(ready(&back).0, "True");
    }

    #[test]
    fn never_reached_agent_is_not_ready() {
        let s = host_status(&spec(), None, None, &at(0), INTERVAL);
        assert_eq!(ready(&s), ("False".into(), "NotConnected".into()));
        assert_eq!(s.readiness(), None, "nothing is known of its VMs yet");
        let up = host_status(&spec(), Some(&s), Some(&report()), &at(1), INTERVAL);
        assert_eq!(up.readiness(), Some(true));
        let lost = host_status(&spec(), Some(&up), None, &at(8), INTERVAL);
        assert_eq!(lost.readiness(), Some(false));
    }
}
