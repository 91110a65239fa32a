//! The Raft network: votes, appends and snapshot chunks are calls of the Raft service
//! ([`crate::service`]) over gRPC, Iroh (`quiver/rpc/1`), or both, through
//! [`quiver_rpc::AgentClient`], so a peer is reached the way every agent is: the preferred
//! transport first, the other when the first cannot take the call (unreachable, refused, or
//! `UNIMPLEMENTED` because the peer serves Raft on the other transport only).
//!
//! | method | id | priority on Iroh |
//! |---|---|---|
//! | Vote | 1 | Election |
//! | AppendEntries | 2 | Heartbeat when it carries no entries, else LogAppend |
//! | InstallSnapshot | 3 | Snapshot (openraft sends a snapshot in chunks) |
//! | Propose | 4 | LogAppend: a ledger command from another node, committed by this leader |
//!
//! On Iroh the priority orders the QUIC streams of a connection, so an election or a heartbeat
//! overtakes a snapshot in flight; gRPC (HTTP/2) has no such priorities.
//!
//! Each peer is called on the wire that last answered it (the configured preference until
//! then), so a peer that serves Raft on one transport only costs one refused call, not one per
//! message. A node's address is its [`NodeAddr`] (`BasicNode::addr`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode};
use quiver_rpc::pki::TlsFiles;
use quiver_rpc::{
    AgentClient, ClientError, GrpcRoute, IrohRoute, Method, Priority, RpcClient, Wire,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::TypeConfig;
pub use crate::addr::{AddrError, GrpcAddr, NodeAddr};
pub use crate::service::{RaftDispatch, RaftService};

/// gRPC addresses by node id, for members whose address carries none (see [`crate::addr`]).
pub type Directory = watch::Receiver<BTreeMap<u64, GrpcAddr>>;

/// How this node reaches its peers; clones share connections. Also openraft's
/// `RaftNetworkFactory`: a [`Peer`] per target node.
#[derive(Clone, Debug)]
pub struct Network {
    iroh: Option<RpcClient>,
    /// `Some(None)`: plain gRPC; `Some(Some(files))`: mutual TLS with this node's certificate.
    grpc: Option<Option<TlsFiles>>,
    prefer: Wire,
    directory: Option<Directory>,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// One channel per gRPC peer (URL and TLS name), dialed on first use.
    channels: Mutex<HashMap<GrpcAddr, GrpcRoute>>,
    /// The wire that last answered each node.
    answered: Mutex<HashMap<u64, Wire>>,
}

impl Network {
    /// Raft over Iroh only.
    #[must_use]
    pub fn iroh(client: RpcClient) -> Self {
        Self::new(Some(client), None, Wire::Iroh)
    }

    /// Raft over gRPC only; `tls` is this node's certificate and the cluster CA (`None`: plain
    /// gRPC, for loopback tests).
    #[must_use]
    pub fn grpc(tls: Option<TlsFiles>) -> Self {
        Self::new(None, Some(tls), Wire::Grpc)
    }

    /// Both, `prefer` first.
    #[must_use]
    pub fn dual(client: RpcClient, tls: Option<TlsFiles>, prefer: Wire) -> Self {
        Self::new(Some(client), Some(tls), prefer)
    }

    fn new(iroh: Option<RpcClient>, grpc: Option<Option<TlsFiles>>, prefer: Wire) -> Self {
        Self {
            iroh,
            grpc,
            prefer,
            directory: None,
            shared: Arc::default(),
        }
    }

    /// Takes the gRPC address of a member whose address has none from `directory` (in an
    /// agent: the registered Hosts).
    #[must_use]
    pub fn with_directory(mut self, directory: Directory) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The client of the node `target` at `node`, preferring the wire that last answered it.
    ///
    /// # Errors
    /// The address does not parse, or this node has no transport that reaches it.
    pub async fn client(&self, target: u64, node: &BasicNode) -> Result<AgentClient, String> {
        let addr = NodeAddr::parse(node).map_err(|e| e.to_string())?;
        let iroh = self
            .iroh
            .as_ref()
            .map(|client| IrohRoute::new(client.clone(), addr.iroh.clone()));
        let grpc_addr = addr.grpc.clone().or_else(|| {
            let directory = self.directory.as_ref()?;
            directory.borrow().get(&target).cloned()
        });
        let grpc = match (&self.grpc, grpc_addr) {
            (Some(tls), Some(at)) => Some(self.channel(at, tls.as_ref()).await?),
            _ => None,
        };
        let prefer = self.answered(target).unwrap_or(self.prefer);
        match (grpc, iroh) {
            (Some(grpc), Some(iroh)) => Ok(AgentClient::dual(grpc, iroh, prefer)),
            (Some(grpc), None) => Ok(AgentClient::grpc(grpc)),
            (None, Some(iroh)) => Ok(AgentClient::iroh(iroh)),
            (None, None) => Err(format!(
                "node {target} ({}): no gRPC address known and no Iroh endpoint here",
                node.addr
            )),
        }
    }

    async fn channel(&self, at: GrpcAddr, tls: Option<&TlsFiles>) -> Result<GrpcRoute, String> {
        if let Some(route) = lock(&self.shared.channels).get(&at) {
            return Ok(route.clone());
        }
        let url = at.url(tls.is_some());
        let route = GrpcRoute::connect(url, tls.map(|files| (files, at.name.as_str())), true)
            .await
            .map_err(|e| e.to_string())?;
        Ok(lock(&self.shared.channels)
            .entry(at)
            .or_insert(route)
            .clone())
    }

    fn answered(&self, target: u64) -> Option<Wire> {
        lock(&self.shared.answered).get(&target).copied()
    }

    fn remember(&self, target: u64, wire: Wire) {
        lock(&self.shared.answered).insert(target, wire);
    }

    /// One call of the Raft service to `target`: `req` encoded ([`crate::wire`]), the reply
    /// decoded.
    ///
    /// # Errors
    /// The client's failure (after trying every wire it has).
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        client: &AgentClient,
        target: u64,
        method: Method,
        priority: Priority,
        req: &Req,
        deadline: Option<Duration>,
    ) -> Result<Resp, CallError> {
        let message = crate::wire::encode(req).map_err(CallError::Encode)?;
        let (reply, wire) = client
            .raft(method, message.into(), priority, deadline)
            .await
            .map_err(CallError::Client)?;
        self.remember(target, wire);
        crate::wire::decode(&reply).map_err(CallError::Decode)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why a call of the Raft service failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error(transparent)]
    Client(ClientError),
    #[error("encoding a Raft request: {0}")]
    Encode(#[source] crate::wire::Error),
    #[error("malformed Raft reply: {0}")]
    Decode(#[source] crate::wire::Error),
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Peer {
        Peer {
            network: self.clone(),
            target,
            client: self.client(target, node).await,
        }
    }
}

/// Calls to one node.
#[derive(Debug)]
pub struct Peer {
    network: Network,
    target: u64,
    /// A malformed node address fails every call (the membership came from outside).
    client: Result<AgentClient, String>,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl Peer {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        priority: Priority,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = self
            .client
            .as_ref()
            .map_err(|e| RPCError::Unreachable(Unreachable::from(AnyError::error(e))))?;
        let deadline = Some(option.hard_ttl());
        let result: Result<Resp, RaftError<u64, E>> = self
            .network
            .call(client, self.target, method, priority, req, deadline)
            .await
            .map_err(|e| match e {
                // Nothing answered on any wire (a peer serving Raft only on a transport this
                // node lacks answers UNIMPLEMENTED): openraft backs off as for a dead peer.
                CallError::Client(c) if c.other_transport_may_help() => {
                    RPCError::Unreachable(Unreachable::new(&c))
                }
                other => RPCError::Network(NetworkError::new(&other)),
            })?;
        if let Some(wire) = self.network.answered(self.target)
            && let Ok(client) = &mut self.client
        {
            *client = client.clone().preferring(wire);
        }
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
        self.call(Method::RaftAppendEntries, priority, &rpc, &option)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        self.call(
            Method::RaftInstallSnapshot,
            Priority::Snapshot,
            &crate::wire::SnapshotChunk::from(&rpc),
            &option,
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<u64>> {
        self.call(Method::RaftVote, Priority::Election, &rpc, &option)
            .await
    }
}
