//! What the Raft service checks in a request before openraft sees it. openraft trusts its
//! peers: a message that claims to come from the receiving node itself trips its internal
//! assertions, a term or log index near `u64::MAX` overflows its arithmetic, and a snapshot
//! chunk at a huge offset makes it allocate that many bytes. No honest peer sends any of
//! these, so each is refused with an error that names the field.

use std::sync::{Arc, Mutex, PoisonError};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use openraft::{LogId, Vote};

use crate::TypeConfig;
use crate::state_machine::check_snapshot_data;

/// Terms and log indexes stay below this. A group that holds an election every millisecond
/// reaches it after 146 million years.
pub const MAX_TERM_OR_INDEX: u64 = 1 << 62;

/// The largest snapshot a node receives: the end of any chunk (`offset + data`) stays within.
pub const MAX_SNAPSHOT_BYTES: u64 = 1 << 30;

/// Why a request is refused: the field, and what is wrong with it.
pub type Refusal = String;

fn vote(me: u64, field: &str, v: &Vote<u64>) -> Result<(), Refusal> {
    if v.leader_id.node_id == me {
        return Err(format!(
            "{field}.leader_id.node_id: {me} is the receiving node itself"
        ));
    }
    term(field, v.leader_id.term)
}

/// Appends and snapshots come from a leader: their vote is committed.
fn leader_vote(me: u64, v: &Vote<u64>) -> Result<(), Refusal> {
    if !v.is_committed() {
        return Err(format!(
            "vote: {v} is not committed, and only a leader (whose vote is) sends this"
        ));
    }
    vote(me, "vote", v)
}

fn term(field: &str, term: u64) -> Result<(), Refusal> {
    if term >= MAX_TERM_OR_INDEX {
        return Err(format!(
            "{field}.leader_id.term: {term} is not below {MAX_TERM_OR_INDEX}"
        ));
    }
    Ok(())
}

fn log_id(field: &str, id: Option<&LogId<u64>>) -> Result<(), Refusal> {
    let Some(id) = id else { return Ok(()) };
    term(field, id.leader_id.term)?;
    if id.index >= MAX_TERM_OR_INDEX {
        return Err(format!(
            "{field}.index: {} is not below {MAX_TERM_OR_INDEX}",
            id.index
        ));
    }
    Ok(())
}

/// A vote request to node `me`.
pub fn check_vote(me: u64, req: &VoteRequest<u64>) -> Result<(), Refusal> {
    vote(me, "vote", &req.vote)?;
    log_id("last_log_id", req.last_log_id.as_ref())
}

/// An append to node `me`.
pub fn check_append(me: u64, req: &AppendEntriesRequest<TypeConfig>) -> Result<(), Refusal> {
    leader_vote(me, &req.vote)?;
    log_id("prev_log_id", req.prev_log_id.as_ref())?;
    log_id("leader_commit", req.leader_commit.as_ref())?;
    // The entries follow `prev_log_id` one index at a time (its index, checked above, is far
    // below u64::MAX), under leaders no newer than the sender's vote.
    let first = req.prev_log_id.as_ref().map_or(0, |p| p.index + 1);
    for (next, (i, entry)) in (first..).zip(req.entries.iter().enumerate()) {
        let field = format!("entries[{i}].log_id");
        log_id(&field, Some(&entry.log_id))?;
        if entry.log_id.index != next {
            return Err(format!(
                "{field}.index: {} does not follow the previous entry ({next} expected)",
                entry.log_id.index
            ));
        }
        if entry.log_id.leader_id > req.vote.leader_id {
            return Err(format!(
                "{field}.leader_id: {} is newer than the sender's vote {}",
                entry.log_id.leader_id, req.vote
            ));
        }
    }
    Ok(())
}

/// A snapshot chunk sent to node `me`.
pub fn check_snapshot(me: u64, req: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Refusal> {
    leader_vote(me, &req.vote)?;
    log_id("meta.last_log_id", req.meta.last_log_id.as_ref())?;
    let len = u64::try_from(req.data.len()).unwrap_or(u64::MAX);
    match req.offset.checked_add(len) {
        Some(end) if end <= MAX_SNAPSHOT_BYTES => Ok(()),
        _ => Err(format!(
            "offset: {} (+ {len} bytes) ends beyond the {MAX_SNAPSHOT_BYTES}-byte snapshot limit",
            req.offset
        )),
    }
}

/// A snapshot's id and the bytes received so far.
type Receiving = (String, Vec<u8>);

/// A copy of the snapshot being received, written with each chunk openraft accepted, so that
/// the whole snapshot is checked before its last chunk is passed on: openraft stops the node
/// for good when installing a snapshot fails.
#[derive(Clone, Default)]
pub struct IncomingSnapshot {
    receiving: Arc<Mutex<Option<Receiving>>>,
}

impl IncomingSnapshot {
    /// Takes in a chunk that [`check_snapshot`] passed (and openraft accepted, unless it is
    /// the last); on the last one, checks the whole.
    pub fn receive(&self, req: &InstallSnapshotRequest<TypeConfig>) -> Result<(), Refusal> {
        let mut receiving = self
            .receiving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = &req.meta.snapshot_id;
        if receiving.as_ref().is_none_or(|(current, _)| current != id) {
            // openraft starts a new snapshot only at offset 0 and refuses other chunks itself.
            if req.offset != 0 {
                return Ok(());
            }
            *receiving = None;
        }
        let (_, data) = receiving.get_or_insert_with(|| (id.clone(), Vec::new()));
        // Bounded by `check_snapshot`: offset + len ≤ MAX_SNAPSHOT_BYTES.
        let start = usize::try_from(req.offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(req.data.len());
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(&req.data);
        if !req.done {
            return Ok(());
        }
        let whole = receiving.take().map(|(_, data)| data).unwrap_or_default();
        check_snapshot_data(&whole).map_err(|e| format!("data: the snapshot is not a ledger: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, SnapshotMeta};

    use super::*;

    fn snapshot(offset: u64, from: u64) -> InstallSnapshotRequest<TypeConfig> {
        InstallSnapshotRequest {
            vote: Vote::new_committed(3, from),
            meta: SnapshotMeta::default(),
            offset,
            data: vec![1; 8],
            done: false,
        }
    }

    #[test]
    fn honest_requests_pass_and_each_hostile_field_is_named() {
        let at = |term, index| LogId::new(CommittedLeaderId::new(term, 2), index);
        assert_eq!(
            check_vote(1, &VoteRequest::new(Vote::new(4, 2), Some(at(3, 90)))),
            Ok(())
        );
        let forged = check_vote(1, &VoteRequest::new(Vote::new(4, 1), None));
        assert!(forged.is_err_and(|e| e.starts_with("vote.leader_id.node_id: 1")));
        let far = check_vote(1, &VoteRequest::new(Vote::new(u64::MAX, 2), None));
        assert!(far.is_err_and(|e| e.starts_with("vote.leader_id.term")));
        let index = check_vote(1, &VoteRequest::new(Vote::new(4, 2), Some(at(3, u64::MAX))));
        assert!(index.is_err_and(|e| e.starts_with("last_log_id.index")));

        assert_eq!(
            check_snapshot(1, &snapshot(MAX_SNAPSHOT_BYTES - 8, 2)),
            Ok(())
        );
        let mut uncommitted = snapshot(0, 2);
        uncommitted.vote = Vote::new(3, 2);
        let refused = check_snapshot(1, &uncommitted);
        assert!(refused.is_err_and(|e| e.starts_with("vote: ")));
        for offset in [MAX_SNAPSHOT_BYTES - 7, u64::MAX - 1] {
            let refused = check_snapshot(1, &snapshot(offset, 2));
            assert!(
                refused.is_err_and(|e| e.starts_with("offset: ")),
                "{offset}"
            );
        }
    }
}
