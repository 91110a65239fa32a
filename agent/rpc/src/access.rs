//! Who may connect: an [`Allowlist`] of endpoint ids, enforced at the QUIC handshake.
//!
//! The check runs as an iroh [`EndpointHooks::after_handshake`] hook, when the peer has proven
//! its Ed25519 key and before any stream of the connection reaches a protocol handler. It
//! applies to every connection of the endpoint, incoming and outgoing, whatever the ALPN.
//! Removing an id closes that peer's open connections, so revoking a Host cuts it off at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use iroh::EndpointId;
use iroh::endpoint::{
    AfterHandshakeOutcome, Connection, EndpointHooks, VarInt, WeakConnectionHandle,
};

/// Application close code of a connection refused at the handshake or revoked later. Clients
/// read it as [`crate::error::ClientError::Refused`].
pub const CLOSE_REFUSED: VarInt = VarInt::from_u32(0x5152_0001);

/// Counters of access decisions, for Monitoring.
#[derive(Debug, Default)]
pub struct AccessStats {
    accepted: AtomicU64,
    refused: AtomicU64,
    revoked: AtomicU64,
}

/// A snapshot of [`AccessStats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessCounts {
    /// Connections admitted at the handshake.
    pub accepted: u64,
    /// Connections refused at the handshake (unknown endpoint id).
    pub refused: u64,
    /// Open connections closed because their peer was removed.
    pub revoked: u64,
}

impl AccessStats {
    #[must_use]
    pub fn snapshot(&self) -> AccessCounts {
        AccessCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            revoked: self.revoked.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    allowed: HashSet<EndpointId>,
    /// Weak handles, so the list never keeps a connection open; pruned as peers reconnect.
    connections: HashMap<EndpointId, Vec<WeakConnectionHandle>>,
}

/// The endpoint ids allowed to connect. Cheap to clone; every clone is the same list.
#[derive(Clone, Debug, Default)]
pub struct Allowlist {
    state: Arc<Mutex<State>>,
    stats: Arc<AccessStats>,
}

impl Allowlist {
    #[must_use]
    pub fn new(ids: impl IntoIterator<Item = EndpointId>) -> Self {
        let list = Self::default();
        list.lock().allowed.extend(ids);
        list
    }

    /// The hook to install with `Endpoint::builder(..).hooks(..)`.
    #[must_use]
    pub fn hook(&self) -> AllowlistHook {
        AllowlistHook { list: self.clone() }
    }

    pub fn insert(&self, id: EndpointId) {
        self.lock().allowed.insert(id);
    }

    /// Removes `id` and closes its open connections. Returns whether it was allowed.
    pub fn remove(&self, id: &EndpointId) -> bool {
        let (was_allowed, handles) = {
            let mut state = self.lock();
            (state.allowed.remove(id), state.connections.remove(id))
        };
        self.close_all(id, &handles.unwrap_or_default());
        was_allowed
    }

    /// Makes the list exactly `ids`, closing the connections of every id that left it.
    pub fn replace(&self, ids: impl IntoIterator<Item = EndpointId>) {
        let ids: HashSet<EndpointId> = ids.into_iter().collect();
        let removed: Vec<(EndpointId, Vec<WeakConnectionHandle>)> = {
            let mut state = self.lock();
            let gone: Vec<EndpointId> = state.allowed.difference(&ids).copied().collect();
            state.allowed = ids;
            gone.into_iter()
                .map(|id| (id, state.connections.remove(&id).unwrap_or_default()))
                .collect()
        };
        for (id, handles) in removed {
            self.close_all(&id, &handles);
        }
    }

    #[must_use]
    pub fn contains(&self, id: &EndpointId) -> bool {
        self.lock().allowed.contains(id)
    }

    #[must_use]
    pub fn stats(&self) -> AccessCounts {
        self.stats.snapshot()
    }

    fn close_all(&self, id: &EndpointId, handles: &[WeakConnectionHandle]) {
        for conn in handles.iter().filter_map(WeakConnectionHandle::upgrade) {
            if conn.close_reason().is_none() {
                conn.close(CLOSE_REFUSED, b"endpoint id removed from the allowlist");
                self.stats.revoked.fetch_add(1, Ordering::Relaxed);
                tracing::info!(peer = %id, "closed a connection: endpoint id removed from the allowlist");
            }
        }
    }

    /// Admits or refuses a connection that finished its handshake. Deciding and registering
    /// under one lock means a concurrent `remove` either sees the connection or refuses it.
    fn admit(&self, conn: &Connection) -> Result<(), String> {
        let id = conn.remote_id();
        let mut state = self.lock();
        if !state.allowed.contains(&id) {
            drop(state);
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
            let reason = format!("endpoint id {id} is not on the allowlist");
            tracing::warn!(peer = %id, alpn = %String::from_utf8_lossy(conn.alpn()), "refused a connection: {reason}");
            return Err(reason);
        }
        let handles = state.connections.entry(id).or_default();
        handles.retain(|handle| handle.upgrade().is_some_and(|c| c.close_reason().is_none()));
        handles.push(conn.weak_handle());
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code path panics while holding the lock; recover the data if one ever does.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The [`EndpointHooks`] that enforces an [`Allowlist`].
#[derive(Debug)]
pub struct AllowlistHook {
    list: Allowlist,
}

impl EndpointHooks for AllowlistHook {
    async fn after_handshake<'a>(&'a self, conn: &'a Connection) -> AfterHandshakeOutcome {
        match self.list.admit(conn) {
            Ok(()) => AfterHandshakeOutcome::Accept,
            Err(reason) => AfterHandshakeOutcome::Reject {
                error_code: CLOSE_REFUSED,
                reason: reason.into_bytes(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use iroh::SecretKey;

    use super::*;

    #[test]
    fn the_list_is_shared_by_its_clones_and_replace_sets_it_exactly() {
        let [a, b, c] = [0, 1, 2].map(|_| SecretKey::generate().public());
        let list = Allowlist::new([a, b]);
        let same = list.clone();
        assert!(same.contains(&a) && same.contains(&b) && !same.contains(&c));
        list.replace([b, c]);
        assert!(!same.contains(&a) && same.contains(&b) && same.contains(&c));
        assert!(same.remove(&c));
        assert!(!list.remove(&c), "already gone");
        assert_eq!(
            list.stats(),
            AccessCounts::default(),
            "no connection was touched"
        );
    }
}
