//! Quiver's custom resources, `quiver.dev/v1alpha1`: [`MicroVM`], [`Rollout`] and [`Host`].
//!
//! The Rust types are the single source of truth for the CRDs: the OpenAPI schema, defaults, CEL
//! rules and printer columns are all derived from them, and the `crdgen` binary writes the result
//! to `charts/quiver/crds/` (checked in; a test fails when it drifts).
//!
//! # Layout
//! - [`microvm`]: a virtual machine, its run strategy and its observed status.
//! - [`rollout`]: a canary rollout that moves Hosts between RPC transports.
//! - [`host`]: one agent's registration and its reported state (cluster-scoped).
//! - [`transport`]: the RPC services and the transports they can run on.
//! - [`generate`]: renders the CRD manifests (used by `crdgen` and the drift test).
//! - [`fixtures`]: builders of valid objects for tests in every crate.
//! - [`access`]: the shape in which the binaries declare their Kubernetes API calls (RBAC).
//!
//! # Goals
//! - Reject invalid objects at the API server: every bound, enum and cross-field rule lives in
//!   the schema, with messages that name the field.
//! - Make `kubectl explain` useful: every field says its unit, default and effect.
//!
//! # Non-goals
//! - Behaviour. Controllers, placement and the rollout state machine live in the operator and
//!   the agent; this crate only fixes the shapes they agree on.
//! - Multiple API versions or conversion webhooks.

pub mod access;
pub mod fixtures;
pub mod generate;
pub mod host;
pub mod microvm;
pub mod rollout;
mod schema;
pub mod transport;

pub use host::{
    Host, HostResources, HostSpec, HostStatus, RaftRole, RaftStatus, ServiceTransportStatus,
};
pub use microvm::{
    Disk, DiskFormat, ForwardedPort, MicroVM, MicroVMPhase, MicroVMSpec, MicroVMStatus, Network,
    NetworkMode, PortForward, Protocol, Readiness, RunStrategy,
};
pub use rollout::{
    Analysis, AnalysisRecord, HostSelector, MAX_STEPS, MicroVmTarget, Pause, Previous, Rollout,
    RolloutPhase, RolloutSpec, RolloutStatus, RolloutStep, StepRecord, TrafficSample, Verdict,
    VmHealth, VmTemplate,
};
pub use transport::{Service, Transport, TransportTarget};

/// The API group of every Quiver resource.
pub const GROUP: &str = "quiver.dev";
/// The API version of every Quiver resource.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "quiver.dev/v1alpha1";

/// Finalizer the operator puts on every MicroVM so that the VM is stopped and its files removed
/// before the object goes away.
pub const VM_FINALIZER: &str = "quiver.dev/vm";

/// Where the operator publishes its Iroh endpoint id for the agents: ConfigMap
/// `default/quiver-operator`, key `endpointId`. The operator's leader writes it; every agent with
/// a kubeconfig admits the id it holds over Iroh (besides the registered Hosts' ids).
pub mod operator_identity {
    /// The namespace (the operator's Lease's, fixed like it).
    pub const NAMESPACE: &str = "default";
    pub const NAME: &str = "quiver-operator";
    pub const ENDPOINT_ID_KEY: &str = "endpointId";
}

/// Condition types used in the status of Quiver resources.
pub mod condition {
    /// MicroVM: the placement ledger has assigned the VM to a host.
    pub const SCHEDULED: &str = "Scheduled";
    /// MicroVM: QEMU runs on the assigned host. Host: the agent heartbeats and holds its lease.
    pub const READY: &str = "Ready";
    /// MicroVM: the guest reported readiness (its serial marker appeared, see
    /// `spec.readiness`), or it is Running and no readiness check is configured.
    pub const GUEST_READY: &str = "GuestReady";
    /// MicroVM: the spec changed in a way that only takes effect after the VM restarts
    /// (cpus, memory, kernel, disks...).
    pub const RESTART_REQUIRED: &str = "RestartRequired";
    /// Rollout: the rollout is moving hosts (or waiting between steps) and has not finished.
    pub const PROGRESSING: &str = "Progressing";
    /// Rollout: the last analysis of canary against baseline hosts passed.
    pub const ANALYSIS_PASSED: &str = "AnalysisPassed";
}
