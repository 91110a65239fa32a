//! A `quiver/rpc/1` service for transport tests that need no agent: echo, and "where do you
//! see me from", served by a real [`RpcServer`] and called through a real [`RpcClient`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quiver_rpc::iroh::endpoint::TransportAddrUsage;
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::iroh::{Endpoint, EndpointAddr, EndpointId, TransportAddr};
use quiver_rpc::{
    ALPN, CallContext, Code, Dispatch, Priority, Reply, RpcClient, RpcError, RpcServer,
    ServerConfig,
};

pub const SERVICE: u16 = 1;
/// Unary: replies with its payload.
pub const ECHO: u16 = 1;
/// Unary: replies with the IP addresses the server's endpoint is using to reach the caller,
/// comma-separated (`remote_info`, active addresses only).
pub const PEER_ADDRS: u16 = 2;

/// The echo service; it reads its endpoint's view of callers for [`PEER_ADDRS`].
#[derive(Clone, Debug)]
pub struct Echo {
    endpoint: Endpoint,
}

impl Dispatch for Echo {
    async fn call(&self, service: u16, method: u16, payload: Bytes, context: CallContext) -> Reply {
        match (service, method) {
            (SERVICE, ECHO) => Reply::Unary(Ok(payload)),
            (SERVICE, PEER_ADDRS) => {
                let addrs = active_ip_addrs(&self.endpoint, context.peer).await;
                let text = addrs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                Reply::Unary(Ok(Bytes::from(text)))
            }
            _ => Reply::Unary(Err(RpcError::new(Code::Unimplemented, "no such method"))),
        }
    }

    fn changes_state(&self, _service: u16, _method: u16) -> bool {
        false
    }
}

/// The direct (UDP) addresses `endpoint` is actively using to reach `peer`.
pub async fn active_ip_addrs(endpoint: &Endpoint, peer: EndpointId) -> Vec<SocketAddr> {
    active_addrs(endpoint, peer)
        .await
        .into_iter()
        .filter_map(|addr| match addr {
            TransportAddr::Ip(ip) => Some(ip),
            _ => None,
        })
        .collect()
}

/// Every address `endpoint` is actively using to reach `peer` (direct or relay).
pub async fn active_addrs(endpoint: &Endpoint, peer: EndpointId) -> Vec<TransportAddr> {
    let Some(info) = endpoint.remote_info(peer).await else {
        return Vec::new();
    };
    info.into_addrs()
        .filter(|a| matches!(a.usage(), TransportAddrUsage::Active))
        .map(|a| a.into_addr())
        .collect()
}

/// Serves [`Echo`] on `endpoint` until the router is shut down or dropped.
#[must_use]
pub fn serve(endpoint: Endpoint) -> (Router, RpcServer<Echo>) {
    let server = RpcServer::new(
        Echo {
            endpoint: endpoint.clone(),
        },
        ServerConfig::default(),
    );
    let router = Router::builder(endpoint)
        .accept(ALPN, server.clone())
        .spawn();
    (router, server)
}

/// One echo call of `payload`, checked.
///
/// # Errors
/// The call failed, or the reply is not the payload.
pub async fn echo(
    client: &RpcClient,
    server: &EndpointAddr,
    payload: Bytes,
    deadline: Duration,
) -> anyhow::Result<()> {
    let reply = client
        .unary(
            server,
            SERVICE,
            ECHO,
            payload.clone(),
            Priority::Normal,
            Some(deadline),
        )
        .await?;
    anyhow::ensure!(reply == payload, "echo returned other bytes");
    Ok(())
}

/// What the server at `server` sees as this client's addresses.
///
/// # Errors
/// The call failed.
pub async fn peer_addrs(client: &RpcClient, server: &EndpointAddr) -> anyhow::Result<String> {
    let reply = client
        .unary(
            server,
            SERVICE,
            PEER_ADDRS,
            Bytes::new(),
            Priority::Normal,
            Some(Duration::from_secs(20)),
        )
        .await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}
