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
//!
//! The specification, with test vectors that the tests decode, is `docs/protocol.md`.
//!
//! Goals: one definition of the API (proto, service traits), of the wire format and of the
//! client-side errors, so that the operator talks to agents without depending on the agent's
//! VM runtime; every malformed input is an error that names the field, never a panic, and
//! memory is bounded by the configured maximum payload.
//! Non-goals: the services' behaviour (implemented once in the agent, `agent/src/services`);
//! Kubernetes types. Conversions between the CRD types and `proto` live in the operator
//! (`operator/src/convert.rs`), conversions between `proto` and the agent's own types in the
//! agent: this crate stays free of `kube` and `quiver-crds`, which the Raft network and
//! other peers do not need, and each conversion sits next to the one type that is not ours.

pub mod client_error;
pub mod codec;
pub mod frame;
pub mod grpc;
pub mod pki;
pub mod proto;

pub use client_error::{ClientError, ClientResult};
pub use codec::{CodecError, FrameCodec};
pub use frame::{DEFAULT_MAX_PAYLOAD, Frame, FrameError, FrameType, HEADER_LEN, Header, Priority};
pub use grpc::client::AgentClient;
