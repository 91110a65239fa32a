//! The Quiver operator: MicroVM and Host controllers, leader election, and `dev` mode.
//!
//! # Layout
//! - [`controller`]: the MicroVM controller (`reconcile` → finalizer → `apply` / `cleanup`;
//!   the agents' Raft group places VMs), the Host controller (heartbeats) and the Rollout
//!   controller, sharing one [`controller::Context`].
//! - [`status`], [`convert`]: pure decisions (desired MicroVM status and its Events, spec →
//!   agent request), unit-tested without I/O.
//! - [`agent_client`]: the agent cluster behind one client, with a VM status cache fed by
//!   each agent's status stream.
//! - [`leader`]: Lease-based leader election; [`operator`]: controllers run only while leading.
//! - [`dev`], [`agents`]: the one-machine dev cluster and the agent processes it starts;
//!   [`leftovers`]: QEMUs a dead agent left running, stopped (by `quiver-agent sweep`) when
//!   the cluster stops.
//! - [`metrics`]: Prometheus metrics (reconciles, leadership, MicroVMs by phase, Hosts by
//!   readiness) and the `/metrics` + `/healthz` endpoint.
//! - [`rbac`]: every Kubernetes API call of `run`, as the RBAC rules the Helm chart grants.
//! - [`pki`]: the cluster CA (a Secret) and the certificates for mTLS between operator and
//!   agents. The proto, the agent client and certificate generation come from `quiver-rpc`;
//!   the operator does not depend on the agent.
//!
//! # Goals
//! - Reconciling an unchanged object makes no API write; status is written through the status
//!   subresource with one field manager; every transition is a Kubernetes Event.
//! - At most one replica reconciles; a retried put is idempotent (VM uid + generation).
//!
//! - [`rollout`]: the Rollout controller's pure decisions (state machine, analysis);
//!   `controller::rollout` executes them.

pub mod agent_client;
pub mod agents;
pub mod controller;
pub mod convert;
pub mod dev;
pub mod error;
pub mod identity;
pub mod leader;
pub mod leftovers;
pub mod metrics;
pub mod operator;
pub mod pki;
pub mod rbac;
pub mod rollout;
pub mod status;

pub use error::{Error, Result};
