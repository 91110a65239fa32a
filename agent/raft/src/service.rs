//! The Raft service, implemented once ([`RaftService::handle`]): openraft's request in, its
//! answer `Result<response, RaftError>` out, both in [`crate::wire`]'s encoding (a Raft-level refusal, such as a higher
//! vote, is an answer, not an error).
//!
//! Transports are adapters around it. The agent's own gRPC and Iroh adapters add its
//! per-service transport modes and metrics; [`RaftDispatch`] (Iroh) and [`serve_grpc`]
//! serve a node that runs outside an agent (tests, benchmarks).

use std::future::Future;

use bytes::Bytes;
use openraft::Vote;
use openraft::raft::{AppendEntriesRequest, VoteRequest};
use quiver_rpc::proto::raft_server::{Raft as RaftGrpc, RaftServer};
use quiver_rpc::{CallContext, Code, Dispatch, Method, Reply, RpcError, ServiceName, proto};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Proposer, TypeConfig, guard};

/// The Raft service of one node.
#[derive(Clone)]
pub struct RaftService {
    proposer: Proposer,
    snapshot: guard::IncomingSnapshot,
}

impl RaftService {
    #[must_use]
    pub fn new(proposer: Proposer) -> Self {
        Self {
            proposer,
            snapshot: guard::IncomingSnapshot::default(),
        }
    }

    /// Answers one call of the Raft service. `caller` is the node id the transport
    /// authenticated, where it names one (over Iroh, the caller's key: [`crate::node_id`]);
    /// a vote, append or snapshot must then come from the node it claims to come from.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` for a request that is not the method's message or that [`guard`]
    /// refuses, `PERMISSION_DENIED` for one sent on another node's behalf, `UNIMPLEMENTED`
    /// for a method of another service.
    pub async fn handle(
        &self,
        method: Method,
        message: &[u8],
        caller: Option<u64>,
    ) -> Result<Bytes, RpcError> {
        match method {
            Method::RaftVote => {
                let req: VoteRequest<u64> = decode(method, message)?;
                sent_by(method, &req.vote, caller)?;
                self.admit(method, guard::check_vote(self.me(), &req))?;
                answer(&self.proposer.raft().vote(req).await)
            }
            Method::RaftAppendEntries => {
                let req: AppendEntriesRequest<TypeConfig> = decode(method, message)?;
                sent_by(method, &req.vote, caller)?;
                self.admit(method, guard::check_append(self.me(), &req))?;
                answer(&self.proposer.raft().append_entries(req).await)
            }
            Method::RaftInstallSnapshot => {
                let req = crate::wire::decode_snapshot_chunk(message)
                    .map_err(|e| malformed(method, &e))?;
                sent_by(method, &req.vote, caller)?;
                self.admit(method, guard::check_snapshot(self.me(), &req))?;
                if req.done {
                    // The whole snapshot is checked before openraft installs it.
                    self.admit(method, self.snapshot.receive(&req))?;
                    return answer(&self.proposer.raft().install_snapshot(req).await);
                }
                // The copy takes only the chunks openraft took.
                let result = self.proposer.raft().install_snapshot(req.clone()).await;
                if result.is_ok() {
                    self.admit(method, self.snapshot.receive(&req))?;
                }
                answer(&result)
            }
            Method::RaftPropose => {
                let command: crate::Command = decode(method, message)?;
                answer(&self.proposer.write(command).await)
            }
            other => Err(RpcError::new(
                Code::Unimplemented,
                format!("{other} is not a method of the Raft service"),
            )),
        }
    }

    fn me(&self) -> u64 {
        self.proposer.raft().metrics().borrow().id
    }

    /// A request [`guard`] refuses is logged and answered `INVALID_ARGUMENT`.
    fn admit(&self, method: Method, checked: Result<(), guard::Refusal>) -> Result<(), RpcError> {
        checked.map_err(|refusal| {
            tracing::warn!(method = method.name(), %refusal, "refused a Raft request");
            RpcError::new(
                Code::InvalidArgument,
                format!("request: {} refused: {refusal}", method.name()),
            )
        })
    }
}

/// A vote, append or snapshot speaks for the node in its `vote` (the candidate, or the
/// leader): with an authenticated `caller`, that must be the caller.
fn sent_by(method: Method, vote: &Vote<u64>, caller: Option<u64>) -> Result<(), RpcError> {
    let claimed = vote.leader_id.node_id;
    match caller {
        Some(caller) if caller != claimed => {
            tracing::warn!(
                method = method.name(),
                claimed,
                caller,
                "refused a Raft request sent on another node's behalf"
            );
            Err(RpcError::new(
                Code::PermissionDenied,
                format!(
                    "request: {} vote.leader_id.node_id {claimed} is not the caller (node {caller})",
                    method.name()
                ),
            ))
        }
        _ => Ok(()),
    }
}

fn decode<T: DeserializeOwned>(method: Method, message: &[u8]) -> Result<T, RpcError> {
    crate::wire::decode(message).map_err(|e| malformed(method, &e))
}

fn malformed(method: Method, error: &crate::wire::Error) -> RpcError {
    RpcError::new(
        Code::InvalidArgument,
        format!("request: malformed {} message: {error}", method.name()),
    )
}

fn answer<T: Serialize, E: Serialize>(result: &Result<T, E>) -> Result<Bytes, RpcError> {
    crate::wire::encode(result)
        .map(Bytes::from)
        .map_err(|e| RpcError::new(Code::Internal, format!("encoding a Raft reply: {e}")))
}

/// Serves the Raft service alone over `quiver/rpc/1`.
#[derive(Clone)]
pub struct RaftDispatch {
    service: RaftService,
}

impl RaftDispatch {
    #[must_use]
    pub fn new(proposer: Proposer) -> Self {
        Self {
            service: RaftService::new(proposer),
        }
    }
}

impl Dispatch for RaftDispatch {
    async fn call(&self, service: u16, method: u16, payload: Bytes, ctx: CallContext) -> Reply {
        let caller = Some(crate::node_id(&ctx.peer));
        let reply = match Method::from_ids(service, method) {
            Some(m) if m.service() == ServiceName::Raft => {
                self.service.handle(m, &payload, caller).await
            }
            _ => Err(RpcError::new(
                Code::Unimplemented,
                format!("no method {method} in service {service}"),
            )),
        };
        Reply::Unary(reply)
    }

    /// Every Raft message changes state (a vote, the log, the snapshot).
    fn changes_state(&self, _: u16, _: u16) -> bool {
        true
    }
}

fn status(e: &RpcError) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(e.code as i32), e.message.clone())
}

impl RaftService {
    async fn grpc(
        &self,
        method: Method,
        req: tonic::Request<proto::RaftMessage>,
    ) -> Result<tonic::Response<proto::RaftMessage>, tonic::Status> {
        // One certificate is shared by the agents: it names no node.
        let message = self
            .handle(method, &req.into_inner().message, None)
            .await
            .map_err(|e| status(&e))?;
        Ok(tonic::Response::new(proto::RaftMessage { message }))
    }
}

#[tonic::async_trait]
impl RaftGrpc for RaftService {
    async fn vote(
        &self,
        req: tonic::Request<proto::RaftMessage>,
    ) -> Result<tonic::Response<proto::RaftMessage>, tonic::Status> {
        self.grpc(Method::RaftVote, req).await
    }

    async fn append_entries(
        &self,
        req: tonic::Request<proto::RaftMessage>,
    ) -> Result<tonic::Response<proto::RaftMessage>, tonic::Status> {
        self.grpc(Method::RaftAppendEntries, req).await
    }

    async fn install_snapshot(
        &self,
        req: tonic::Request<proto::RaftMessage>,
    ) -> Result<tonic::Response<proto::RaftMessage>, tonic::Status> {
        self.grpc(Method::RaftInstallSnapshot, req).await
    }

    async fn propose(
        &self,
        req: tonic::Request<proto::RaftMessage>,
    ) -> Result<tonic::Response<proto::RaftMessage>, tonic::Status> {
        self.grpc(Method::RaftPropose, req).await
    }
}

/// Serves the Raft service alone over gRPC on `listener` (mutual TLS with `tls`) until
/// `shutdown` resolves.
///
/// # Errors
/// The TLS config is refused, or the server fails.
pub async fn serve_grpc(
    proposer: Proposer,
    listener: tokio::net::TcpListener,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let m = quiver_rpc::grpc::MAX_MESSAGE_BYTES;
    let server = RaftServer::new(RaftService::new(proposer))
        .max_decoding_message_size(m)
        .max_encoding_message_size(m);
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    // No Nagle, as the agent's own gRPC listener (`quiver-agent`'s transport says why).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    builder
        .add_service(server)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
