//! The leader's side of proposals: commands are committed a [`Batch`] per log entry.
//!
//! openraft 0.9 appends and flushes each client write as an entry of its own, one at a time,
//! so a leader committing one command per entry commits at most one command per disk flush.
//! The proposer keeps a few entries in flight and puts everything proposed while it waits for
//! a free slot into the next entry: alone, a command is written at once; under load, one flush
//! carries many commands. Each caller gets its own command's [`Outcome`].
//!
//! An entry that has not committed after [`SLOW_AFTER`] (its followers are starting, or
//! the quorum is away) gives its slot up and finishes on its own, so that what is proposed
//! behind it is still appended to the log and commits with it once the quorum answers.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use openraft::Raft;
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{Batch, Command, Outcome, ProposeError, TypeConfig};

/// Entries in flight at once: enough to keep the leader's log writes and the followers'
/// busy together, few enough that waiting proposals gather into batches.
const IN_FLIGHT_ENTRIES: usize = 2;
/// The most commands in one entry (a `PutVm` is about a kilobyte of JSON).
const MAX_BATCH: usize = 256;
/// Proposals waiting for an entry; a caller beyond this waits to queue.
const QUEUE: usize = 4096;
/// How long an entry holds its slot before it finishes outside the slots.
pub const SLOW_AFTER: Duration = Duration::from_secs(1);
/// The most entries finishing outside the slots; beyond it, slow entries keep their slots.
const SLOW_ENTRIES: usize = 64;

type Reply = oneshot::Sender<Result<Outcome, ProposeError>>;

/// Writes commands through this node's Raft, which should be the leader; clones share the
/// queue.
#[derive(Clone)]
pub struct Proposer {
    raft: Raft<TypeConfig>,
    queue: mpsc::Sender<(Command, Reply)>,
}

impl Proposer {
    /// Starts the batching task; it ends when every clone is dropped.
    #[must_use]
    pub fn start(raft: Raft<TypeConfig>) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(batch_and_write(raft.clone(), waiting));
        Self { raft, queue }
    }

    /// The Raft node it writes through.
    #[must_use]
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// Commits `command` and returns what applying it did.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] when this node is not the leader; `Failed` when Raft failed
    /// or stopped.
    pub async fn write(&self, command: Command) -> Result<Outcome, ProposeError> {
        let (reply, outcome) = oneshot::channel();
        let stopped = || ProposeError::Failed("the Raft node stopped".into());
        self.queue
            .send((command, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Takes proposals off the queue a batch at a time, keeping up to [`IN_FLIGHT_ENTRIES`]
/// written at once (in this task: no hop through the scheduler on the way).
async fn batch_and_write(raft: Raft<TypeConfig>, mut waiting: mpsc::Receiver<(Command, Reply)>) {
    let mut in_flight = FuturesUnordered::new();
    let slow = Arc::new(Semaphore::new(SLOW_ENTRIES));
    loop {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            // While every slot is taken, proposals gather in the queue.
            next = waiting.recv(), if in_flight.len() < IN_FLIGHT_ENTRIES => {
                let Some(first) = next else { break };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match waiting.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                in_flight.push(write_in_slot(raft.clone(), batch, slow.clone()));
            }
        }
    }
    while in_flight.next().await.is_some() {}
}

/// Writes `batch`, handing it to a task of its own if it is slow to commit (and the slow
/// entries are not at their limit): the caller's slot is then free again.
async fn write_in_slot(raft: Raft<TypeConfig>, batch: Vec<(Command, Reply)>, slow: Arc<Semaphore>) {
    let mut write = Box::pin(write_and_reply(raft, batch));
    if tokio::time::timeout(SLOW_AFTER, &mut write).await.is_ok() {
        return;
    }
    match slow.try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(async move {
                write.await;
                drop(permit);
            });
        }
        Err(_) => write.await,
    }
}

async fn write_and_reply(raft: Raft<TypeConfig>, batch: Vec<(Command, Reply)>) {
    let (commands, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    match write_batch(&raft, Batch(commands)).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

async fn write_batch(raft: &Raft<TypeConfig>, batch: Batch) -> Result<Vec<Outcome>, ProposeError> {
    let commands = batch.0.len();
    match raft.client_write(batch).await {
        Ok(written) if written.data.len() == commands => Ok(written.data),
        Ok(written) => Err(ProposeError::Failed(format!(
            "a batch of {commands} commands was applied as {}",
            written.data.len()
        ))),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Err(ProposeError::NotLeader {
                leader: f.leader_id,
            })
        }
        Err(e) => Err(ProposeError::Failed(e.to_string())),
    }
}
