//! Quiver's RPC layer, shared by the agent, the operator and the Raft network.
//!
//! Layout:
//! - [`proto`]: the `quiver.v1` messages and the tonic-generated service traits and clients,
//!   compiled from `proto/quiver.proto` by `build.rs` (protox, no system `protoc`).
//! - [`grpc`]: the strict protobuf codec of every generated client and server, and
//!   [`AgentClient`], the typed gRPC client of an agent.
//! - [`client_error`]: [`ClientError`], what a call fails with on any transport
//!   (`Unreachable`, `Remote{code, message}`, `Refused`).
//! - [`pki`]: mutual-TLS file sets and the cluster CA that issues agents' and clients'
//!   certificates (no Kubernetes: the operator keeps the CA in a Secret).
//! - [`frame`]: the frames of the Iroh wire protocol `quiver/rpc/1`: a 24-byte header (version,
//!   flags, type, priority, service, method, request id, payload length, deadline) and a payload.
//!   Parsing checks a header before it allocates for the payload.
//! - [`codec`]: the same frames as a `tokio_util` codec, for reading and writing QUIC streams.
//! - [`error`]: [`RpcError`] (gRPC status codes, the payload of an Error frame) and
//!   [`error::ClientError`], what an Iroh call fails with. It and the gRPC client's
//!   [`ClientError`] are still two enums; they become one when the services are served over
//!   Iroh too.
//! - [`dispatch`]: the [`Dispatch`] trait through which the Iroh server reaches the services.
//! - [`server`]: [`RpcServer`], the iroh protocol handler on ALPN `quiver/rpc/1`.
//! - [`client`]: [`RpcClient`], calls over one reused connection per peer.
//! - [`access`]: the [`Allowlist`] of endpoint ids, enforced at the QUIC handshake.
//! - [`endpoint`]: building an offline-by-default iroh endpoint ([`EndpointOptions`]).
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
//! Key persistence and address discovery are the caller's (it passes keys and addresses);
//! no client streaming (no `quiver.v1` method needs it).

pub mod access;
pub mod client;
pub mod client_error;
pub mod codec;
pub mod dispatch;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod grpc;
pub mod pki;
pub mod proto;
pub mod server;

pub use access::{AccessCounts, Allowlist, CLOSE_REFUSED};
pub use client::{BackoffPolicy, ClientConfig, ClientCounts, RpcClient, ServerStream};
pub use client_error::{ClientError, ClientResult};
pub use codec::{CodecError, FrameCodec};
pub use dispatch::{CallContext, Dispatch, Reply, ReplyStream};
pub use endpoint::{EndpointError, EndpointOptions};
pub use error::{Code, RpcError};
pub use frame::{DEFAULT_MAX_PAYLOAD, Frame, FrameError, FrameType, HEADER_LEN, Header, Priority};
pub use grpc::client::AgentClient;
pub use server::{ALPN, RpcServer, ServerConfig, ServerCounts};
