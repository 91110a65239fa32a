//! What the Iroh server calls: a [`Dispatch`] maps (service id, method id, payload) to a reply.
//!
//! The transport knows nothing of services. The dispatcher that maps ids to the service
//! implementations (the same ones the gRPC server calls) lives above this crate's transport;
//! tests use their own.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use iroh::EndpointId;
use tokio::time::Instant;

use crate::error::RpcError;
use crate::frame::Priority;

/// Who is calling and under which conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The caller's endpoint id, authenticated by the QUIC handshake.
    pub peer: EndpointId,
    /// When the caller gives up (from the request's deadline, counted from receipt). The server
    /// answers `DEADLINE_EXCEEDED` and drops the call at that instant; a dispatcher may use it to
    /// bound work it hands elsewhere.
    pub deadline: Option<Instant>,
    /// The request arrived on a stream opened in 0-RTT data. Such data may be a replay, which is
    /// why the server never dispatches a state-changing method from one.
    pub zero_rtt: bool,
    pub priority: Priority,
}

/// The messages of a server stream; an `Err` ends the stream with an Error frame.
pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<Bytes, RpcError>> + Send>>;

/// A dispatcher's answer.
pub enum Reply {
    /// One Response frame, or one Error frame.
    Unary(Result<Bytes, RpcError>),
    /// StreamData frames, then StreamEnd when the stream ends, or an Error frame at the first `Err`.
    Stream(ReplyStream),
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unary(result) => f.debug_tuple("Unary").field(result).finish(),
            Self::Stream(_) => f.write_str("Stream(..)"),
        }
    }
}

/// The services behind the transport.
pub trait Dispatch: Send + Sync + 'static {
    /// Runs one call. Unknown services or methods answer `UNIMPLEMENTED`.
    fn call(
        &self,
        service: u16,
        method: u16,
        payload: Bytes,
        context: CallContext,
    ) -> impl Future<Output = Reply> + Send;

    /// Whether the method changes state (create, delete, vote, append...). Those are refused on
    /// 0-RTT streams, whose data an attacker can replay. When in doubt, answer `true`.
    fn changes_state(&self, service: u16, method: u16) -> bool;
}
