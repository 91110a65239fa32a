//! `Rollout`: moves selected Hosts to a new RPC transport configuration, or selected MicroVMs to
//! a new kernel / initrd / command line, in canary steps.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{DURATION_PATTERN, condition_list, kubernetes_compat};
use crate::transport::TransportTarget;

/// Desired course of a rollout: of Hosts to a transport (`target`), or of MicroVMs to a
/// template (`microVMs`).
///
/// Each `setWeight` step moves a stable-ordered share of the selected hosts (or VMs),
/// `ceil(weight% x N)` and at least one; between steps an analysis gates the next one. After
/// the last step every selected one moves.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "quiver.dev",
    version = "v1alpha1",
    kind = "Rollout",
    plural = "rollouts",
    shortname = "qro",
    category = "quiver",
    namespaced,
    status = "RolloutStatus",
    derive = "PartialEq",
    doc = "A canary rollout that moves the selected Quiver hosts to a new per-service RPC \
           transport (grpc, iroh or dual), or the selected MicroVMs to a new kernel, initrd or \
           command line, step by step, gated by an analysis of agent metrics or guest readiness.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.currentStepIndex",
        description = "Index in spec.steps of the step in progress"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.currentWeight",
        description = "Percent of the selected hosts on the target transport"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_compat)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": weights_never_decrease(),
    "message": "spec.steps: each setWeight must be at least the setWeight of every earlier step"
}, {
    "rule": "has(self.target) != has(self.microVMs)",
    "message": "spec: set exactly one of target (a transport rollout of Hosts) or microVMs (a \
                template rollout of MicroVMs)"
}]))]
pub struct RolloutSpec {
    /// Which Hosts take part in a transport rollout, by their `metadata.labels`. Empty
    /// (default): every Host. Ignored by a MicroVM rollout.
    #[serde(default)]
    pub host_selector: HostSelector,

    /// A transport rollout: the transport per RPC service the selected hosts should end up on.
    /// Exactly one of `target` and `microVMs` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TransportTarget>,

    /// A MicroVM rollout: which MicroVMs of this namespace move, and to what. Each canary VM's
    /// spec fields are set and the VM restarted on them; the analysis of a step checks that
    /// every canary VM is GuestReady and was not restarted during the interval. Exactly one of
    /// `target` and `microVMs` is set.
    #[serde(rename = "microVMs", default, skip_serializing_if = "Option::is_none")]
    pub micro_vms: Option<MicroVmTarget>,

    /// Canary steps, run in order; 1 to 32 entries. Each entry is either `setWeight: N` (move N%
    /// of the selected hosts, then analyse) or `pause: {duration: 30s}` (wait; without a
    /// duration, set `paused` and wait until it is cleared).
    #[schemars(length(min = 1, max = 32))]
    pub steps: Vec<RolloutStep>,

    /// Thresholds the canary hosts must meet, compared with the baseline hosts, before the next
    /// step. Every field has a default.
    #[serde(default)]
    pub analysis: Analysis,

    /// Hold the rollout where it is: no host moves and no analysis counts while true. Set it
    /// back to false to resume. A `pause` step without a duration sets it to true.
    #[serde(default)]
    pub paused: bool,

    /// Skip the remaining steps, pauses and analysis and move every selected host to the target
    /// now. `abort` wins over `promote`.
    #[serde(default)]
    pub promote: bool,

    /// Stop and move every canary host back to its previous transports (phase Aborted). Nothing
    /// moves forward while true; to start again set it to false and raise `retry`.
    #[serde(default)]
    pub abort: bool,

    /// A counter: raise it (for example from 0 to 1) to start an Aborted, RolledBack or Failed
    /// rollout again from the first step with no failures counted. The controller acts once per
    /// new value and records it in `status.observedRetry`.
    #[serde(default)]
    pub retry: u32,

    /// A counter: raise it by one to end the current step now. A pause (timed or not) ends,
    /// and the analysis of the current `setWeight` step counts as passed once its hosts serve
    /// the target (hosts are never skipped). The controller acts once per new value and
    /// records it in `status.observedPromoteStep`. `promote` does every remaining step at once.
    #[serde(default)]
    pub promote_step: u32,
}

/// CEL: for every pair of `setWeight` steps, the later one's weight is at least the earlier
/// one's. Written with index lists because Kubernetes CEL has no range function; 32 is the
/// most steps the schema allows.
fn weights_never_decrease() -> String {
    let indices: Vec<String> = (0..MAX_STEPS).map(|i| i.to_string()).collect();
    let indices = indices.join(", ");
    format!(
        "[{indices}].all(i, [{indices}].all(j, j <= i || j >= size(self.steps) || \
         !has(self.steps[i].setWeight) || !has(self.steps[j].setWeight) || \
         self.steps[i].setWeight <= self.steps[j].setWeight))"
    )
}

/// The most steps a rollout may have.
pub const MAX_STEPS: usize = 32;

/// The MicroVMs a rollout moves, and the template it moves them to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MicroVmTarget {
    /// Which MicroVMs of the Rollout's namespace take part, by their `metadata.labels`. Empty:
    /// every MicroVM of the namespace.
    #[serde(default)]
    pub selector: HostSelector,
    /// The fields to set on each selected VM (at least one); unset fields stay as they are.
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "has(self.kernel) || has(self.initrd) || has(self.cmdline)",
        "message": "spec.microVMs.template must set at least one of kernel, initrd or cmdline"
    }]))]
    pub template: VmTemplate,
}

/// MicroVM spec fields a rollout changes. At least one is set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmTemplate {
    /// `spec.kernel`: absolute path of the guest kernel on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub kernel: Option<String>,
    /// `spec.initrd`: absolute path of an initramfs on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub initrd: Option<String>,
    /// `spec.cmdline`: the kernel command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub cmdline: Option<String>,
}

/// Selects Hosts by label.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostSelector {
    /// A Host is selected when its `metadata.labels` contain every pair here. Empty: every Host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub match_labels: BTreeMap<String, String>,
}

/// One canary step: exactly one of `setWeight` or `pause`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.setWeight) && !has(self.pause)) || (!has(self.setWeight) && has(self.pause))",
    "message": "each spec.steps entry must set exactly one of setWeight or pause"
}]))]
pub struct RolloutStep {
    /// Percent of the selected hosts, 1 to 100, that should run the target transports after this
    /// step: `ceil(setWeight% x hosts)`, at least one. Hosts are taken in a stable order, so a
    /// higher weight keeps the earlier canaries and adds more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub set_weight: Option<u32>,

    /// Wait before the next step, for `duration` if given; otherwise until `spec.paused` is
    /// cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

impl RolloutStep {
    /// A `setWeight` step.
    #[must_use]
    pub fn weight(percent: u32) -> Self {
        Self {
            set_weight: Some(percent),
            pause: None,
        }
    }

    /// A `pause` step that waits `duration` (for example `"30s"`).
    #[must_use]
    pub fn pause_for(duration: impl Into<String>) -> Self {
        Self {
            set_weight: None,
            pause: Some(Pause {
                duration: Some(duration.into()),
            }),
        }
    }

    /// A `pause` step without a duration: waits until `spec.paused` is cleared.
    #[must_use]
    pub fn pause_indefinitely() -> Self {
        Self {
            set_weight: None,
            pause: Some(Pause { duration: None }),
        }
    }
}

/// A wait between steps.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to wait, as `<number><unit>` groups with unit s, m or h (`30s`, `5m`, `1h30m`).
    /// Unset: wait until `spec.paused` is set back to false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub duration: Option<String>,
}

/// The analysis gate between steps: canary hosts against baseline hosts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Analysis {
    /// How often to measure, as a duration (`30s`, `1m`). Default `30s`. Each failed
    /// measurement counts towards `failureLimit`.
    #[schemars(length(max = 32), pattern(DURATION_PATTERN))]
    pub interval: String,

    /// Highest RPC error rate allowed on canary hosts, in errors per thousand requests (per
    /// mille), 0 to 1000. Default 10 (1%).
    #[schemars(range(min = 0, max = 1000))]
    pub max_error_rate_per_mille: u32,

    /// Highest canary RPC p99 latency allowed, in percent of the baseline hosts' p99, 100 to
    /// 10000. Default 150 (canaries may be at most 1.5x slower).
    #[serde(rename = "maxP99LatencyPercentOfBaseline")]
    #[schemars(range(min = 100, max = 10_000))]
    pub max_p99_latency_percent_of_baseline: u32,

    /// Highest canary RPC p99 latency allowed, in milliseconds, whatever the baseline. Unset: no
    /// absolute limit.
    #[serde(rename = "maxP99LatencyMs", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 600_000))]
    pub max_p99_latency_ms: Option<u32>,

    /// Highest Raft log-append p99 latency allowed on canary hosts, in milliseconds. Default 200.
    #[serde(rename = "maxRaftAppendP99Ms")]
    #[schemars(range(min = 1, max = 600_000))]
    pub max_raft_append_p99_ms: u32,

    /// Failed measurements tolerated in one step; reaching it aborts the rollout and moves every
    /// canary host back (phase RolledBack). 1 to 100, default 3.
    #[schemars(range(min = 1, max = 100))]
    pub failure_limit: u32,

    /// Fewest RPC requests the canary hosts together must serve in one interval for it to
    /// count; with fewer the measurement is Inconclusive (neither a pass nor a failure) and is
    /// taken again. The baseline needs as many for the comparison with it to count. Default 20.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_requests: u32,

    /// The relative latency rule (`maxP99LatencyPercentOfBaseline`) fails a canary only when
    /// its p99 is also above this many milliseconds, so that sub-millisecond noise between
    /// histogram buckets never rolls back. 0 to 600000, default 5.
    #[serde(rename = "p99LatencyFloorMs")]
    #[schemars(range(min = 0, max = 600_000))]
    pub p99_latency_floor_ms: u32,
}

impl Default for Analysis {
    fn default() -> Self {
        Self {
            interval: "30s".to_owned(),
            max_error_rate_per_mille: 10,
            max_p99_latency_percent_of_baseline: 150,
            max_p99_latency_ms: None,
            max_raft_append_p99_ms: 200,
            failure_limit: 3,
            min_requests: 20,
            p99_latency_floor_ms: 5,
        }
    }
}

/// Observed progress of a rollout, written by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_compat)]
pub struct RolloutStatus {
    /// Pending (not started), Progressing (moving hosts), Paused, Analyzing (measuring canaries),
    /// Completed (every selected host on the target), Aborted (by `spec.abort`), RolledBack
    /// (analysis failed `failureLimit` times; canaries moved back), Failed (could not proceed;
    /// see message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,

    /// Index in `spec.steps` of the step in progress; equal to the number of steps once all
    /// have run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step_index: Option<u32>,

    /// Percent of the selected hosts that run the target transports now.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub current_weight: u32,

    /// Number of Hosts (or MicroVMs) the selector matches.
    #[serde(default)]
    pub selected: u32,

    /// Names of the Hosts (or MicroVMs) moved to the target so far, in the order they were
    /// moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canaries: Vec<String>,

    /// Failed analysis measurements in the current step.
    #[serde(default)]
    pub failures: u32,

    /// The last `spec.retry` value acted on.
    #[serde(default)]
    pub observed_retry: u32,

    /// When the current step began (RFC 3339); timed pauses end `duration` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

    /// The last `spec.promoteStep` value acted on.
    #[serde(default)]
    pub observed_promote_step: u32,

    /// When the analysis interval in progress began; unset when no analysis runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis_started_at: Option<Time>,

    /// Index of the `pause` step without a duration that set `spec.paused`; clearing
    /// `spec.paused` then ends that step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_at_step: Option<u32>,

    /// What each host (or VM) moved by this rollout had before, to move it back on abort or
    /// rollback. Cleared when the rollout completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"]
    ))]
    pub previous: Vec<Previous>,

    /// Fingerprint of the spec fields whose change restarts the rollout from the first step
    /// (`hostSelector`, `target`, `microVMs`, `steps`, `analysis`); the control fields do not
    /// count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_hash: Option<String>,

    /// Steps run so far in this attempt, oldest first, each with its analyses and numbers. At
    /// most 64 steps and 10 analyses per step are kept (the newest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<StepRecord>,

    /// Progressing and AnalysisPassed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = condition_list)]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Human-readable detail, for example which threshold the last analysis missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a host or VM had before a rollout moved it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Previous {
    /// Host or MicroVM name.
    pub name: String,
    /// A host: the transport per service it served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportTarget>,
    /// A MicroVM: its kernel, initrd and command line (unset: it had none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<VmTemplate>,
}

/// One step of a rollout as it ran.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    /// Index in `spec.steps` (equal to the number of steps for the final move of every host).
    pub index: u32,
    /// Percent of the selected hosts on the target during this step.
    #[serde(default)]
    pub weight: u32,
    /// When the step began.
    pub started_at: Time,
    /// When the step ended; unset while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// How it ended: Passed, Promoted (ended by promote or promoteStep), Failed, Aborted or
    /// Restarted (the spec changed or a retry began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The analyses of this step, oldest first (the newest 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub analyses: Vec<AnalysisRecord>,
}

/// One analysis interval: canary hosts against baseline hosts, or canary VMs' readiness.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRecord {
    /// When the interval ended.
    pub time: Time,
    /// Passed, Failed or Inconclusive (too few requests to judge).
    pub verdict: Verdict,
    /// The thresholds missed, or why it was inconclusive.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// A transport rollout: what the canary hosts served in the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<TrafficSample>,
    /// A MicroVM rollout: the canary VMs' readiness and restarts.
    #[serde(rename = "microVMs", default, skip_serializing_if = "Option::is_none")]
    pub micro_vms: Option<VmHealth>,
    /// What the baseline hosts (selected, not moved) served; unset when every host is moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<TrafficSample>,
}

/// The canary VMs at the end of an analysis interval.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VmHealth {
    /// Canary VMs.
    pub canaries: u32,
    /// Of them, those GuestReady on their new template.
    pub guest_ready: u32,
    /// Restarts of canary VMs during the interval.
    pub restarts: u32,
}

/// Outcome of one analysis interval.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Verdict {
    // Every threshold met.
    Passed,
    // At least one threshold missed; counts towards failureLimit.
    Failed,
    // Too few requests to judge; measured again, not counted.
    Inconclusive,
}

/// RPC traffic of a group of hosts over one interval (the Monitoring service's counters).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSample {
    /// Hosts in the group.
    pub hosts: u32,
    /// Requests served (every service but Monitoring, whose calls the analysis itself makes).
    pub requests: u64,
    /// Requests that ended in an error.
    pub errors: u64,
    /// p99 latency in milliseconds: the upper bound of the histogram bucket holding the 99th
    /// percentile. Unset without requests.
    #[serde(rename = "p99Ms", default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<f64>,
    /// p99 latency of Raft log appends served, in milliseconds. Unset without appends.
    #[serde(
        rename = "raftAppendP99Ms",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub raft_append_p99_ms: Option<f64>,
}

/// Phase of a rollout; see `status.phase`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RolloutPhase {
    // Not started.
    Pending,
    // Moving hosts.
    Progressing,
    // Held by spec.paused or a timed pause step.
    Paused,
    // Measuring canaries against baseline.
    Analyzing,
    // Every selected host is on the target.
    Completed,
    // Stopped by spec.abort; canaries moved back.
    Aborted,
    // Analysis failed failureLimit times; canaries moved back.
    RolledBack,
    // Could not proceed.
    Failed,
}

impl RolloutStatus {
    /// The condition of type `type_`, if present.
    #[must_use]
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
