//! `Rollout`: moves selected Hosts to a new RPC transport configuration in canary steps.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{DURATION_PATTERN, condition_list, kubernetes_compat};
use crate::transport::TransportTarget;

/// Desired course of a transport rollout.
///
/// Each `setWeight` step moves a stable-ordered share of the selected hosts, `ceil(weight% x N)`
/// and at least one, to `target`; between steps an analysis compares those canary hosts with the
/// rest. After the last step every selected host moves to the target.
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
           transport (grpc, iroh or dual) step by step, gated by an analysis of agent metrics.",
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
pub struct RolloutSpec {
    /// Which Hosts take part, by their `metadata.labels`. Empty (default): every Host.
    #[serde(default)]
    pub host_selector: HostSelector,

    /// Transport per RPC service that the selected hosts should end up on.
    pub target: TransportTarget,

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

    /// Number of Hosts the selector matched when the rollout started.
    #[serde(default)]
    pub selected_hosts: u32,

    /// Names of the Hosts moved to the target so far, in the order they were moved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub canary_hosts: Vec<String>,

    /// Failed analysis measurements in the current step.
    #[serde(default)]
    pub failures: u32,

    /// The last `spec.retry` value acted on.
    #[serde(default)]
    pub observed_retry: u32,

    /// When the current step began (RFC 3339); timed pauses end `duration` after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

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
