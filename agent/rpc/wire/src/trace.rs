//! Trace ids: 16 bytes that tie together the log lines of one operation across processes (the
//! operator's reconcile, then each agent that serves its calls). Written as 32 lowercase hex
//! digits, the W3C trace-context form, in logs and in the gRPC metadata; on Iroh a Request
//! carries the 16 bytes before its message (`docs/protocol.md`, flag bit 1).

use std::fmt;
use std::str::FromStr;

/// Bytes of a trace id on the wire.
pub const TRACE_ID_LEN: usize = 16;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
