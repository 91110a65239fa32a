//! The agent's Raft database: one redb file holding the log, the vote, the committed log id
//! and the latest snapshot.
//!
//! redb commits with `Durability::Immediate` (its default): data is on disk when `commit`
//! returns, which is what "durable before acknowledging" needs. Its calls block, so every one
//! runs on the blocking pool.

use std::path::Path;
use std::sync::Arc;

use openraft::{AnyError, ErrorSubject, ErrorVerb, StorageIOError};
use redb::{Database, TableDefinition};

use crate::StorageError;

/// Log entries by index, JSON-encoded.
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
/// `vote`, `committed`, `last_purged`: JSON-encoded.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// `meta` and `data` of the latest snapshot.
pub(crate) const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");

/// A handle on the database; clones share it.
#[derive(Clone, Debug)]
pub struct RaftDb {
    db: Arc<Database>,
}

impl RaftDb {
    /// Opens (or creates) the database at `path` with its tables.
    ///
    /// # Errors
    /// The file cannot be opened or is not a redb database.
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        Self::with_tables(Database::create(path)?)
    }

    /// A database in memory: the same storage code with nothing on disk, for benchmarks that
    /// separate the cost of durability from the rest (a node on it forgets everything when
    /// dropped, so it never serves a real group).
    ///
    /// # Errors
    /// redb refuses to create it.
    pub fn in_memory() -> Result<Self, redb::Error> {
        let backend = redb::backends::InMemoryBackend::new();
        Self::with_tables(Database::builder().create_with_backend(backend)?)
    }

    fn with_tables(db: Database) -> Result<Self, redb::Error> {
        let txn = db.begin_write()?;
        txn.open_table(LOG)?;
        txn.open_table(META)?;
        txn.open_table(SNAPSHOT)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs `op` here, on the caller's thread: for reads, which redb answers from its cache
    /// without waiting for a writer, where a trip through the blocking pool would cost more
    /// than the read (two thread wake-ups on every replication and lookup).
    #[expect(
        clippy::result_large_err,
        reason = "openraft's error type, which its storage traits return"
    )]
    pub(crate) fn read_here<T>(
        &self,
        subject: ErrorSubject<u64>,
        op: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StorageError> {
        op(&self.db).map_err(|e| {
            StorageError::from(StorageIOError::new(
                subject,
                ErrorVerb::Read,
                AnyError::new(&e),
            ))
        })
    }

    /// Runs `op` on the blocking pool; its error becomes a storage error about `subject`.
    pub(crate) async fn run<T, F>(
        &self,
        subject: ErrorSubject<u64>,
        verb: ErrorVerb,
        op: F,
    ) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let failed =
            |e: AnyError| StorageError::from(StorageIOError::new(subject.clone(), verb, e));
        match tokio::task::spawn_blocking(move || op(&db)).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(failed(AnyError::new(&e))),
            Err(e) => Err(failed(AnyError::new(&e))),
        }
    }
}

/// A value as stored (JSON).
pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, redb::Error> {
    serde_json::to_vec(value).map_err(|e| redb::Error::Corrupted(e.to_string()))
}

/// A stored value; a value that does not decode is corruption.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, redb::Error> {
    serde_json::from_slice(bytes).map_err(|e| redb::Error::Corrupted(e.to_string()))
}
