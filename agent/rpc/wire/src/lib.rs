//! The frames of `quiver/rpc/1`, Quiver's Iroh wire protocol (specified in `docs/protocol.md`).
//!
//! Layout:
//! - [`frame`]: a 24-byte header (version, flags, type, priority, service, method, request id,
//!   payload length, deadline) and a payload. Parsing checks a header before it allocates for the
//!   payload.
//! - [`codec`]: the same frames as a `tokio_util` codec over byte buffers.
//! - [`chunks`]: frames from a stream received as chunks of shared memory, without a copy when
//!   a chunk holds a whole frame.
//!
//! Goals: one definition of the wire format; every malformed input is an error that names the
//! field, never a panic; a reader holds at most `24 + max payload` bytes per frame, whatever the
//! peer claims. A crate of its own, depending only on `bytes`, `tokio-util` and `thiserror`, so
//! that the fuzz target (`agent/rpc/fuzz`) builds it in seconds, without the transport.
//! Non-goals: the transport (streams, calls, access: `quiver-rpc`, which re-exports what is
//! here); decoding payloads (protobuf messages of `quiver.v1`).

pub mod chunks;
pub mod codec;
pub mod frame;

pub use chunks::ChunkDecoder;
pub use codec::{CodecError, FrameCodec};
pub use frame::{
    COALESCE_MAX, DEFAULT_MAX_PAYLOAD, Frame, FrameChunks, FrameError, FrameType, HEADER_LEN,
    Header, Priority,
};
