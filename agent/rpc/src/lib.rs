//! Quiver's RPC layer, shared by the agent, the operator and the Raft network.
//!
//! Layout:
//! - [`frame`]: the frames of the Iroh wire protocol `quiver/rpc/1`: a 24-byte header (version,
//!   flags, type, priority, service, method, request id, payload length, deadline) and a payload.
//!   Parsing checks a header before it allocates for the payload.
//! - [`codec`]: the same frames as a `tokio_util` codec, for reading and writing QUIC streams.
//! - [`error`]: [`RpcError`] (gRPC status codes, the payload of an Error frame) and
//!   [`ClientError`], the one error a caller sees.
//! - [`dispatch`]: the [`Dispatch`] trait through which the Iroh server reaches the services.
//! - [`server`]: [`RpcServer`], the iroh protocol handler on ALPN `quiver/rpc/1`.
//! - [`client`]: [`RpcClient`], calls over one reused connection per peer.
//! - [`access`]: the [`Allowlist`] of endpoint ids, enforced at the QUIC handshake.
//! - [`endpoint`]: building an offline-by-default iroh endpoint ([`EndpointOptions`]).
//!
//! The specification, with test vectors that the tests decode, is `docs/protocol.md`.
//!
//! Goals: one definition of the wire format; every malformed input is an error that names the
//! field, never a panic, and memory is bounded by configured limits (payload size, streams and
//! calls per connection); a transport that knows nothing of services, so the Iroh and gRPC
//! adapters call the same service code; access decided at the handshake.
//! Non-goals: payload meaning (protobuf messages of `quiver.v1`, decoded by the services'
//! adapters); key persistence and address discovery (the caller passes keys and addresses);
//! client streaming (no `quiver.v1` method needs it).

pub mod access;
pub mod client;
pub mod codec;
pub mod dispatch;
pub mod endpoint;
pub mod error;
pub mod frame;
pub mod server;

pub use access::{AccessCounts, Allowlist, CLOSE_REFUSED};
pub use client::{BackoffPolicy, ClientConfig, ClientCounts, RpcClient, ServerStream};
pub use codec::{CodecError, FrameCodec};
pub use dispatch::{CallContext, Dispatch, Reply, ReplyStream};
pub use endpoint::{EndpointError, EndpointOptions};
pub use error::{ClientError, Code, RpcError};
pub use frame::{DEFAULT_MAX_PAYLOAD, Frame, FrameError, FrameType, HEADER_LEN, Header, Priority};
pub use server::{ALPN, RpcServer, ServerConfig, ServerCounts};
