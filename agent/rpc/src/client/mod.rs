//! The client side: calls to peers over one reused connection each.
//!
//! A peer's connection is dialed on first use and shared by every call until it closes; the
//! next call then redials, after a capped exponential backoff if the peer keeps failing.
//! Each call opens its own stream (no head-of-line blocking between calls). Every failure is a
//! [`ClientError`], the same domain error the gRPC client returns.

mod backoff;
mod call;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use iroh::endpoint::{
    ConnectError, ConnectingError, Connection, ConnectionError, RecvStream, SendStream,
};
use iroh::{Endpoint, EndpointAddr, EndpointId};
use tokio::time::Instant;

use backoff::Backoff;
pub use backoff::BackoffPolicy;
pub use call::ServerStream;

use crate::access::CLOSE_REFUSED;
use crate::error::ClientError;
use crate::frame::DEFAULT_MAX_PAYLOAD;
use crate::server::ALPN;

/// Client limits and behaviour.
#[derive(Clone, Copy, Debug)]
pub struct ClientConfig {
    /// Largest payload sent or accepted in a reply (default 16 MiB).
    pub max_payload: u32,
    pub backoff: BackoffPolicy,
    /// Set QUIC stream priorities on requests (off only to measure their effect).
    pub priorities: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            backoff: BackoffPolicy::default(),
            priorities: true,
        }
    }
}

/// Counters of the client's connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientCounts {
    /// Connection attempts.
    pub dials: u64,
    /// Attempts that failed, and connections that broke under a call.
    pub failures: u64,
}

/// A peer's connection and its backoff.
struct Peer {
    /// The connection calls use, if one is open.
    conn: Mutex<Option<Connection>>,
    /// Held while dialing, so concurrent calls share one dial.
    dialing: tokio::sync::Mutex<()>,
    backoff: Mutex<Backoff>,
}

impl Peer {
    /// The connection calls use, if there is one. It may have closed since its last call: then
    /// it refuses new streams ([`RpcClient::open_stream`]).
    fn current(&self) -> Option<Connection> {
        lock(&self.conn).clone()
    }

    /// A reply came back from the peer.
    fn healthy(&self) {
        lock(&self.backoff).succeeded();
    }

    /// Whether `conn` has closed; if so, it is no longer the peer's connection.
    fn forget(&self, conn: &Connection) -> bool {
        if conn.close_reason().is_none() {
            return false;
        }
        self.let_go(conn);
        true
    }

    /// Lets go of `conn` if it is still the peer's connection; whether it was.
    fn let_go(&self, conn: &Connection) -> bool {
        let mut slot = lock(&self.conn);
        let current = slot
            .as_ref()
            .is_some_and(|c| c.stable_id() == conn.stable_id());
        if current {
            *slot = None;
        }
        current
    }
}

struct Inner {
    endpoint: Endpoint,
    config: ClientConfig,
    peers: Mutex<HashMap<EndpointId, Arc<Peer>>>,
    next_request_id: AtomicU64,
    dials: AtomicU64,
    failures: AtomicU64,
}

/// Calls peers over an iroh endpoint. Cheap to clone; clones share connections.
#[derive(Clone)]
pub struct RpcClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcClient")
            .field("endpoint", &self.inner.endpoint.id())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl RpcClient {
    #[must_use]
    pub fn new(endpoint: Endpoint, config: ClientConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoint,
                config,
                peers: Mutex::default(),
                next_request_id: AtomicU64::new(1),
                dials: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
        }
    }

    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.inner.endpoint
    }

    #[must_use]
    pub fn stats(&self) -> ClientCounts {
        ClientCounts {
            dials: self.inner.dials.load(Ordering::Relaxed),
            failures: self.inner.failures.load(Ordering::Relaxed),
        }
    }

    fn request_id(&self) -> u64 {
        self.inner.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    fn peer(&self, id: EndpointId) -> Arc<Peer> {
        let mut peers = lock(&self.inner.peers);
        Arc::clone(peers.entry(id).or_insert_with(|| {
            Arc::new(Peer {
                conn: Mutex::new(None),
                dialing: tokio::sync::Mutex::new(()),
                backoff: Mutex::new(Backoff::new(self.inner.config.backoff)),
            })
        }))
    }

    /// A new stream to `addr`, with the peer's state and the connection the stream is on.
    ///
    /// The stream opens on the peer's connection, dialed (after any backoff) if there is none.
    /// A connection that closed since the last call refuses the stream, before anything is
    /// sent on it: it is forgotten and the peer dialed once more, as if it had been noticed
    /// closed beforehand (which would cost each call a look at it).
    async fn open_stream(
        &self,
        addr: &EndpointAddr,
    ) -> Result<(Arc<Peer>, Connection, SendStream, RecvStream), ClientError> {
        let peer = self.peer(addr.id);
        let mut may_redial = true;
        loop {
            let (conn, dialed) = self.open_connection(&peer, addr).await?;
            let error = match conn.open_bi().await {
                Ok((send, recv)) => return Ok((peer, conn, send, recv)),
                Err(error) => error,
            };
            if may_redial && !dialed && peer.forget(&conn) {
                may_redial = false;
                continue;
            }
            let error = connection_error(addr.id, error);
            self.broken(&peer, &conn, &error);
            return Err(error);
        }
    }

    /// The peer's connection, and whether this call dialed it.
    async fn open_connection(
        &self,
        peer: &Peer,
        addr: &EndpointAddr,
    ) -> Result<(Connection, bool), ClientError> {
        if let Some(conn) = peer.current() {
            return Ok((conn, false));
        }
        let _dialing = peer.dialing.lock().await;
        // Another call may have dialed while this one waited.
        if let Some(conn) = peer.current() {
            return Ok((conn, false));
        }
        let not_before = lock(&peer.backoff).not_before();
        if let Some(at) = not_before {
            tokio::time::sleep_until(at).await;
        }
        self.inner.dials.fetch_add(1, Ordering::Relaxed);
        match self.inner.endpoint.connect(addr.clone(), ALPN).await {
            Ok(conn) => {
                *lock(&peer.conn) = Some(conn.clone());
                Ok((conn, true))
            }
            Err(error) => {
                self.failed(peer);
                Err(connect_error(addr.id, error))
            }
        }
    }

    /// A call on `conn` failed with `error`: if the connection is the cause, forget it and
    /// back off, so the next call redials.
    fn broken(&self, peer: &Peer, conn: &Connection, error: &ClientError) {
        let connection_failed = matches!(
            error,
            ClientError::Unreachable { .. } | ClientError::Refused { .. }
        );
        if connection_failed && peer.let_go(conn) {
            self.failed(peer);
        }
    }

    fn failed(&self, peer: &Peer) {
        self.inner.failures.fetch_add(1, Ordering::Relaxed);
        lock(&peer.backoff).failed(Instant::now());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; recover the data if something ever does.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The client error for a connection that closed or never opened.
pub(crate) fn connection_error(peer: EndpointId, error: ConnectionError) -> ClientError {
    match &error {
        ConnectionError::ApplicationClosed(close) if close.error_code == CLOSE_REFUSED => {
            ClientError::Refused {
                peer: peer.to_string(),
                reason: String::from_utf8_lossy(&close.reason).into_owned(),
            }
        }
        _ => ClientError::Unreachable {
            peer: peer.to_string(),
            source: Box::new(error),
        },
    }
}

fn connect_error(peer: EndpointId, error: ConnectError) -> ClientError {
    if let ConnectError::Connecting {
        source: ConnectingError::LocallyRejected { .. },
        ..
    } = &error
    {
        return ClientError::Refused {
            peer: peer.to_string(),
            reason: "the peer is not on this endpoint's allowlist".to_owned(),
        };
    }
    let closed = match &error {
        ConnectError::Connection { source, .. }
        | ConnectError::Connecting {
            source: ConnectingError::ConnectionError { source, .. },
            ..
        } => Some(source.clone()),
        _ => None,
    };
    match closed {
        Some(closed) => connection_error(peer, closed),
        None => ClientError::Unreachable {
            peer: peer.to_string(),
            source: Box::new(error),
        },
    }
}
