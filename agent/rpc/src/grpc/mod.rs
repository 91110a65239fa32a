//! gRPC (tonic) pieces shared by servers and clients: [`codec`], the protobuf codec of every
//! generated client and server; [`errors`], tonic's failures as [`crate::ClientError`].

pub mod codec;
pub mod errors;

/// Largest gRPC message sent or accepted, unless an agent is configured otherwise (requests
/// and replies alike).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
