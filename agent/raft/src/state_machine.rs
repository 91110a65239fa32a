//! The replicated state machine: the [`Ledger`] in memory, snapshots in redb.
//!
//! Applying needs no disk write: the log is durable, and on start openraft re-applies the
//! committed entries after the last snapshot (it reads the committed log id the log store
//! saved). A snapshot is the JSON of the applied state; the latest one is stored with its meta
//! in the same database, replacing the previous one in one transaction.

use std::io::Cursor;
use std::sync::{Arc, PoisonError, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftSnapshotBuilder, StoredMembership,
};
use redb::ReadableDatabase as _;
use serde::{Deserialize, Serialize};

use crate::db::{RaftDb, SNAPSHOT, decode, encode};
use crate::ledger::{Batch, Ledger, Outcome};
use crate::{StorageError, TypeConfig};

const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// Everything applied so far.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId<u64>>,
    membership: StoredMembership<u64, BasicNode>,
    ledger: Ledger,
}

/// The state machine; clones share the state (the agent reads the ledger through one).
#[derive(Clone, Debug)]
pub struct StateMachine {
    db: RaftDb,
    state: Arc<RwLock<Applied>>,
}

impl StateMachine {
    /// The state machine over `db`, starting from its latest snapshot (if any).
    ///
    /// # Errors
    /// The stored snapshot cannot be read.
    pub async fn open(db: RaftDb) -> Result<Self, StorageError> {
        let machine = Self {
            db,
            state: Arc::default(),
        };
        if let Some((_, data)) = machine.stored_snapshot().await? {
            let applied: Applied = decode(&data).map_err(|e| read_error(&e))?;
            *machine.write() = applied;
        }
        Ok(machine)
    }

    /// A copy of the ledger as applied so far.
    #[must_use]
    pub fn ledger(&self) -> Ledger {
        self.read().ledger.clone()
    }

    /// The index of the last log entry applied to the ledger (0 before any).
    #[must_use]
    pub fn applied_index(&self) -> u64 {
        self.read().last_applied.map_or(0, |l| l.index)
    }

    /// Reads the ledger in place (no copy; keep `f` short: applying waits for it).
    pub fn with_ledger<R>(&self, f: impl FnOnce(&Ledger) -> R) -> R {
        f(&self.read().ledger)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Applied> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Applied> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    async fn stored_snapshot(
        &self,
    ) -> Result<Option<(SnapshotMeta<u64, BasicNode>, Vec<u8>)>, StorageError> {
        self.db
            .run(ErrorSubject::Snapshot(None), ErrorVerb::Read, |db| {
                let txn = db.begin_read()?;
                let table = txn.open_table(SNAPSHOT)?;
                let (Some(meta), Some(data)) =
                    (table.get(SNAPSHOT_META)?, table.get(SNAPSHOT_DATA)?)
                else {
                    return Ok(None);
                };
                Ok(Some((decode(meta.value())?, data.value().to_vec())))
            })
            .await
    }

    async fn store_snapshot(
        &self,
        meta: &SnapshotMeta<u64, BasicNode>,
        data: Vec<u8>,
    ) -> Result<(), StorageError> {
        let meta_bytes = encode(meta).map_err(|e| write_error(meta, &e))?;
        self.db
            .run(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                move |db| {
                    let txn = db.begin_write()?;
                    {
                        let mut table = txn.open_table(SNAPSHOT)?;
                        table.insert(SNAPSHOT_META, meta_bytes.as_slice())?;
                        table.insert(SNAPSHOT_DATA, data.as_slice())?;
                    }
                    txn.commit()?;
                    Ok(())
                },
            )
            .await
    }
}

fn read_error(e: &redb::Error) -> StorageError {
    openraft::StorageIOError::read_state_machine(openraft::AnyError::new(e)).into()
}

fn write_error(meta: &SnapshotMeta<u64, BasicNode>, e: &redb::Error) -> StorageError {
    openraft::StorageIOError::write_snapshot(Some(meta.signature()), openraft::AnyError::new(e))
        .into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<u64>>, StoredMembership<u64, BasicNode>), StorageError> {
        let state = self.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, StorageError>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut state = self.write();
        let mut outcomes = Vec::new();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let mut batch = match entry.payload {
                EntryPayload::Blank => Vec::new(),
                EntryPayload::Normal(Batch(commands)) => commands
                    .iter()
                    .map(|command| state.ledger.apply(command))
                    .collect(),
                EntryPayload::Membership(membership) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Vec::new()
                }
            };
            for outcome in &mut batch {
                outcome.index = entry.log_id.index;
            }
            outcomes.push(batch);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let mut applied: Applied = decode(&data).map_err(|e| write_error(meta, &e))?;
        applied.last_applied = meta.last_log_id;
        applied.membership = meta.last_membership.clone();
        let data = encode(&applied).map_err(|e| write_error(meta, &e))?;
        self.store_snapshot(meta, data).await?;
        *self.write() = applied;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        Ok(self.stored_snapshot().await?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let applied = self.read().clone();
        let snapshot_id = match applied.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id.term, id.leader_id.node_id, id.index
            ),
            None => "empty".to_owned(),
        };
        let meta = SnapshotMeta {
            last_log_id: applied.last_applied,
            last_membership: applied.membership.clone(),
            snapshot_id,
        };
        let data = encode(&applied).map_err(|e| write_error(&meta, &e))?;
        self.store_snapshot(&meta, data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

/// Whether `data` is a snapshot this state machine can install (the JSON of its applied
/// state). openraft treats a failed install as fatal, so the Raft service checks a received
/// snapshot with this before its last chunk reaches openraft.
///
/// # Errors
/// What does not decode, in serde's words.
pub fn check_snapshot_data(data: &[u8]) -> Result<(), String> {
    serde_json::from_slice::<Applied>(data)
        .map(drop)
        .map_err(|e| e.to_string())
}
