//! The MicroVM status the operator wants to see, as a pure function of the object, where it
//! was placed and what its agent reports; and the Events that a change of status tells.
//!
//! No I/O here: the controller gathers an [`Observation`], calls [`desired_status`], compares
//! the result with the stored status and patches only when they differ.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use quiver_crds::condition::{GUEST_READY, READY, RESTART_REQUIRED, SCHEDULED};
use quiver_crds::{MicroVM, MicroVMPhase, MicroVMStatus, RunStrategy};
use quiver_rpc::proto;

use crate::convert;

/// Where the operator stands on placing the VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assignment {
    /// Sent to `host` with fencing `epoch`.
    Assigned { host: String, epoch: u64 },
    /// `host`'s agent refused the VM (e.g. a kernel path outside its image roots).
    Rejected { host: String, message: String },
    /// No host can take it now.
    Unschedulable {
        /// A condition reason (`InsufficientMemory`, `NoMatchingHost`...).
        reason: String,
        message: String,
    },
}

/// Everything [`desired_status`] looks at besides the object itself.
#[derive(Clone, Debug)]
pub struct Observation<'a> {
    pub assignment: Assignment,
    /// The agent's latest report for this VM (from the status stream or a put reply).
    pub agent: Option<&'a proto::VmStatus>,
    /// Whether the assigned host heartbeats; `None` when unknown.
    pub host_ready: Option<bool>,
    pub now: Time,
}

/// Seconds precision: the API server stores RFC 3339 seconds, so anything finer would make
/// every comparison with the stored status differ.
#[must_use]
pub fn time_from_ms(ms: i64) -> Option<Time> {
    (ms > 0)
        .then(|| Timestamp::from_second(ms / 1000).ok())
        .flatten()
        .map(Time)
}

/// The current time, truncated to whole seconds.
#[must_use]
pub fn now() -> Time {
    let secs = Timestamp::now().as_second();
    Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// The status the VM should have given `obs`. Conditions keep their `lastTransitionTime`
/// while their status does not change, so an unchanged world yields an identical status.
#[must_use]
pub fn desired_status(vm: &MicroVM, obs: &Observation<'_>) -> MicroVMStatus {
    let old = vm.status.clone().unwrap_or_default();
    let generation = vm.metadata.generation;
    let mut conds = Conditions {
        old: &old.conditions,
        new: Vec::new(),
        now: &obs.now,
    };
    let mut status = MicroVMStatus {
        restart_count: old.restart_count,
        ..MicroVMStatus::default()
    };
    match (&obs.assignment, obs.agent) {
        (Assignment::Unschedulable { reason, message }, None) => {
            status.phase = Some(MicroVMPhase::Pending);
            status.observed_generation = generation;
            status.message = Some(if message.starts_with("waiting for") {
                message.clone()
            } else {
                format!("cannot be scheduled: {message}")
            });
            conds.set(SCHEDULED, "False", reason, message);
            conds.set(READY, "False", "NotScheduled", "no host runs the VM");
            conds.set(GUEST_READY, "False", "NotScheduled", "no host runs the VM");
        }
        (Assignment::Assigned { host, epoch }, None) => {
            status.phase = Some(MicroVMPhase::Scheduling);
            status.host = Some(host.clone());
            status.epoch = *epoch;
            status.observed_generation = old.observed_generation;
            let msg = format!("assigned to host {host}; waiting for its agent to report the VM");
            conds.set(
                SCHEDULED,
                "True",
                "Assigned",
                &format!("assigned to host {host}"),
            );
            conds.set(READY, "False", "WaitingForHost", &msg);
            conds.set(GUEST_READY, "False", "WaitingForHost", &msg);
            status.message = Some(msg);
        }
        (Assignment::Rejected { host, message }, None) => {
            status.phase = Some(MicroVMPhase::Failed);
            status.host = Some(host.clone());
            status.observed_generation = generation;
            let msg = format!("host {host} refused the VM: {message}; fix the spec");
            conds.set(SCHEDULED, "False", "RejectedByHost", &msg);
            conds.set(READY, "False", "RejectedByHost", &msg);
            conds.set(GUEST_READY, "False", "RejectedByHost", &msg);
            status.message = Some(msg);
        }
        (_, Some(agent)) => from_agent(vm, agent, &mut status, &mut conds),
    }
    let stale =
        matches!((status.observed_generation, generation), (Some(seen), Some(want)) if seen < want);
    let has_process = matches!(
        status.phase,
        Some(MicroVMPhase::Starting | MicroVMPhase::Running | MicroVMPhase::Stopping)
    );
    if !(stale && has_process) {
        conds.set(
            RESTART_REQUIRED,
            "False",
            "UpToDate",
            "the VM runs the current spec",
        );
    } else {
        conds.set(
            RESTART_REQUIRED,
            "True",
            "SpecChanged",
            "the spec changed; the agent restarts the VM to apply it",
        );
    }
    if obs.host_ready == Some(false)
        && let Some(host) = status.host.clone()
    {
        host_not_ready(&host, &mut status, &mut conds);
    }
    status.conditions = conds.new;
    status
}

/// The VM's host is not Ready (its agent stopped answering or lost its lease, or its Host is
/// gone): nobody can vouch for the VM, so Ready turns False and GuestReady Unknown, while the
/// phase stays the last one the host reported, because the VM may well still run there.
fn host_not_ready(host: &str, status: &mut MicroVMStatus, conds: &mut Conditions<'_>) {
    let last = status
        .phase
        .map_or_else(|| "unknown".to_owned(), |p| format!("{p:?}"));
    let msg = format!(
        "host {host} is not Ready (its agent does not answer or holds no Raft lease, or its \
         Host was removed); the VM was last reported {last} there and may still be running; its \
         state is unknown until the host is Ready again (check `kubectl get qh {host}` and the \
         agent on {host})"
    );
    conds.set(READY, "False", "HostNotReady", &msg);
    conds.set(GUEST_READY, "Unknown", "HostNotReady", &msg);
    status.message = Some(msg);
}

fn from_agent(
    vm: &MicroVM,
    agent: &proto::VmStatus,
    status: &mut MicroVMStatus,
    conds: &mut Conditions<'_>,
) {
    let phase = convert::phase_from_proto(agent.phase);
    let host = agent.host.clone();
    status.phase = Some(phase);
    status.host = Some(host.clone());
    status.epoch = agent.epoch;
    status.observed_generation = Some(agent.observed_generation);
    status.restart_count = agent.restart_count;
    status.started_at = time_from_ms(agent.started_at_ms);
    status.guest_ready_at = time_from_ms(agent.guest_ready_at_ms);
    status.port_forwards = agent
        .port_forwards
        .iter()
        .map(convert::forwarded_port)
        .collect();
    let detail = if agent.message.is_empty() {
        String::new()
    } else {
        format!(": {}", agent.message)
    };
    let strategy = vm.spec.run_strategy;
    let message = match phase {
        MicroVMPhase::Pending | MicroVMPhase::Scheduling => {
            format!("accepted by host {host}; waiting to start")
        }
        MicroVMPhase::Starting => format!("QEMU is starting on host {host}"),
        MicroVMPhase::Running if agent.guest_ready => format!("guest is ready on host {host}"),
        MicroVMPhase::Running => format!("running on host {host}; waiting for the guest to boot"),
        MicroVMPhase::Stopping => format!("stopping on host {host}"),
        MicroVMPhase::Stopped if strategy == RunStrategy::Halted => {
            "stopped (spec.runStrategy is Halted); set it to Always to start the VM".to_owned()
        }
        MicroVMPhase::Stopped => format!(
            "the guest powered off on host {host}{detail}; spec.runStrategy {strategy:?} does not \
             restart it (delete and re-create the VM, or set runStrategy to Always)"
        ),
        MicroVMPhase::Failed
            if matches!(strategy, RunStrategy::Always | RunStrategy::RerunOnFailure) =>
        {
            format!("QEMU failed on host {host}{detail}; the agent restarts it with backoff")
        }
        MicroVMPhase::Failed => format!(
            "QEMU failed on host {host}{detail}; spec.runStrategy {strategy:?} does not restart \
             it (fix the spec, e.g. kernel path, then delete and re-create the VM)"
        ),
    };
    conds.set(
        SCHEDULED,
        "True",
        "Assigned",
        &format!("assigned to host {host}"),
    );
    if phase == MicroVMPhase::Running {
        conds.set(
            READY,
            "True",
            "Running",
            &format!("QEMU runs on host {host}"),
        );
    } else {
        conds.set(READY, "False", &format!("{phase:?}"), &message);
    }
    let running = phase == MicroVMPhase::Running;
    if agent.guest_ready {
        conds.set(
            GUEST_READY,
            "True",
            "MarkerSeen",
            "the guest printed its readiness marker",
        );
    } else if running && vm.spec.readiness.is_none() {
        conds.set(
            GUEST_READY,
            "True",
            "NoReadinessCheck",
            "QEMU runs and spec.readiness is unset",
        );
    } else if running && agent.readiness_timed_out {
        let msg = format!(
            "{}; the VM keeps running (its serial console log on host {host} shows how far the \
             guest got)",
            if agent.message.is_empty() {
                "the readiness marker did not appear in time"
            } else {
                agent.message.as_str()
            }
        );
        conds.set(GUEST_READY, "False", "ReadinessTimeout", &msg);
    } else if running {
        conds.set(
            GUEST_READY,
            "False",
            "Booting",
            "waiting for the guest's readiness marker",
        );
    } else {
        conds.set(GUEST_READY, "False", "NotRunning", "the VM is not running");
    }
    status.message = Some(message);
}

/// Builds the condition list, keeping transition times of conditions whose status stays.
pub(crate) struct Conditions<'a> {
    pub old: &'a [Condition],
    pub new: Vec<Condition>,
    pub now: &'a Time,
}

impl Conditions<'_> {
    pub(crate) fn set(&mut self, type_: &str, status: &str, reason: &str, message: &str) {
        let since = self
            .old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map_or_else(|| self.now.clone(), |c| c.last_transition_time.clone());
        self.new.retain(|c| c.type_ != type_);
        self.new.push(Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: since,
            observed_generation: None,
        });
    }
}

/// One Kubernetes Event to publish about a status change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

fn cond<'a>(s: &'a MicroVMStatus, type_: &str) -> Option<&'a Condition> {
    s.condition(type_)
}

fn changed(old: &MicroVMStatus, new: &MicroVMStatus, type_: &str) -> Option<Condition> {
    let n = cond(new, type_)?;
    let same = cond(old, type_).is_some_and(|o| o.status == n.status && o.reason == n.reason);
    (!same).then(|| n.clone())
}

/// The Events that tell the story of going from `old` to `new` (empty when nothing a person
/// would care about changed).
#[must_use]
pub fn transitions(old: Option<&MicroVMStatus>, new: &MicroVMStatus) -> Vec<Transition> {
    let empty = MicroVMStatus::default();
    let old = old.unwrap_or(&empty);
    let mut out = Vec::new();
    let mut push = |warning, reason, note: String| {
        out.push(Transition {
            warning,
            reason,
            note,
        });
    };
    if let Some(c) = changed(old, new, SCHEDULED) {
        if c.status == "True" {
            push(false, "Scheduled", c.message);
        } else {
            push(true, "FailedScheduling", c.message);
        }
    }
    if old.phase != new.phase {
        let note = new.message.clone().unwrap_or_default();
        match new.phase {
            Some(MicroVMPhase::Starting) => push(false, "Starting", note),
            Some(MicroVMPhase::Running) => push(false, "Started", note),
            Some(MicroVMPhase::Stopping) => push(false, "Stopping", note),
            Some(MicroVMPhase::Stopped) => push(false, "Stopped", note),
            Some(MicroVMPhase::Failed) => push(true, "Failed", note),
            _ => {}
        }
    }
    if let Some(c) = changed(old, new, GUEST_READY) {
        if c.status == "True" {
            push(false, "GuestReady", c.message);
        } else if c.reason == "ReadinessTimeout" {
            push(true, "ReadinessTimeout", c.message);
        }
    }
    if let Some(c) = changed(old, new, READY).filter(|c| c.reason == "HostNotReady") {
        push(true, "HostNotReady", c.message);
    }
    if new.restart_count > old.restart_count {
        push(
            true,
            "Restarted",
            format!(
                "the agent restarted the VM (restart #{})",
                new.restart_count
            ),
        );
    }
    out
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
