//! Quiver's RPC layer, shared by the agent, the operator and the Raft network.
//!
//! Layout:
//! - [`proto`]: the `quiver.v1` messages and the tonic-generated service traits and clients,
//!   compiled from `proto/quiver.proto` by `build.rs` (protox, no system `protoc`).
//! - [`methods`]: every `quiver.v1` method with its (service id, method id) on the wire, its
//!   gRPC path and whether it changes state. [`modes`]: which transport each service is
//!   served on (`grpc`, `iroh`, `dual`).
//! - [`agent_client`]: [`AgentClient`], the typed client of an agent over gRPC, Iroh or both
//!   (preferring one, falling back to the other).
//! - [`grpc`]: the strict protobuf codec of every generated client and server, and the mapping
//!   of tonic's failures to [`ClientError`].
//! - [`pki`]: mutual-TLS file sets and the cluster CA that issues agents' and clients'
//!   certificates (no Kubernetes: the operator keeps the CA in a Secret).
//! - [`frame`] and [`codec`]: the frames of the Iroh wire protocol `quiver/rpc/1` (a 24-byte
//!   header and a payload) and their `tokio_util` codec, re-exported from crate `quiver-wire`
//!   (`wire/`), which builds without the transport so that it can be fuzzed (`fuzz/`).
//! - [`error`]: [`RpcError`] (gRPC status codes, the payload of an Error frame) and
//!   [`ClientError`], what a call fails with on either transport (`Unreachable`,
//!   `Remote{code, message}`, `Refused`, `DeadlineExceeded`, ...).
//! - [`dispatch`]: the [`Dispatch`] trait through which the Iroh server reaches the services.
//! - [`server`]: [`RpcServer`], the iroh protocol handler on ALPN `quiver/rpc/1`.
//! - [`client`]: [`RpcClient`], calls over one reused connection per peer.
//! - [`access`]: the [`Allowlist`] of endpoint ids, enforced at the QUIC handshake.
//! - [`endpoint`]: building an offline-by-default iroh endpoint ([`EndpointOptions`]).
//! - [`identity`]: an endpoint's Ed25519 key, kept in a file across restarts.
//!
//! The specification, with test vectors that the tests decode, is `docs/protocol.md`.
//!
//! Goals: one definition of the API (proto, service traits), of the wire format and of the
//! client-side errors, so that the operator talks to agents without depending on the agent's
//! VM runtime; every malformed input is an error that names the field, never a panic, and
//! memory is bounded by configured limits (payload size, streams and calls per connection); a
//! transport that knows nothing of services, so the Iroh and gRPC adapters call the same
//! service code; access decided at the handshake.
//! Non-goals: the services' behaviour (implemented once in the agent, `agent/src/services`);
//! Kubernetes types. Conversions between the CRD types and `proto` live in the operator
//! (`operator/src/convert.rs`), conversions between `proto` and the agent's own types in the
//! agent: this crate stays free of `kube` and `quiver-crds`, which the Raft network and
//! other peers do not need, and each conversion sits next to the one type that is not ours.
//! Address discovery is the caller's (it passes addresses, e.g. from `Host` objects); no
//! client streaming (no `quiver.v1` method needs it).

pub mod access;
pub mod agent_client;
pub mod client;
pub mod dispatch;
pub mod endpoint;
pub mod error;
pub mod grpc;
pub mod identity;
pub mod methods;
pub mod modes;
pub mod pki;
pub mod proto;
pub mod relay;
pub mod server;
mod stream_io;
pub mod trace;

/// The most bytes one `Vm.WriteConsole` call may type into a console (a paste is sent in
/// pieces of this size).
pub const MAX_CONSOLE_INPUT: usize = 4096;

pub use access::{AccessCounts, Allowlist, CLOSE_REFUSED};
pub use agent_client::{AgentClient, GrpcRoute, IrohRoute, MessageStream};
pub use client::{BackoffPolicy, ClientConfig, ClientCounts, RpcClient, ServerStream};
pub use dispatch::{CallContext, Dispatch, Reply, ReplyStream};
pub use endpoint::{EndpointError, EndpointOptions};
pub use error::{ClientError, ClientResult, Code, RpcError};
pub use iroh;
pub use methods::{Method, ServiceName};
pub use modes::{TransportMode, TransportModes, Wire};
pub use quiver_wire::{
    COALESCE_MAX, ChunkDecoder, CodecError, DEFAULT_MAX_PAYLOAD, Frame, FrameChunks, FrameCodec,
    FrameError, FrameType, HEADER_LEN, Header, Priority, codec, frame,
};
pub use relay::{Relay, RelayError, peer_addr};
pub use server::{ALPN, PeerHealth, PeerTable, RpcServer, ServerConfig, ServerCounts};
pub use trace::TraceId;
