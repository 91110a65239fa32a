//! One member of the Raft group: openraft with its redb storage and the [`Network`] (gRPC,
//! Iroh or both), plus [`RaftNode::propose`], which commits a ledger command from any node
//! (a follower sends it to the leader it knows, and follows leader changes).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Config, Raft, RaftMetrics, ServerState};
use quiver_rpc::iroh::EndpointId;
use quiver_rpc::{Method, Priority};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::network::Network;
use crate::{Command, LogStore, Outcome, Proposer, RaftDb, StateMachine, TypeConfig};

/// Why a proposal was not committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProposeError {
    /// The node asked is not the leader; `leader` is the one it knows, if any.
    #[error("not the Raft leader (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    /// No leader answered before the deadline (no quorum, or elections still running).
    #[error("no Raft leader committed the command within {0:?}")]
    NoLeader(Duration),
    #[error("Raft: {0}")]
    Failed(String),
}

/// Raft timing; the defaults suit a LAN (and loopback tests).
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(700),
            election_max: Duration::from_millis(1400),
        }
    }
}

/// The node id of an endpoint: its key's first eight bytes (unique among a fleet's keys with
/// overwhelming probability, and stable across restarts since the key is).
#[must_use]
pub fn node_id(endpoint: &EndpointId) -> u64 {
    let bytes = endpoint.as_bytes();
    let mut first = [0_u8; 8];
    first.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(first)
}

/// A running Raft node; clones share it.
#[derive(Clone)]
pub struct RaftNode {
    pub id: u64,
    pub raft: Raft<TypeConfig>,
    /// Writes through this node when it leads (the Raft service's proposals land here too).
    pub proposer: Proposer,
    pub machine: StateMachine,
    /// The last log index on disk when the node started (0 for a new node): what it may have
    /// applied before it stopped (see [`crate::lease::Holder::resume`]).
    pub last_logged_at_start: u64,
    network: Network,
}

/// The largest snapshot chunk: encoded ([`crate::wire`]: a byte per byte, plus a few for the
/// metadata) it stays well under the 4 MiB gRPC message limit.
const SNAPSHOT_CHUNK_BYTES: u64 = 2 * 1024 * 1024;

impl RaftNode {
    /// Opens (or creates) `<dir>/raft.redb` and starts the node. It does nothing until it is
    /// initialized or added to a group.
    ///
    /// # Errors
    /// The database cannot be opened (a corrupted or truncated file is refused here, before
    /// anything is served), or openraft refuses the config.
    pub async fn start(
        dir: &Path,
        id: u64,
        network: Network,
        timing: Timing,
    ) -> Result<Self, String> {
        let path = dir.join("raft.redb");
        let db =
            RaftDb::open(&path).map_err(|e| format!("Raft database {}: {e}", path.display()))?;
        Self::start_with(db, &path.display().to_string(), id, network, timing).await
    }

    /// Starts the node on a database in memory ([`RaftDb::in_memory`]): benchmarks only.
    ///
    /// # Errors
    /// openraft refuses the config.
    pub async fn start_in_memory(
        db: RaftDb,
        id: u64,
        network: Network,
        timing: Timing,
    ) -> Result<Self, String> {
        Self::start_with(db, "in memory", id, network, timing).await
    }

    async fn start_with(
        db: RaftDb,
        name: &str,
        id: u64,
        network: Network,
        timing: Timing,
    ) -> Result<Self, String> {
        let machine = StateMachine::open(db.clone())
            .await
            .map_err(|e| format!("Raft database {name}: {e}"))?;
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let config = Config {
            cluster_name: "quiver".into(),
            heartbeat_interval: ms(timing.heartbeat),
            election_timeout_min: ms(timing.election_min),
            election_timeout_max: ms(timing.election_max),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            ..Config::default()
        }
        .validate()
        .map_err(|e| format!("Raft config: {e}"))?;
        let mut log = LogStore::new(db);
        let last_logged_at_start = log
            .last_index()
            .await
            .map_err(|e| format!("Raft database {name}: {e}"))?;
        let raft = Raft::new(id, Arc::new(config), network.clone(), log, machine.clone())
            .await
            .map_err(|e| format!("starting Raft: {e}"))?;
        Ok(Self {
            id,
            proposer: Proposer::start(raft.clone()),
            raft,
            machine,
            last_logged_at_start,
            network,
        })
    }

    #[must_use]
    pub fn metrics(&self) -> RaftMetrics<u64, BasicNode> {
        self.raft.metrics().borrow().clone()
    }

    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.metrics().state == ServerState::Leader
    }

    /// Whether this node has a membership (initialized, or added by a leader).
    #[must_use]
    pub fn is_member(&self) -> bool {
        let m = self.metrics();
        m.membership_config
            .membership()
            .get_node(&self.id)
            .is_some()
    }

    /// Makes this node a group of one (only ever on the first host of a fleet).
    ///
    /// # Errors
    /// The node already has a log or a vote.
    pub async fn initialize(&self, me: BasicNode) -> Result<(), String> {
        self.raft
            .initialize(BTreeMap::from([(self.id, me)]))
            .await
            .map_err(|e| e.to_string())
    }

    /// Commits `command` through the leader and returns what applying it did. Retries through
    /// leader changes until `timeout`.
    ///
    /// # Errors
    /// [`ProposeError::NoLeader`] when nothing committed it in time; `Failed` for a fatal error.
    pub async fn propose(
        &self,
        command: Command,
        timeout: Duration,
    ) -> Result<Outcome, ProposeError> {
        let until = Instant::now() + timeout;
        let mut metrics = self.raft.metrics();
        loop {
            let leader = metrics.borrow().current_leader;
            let attempt = match leader {
                Some(leader) if leader == self.id => self.write_here(command.clone()).await,
                Some(leader) => self.send_to(leader, &command, until).await,
                None => Err(ProposeError::NotLeader { leader: None }),
            };
            match attempt {
                Err(ProposeError::NotLeader { .. }) | Err(ProposeError::NoLeader(_)) => {}
                done => return done,
            }
            // Wait for news of a leader, briefly, then try again.
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ProposeError::NoLeader(timeout));
            }
            let pause = left.min(Duration::from_millis(100));
            let _ = tokio::time::timeout(pause, metrics.changed()).await;
        }
    }

    async fn write_here(&self, command: Command) -> Result<Outcome, ProposeError> {
        self.proposer.write(command).await
    }

    async fn send_to(
        &self,
        leader: u64,
        command: &Command,
        until: Instant,
    ) -> Result<Outcome, ProposeError> {
        let node = self
            .metrics()
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .ok_or(ProposeError::NotLeader { leader: None })?;
        let client = self
            .network
            .client(leader, &node)
            .await
            .map_err(ProposeError::Failed)?;
        let deadline = until.saturating_duration_since(Instant::now());
        let reply = self
            .network
            .call::<_, Result<Outcome, ProposeError>>(
                &client,
                leader,
                Method::RaftPropose,
                Priority::LogAppend,
                command,
                Some(deadline),
            )
            .await;
        match reply {
            Ok(outcome) => outcome,
            Err(
                e @ (crate::network::CallError::Encode(_) | crate::network::CallError::Decode(_)),
            ) => Err(ProposeError::Failed(e.to_string())),
            // Unreachable leader: it may be gone; the caller waits for the next one.
            Err(e) => {
                tracing::debug!(leader, error = %e, "proposal to the leader failed");
                Err(ProposeError::NoLeader(deadline))
            }
        }
    }
}
