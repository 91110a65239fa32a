//! The Raft service's messages as bytes: openraft's requests and replies, and proposals, in
//! postcard, a compact binary serde format (integers as varints, byte strings as they are).
//! One definition for both sides of the network and for the benchmarks.
//!
//! Decoding is strict: the whole input must be one message (trailing bytes are malformed), and
//! a length prefix never allocates past what the input can hold (serde caps preallocation), so
//! hostile bytes are an error, not a panic or a large allocation. Snapshots and the database
//! (`db.rs`, `state_machine.rs`) keep their own encoding: they are not on the wire.

use openraft::raft::InstallSnapshotRequest;
use openraft::{BasicNode, SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::TypeConfig;

pub use postcard::Error;

/// openraft's snapshot chunk (`InstallSnapshotRequest`) as it is sent: the same fields in the
/// same order, with the data as one byte string. openraft's `data` is a plain `Vec<u8>`, which
/// serde writes and reads one element at a time; postcard encodes both the same way (a length,
/// then the bytes), so the bytes on the wire do not change, only the time it takes.
#[derive(Serialize)]
pub struct SnapshotChunk<'a> {
    vote: &'a Vote<u64>,
    meta: &'a SnapshotMeta<u64, BasicNode>,
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
    done: bool,
}

impl<'a> From<&'a InstallSnapshotRequest<TypeConfig>> for SnapshotChunk<'a> {
    fn from(req: &'a InstallSnapshotRequest<TypeConfig>) -> Self {
        Self {
            vote: &req.vote,
            meta: &req.meta,
            offset: req.offset,
            data: &req.data,
            done: req.done,
        }
    }
}

/// [`SnapshotChunk`], read back.
#[derive(Deserialize)]
struct OwnedSnapshotChunk {
    vote: Vote<u64>,
    meta: SnapshotMeta<u64, BasicNode>,
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    done: bool,
}

/// The snapshot chunk that `bytes` hold, all of them.
///
/// # Errors
/// `bytes` are not exactly one chunk.
pub fn decode_snapshot_chunk(bytes: &[u8]) -> Result<InstallSnapshotRequest<TypeConfig>, Error> {
    let chunk: OwnedSnapshotChunk = decode(bytes)?;
    Ok(InstallSnapshotRequest {
        vote: chunk.vote,
        meta: chunk.meta,
        offset: chunk.offset,
        data: chunk.data,
        done: chunk.done,
    })
}

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
    use openraft::raft::{AppendEntriesRequest, VoteRequest};
    use openraft::{CommittedLeaderId, LogId, Vote};

    #[test]
    fn a_snapshot_chunk_is_encoded_as_openraft_s_type_would_be_and_reads_back() {
        let chunk = InstallSnapshotRequest::<TypeConfig> {
            vote: Vote::new_committed(7, 3),
            meta: SnapshotMeta {
                last_log_id: Some(LogId::new(CommittedLeaderId::new(7, 3), 1000)),
                last_membership: openraft::StoredMembership::default(),
                snapshot_id: "7-3-1000".to_owned(),
            },
            offset: 4096,
            data: (0..=255u8).cycle().take(10_000).collect(),
            done: true,
        };
        let bytes = encode(&SnapshotChunk::from(&chunk)).expect("encode");
        assert_eq!(bytes, encode(&chunk).expect("encode"), "the same bytes");
        assert_eq!(decode_snapshot_chunk(&bytes).expect("decode"), chunk);
        assert!(decode_snapshot_chunk(&bytes[..bytes.len() - 1]).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(decode_snapshot_chunk(&trailing).is_err());
    }

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
