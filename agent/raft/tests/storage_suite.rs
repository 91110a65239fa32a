//! openraft's own storage suite against the redb log store and the ledger's state machine, and
//! what must survive a restart: the vote, the log, the committed id and the latest snapshot.

use openraft::storage::{RaftLogStorage as _, RaftStateMachine as _};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, LogId, RaftSnapshotBuilder as _, Vote};
use quiver_raft::{LogStore, RaftDb, StateMachine, StorageError, TypeConfig};

struct Fresh;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Fresh {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = RaftDb::open(&dir.path().join("raft.redb")).expect("open");
        let machine = StateMachine::open(db.clone()).await?;
        Ok((dir, LogStore::new(db), machine))
    }
}

#[test]
fn the_redb_store_passes_openraft_storage_suite() {
    Suite::test_all(Fresh).expect("storage suite");
}

#[tokio::test]
async fn vote_committed_id_and_snapshot_survive_a_reopen() {
    reopen().await.expect("storage");
}

async fn reopen() -> Result<(), Box<StorageError>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raft.redb");
    let committed = LogId::new(CommittedLeaderId::new(3, 1), 7);
    let snapshot_id = {
        let db = RaftDb::open(&path).expect("open");
        let mut log = LogStore::new(db.clone());
        log.save_committed(Some(committed))
            .await
            .map_err(Box::new)?;
        log.save_vote(&Vote::new(3, 1)).await.map_err(Box::new)?;
        let mut machine = StateMachine::open(db).await.map_err(Box::new)?;
        machine
            .build_snapshot()
            .await
            .map_err(Box::new)?
            .meta
            .snapshot_id
    };
    let db = RaftDb::open(&path).expect("reopen");
    let mut log = LogStore::new(db.clone());
    assert_eq!(
        log.read_vote().await.map_err(Box::new)?,
        Some(Vote::new(3, 1))
    );
    assert_eq!(
        log.read_committed().await.map_err(Box::new)?,
        Some(committed)
    );
    let mut machine = StateMachine::open(db).await.map_err(Box::new)?;
    let current = machine
        .get_current_snapshot()
        .await
        .map_err(Box::new)?
        .expect("a snapshot");
    assert_eq!(current.meta.snapshot_id, snapshot_id);
    Ok(())
}
