//! `Host`: one node agent's registration (spec) and its reported state (status).
//!
//! Agents create and update their own Host; it is cluster-scoped and named after the agent.
//! Registration is also admission: only endpoint ids of registered Hosts may connect over Iroh,
//! and deleting a Host revokes its access.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{condition_list, kubernetes_compat};
use crate::transport::{Service, Transport, TransportTarget};

/// An agent's registration: how to reach it and what it offers. Selection (MicroVM
/// `nodeSelector`, Rollout `hostSelector`) uses the Host's `metadata.labels`.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "quiver.dev",
    version = "v1alpha1",
    kind = "Host",
    plural = "hosts",
    shortname = "qh",
    category = "quiver",
    status = "HostStatus",
    derive = "PartialEq",
    doc = "A Quiver host: one node agent, its addresses, capacity, Raft membership and \
           transports. Written by the agent itself; cluster-scoped.",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Role", type_ = "string", json_path = ".status.raft.role"),
    printcolumn(name = "VMs", type_ = "integer", json_path = ".status.vms"),
    printcolumn(
        name = "Heartbeat",
        type_ = "date",
        json_path = ".status.heartbeatTime"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "Endpoint",
        type_ = "string",
        json_path = ".spec.endpointId",
        priority = 1
    ),
    printcolumn(
        name = "GRPC",
        type_ = "string",
        json_path = ".spec.grpcAddress",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_compat)]
pub struct HostSpec {
    /// The agent's Iroh endpoint id (its Ed25519 public key): 64 lowercase hex characters, or 52
    /// lowercase base32 characters. Only registered endpoint ids may connect over Iroh.
    #[schemars(length(min = 52, max = 64), pattern(r"^([0-9a-f]{64}|[a-z2-7]{52})$"))]
    pub endpoint_id: String,

    /// `host:port` of the agent's gRPC (mutual TLS) listener, for example `10.0.0.5:7443`.
    #[schemars(length(min = 3, max = 255), pattern(r"^.+:[0-9]{1,5}$"))]
    pub grpc_address: String,

    /// Direct UDP socket addresses (`ip:port`) the agent's Iroh endpoint listens on. At most 16.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(max = 64)))]
    pub iroh_addresses: Vec<String>,

    /// The iroh relay the agent's endpoint homes on (its `--relay-url`), for peers that have no
    /// direct path to it (NAT, UDP blocked): the operator and the other agents add it to the
    /// address they dial, and the relay carries the connection (end-to-end encrypted) until a
    /// direct path opens. Unset: relays off, direct addresses only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255), pattern(r"^https?://[^\s/;,]+(/[^\s;,]*)?$"))]
    pub iroh_relay_url: Option<String>,

    /// What the host offers to VMs; placement never allocates more than this.
    pub capacity: HostResources,

    /// The transport each RPC service should be served on. The agents' Raft leader commits it
    /// to the placement ledger and the agent switches without dropping calls in flight (and
    /// serves it again after a restart); `status.transports` shows desired and actual per
    /// service. Unset: the agent's own `--transport` setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportTarget>,

    /// Cordon: no new VMs are placed here; those already here stay (like a Node's
    /// `spec.unschedulable`). Set by people (`kubectl patch`), never by the agent; the
    /// agents' Raft leader commits it to the placement ledger.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unschedulable: bool,

    /// Drain: no new VMs, and every VM here moves to another host, each stopped here before
    /// its new copy starts; VMs with nowhere to go wait unplaced. Back to service: set both
    /// this and `unschedulable` to false. `status.vms` counts down to 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drain: bool,
}

/// CPUs and memory, offered (capacity) or in use (allocated).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostResources {
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB (1 MiB = 1048576 bytes).
    #[serde(rename = "memoryMiB")]
    pub memory_mib: u64,
}

/// What the agent last reported about itself.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_compat)]
pub struct HostStatus {
    /// Endpoint id the agent is actually running with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_id: Option<String>,

    /// Address the gRPC listener is actually bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_address: Option<String>,

    /// Iroh direct addresses the endpoint currently reports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub iroh_addresses: Vec<String>,

    /// Resources the host offers to VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<HostResources>,

    /// Resources taken by the VMs assigned to this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocated: Option<HostResources>,

    /// Number of VMs assigned to this host.
    #[serde(default)]
    pub vms: u32,

    /// The agent's view of the Raft group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft: Option<RaftStatus>,

    /// Per RPC service: the transport asked for (by a Rollout or the defaults) and the one
    /// actually served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 6))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["service"]
    ))]
    pub transports: Vec<ServiceTransportStatus>,

    /// When the agent last wrote this status (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_time: Option<Time>,

    /// Ready: the agent heartbeats and holds its Raft lease; False once the leader declared the
    /// host down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = condition_list)]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One agent's view of the Raft group.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftStatus {
    /// Leader, Follower, Candidate or Learner (non-voting; agents beyond the fifth join as
    /// learners).
    pub role: RaftRole,
    /// Current Raft term.
    #[serde(default)]
    pub term: u64,
    /// Index of the last log entry applied to the placement ledger.
    #[serde(default)]
    pub applied_index: u64,
    /// Name of the Host this agent believes is the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Whether the placement ledger (as this agent applied it) places new VMs here: the host
    /// is registered, up, not cordoned and not draining. A cordon or drain in `spec` has taken
    /// effect once this is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedulable: Option<bool>,
}

/// Raft role of an agent; see `status.raft.role`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum RaftRole {
    // Replicates the log and commits placements.
    Leader,
    // Voting member following the leader.
    Follower,
    // Voting member asking for votes.
    Candidate,
    // Non-voting member receiving the log.
    Learner,
}

/// Desired and actual transport of one RPC service on a host.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTransportStatus {
    /// The RPC service: health, status, vm, monitoring, raft or admin.
    pub service: Service,
    /// Transport the host was asked to serve it on.
    pub desired: Transport,
    /// Transport the host serves it on now; unset while it is switching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actual: Option<Transport>,
}

impl HostStatus {
    /// The condition of type `type_`, if present.
    #[must_use]
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// Whether the host is Ready; `None` until its agent first answered a heartbeat (Ready is
    /// False then, reason `NotConnected`, but nothing is known yet of the VMs there).
    #[must_use]
    pub fn readiness(&self) -> Option<bool> {
        self.heartbeat_time.as_ref()?;
        self.condition(crate::condition::READY)
            .map(|c| c.status == "True")
    }
}
