//! The Raft log, the vote and the committed log id, in redb.
//!
//! Every write of the log or the vote is one redb transaction committed with immediate
//! durability before the call returns (and, for appends, before openraft's flush callback
//! fires): an acknowledged entry or vote survives a crash.
//!
//! The committed log id is the exception. openraft saves it before applying each commit, so a
//! durable save would put one more fsync (and a trip through the blocking pool) on every
//! commit's path. It is kept in memory and written in the transaction of the next durable
//! write: the next append (or vote, truncation, purge). A restarted node may so find an older
//! committed id than it had applied: it re-applies up to that one, learns the rest from the
//! leader, and its agent acts on the ledger only once it has applied every entry of its log
//! again ([`crate::lease::Holder::resume`]). Saving it is optional in openraft for that reason.
//!
//! Reads run on the caller's thread (redb serves them from its cache without waiting for a
//! writer); writes, which wait for the disk, on the blocking pool.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, Vote};
use redb::{ReadableDatabase as _, ReadableTable as _, WriteTransaction};

use crate::db::{LOG, META, RaftDb, decode, encode};
use crate::{StorageError, TypeConfig};

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log store; clones share the database and the committed log id not yet written
/// (openraft takes one as its reader).
#[derive(Clone, Debug)]
pub struct LogStore {
    db: RaftDb,
    /// The latest committed log id openraft saved (`None`: none saved since the start), written
    /// with every durable write.
    committed: Arc<Mutex<Option<Option<LogId<u64>>>>>,
}

impl LogStore {
    #[must_use]
    pub fn new(db: RaftDb) -> Self {
        Self {
            db,
            committed: Arc::default(),
        }
    }

    fn pending_committed(&self) -> Option<Option<LogId<u64>>> {
        *self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The last index in the log (0 when empty).
    ///
    /// # Errors
    /// The log cannot be read.
    pub async fn last_index(&mut self) -> Result<u64, StorageError> {
        Ok(self
            .get_log_state()
            .await?
            .last_log_id
            .map_or(0, |id| id.index))
    }

    #[expect(
        clippy::result_large_err,
        reason = "openraft's error type, which its storage traits return"
    )]
    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>, StorageError> {
        self.db.read_here(ErrorSubject::Store, |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(META)?;
            table.get(key)?.map(|v| decode(v.value())).transpose()
        })
    }

    /// Runs `op` in one durable write transaction, which also writes the latest committed log
    /// id openraft saved.
    async fn write(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        op: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error> + Send + 'static,
    ) -> Result<(), StorageError> {
        let committed = match self.pending_committed() {
            Some(committed) => Some(encode_meta(&committed)?),
            None => None,
        };
        self.db
            .run(subject, verb, move |db| {
                let txn = db.begin_write()?;
                op(&txn)?;
                if let Some(bytes) = committed {
                    txn.open_table(META)?.insert(COMMITTED, bytes.as_slice())?;
                }
                txn.commit()?;
                Ok(())
            })
            .await
    }

    async fn write_meta<T: serde::Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), StorageError> {
        let bytes = encode_meta(value)?;
        self.write(ErrorSubject::Store, ErrorVerb::Write, move |txn| {
            txn.open_table(META)?.insert(key, bytes.as_slice())?;
            Ok(())
        })
        .await
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError> {
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        self.db.read_here(ErrorSubject::Logs, |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            let mut entries = Vec::new();
            for item in table.range::<u64>(range)? {
                let (_, value) = item?;
                entries.push(decode(value.value())?);
            }
            Ok(entries)
        })
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId<u64>> = self.read_meta(LAST_PURGED)?;
        let last = self.db.read_here(ErrorSubject::Logs, |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(LOG)?;
            table
                .last()?
                .map(|(_, v)| decode::<Entry<TypeConfig>>(v.value()))
                .transpose()
        })?;
        let last_log_id = last.map(|e| e.log_id).or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError> {
        // To disk with the next durable write (the module's doc says why that is safe).
        *self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError> {
        if let Some(committed) = self.pending_committed() {
            return Ok(committed);
        }
        Ok(self.read_meta::<Option<LogId<u64>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|e| encode(&e).map(|bytes| (e.log_id.index, bytes)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                StorageError::from(openraft::StorageIOError::write_logs(
                    openraft::AnyError::new(&e),
                ))
            })?;
        let written = self
            .write(ErrorSubject::Logs, ErrorVerb::Write, move |txn| {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in &encoded {
                    table.insert(*index, bytes.as_slice())?;
                }
                Ok(())
            })
            .await;
        // The commit above returned: the entries are on disk.
        callback.log_io_completed(
            written
                .as_ref()
                .copied()
                .map_err(|e| std::io::Error::other(e.to_string())),
        );
        written
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        self.write(ErrorSubject::Logs, ErrorVerb::Delete, move |txn| {
            txn.open_table(LOG)?
                .retain_in::<u64, _>(log_id.index.., |_, _| false)?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError> {
        let bytes = encode_meta(&log_id)?;
        self.write(ErrorSubject::Logs, ErrorVerb::Delete, move |txn| {
            txn.open_table(META)?
                .insert(LAST_PURGED, bytes.as_slice())?;
            txn.open_table(LOG)?
                .retain_in::<u64, _>(..=log_id.index, |_, _| false)?;
            Ok(())
        })
        .await
    }
}

/// A metadata value as stored; a value that does not encode is a failed write.
#[expect(
    clippy::result_large_err,
    reason = "openraft's error type, which its storage traits return"
)]
fn encode_meta<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    encode(value).map_err(|e| {
        StorageError::from(openraft::StorageIOError::write(openraft::AnyError::new(&e)))
    })
}
