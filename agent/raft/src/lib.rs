//! Quiver's Raft group: the agents' replicated placement ledger.
//!
//! - [`ledger`]: the state machine's state and its pure, deterministic `apply` (hosts with
//!   capacity, labels, leases; desired VMs; assignments with fencing epochs; placement).
//! - [`log_store`] and [`state_machine`]: openraft 0.9 storage (`storage-v2`) in one redb
//!   database per agent (`<data-dir>/raft.redb`): the log, the vote and the committed log id
//!   made durable before openraft is told so; the ledger in memory, rebuilt on start from the
//!   last snapshot plus the committed log, and snapshots kept in the same database.
//!   Both pass openraft's storage suite (`tests/storage_suite.rs`).
//! - [`guard`]: what the service refuses before openraft sees a request (forged senders,
//!   terms and indexes near overflow, snapshot chunks beyond the size limit).
//! - [`service`]: the Raft service, implemented once ([`service::RaftService`]), and adapters
//!   that serve it alone over Iroh and gRPC (tests, benchmarks; the agent has its own, which
//!   add its transport modes and metrics).
//! - [`network`]: the client side, openraft's network factory: each peer over gRPC, Iroh or
//!   both (preferring one, falling back to the other), with Raft priorities on Iroh's QUIC
//!   streams; [`addr`]: a member's address (Iroh endpoint, optional gRPC listener).
//! - [`node`]: one member, and proposals from any member; [`proposer`]: the leader's
//!   batching of proposals into log entries.
//! - [`lease`]: pure lease logic; [`wire`]: the Raft messages as bytes (postcard).
//!
//! Not here: the node in the agent, membership from Hosts (`quiver-agent`'s `cluster`).

pub mod addr;
pub mod db;
pub mod guard;
pub mod lease;
pub mod ledger;
pub mod log_store;
pub mod network;
pub mod node;
pub mod proposer;
pub mod service;
pub mod state_machine;
pub mod wire;

use std::io::Cursor;

pub use db::RaftDb;
pub use ledger::{Batch, Command, Ledger, Outcome};
pub use log_store::LogStore;
pub use node::{ProposeError, RaftNode, Timing, node_id};
pub use proposer::Proposer;
pub use state_machine::StateMachine;

openraft::declare_raft_types!(
    /// The Raft types of the placement ledger.
    pub TypeConfig:
        D = Batch,
        R = Vec<Outcome>,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A storage error as openraft wants it.
pub type StorageError = openraft::StorageError<u64>;
