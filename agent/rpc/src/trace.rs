//! The trace id of the operation a task works for, carried across every RPC it makes.
//!
//! The operator starts one per reconcile ([`scope`] with [`random`]); every call made inside the
//! scope carries it, and the agent serves the call inside a span with the same `trace_id`
//! field, and inside the same scope, so that the calls it makes in turn carry it too. The JSON
//! logs of both show it on every line written within.
//!
//! On the wire: over gRPC, metadata [`GRPC_HEADER`] (32 hex digits); over Iroh, one more field
//! of the request message, [`PROTOBUF_FIELD`] (16 bytes), which any protobuf decoder that does
//! not know it skips, so frames stay as `docs/protocol.md` fixes them and an agent of any
//! version reads such a request. The Raft service's messages (postcard, not protobuf) carry none.

use std::fmt;
use std::future::Future;
use std::str::FromStr;

/// The gRPC metadata key of the trace id.
pub const GRPC_HEADER: &str = "quiver-trace-id";
/// The field number of the trace id in a request message on Iroh: the largest protobuf allows,
/// which no `quiver.v1` message uses.
pub const PROTOBUF_FIELD: u32 = (1 << 29) - 1;
/// Bytes of a trace id.
pub const TRACE_ID_LEN: usize = 16;

/// 16 bytes, written as 32 lowercase hex digits (the W3C trace-context form).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; TRACE_ID_LEN]);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

/// Not 32 hex digits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a trace id is 32 hex digits, got {0:?}")]
pub struct BadTraceId(pub String);

impl FromStr for TraceId {
    type Err = BadTraceId;

    fn from_str(text: &str) -> Result<Self, BadTraceId> {
        let bad = || BadTraceId(text.chars().take(64).collect());
        if text.len() != 2 * TRACE_ID_LEN || !text.is_ascii() {
            return Err(bad());
        }
        let mut id = [0u8; TRACE_ID_LEN];
        for (byte, pair) in id.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| bad())?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| bad())?;
        }
        Ok(Self(id))
    }
}

tokio::task_local! {
    static CURRENT: TraceId;
}

/// A new random trace id.
#[must_use]
pub fn random() -> TraceId {
    TraceId(rand::random())
}

/// The trace id of the running task's operation, if it has one.
#[must_use]
pub fn current() -> Option<TraceId> {
    CURRENT.try_with(|id| *id).ok()
}

/// Runs `work` as part of the operation `id` (`None`: as it is).
pub async fn scope<F: Future>(id: Option<TraceId>, work: F) -> F::Output {
    match id {
        Some(id) => CURRENT.scope(id, work).await,
        None => work.await,
    }
}

/// The trace id of a gRPC request's metadata; a malformed one is ignored (a trace id only
/// ties logs together, so a bad one must not fail the call).
#[must_use]
pub fn from_grpc(metadata: &tonic::metadata::MetadataMap) -> Option<TraceId> {
    metadata.get(GRPC_HEADER)?.to_str().ok()?.parse().ok()
}

/// Adds the running task's trace id, if any, to a gRPC request.
pub fn to_grpc<T>(request: &mut tonic::Request<T>) {
    if let Some(id) = current()
        && let Ok(value) = id.to_string().parse()
    {
        request.metadata_mut().insert(GRPC_HEADER, value);
    }
}

/// Appends the running task's trace id, if any, to an encoded request message.
pub fn to_message(message: &mut Vec<u8>) {
    if let Some(id) = current() {
        prost::encoding::bytes::encode(PROTOBUF_FIELD, &id.0.to_vec(), message);
    }
}

/// The trace id among an encoded message's top-level fields. Reads only what the bytes hold;
/// a message that is not well-formed protobuf has none (its decoder refuses it anyway).
#[must_use]
pub fn from_message(mut message: &[u8]) -> Option<TraceId> {
    use prost::encoding::{DecodeContext, WireType, decode_key, decode_varint, skip_field};
    while !message.is_empty() {
        let (field, wire_type) = decode_key(&mut message).ok()?;
        if field == PROTOBUF_FIELD && wire_type == WireType::LengthDelimited {
            let len = usize::try_from(decode_varint(&mut message).ok()?).ok()?;
            return message.get(..len)?.try_into().ok().map(TraceId);
        }
        skip_field(wire_type, field, &mut message, DecodeContext::default()).ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;
    use prost::Message as _;
    use rand::{Rng as _, SeedableRng as _};

    #[test]
    fn hex_round_trips_and_bad_text_is_refused() {
        let id = TraceId([0xab; TRACE_ID_LEN]);
        let text = id.to_string();
        assert_eq!(text, "ab".repeat(16));
        assert_eq!(text.parse(), Ok(id));
        for bad in [
            "",
            "ab",
            &"g0".repeat(16),
            &"ab".repeat(17),
            &"é".repeat(16),
        ] {
            assert!(bad.parse::<TraceId>().is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_scope_sets_the_current_id_for_its_task_and_grpc_metadata_carries_it() {
        assert_eq!(current(), None);
        let id = random();
        let mut request = tonic::Request::new(());
        scope(Some(id), async { to_grpc(&mut request) }).await;
        assert_eq!(from_grpc(request.metadata()), Some(id));
        assert_eq!(current(), None, "only inside the scope");
        let mut untraced = tonic::Request::new(());
        to_grpc(&mut untraced);
        assert_eq!(from_grpc(untraced.metadata()), None);
        untraced
            .metadata_mut()
            .insert(GRPC_HEADER, "not-hex".parse().expect("ascii"));
        assert_eq!(from_grpc(untraced.metadata()), None);
    }

    #[tokio::test]
    async fn a_traced_message_is_still_the_message_and_gives_its_id_back() {
        let request = proto::DeleteVmRequest { uid: "vm-1".into() };
        let id = random();
        let mut traced = request.encode_to_vec();
        scope(Some(id), async { to_message(&mut traced) }).await;
        assert_eq!(from_message(&traced), Some(id));
        // A decoder that does not know the field skips it.
        assert_eq!(
            proto::DeleteVmRequest::decode(traced.as_slice()).expect("decode"),
            request
        );
        let mut untraced = request.encode_to_vec();
        to_message(&mut untraced);
        assert_eq!(untraced, request.encode_to_vec(), "no scope, no field");
        assert_eq!(from_message(&untraced), None);
    }

    #[test]
    fn any_bytes_give_an_id_or_none_and_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20_000 {
            let len = rng.random_range(0..48);
            let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = from_message(&bytes);
        }
        // A length prefix beyond the input, and a varint that never ends.
        assert_eq!(from_message(&[0x0a, 0xff, 0xff, 0xff, 0x0f]), None);
        assert_eq!(from_message(&[0x80; 12]), None);
    }
}
