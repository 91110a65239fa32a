//! [`AgentClient`]: the typed client of an agent over gRPC, Iroh, or both (operator, CLI,
//! tests, benches).
//!
//! ```no_run
//! # async fn demo() -> quiver_rpc::ClientResult<()> {
//! let agent = quiver_rpc::AgentClient::connect("http://127.0.0.1:7443").await?;
//! let vms = agent.list_vms().await?;
//! # Ok(()) }
//! ```
//!
//! With both routes ([`AgentClient::dual`]) every call goes to the preferred transport first and
//! to the other when the preferred one cannot take it ([`ClientError::other_transport_may_help`]:
//! unreachable, refused, or `UNIMPLEMENTED` because the agent serves that service on the other
//! transport only). A call retried after a broken connection may have run on the first
//! transport: the state-changing methods are idempotent (puts per uid + generation, deletes,
//! and transport settings), so running them twice changes nothing, except console input
//! ([`Method::idempotent`]), which is retried only when it surely did not run (refused, or
//! `UNIMPLEMENTED`): a lost keystroke is seen and typed again, a doubled one is not undone.
//! Server streams fall back only while opening; a stream that breaks later ends with its error.
//!
//! [`AgentClient::raft`] carries the Raft service between agents the same way: openraft's message
//! at its Raft priority over Iroh, in a `RaftMessage` over gRPC. A Raft message retried on the
//! other transport is harmless too: votes and appends are idempotent by Raft's rules, and a
//! proposal's caller already retries through leader changes (see `quiver_raft::node`).

mod grpc;
mod iroh;

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

pub use self::grpc::GrpcRoute;
pub use self::iroh::IrohRoute;
use crate::error::{ClientError, ClientResult as Result};
use crate::frame::Priority;
use crate::methods::{Method, ServiceName};
use crate::modes::Wire;
use crate::pki::TlsFiles;
use crate::proto;

/// A server stream's messages, ending after the first error.
pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T>> + Send>>;

/// Calls one agent. Cheap to clone; clones share connections.
#[derive(Clone, Debug)]
pub struct AgentClient {
    grpc: Option<GrpcRoute>,
    iroh: Option<IrohRoute>,
    prefer: Wire,
    deadline: Option<Duration>,
}

impl AgentClient {
    /// Connects over plain gRPC to `endpoint` (`http://host:port`; agents serve plain gRPC only
    /// with `--insecure-plaintext` on loopback).
    ///
    /// # Errors
    /// The endpoint is malformed or does not accept the connection.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self> {
        Ok(Self::grpc(GrpcRoute::connect(endpoint, None, false).await?))
    }

    /// Connects over gRPC with mutual TLS (`https://host:port`); `server_name` must be in the
    /// agent's certificate (`pki::DEV_SERVER_NAME` for dev certificates).
    ///
    /// # Errors
    /// Unreadable credentials, or the connection or TLS handshake failed.
    pub async fn connect_tls(
        endpoint: impl Into<String>,
        files: &TlsFiles,
        server_name: &str,
    ) -> Result<Self> {
        let route = GrpcRoute::connect(endpoint, Some((files, server_name)), false).await?;
        Ok(Self::grpc(route))
    }

    /// Every call over gRPC.
    #[must_use]
    pub fn grpc(route: GrpcRoute) -> Self {
        Self {
            grpc: Some(route),
            iroh: None,
            prefer: Wire::Grpc,
            deadline: None,
        }
    }

    /// Every call over Iroh.
    #[must_use]
    pub fn iroh(route: IrohRoute) -> Self {
        Self {
            grpc: None,
            iroh: Some(route),
            prefer: Wire::Iroh,
            deadline: None,
        }
    }

    /// Both transports, `prefer` first.
    #[must_use]
    pub fn dual(grpc: GrpcRoute, iroh: IrohRoute, prefer: Wire) -> Self {
        Self {
            grpc: Some(grpc),
            iroh: Some(iroh),
            prefer,
            deadline: None,
        }
    }

    /// Unary calls and whole server streams give up after `deadline` (`DeadlineExceeded`); over
    /// Iroh the agent is told, and drops the call at the same moment.
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The same client preferring `wire` (when it has a route on it).
    #[must_use]
    pub fn preferring(mut self, wire: Wire) -> Self {
        self.prefer = wire;
        self
    }

    /// The transports this client may use, preferred first.
    #[must_use]
    pub fn wires(&self) -> Vec<Wire> {
        let mut wires = Vec::with_capacity(2);
        for wire in [self.prefer, other(self.prefer)] {
            let present = match wire {
                Wire::Grpc => self.grpc.is_some(),
                Wire::Iroh => self.iroh.is_some(),
            };
            if present {
                wires.push(wire);
            }
        }
        wires
    }

    #[must_use]
    pub fn grpc_route(&self) -> Option<&GrpcRoute> {
        self.grpc.as_ref()
    }

    #[must_use]
    pub fn iroh_route(&self) -> Option<&IrohRoute> {
        self.iroh.as_ref()
    }

    /// The same client over one transport only (`None` if it has no such route).
    #[must_use]
    pub fn only(&self, wire: Wire) -> Option<Self> {
        let mut only = self.clone();
        match wire {
            Wire::Grpc => only.iroh = None,
            Wire::Iroh => only.grpc = None,
        }
        only.prefer = wire;
        (!only.wires().is_empty()).then_some(only)
    }

    /// Runs `call` on the preferred wire, then on the other while the failure says the other
    /// may take it.
    async fn on_each_wire<T, Fut>(&self, method: Method, call: impl Fn(Wire) -> Fut) -> Result<T>
    where
        Fut: Future<Output = Result<T>>,
    {
        let wires = self.wires();
        let mut failed = None;
        for (i, wire) in wires.iter().enumerate() {
            match call(*wire).await {
                Err(e) if retry_on_other_wire(method, &e) && i + 1 < wires.len() => {
                    tracing::debug!(%method, transport = wire.as_str(), error = %e, "trying the other transport");
                    failed = Some(e);
                }
                done => return done,
            }
        }
        Err(failed.unwrap_or_else(no_route))
    }

    async fn unary<Req, Resp>(&self, method: Method, req: Req) -> Result<Resp>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        self.on_each_wire(method, |wire| {
            let req = req.clone();
            async move {
                match (wire, &self.grpc, &self.iroh) {
                    (Wire::Grpc, Some(route), _) => {
                        within(self.deadline, route.unary(method, req)).await
                    }
                    (Wire::Iroh, _, Some(route)) => route.unary(method, &req, self.deadline).await,
                    _ => Err(no_route()),
                }
            }
        })
        .await
    }

    async fn server_stream<Req, Resp>(
        &self,
        method: Method,
        req: Req,
    ) -> Result<MessageStream<Resp>>
    where
        Req: prost::Message + Clone + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        self.on_each_wire(method, |wire| {
            let req = req.clone();
            async move {
                match (wire, &self.grpc, &self.iroh) {
                    (Wire::Grpc, Some(route), _) => route.server_stream(method, req).await,
                    (Wire::Iroh, _, Some(route)) => {
                        route.server_stream(method, &req, self.deadline).await
                    }
                    _ => Err(no_route()),
                }
            }
        })
        .await
    }

    /// One call of the Raft service: `message` is openraft's request, the reply openraft's
    /// answer (both encoded by `quiver_raft::wire`). Over Iroh it is the frame's payload, sent at `priority` (so elections and
    /// heartbeats overtake snapshots); over gRPC it travels in a `RaftMessage` (HTTP/2 has no
    /// such priorities). `deadline` overrides the client's own. Returns the reply and the wire
    /// that carried it, so that a caller can keep to the wire that works.
    ///
    /// # Errors
    /// `method` is not a Raft method (`InvalidRequest`), or the call failed on every wire.
    pub async fn raft(
        &self,
        method: Method,
        message: Bytes,
        priority: Priority,
        deadline: Option<Duration>,
    ) -> Result<(Bytes, Wire)> {
        if method.service() != ServiceName::Raft {
            return Err(ClientError::InvalidRequest(format!(
                "{method} is not a method of the Raft service"
            )));
        }
        let deadline = deadline.or(self.deadline);
        self.on_each_wire(method, |wire| {
            let message = message.clone();
            async move {
                let reply = match (wire, &self.grpc, &self.iroh) {
                    (Wire::Grpc, Some(route), _) => {
                        let req = proto::RaftMessage { message };
                        within(deadline, route.unary(method, req))
                            .await
                            .map(|m: proto::RaftMessage| m.message)
                    }
                    (Wire::Iroh, _, Some(route)) => {
                        route.raw(method, message, priority, deadline).await
                    }
                    _ => Err(no_route()),
                };
                reply.map(|reply| (reply, wire))
            }
        })
        .await
    }

    pub async fn health(&self) -> Result<proto::HealthCheckResponse> {
        let req = proto::HealthCheckRequest::default();
        self.unary(Method::HealthCheck, req).await
    }

    pub async fn status(&self) -> Result<proto::AgentStatus> {
        self.unary(Method::GetStatus, proto::GetStatusRequest {})
            .await
    }

    pub async fn put_vm(&self, req: proto::PutVmRequest) -> Result<proto::PutVmResponse> {
        self.unary(Method::PutVm, req).await
    }

    /// Whether the agent knew the VM (deleting an unknown VM succeeds).
    pub async fn delete_vm(&self, uid: &str) -> Result<bool> {
        let req = proto::DeleteVmRequest {
            uid: uid.to_owned(),
        };
        let reply: proto::DeleteVmResponse = self.unary(Method::DeleteVm, req).await?;
        Ok(reply.existed)
    }

    pub async fn get_vm(&self, uid: &str) -> Result<proto::VmStatus> {
        let req = proto::GetVmRequest {
            uid: uid.to_owned(),
        };
        self.unary(Method::GetVm, req).await
    }

    pub async fn list_vms(&self) -> Result<Vec<proto::VmStatus>> {
        let reply: proto::ListVmsResponse = self
            .unary(Method::ListVms, proto::ListVmsRequest {})
            .await?;
        Ok(reply.vms)
    }

    /// Every VM's status, then every change.
    pub async fn watch(&self) -> Result<MessageStream<proto::VmStatus>> {
        self.server_stream(Method::WatchVmStatus, proto::WatchVmStatusRequest {})
            .await
    }

    /// Console bytes from `offset`; with `follow`, until the VM is deleted.
    pub async fn console(
        &self,
        uid: &str,
        offset: u64,
        follow: bool,
    ) -> Result<MessageStream<proto::ConsoleChunk>> {
        let req = proto::StreamConsoleRequest {
            uid: uid.to_owned(),
            offset,
            follow,
        };
        self.server_stream(Method::StreamConsole, req).await
    }

    /// Types `data` (at most [`crate::MAX_CONSOLE_INPUT`] bytes) into the VM's serial console.
    pub async fn write_console(&self, uid: &str, data: Vec<u8>) -> Result<()> {
        let req = proto::WriteConsoleRequest {
            uid: uid.to_owned(),
            data,
        };
        let _: proto::WriteConsoleResponse = self.unary(Method::WriteConsole, req).await?;
        Ok(())
    }

    pub async fn metrics(&self) -> Result<proto::MetricsSnapshot> {
        self.unary(Method::GetMetrics, proto::GetMetricsRequest {})
            .await
    }

    pub async fn resource_summary(&self) -> Result<proto::ResourceSummary> {
        let req = proto::GetResourceSummaryRequest {};
        self.unary(Method::GetResourceSummary, req).await
    }

    /// Changes the transports of the listed services; returns every service's transport.
    pub async fn set_transports(
        &self,
        services: Vec<proto::ServiceTransport>,
    ) -> Result<Vec<proto::ServiceTransport>> {
        let req = proto::SetTransportsRequest { services };
        let reply: proto::SetTransportsResponse = self.unary(Method::SetTransports, req).await?;
        Ok(reply.services)
    }
}

const fn other(wire: Wire) -> Wire {
    match wire {
        Wire::Grpc => Wire::Iroh,
        Wire::Iroh => Wire::Grpc,
    }
}

fn no_route() -> ClientError {
    ClientError::InvalidRequest("the client has no route to the agent".to_owned())
}

async fn within<T>(deadline: Option<Duration>, call: impl Future<Output = Result<T>>) -> Result<T> {
    match deadline {
        Some(d) => tokio::time::timeout(d, call)
            .await
            .unwrap_or(Err(ClientError::DeadlineExceeded)),
        None => call.await,
    }
}
/// Whether a call that failed with `error` goes to the other transport: when the other may
/// take it, and, for a method that is not idempotent, only when it surely did not run here (a
/// connection that broke mid-call may have carried it).
fn retry_on_other_wire(method: Method, error: &ClientError) -> bool {
    error.other_transport_may_help()
        && (method.idempotent() || !matches!(error, ClientError::Unreachable { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn console_input_goes_to_the_other_wire_only_when_it_surely_did_not_run() {
        let broken = ClientError::Unreachable {
            peer: "agent-0".into(),
            source: "connection lost".into(),
        };
        let refused = ClientError::Refused {
            peer: "agent-0".into(),
            reason: "unknown endpoint id".into(),
        };
        let not_served = ClientError::Remote {
            code: Code::Unimplemented,
            message: "vm is served over grpc only".into(),
        };
        let failed = ClientError::Remote {
            code: Code::InvalidArgument,
            message: "data".into(),
        };
        for method in [Method::PutVm, Method::DeleteVm, Method::GetVm] {
            assert!(retry_on_other_wire(method, &broken), "{method}");
        }
        assert!(!retry_on_other_wire(Method::WriteConsole, &broken));
        assert!(retry_on_other_wire(Method::WriteConsole, &refused));
        assert!(retry_on_other_wire(Method::WriteConsole, &not_served));
        assert!(!retry_on_other_wire(Method::PutVm, &failed));
    }
}
