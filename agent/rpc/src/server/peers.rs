//! Who is connected to the server and how well: per peer, whether a connection is open, the
//! path in use (direct or through a relay), its address and round-trip time, and how many
//! connections the peer has made (more than one means it reconnected). Read by Monitoring.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use iroh::EndpointId;
use iroh::endpoint::{Connection, WeakConnectionHandle};

/// One peer's connection health.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerHealth {
    pub peer: EndpointId,
    /// A connection from the peer is open.
    pub connected: bool,
    /// The open connection's selected path goes through a relay (`None`: no selected path).
    pub relay: Option<bool>,
    /// The selected path's remote address.
    pub remote_addr: Option<String>,
    pub rtt: Option<Duration>,
    /// Connections the peer has opened since the server started.
    pub connections: u64,
}

#[derive(Debug, Default)]
struct Entry {
    connections: u64,
    latest: Option<WeakConnectionHandle>,
}

/// The peers of one server. Cheap to clone; clones share the table. Holds only weak handles,
/// so it never keeps a connection open; one entry per endpoint id, and only allowed peers get
/// this far, so its size is bounded by the allowlist.
#[derive(Clone, Debug, Default)]
pub struct PeerTable {
    inner: Arc<Mutex<HashMap<EndpointId, Entry>>>,
}

impl PeerTable {
    pub(crate) fn connected(&self, conn: &Connection) {
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = table.entry(conn.remote_id()).or_default();
        entry.connections += 1;
        entry.latest = Some(conn.weak_handle());
    }

    /// Every peer seen, by endpoint id.
    #[must_use]
    pub fn snapshot(&self) -> Vec<PeerHealth> {
        let table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut peers: Vec<PeerHealth> = table
            .iter()
            .map(|(peer, entry)| {
                let open = entry
                    .latest
                    .as_ref()
                    .and_then(WeakConnectionHandle::upgrade)
                    .filter(|c| c.close_reason().is_none());
                let mut health = PeerHealth {
                    peer: *peer,
                    connected: open.is_some(),
                    relay: None,
                    remote_addr: None,
                    rtt: None,
                    connections: entry.connections,
                };
                if let Some(conn) = open {
                    let paths = conn.paths();
                    if let Some(path) = paths.iter().find(|p| p.is_selected()) {
                        health.relay = Some(path.is_relay());
                        health.remote_addr = Some(path.remote_addr().to_string());
                        health.rtt = Some(path.rtt());
                    }
                }
                health
            })
            .collect();
        peers.sort_by_key(|p| p.peer);
        peers
    }
}
