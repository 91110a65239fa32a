//! The Raft service's messages as bytes: openraft's requests and replies, and proposals, in
//! postcard, a compact binary serde format (integers as varints, byte strings as they are).
//! One definition for both sides of the network and for the benchmarks.
//!
//! Decoding is strict: the whole input must be one message (trailing bytes are malformed), and
//! a length prefix never allocates past what the input can hold (serde caps preallocation), so
//! hostile bytes are an error, not a panic or a large allocation. Snapshots and the database
//! (`db.rs`, `state_machine.rs`) keep their own encoding: they are not on the wire.

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use postcard::Error;

/// The message as bytes.
///
/// # Errors
/// The value cannot be serialized (a map with non-serializable keys; not a Raft message).
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, Error> {
    postcard::to_stdvec(message)
}

/// The message that `bytes` hold, all of them.
///
/// # Errors
/// `bytes` are not exactly one `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    match postcard::take_from_bytes(bytes)? {
        (message, []) => Ok(message),
        (_, _trailing) => Err(Error::DeserializeBadEncoding),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TypeConfig;
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, Vote};

    #[test]
    fn raft_messages_round_trip_and_trailing_bytes_are_refused() {
        let vote = VoteRequest::new(
            Vote::new(8, 2),
            Some(LogId::new(CommittedLeaderId::new(7, 3), 1000)),
        );
        let bytes = encode(&vote).expect("encode");
        assert_eq!(decode::<VoteRequest<u64>>(&bytes).expect("decode"), vote);
        let heartbeat = AppendEntriesRequest::<TypeConfig> {
            vote: Vote::new_committed(7, 3),
            prev_log_id: Some(LogId::new(CommittedLeaderId::new(7, 3), 1000)),
            entries: Vec::new(),
            leader_commit: Some(LogId::new(CommittedLeaderId::new(7, 3), 1000)),
        };
        let bytes = encode(&heartbeat).expect("encode");
        assert!(bytes.len() < 32, "compact: {} bytes", bytes.len());
        let back: AppendEntriesRequest<TypeConfig> = decode(&bytes).expect("decode");
        assert_eq!(back.prev_log_id, heartbeat.prev_log_id);
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(&trailing).is_err());
        assert!(decode::<AppendEntriesRequest<TypeConfig>>(&bytes[..bytes.len() - 1]).is_err());
    }
}
