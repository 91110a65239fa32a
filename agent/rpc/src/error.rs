//! Failures of a call: the [`RpcError`] a server puts in an Error frame, and the [`ClientError`]
//! a caller sees whatever went wrong (the domain error both transports map to).

use std::fmt;

use bytes::Bytes;
use prost::Message as _;

/// A status code, numbered as gRPC numbers them so that a failure means the same over gRPC and
/// over Iroh.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// The code for a number off the wire; numbers gRPC does not define read as `Unknown`
    /// (gRPC's own rule for codes it does not know).
    #[must_use]
    pub fn from_u32(value: u32) -> Self {
        usize::try_from(value)
            .ok()
            .and_then(|i| Self::ALL.get(i).copied())
            .unwrap_or(Self::Unknown)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A failed call as the server reports it: the payload of an Error frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

/// `quiver.v1.RpcError` on the wire: `code` (tag 1, uint32) and `message` (tag 2, string).
#[derive(Clone, PartialEq, prost::Message)]
struct RpcErrorMessage {
    #[prost(uint32, tag = "1")]
    code: u32,
    #[prost(string, tag = "2")]
    message: String,
}

impl RpcError {
    #[must_use]
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The Error frame payload.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        RpcErrorMessage {
            code: self.code as u32,
            message: self.message.clone(),
        }
        .encode_to_vec()
        .into()
    }

    /// Reads an Error frame payload.
    ///
    /// # Errors
    /// The payload is not a `quiver.v1.RpcError`.
    pub fn decode(payload: &[u8]) -> Result<Self, prost::DecodeError> {
        let message = RpcErrorMessage::decode(payload)?;
        Ok(Self {
            code: Code::from_u32(message.code),
            message: message.message,
        })
    }
}

/// Why a call failed, as the caller sees it, whichever transport carried it: the caller decides
/// from the variant (retry elsewhere, report the refusal, fix the credentials) and never parses
/// a transport's error text. `peer` names the other end: an endpoint id for Iroh, a URL for gRPC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// No connection to the peer: it is down, unreachable, the connection broke mid-call, or
    /// the peer answered that it is unavailable. Another agent (or a retry) may succeed.
    #[error("{peer} is unreachable: {source}")]
    Unreachable {
        peer: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The peer ran the call and it failed.
    #[error("{code}: {message}")]
    Remote { code: Code, message: String },
    /// Access refused: by the peer's allowlist or this endpoint's own at the Iroh handshake (or
    /// revoked since), a TLS failure this client sees, or an authentication refusal. Retrying
    /// with the same credentials fails. (Under TLS 1.3 an agent refuses a client certificate
    /// after the client's half of the handshake; the client then sees only a closed
    /// connection: `Unreachable`.)
    #[error("access between this client and {peer} refused: {reason}")]
    Refused { peer: String, reason: String },
    /// The call's deadline passed before its reply arrived.
    #[error("deadline exceeded")]
    DeadlineExceeded,
    /// The peer sent something that is not `quiver/rpc/1`.
    #[error("protocol violation by {peer}: {detail}")]
    Protocol { peer: String, detail: String },
    /// The request could not be sent as asked (e.g. a payload above the maximum).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// This client's own credentials (TLS material) could not be read.
    #[error("client credentials: {0}")]
    Credentials(#[source] crate::pki::PkiError),
}

impl ClientError {
    /// A short, stable label for metrics.
    #[must_use]
    pub const fn metric_label(&self) -> &'static str {
        match self {
            Self::Unreachable { .. } => "unreachable",
            Self::Remote { .. } => "remote",
            Self::Refused { .. } => "refused",
            Self::DeadlineExceeded => "deadline_exceeded",
            Self::Protocol { .. } => "protocol",
            Self::InvalidRequest(_) => "invalid_request",
            Self::Credentials(_) => "credentials",
        }
    }

    /// Whether the other transport of a dual-transport peer may succeed where this one failed:
    /// the peer could not be reached this way, or it does not serve the method on it.
    #[must_use]
    pub fn other_transport_may_help(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. }
                | Self::Refused { .. }
                | Self::Remote {
                    code: Code::Unimplemented,
                    ..
                }
        )
    }
}

/// `Result` with [`ClientError`] as the default error.
pub type ClientResult<T, E = ClientError> = std::result::Result<T, E>;

impl From<RpcError> for ClientError {
    /// A server's `DEADLINE_EXCEEDED` is the same failure as the caller's own timer firing.
    fn from(error: RpcError) -> Self {
        match error.code {
            Code::DeadlineExceeded => Self::DeadlineExceeded,
            code => Self::Remote {
                code,
                message: error.message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_round_trips_and_matches_the_documented_bytes() {
        let error = RpcError::new(Code::NotFound, "not found");
        let wire = error.encode();
        assert_eq!(&wire[..], b"\x08\x05\x12\x09not found");
        assert_eq!(RpcError::decode(&wire), Ok(error));
    }

    #[test]
    fn unknown_codes_read_as_unknown() {
        assert_eq!(Code::from_u32(16), Code::Unauthenticated);
        assert_eq!(Code::from_u32(17), Code::Unknown);
        assert_eq!(Code::from_u32(u32::MAX), Code::Unknown);
    }

    #[test]
    fn a_remote_deadline_is_the_callers_deadline() {
        let error = ClientError::from(RpcError::new(Code::DeadlineExceeded, "late"));
        assert!(matches!(error, ClientError::DeadlineExceeded));
    }
}
