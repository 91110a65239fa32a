//! Quiver node agent: runs microVMs with QEMU and serves the `quiver.v1` API.
//!
//! # Layout
//! - [`vm`]: the VM runtime. [`vm::lifecycle`] is the pure state machine (`(state, event) →
//!   commands`); [`vm::qemu`] and [`vm::simulated`] are drivers behind [`vm::driver::Driver`];
//!   [`vm::manager`] runs one actor per VM and persists run dirs; after a restart it feeds each
//!   VM's finding to its lifecycle, which decides re-adoption. [`vm::spec`], [`vm::images`] and
//!   [`vm::network`] validate puts (image roots, port forwards).
//! - [`services`]: Health, Status, Vm, Monitoring, Admin, each implemented once over the proto
//!   types; [`services::ServingModes`] says which transport each answers on.
//! - [`transport`]: the gRPC (tonic, mutual TLS) and Iroh (`quiver/rpc/1`) adapters over the
//!   same services. The proto, the wire protocol, the clients and the mTLS material come from
//!   `quiver-rpc`. [`peers`]: the Iroh allowlist, from registered Hosts plus trusted ids.
//! - [`metrics`]: per-method RPC metrics and `/metrics` text. [`config`]: the agent's settings.
//!   [`runtime`]: wiring for the binary. [`advertise`]: the addresses put in the Host.
//!   [`rbac`]: every Kubernetes API call, as the RBAC rules the Helm chart grants.
//!
//! # Goals
//! - VMs outlive the agent: QEMU runs detached; a restarted agent re-adopts live VMs and
//!   reports (and restarts, per run strategy) the ones that died meanwhile.
//! - Puts are validated before anything touches disk and are idempotent per uid + generation.
//! - A guest gets only images under the configured image roots, and only the network access
//!   its spec declares (user networking with explicit port forwards, or none).
//!
//! # Non-goals (here)
//! - Placement, Raft and fencing across hosts (the epoch is only checked per VM); guest
//!   networking other than QEMU user mode.
//!
//! Security: gRPC is mTLS (`quiver_rpc::pki`, or `--dev-tls`; plain only with
//! `insecure_plaintext` on loopback); Iroh admits only registered Hosts' and trusted endpoint
//! ids, at the handshake, and refuses state-changing calls in 0-RTT data.

pub mod advertise;
pub mod cluster;
pub mod config;
pub mod error;
pub mod metrics;
pub mod operator_id;
pub mod peers;
pub mod rbac;
pub mod registration;
pub mod runtime;
pub mod services;
pub mod transport;
pub mod vm;

pub use error::{Error, Result};
