//! The Raft network on the RPC stack: votes, appends and snapshot chunks are calls of service
//! [`RAFT_SERVICE`] over `quiver/rpc/1`, each at its Raft priority, so that an election or a
//! heartbeat overtakes a snapshot already in flight on the same connection.
//!
//! | method | id | priority |
//! |---|---|---|
//! | Vote | 1 | Election |
//! | AppendEntries | 2 | Heartbeat when it carries no entries, else LogAppend |
//! | InstallSnapshot | 3 | Snapshot (openraft sends a snapshot in chunks) |
//! | Propose | 4 | LogAppend: a ledger command from another node, committed by this leader |
//!
//! Payloads are openraft's request and `Result<response, RaftError>` as JSON: a Raft-level
//! refusal (a higher vote, a conflict) is an answer, not a transport error. A node's address is
//! its `BasicNode::addr`: `<endpoint id>@<ip:port>[,<ip:port>…]`.

use std::net::SocketAddr;

use bytes::Bytes;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, Raft};
use quiver_rpc::iroh::{EndpointAddr, EndpointId};
use quiver_rpc::{CallContext, ClientError, Code, Dispatch, Priority, Reply, RpcClient, RpcError};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::TypeConfig;

/// The Raft service's id in frame headers.
pub const RAFT_SERVICE: u16 = 6;
pub const VOTE: u16 = 1;
pub const APPEND_ENTRIES: u16 = 2;
pub const INSTALL_SNAPSHOT: u16 = 3;
pub const PROPOSE: u16 = 4;

/// The `BasicNode` of the endpoint at `addr`.
#[must_use]
pub fn node(addr: &EndpointAddr) -> BasicNode {
    let sockets: Vec<String> = addr.ip_addrs().map(ToString::to_string).collect();
    BasicNode::new(format!("{}@{}", addr.id, sockets.join(",")))
}

/// The endpoint address a `BasicNode` names.
///
/// # Errors
/// The address is not `<endpoint id>@<ip:port>[,…]`.
pub fn endpoint_addr(node: &BasicNode) -> Result<EndpointAddr, String> {
    let (id, sockets) = node.addr.split_once('@').ok_or_else(|| {
        format!(
            "node address {:?}: expected <endpoint id>@<ip:port>",
            node.addr
        )
    })?;
    let id: EndpointId = id
        .parse()
        .map_err(|e| format!("node address {:?}: endpoint id: {e}", node.addr))?;
    sockets
        .split(',')
        .filter(|s| !s.is_empty())
        .try_fold(EndpointAddr::new(id), |addr, socket| {
            let socket: SocketAddr = socket
                .parse()
                .map_err(|e| format!("node address {:?}: {socket:?}: {e}", node.addr))?;
            Ok(addr.with_ip_addr(socket))
        })
}

/// Serves the Raft service of one node.
#[derive(Clone)]
pub struct RaftDispatch {
    raft: Raft<TypeConfig>,
}

impl RaftDispatch {
    #[must_use]
    pub fn new(raft: Raft<TypeConfig>) -> Self {
        Self { raft }
    }
}

fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, RpcError> {
    serde_json::from_slice(payload).map_err(|e| {
        RpcError::new(
            Code::InvalidArgument,
            format!("malformed Raft request: {e}"),
        )
    })
}

fn answer<T: Serialize, E: Serialize>(result: &Result<T, E>) -> Reply {
    Reply::Unary(
        serde_json::to_vec(result)
            .map(Bytes::from)
            .map_err(|e| RpcError::new(Code::Internal, format!("encoding a Raft reply: {e}"))),
    )
}

impl Dispatch for RaftDispatch {
    async fn call(&self, service: u16, method: u16, payload: Bytes, _: CallContext) -> Reply {
        let unknown = || {
            let message = format!("no method {method} in service {service}");
            Reply::Unary(Err(RpcError::new(Code::Unimplemented, message)))
        };
        if service != RAFT_SERVICE {
            return unknown();
        }
        match method {
            VOTE => match decode::<VoteRequest<u64>>(&payload) {
                Ok(req) => answer(&self.raft.vote(req).await),
                Err(e) => Reply::Unary(Err(e)),
            },
            APPEND_ENTRIES => match decode::<AppendEntriesRequest<TypeConfig>>(&payload) {
                Ok(req) => answer(&self.raft.append_entries(req).await),
                Err(e) => Reply::Unary(Err(e)),
            },
            INSTALL_SNAPSHOT => match decode::<InstallSnapshotRequest<TypeConfig>>(&payload) {
                Ok(req) => answer(&self.raft.install_snapshot(req).await),
                Err(e) => Reply::Unary(Err(e)),
            },
            PROPOSE => match decode::<crate::Command>(&payload) {
                Ok(command) => answer(&crate::node::write(&self.raft, command).await),
                Err(e) => Reply::Unary(Err(e)),
            },
            _ => unknown(),
        }
    }

    /// Every Raft message changes state (a vote, the log, the snapshot).
    fn changes_state(&self, _: u16, _: u16) -> bool {
        true
    }
}

/// Makes a [`Peer`] per target node, all sharing one client (one connection per peer).
#[derive(Clone, Debug)]
pub struct Network {
    client: RpcClient,
}

impl Network {
    #[must_use]
    pub fn new(client: RpcClient) -> Self {
        Self { client }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            client: self.client.clone(),
            target,
            addr: endpoint_addr(node),
        }
    }
}

/// Calls to one node.
#[derive(Debug)]
pub struct Peer {
    client: RpcClient,
    target: u64,
    /// A malformed node address fails every call (the membership came from outside).
    addr: Result<EndpointAddr, String>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &self,
        method: u16,
        priority: Priority,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let addr = self
            .addr
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::from(AnyError::error(e))))?;
        let payload =
            serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let deadline = Some(option.hard_ttl());
        let reply = self
            .client
            .unary(
                addr,
                RAFT_SERVICE,
                method,
                payload.into(),
                priority,
                deadline,
            )
            .await
            .map_err(|e| match e {
                ClientError::Unreachable { .. } | ClientError::Refused { .. } => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        let result: Result<Resp, RaftError<u64, E>> =
            serde_json::from_slice(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<u64>> {
        let priority = if rpc.entries.is_empty() {
            Priority::Heartbeat
        } else {
            Priority::LogAppend
        };
        self.call(APPEND_ENTRIES, priority, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(INSTALL_SNAPSHOT, Priority::Snapshot, &rpc, &option)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.call(VOTE, Priority::Election, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_rpc::iroh::SecretKey;

    #[test]
    fn node_addresses_round_trip_and_bad_ones_are_named() {
        let id = SecretKey::generate().public();
        let addr = EndpointAddr::new(id).with_ip_addr("127.0.0.1:7444".parse().expect("socket"));
        assert_eq!(endpoint_addr(&node(&addr)), Ok(addr));
        let bad = BasicNode::new("nobody");
        assert!(
            endpoint_addr(&bad)
                .unwrap_err()
                .contains("expected <endpoint id>@")
        );
        let bad_socket = BasicNode::new(format!("{id}@localhost"));
        assert!(
            endpoint_addr(&bad_socket)
                .unwrap_err()
                .contains("\"localhost\"")
        );
    }
}
