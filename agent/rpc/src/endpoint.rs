//! Building the iroh [`Endpoint`] that carries `quiver/rpc/1`.
//!
//! Offline by default: no relay, no address lookup (no DNS, no pkarr), one UDP socket on the
//! configured address. Peers dial each other by endpoint id plus the direct addresses a `Host`
//! object advertises (`EndpointAddr::new(id).with_ip_addr(addr)`), so the cluster needs nothing
//! outside itself.
//!
//! For peers behind NAT, set a [`RelayMode`]: `RelayMode::Custom(map)` with the cluster's own
//! relay (an `iroh-relay` server; with [`EndpointOptions::relay_ca()`] when its certificate comes
//! from a private CA) or `RelayMode::Default` for n0's public relays. The endpoint
//! then keeps a connection to its home relay, peers that include the relay URL in the address
//! they dial can reach it through the relay, and QUIC hole punching moves the path to a direct
//! one when it can. Traffic through a relay stays end-to-end encrypted; the relay sees only
//! endpoint ids. Awaiting `Endpoint::online` makes sense only with a relay: without one it never
//! completes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use iroh::endpoint::{
    BindError, IdleTimeout, InvalidSocketAddr, QuicTransportConfig, VarInt, presets,
};
use iroh::tls::CaTlsConfig;
use iroh::{Endpoint, RelayMode, SecretKey};

use crate::access::Allowlist;
use crate::relay::Relay;

/// Streams a peer may have open at once on one connection, unless configured otherwise. QUIC
/// enforces it: a peer cannot open more, so the server's per-connection memory stays bounded.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: u32 = 64;

/// A connection that has heard nothing from its peer for this long is closed, and its calls
/// fail `Unreachable`. A process that dies sends nothing over UDP (unlike TCP's reset), so
/// this is how a dead peer is noticed: within this time, not QUIC's default 30 s. The lower of
/// the two peers' values applies.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How often an otherwise idle connection sends a keep-alive (well below the idle timeout, so
/// that a live but quiet peer is never taken for dead).
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(1);

/// How to build an endpoint.
#[derive(Clone, Debug)]
pub struct EndpointOptions {
    /// The endpoint's identity. Persisting it (so the endpoint id survives restarts) is the
    /// caller's business.
    pub secret_key: SecretKey,
    /// Where the UDP socket binds (default `0.0.0.0:0`).
    pub bind_addr: SocketAddr,
    /// Relays for NAT traversal (default: none).
    pub relay_mode: RelayMode,
    /// Trust anchors for the relays' TLS certificates (default: the web PKI roots built into
    /// iroh). A cluster whose own relay has a certificate from a private CA sets them
    /// (`CaTlsConfig::custom_roots`).
    pub relay_ca: Option<CaTlsConfig>,
    /// Peers allowed to connect, checked at the handshake (default: everyone, for a client-only
    /// endpoint such as a CLI's).
    pub allowlist: Option<Allowlist>,
    pub max_concurrent_streams: u32,
    /// See [`DEFAULT_IDLE_TIMEOUT`] and [`DEFAULT_KEEP_ALIVE`].
    pub idle_timeout: Duration,
    pub keep_alive: Duration,
}

impl EndpointOptions {
    #[must_use]
    pub fn new(secret_key: SecretKey) -> Self {
        Self {
            secret_key,
            bind_addr: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            relay_mode: RelayMode::Disabled,
            relay_ca: None,
            allowlist: None,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }

    #[must_use]
    pub fn bind_addr(mut self, addr: SocketAddr) -> Self {
        self.bind_addr = addr;
        self
    }

    #[must_use]
    pub fn relay_mode(mut self, mode: RelayMode) -> Self {
        self.relay_mode = mode;
        self
    }

    #[must_use]
    pub fn relay_ca(mut self, ca: CaTlsConfig) -> Self {
        self.relay_ca = Some(ca);
        self
    }

    /// Homes the endpoint on `relay` (from the flags; `None` leaves relays off).
    #[must_use]
    pub fn relay(mut self, relay: Option<&Relay>) -> Self {
        if let Some(relay) = relay {
            self.relay_mode = relay.mode();
            self.relay_ca.clone_from(&relay.ca);
        }
        self
    }

    #[must_use]
    pub fn allowlist(mut self, allowlist: Allowlist) -> Self {
        self.allowlist = Some(allowlist);
        self
    }

    #[must_use]
    pub fn max_concurrent_streams(mut self, streams: u32) -> Self {
        self.max_concurrent_streams = streams;
        self
    }

    /// How soon a silent peer counts as gone, and how often this side speaks up when idle.
    #[must_use]
    pub fn liveness(mut self, idle_timeout: Duration, keep_alive: Duration) -> Self {
        self.idle_timeout = idle_timeout;
        self.keep_alive = keep_alive;
        self
    }

    /// Binds the endpoint.
    ///
    /// # Errors
    /// The bind address is unusable or the socket cannot be bound.
    pub async fn bind(self) -> Result<Endpoint, EndpointError> {
        let idle = IdleTimeout::try_from(self.idle_timeout)
            .map_err(|_| EndpointError::IdleTimeout(self.idle_timeout))?;
        let transport = QuicTransportConfig::builder()
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_concurrent_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(0))
            .max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .build();
        let mut builder = Endpoint::builder(presets::Minimal)
            .secret_key(self.secret_key)
            .relay_mode(self.relay_mode)
            .transport_config(transport)
            .clear_ip_transports()
            .bind_addr(self.bind_addr)
            .map_err(|source| EndpointError::BindAddr {
                addr: self.bind_addr,
                source,
            })?;
        if let Some(ca) = self.relay_ca {
            builder = builder.ca_tls_config(ca);
        }
        if let Some(allowlist) = self.allowlist {
            builder = builder.hooks(allowlist.hook());
        }
        builder.bind().await.map_err(|source| EndpointError::Bind {
            addr: self.bind_addr,
            source,
        })
    }
}

/// The endpoint could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("idle timeout {0:?} is out of QUIC's range")]
    IdleTimeout(Duration),
    #[error("bind address {addr}: {source}")]
    BindAddr {
        addr: SocketAddr,
        #[source]
        source: InvalidSocketAddr,
    },
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: BindError,
    },
}
