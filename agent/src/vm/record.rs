//! What the agent persists per VM, and the status it reports from it.

use serde::{Deserialize, Serialize};

use super::lifecycle::{Lifecycle, Phase};
use super::network::ActiveForward;
use super::spec::{RunStrategy, VmMeta, VmSpec};
use quiver_rpc::proto;

/// `spec.json`: written on every accepted put.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SpecFile {
    pub meta: VmMeta,
    pub spec: VmSpec,
}

/// `state.json`: written on every state change.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct StateFile {
    pub lifecycle: Lifecycle,
    pub pid: u32,
    pub started_at_ms: i64,
    pub guest_ready_at_ms: i64,
    /// Console log length when the current boot started; readiness is searched after it.
    pub console_offset: u64,
    pub updated_at_ms: i64,
    /// Port forwards of the latest launch; reported while QEMU runs, reused by the next launch.
    #[serde(default)]
    pub forwards: Vec<ActiveForward>,
}

pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn phase_to_proto(phase: Phase) -> proto::Phase {
    match phase {
        Phase::Pending => proto::Phase::Pending,
        Phase::Scheduling => proto::Phase::Scheduling,
        Phase::Starting => proto::Phase::Starting,
        Phase::Running => proto::Phase::Running,
        Phase::Stopping => proto::Phase::Stopping,
        Phase::Stopped => proto::Phase::Stopped,
        Phase::Failed => proto::Phase::Failed,
    }
}

pub fn strategy_to_proto(s: RunStrategy) -> proto::RunStrategy {
    match s {
        RunStrategy::Always => proto::RunStrategy::Always,
        RunStrategy::Halted => proto::RunStrategy::Halted,
        RunStrategy::RerunOnFailure => proto::RunStrategy::RerunOnFailure,
        RunStrategy::Once => proto::RunStrategy::Once,
    }
}

pub(crate) fn status(meta: &VmMeta, state: &StateFile, host: &str) -> proto::VmStatus {
    let lc = &state.lifecycle;
    let has_process = lc.phase.has_process();
    proto::VmStatus {
        uid: meta.uid.clone(),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        observed_generation: meta.generation,
        phase: phase_to_proto(lc.phase) as i32,
        host: host.to_owned(),
        epoch: meta.epoch,
        guest_ready: lc.guest_ready,
        message: lc.message.clone(),
        started_at_ms: if has_process { state.started_at_ms } else { 0 },
        guest_ready_at_ms: if lc.guest_ready {
            state.guest_ready_at_ms
        } else {
            0
        },
        updated_at_ms: state.updated_at_ms,
        pid: if has_process { state.pid } else { 0 },
        restart_count: lc.restarts,
        deleted: false,
        run_strategy: strategy_to_proto(lc.strategy) as i32,
        port_forwards: if has_process {
            state.forwards.iter().map(ActiveForward::to_proto).collect()
        } else {
            Vec::new()
        },
        readiness_timed_out: lc.readiness_timed_out,
        reason: String::new(),
    }
}
