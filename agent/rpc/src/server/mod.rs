//! The server side: an iroh [`ProtocolHandler`] for [`ALPN`] that reads calls off QUIC streams
//! and hands them to a [`Dispatch`].
//!
//! Bounds, per connection: at most `max_streams` streams served at once (further streams wait
//! in QUIC, under its flow control), at most `max_calls` calls running (more are answered
//! `RESOURCE_EXHAUSTED`), and per stream one frame being read (at most `24 + max_payload`
//! bytes) plus `reply_buffer` reply frames queued.

mod call;
mod connection;
mod peers;
mod stream;
mod unacked;

pub use peers::{PeerHealth, PeerTable};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use iroh::endpoint::{Accepting, Connection, VarInt};
use iroh::protocol::{AcceptError, ProtocolHandler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::dispatch::Dispatch;
use crate::frame::DEFAULT_MAX_PAYLOAD;

/// The ALPN of the protocol, versioned: a new wire format gets a new ALPN.
pub const ALPN: &[u8] = b"quiver/rpc/1";

/// Stream stop code: the server read a malformed frame and reads no more of this stream.
pub const STOP_MALFORMED: VarInt = VarInt::from_u32(1);
/// Stream stop code: the server is shutting down and takes no new calls on this stream.
pub const STOP_SHUTDOWN: VarInt = VarInt::from_u32(2);

/// Server limits and behaviour.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest payload read or written (default 16 MiB).
    pub max_payload: u32,
    /// Streams served at once per connection.
    pub max_streams: usize,
    /// Calls running at once per connection, over all its streams.
    pub max_calls: usize,
    /// Reply frames queued per stream before calls on it wait for the peer to read.
    pub reply_buffer: usize,
    /// Set QUIC stream priorities from the frames' priorities (off only to measure their effect).
    pub priorities: bool,
    /// How long a graceful shutdown waits for running calls before dropping them.
    pub shutdown_grace: Duration,
    /// Take streams a client sends in 0-RTT data before the handshake completes. Their calls
    /// still wait for the handshake and the allowlist, and state-changing ones are refused; the
    /// gain is only that their bytes are read early. Off by default: without it, 0-RTT data is
    /// served as ordinary 1-RTT streams once the handshake is complete (which a replayed
    /// handshake never is).
    pub accept_0rtt: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_streams: crate::endpoint::DEFAULT_MAX_CONCURRENT_STREAMS as usize,
            max_calls: 256,
            reply_buffer: 8,
            priorities: true,
            shutdown_grace: Duration::from_secs(10),
            accept_0rtt: false,
        }
    }
}

/// Counters of what the server did, for Monitoring.
#[derive(Debug, Default)]
pub struct ServerStats {
    connections: AtomicU64,
    streams: AtomicU64,
    calls: AtomicU64,
    heartbeats: AtomicU64,
    malformed: AtomicU64,
    deadline_exceeded: AtomicU64,
    refused_0rtt: AtomicU64,
    overloaded: AtomicU64,
    panics: AtomicU64,
}

/// A snapshot of [`ServerStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    pub connections: u64,
    pub streams: u64,
    /// Requests dispatched.
    pub calls: u64,
    pub heartbeats: u64,
    /// Streams ended by a malformed frame.
    pub malformed: u64,
    pub deadline_exceeded: u64,
    /// State-changing requests refused because they came in 0-RTT data.
    pub refused_0rtt: u64,
    /// Requests refused because the connection had `max_calls` running.
    pub overloaded: u64,
    /// Stream tasks that panicked (a bug: each is logged).
    pub panics: u64,
}

impl ServerStats {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    #[must_use]
    pub fn snapshot(&self) -> ServerCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerCounts {
            connections: get(&self.connections),
            streams: get(&self.streams),
            calls: get(&self.calls),
            heartbeats: get(&self.heartbeats),
            malformed: get(&self.malformed),
            deadline_exceeded: get(&self.deadline_exceeded),
            refused_0rtt: get(&self.refused_0rtt),
            overloaded: get(&self.overloaded),
            panics: get(&self.panics),
        }
    }
}

/// What every connection and stream of one server shares.
struct Shared<D> {
    dispatch: D,
    config: ServerConfig,
    stats: ServerStats,
    /// Stop taking new streams and calls.
    shutdown: CancellationToken,
    /// Drop running calls (the grace period is over).
    abort: CancellationToken,
    tasks: TaskTracker,
    /// Replies written whose acknowledgement a graceful shutdown waits for.
    unacked: unacked::Unacked,
    /// Limits of connections whose early streams were taken before the handshake, by
    /// `Connection::stable_id`, until `accept` takes them over.
    early: Mutex<HashMap<usize, connection::Limits>>,
    peers: PeerTable,
}

/// The `quiver/rpc/1` protocol handler: register it with
/// `Router::builder(endpoint).accept(ALPN, server.clone())`. Clones share state, so a clone
/// kept aside reads the same [`RpcServer::stats`].
pub struct RpcServer<D> {
    shared: Arc<Shared<D>>,
}

impl<D> Clone for RpcServer<D> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<D> std::fmt::Debug for RpcServer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcServer")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl<D: Dispatch> RpcServer<D> {
    #[must_use]
    pub fn new(dispatch: D, config: ServerConfig) -> Self {
        Self::with_peers(dispatch, config, PeerTable::default())
    }

    /// Like [`RpcServer::new`], recording connections in `peers` (made before the server when
    /// the dispatcher itself reports them).
    #[must_use]
    pub fn with_peers(dispatch: D, config: ServerConfig, peers: PeerTable) -> Self {
        Self {
            shared: Arc::new(Shared {
                dispatch,
                config,
                stats: ServerStats::default(),
                shutdown: CancellationToken::new(),
                abort: CancellationToken::new(),
                tasks: TaskTracker::new(),
                unacked: unacked::Unacked::default(),
                early: Mutex::default(),
                peers,
            }),
        }
    }

    #[must_use]
    pub fn stats(&self) -> ServerCounts {
        self.shared.stats.snapshot()
    }

    /// The peers that have connected, and their connections' health.
    #[must_use]
    pub fn peers(&self) -> PeerTable {
        self.shared.peers.clone()
    }

    /// Whether a shutdown has begun: no new streams or calls are taken.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }
}

impl<D: Dispatch> ProtocolHandler for RpcServer<D> {
    /// With `accept_0rtt`, serves the streams that come before the handshake completes (their
    /// calls wait for it, and for the allowlist) until it does.
    async fn on_accepting(&self, accepting: Accepting) -> Result<Connection, AcceptError> {
        if self.shared.config.accept_0rtt {
            connection::accept_early(&self.shared, accepting).await
        } else {
            Ok(accepting.await?)
        }
    }

    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        connection::serve(&self.shared, conn).await;
        Ok(())
    }

    /// Graceful: no new streams or calls, running calls finish and their replies are
    /// acknowledged, for at most `shutdown_grace`; then what still runs is dropped.
    async fn shutdown(&self) {
        let shared = &self.shared;
        shared.shutdown.cancel();
        shared.tasks.close();
        let finished = async {
            shared.tasks.wait().await;
            shared.unacked.acknowledged().await;
        };
        if tokio::time::timeout(shared.config.shutdown_grace, finished)
            .await
            .is_err()
        {
            tracing::warn!(
                grace = ?shared.config.shutdown_grace,
                "calls still running after the grace period: dropping them"
            );
            shared.abort.cancel();
            shared.tasks.wait().await;
        }
    }
}
