//! Quiver's RPC layer, shared by the agent, the operator and the Raft network.
//!
//! Layout:
//! - [`frame`]: the frames of the Iroh wire protocol `quiver/rpc/1`: a 24-byte header (version,
//!   flags, type, priority, service, method, request id, payload length, deadline) and a payload.
//!   Parsing checks a header before it allocates for the payload.
//! - [`codec`]: the same frames as a `tokio_util` codec, for reading and writing QUIC streams.
//!
//! The specification, with test vectors that the tests decode, is `docs/protocol.md`.
//!
//! Goals: one definition of the wire format; every malformed input is an error that names the
//! field, never a panic, and memory is bounded by the configured maximum payload.
//! Non-goals: payload meaning (protobuf messages of `quiver.v1`, decoded by the services' adapters).

pub mod codec;
pub mod frame;

pub use codec::{CodecError, FrameCodec};
pub use frame::{DEFAULT_MAX_PAYLOAD, Frame, FrameError, FrameType, HEADER_LEN, Header, Priority};
