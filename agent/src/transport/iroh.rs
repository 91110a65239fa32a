//! The Iroh adapter: a [`Dispatch`] that maps a frame's (service id, method id) to a
//! [`Method`], decodes the protobuf request, checks the service is served over Iroh, calls the
//! one service implementation, records metrics and encodes the reply or [`Error::to_rpc`].
//! The same services, codes and messages as over gRPC; only the framing differs.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use prost::Message;
use quiver_rpc::{CallContext, Code, Dispatch, Method, Reply, RpcError, Wire};
use tokio::time::Instant;

use super::timed::{FirstResponse, Timed};
use crate::metrics::Metrics;
use crate::services::Services;
use crate::{Error, Result};

#[derive(Clone)]
pub struct IrohAdapter {
    services: Services,
    metrics: Arc<Metrics>,
}

impl IrohAdapter {
    pub fn new(services: Services) -> Self {
        let metrics = services.metrics.clone();
        IrohAdapter { services, metrics }
    }

    /// Raft payloads are openraft's JSON itself, not protobuf (docs/protocol.md).
    async fn raft(&self, method: Method, payload: &[u8], caller: u64) -> Reply {
        let start = Instant::now();
        let result = match self.services.faults.apply(Wire::Iroh, method).await {
            Ok(()) => self.services.raft(method, payload, Some(caller)).await,
            Err(injected) => Err(injected),
        };
        self.metrics
            .observe(Wire::Iroh, method, start.elapsed(), result.is_ok());
        Reply::Unary(result.map_err(|e| e.to_rpc()))
    }

    async fn unary<Req, Resp, Fut>(
        &self,
        method: Method,
        payload: Bytes,
        call: impl FnOnce(Req) -> Fut,
    ) -> Reply
    where
        Req: Message + Default,
        Resp: Message,
        Fut: Future<Output = Result<Resp>>,
    {
        let start = Instant::now();
        let result = match self.services.faults.apply(Wire::Iroh, method).await {
            Ok(()) => match decode::<Req>(method, &payload) {
                Ok(req) => call(req).await,
                Err(e) => Err(e),
            },
            Err(injected) => Err(injected),
        };
        self.metrics
            .observe(Wire::Iroh, method, start.elapsed(), result.is_ok());
        Reply::Unary(
            result
                .map(|reply| Bytes::from(reply.encode_to_vec()))
                .map_err(|e| e.to_rpc()),
        )
    }

    /// Counted like gRPC streams: from arrival to the first response as `rule` defines it.
    fn stream<Req, Resp, S>(
        &self,
        method: Method,
        payload: &[u8],
        rule: FirstResponse,
        open: impl FnOnce(Req) -> Result<S>,
    ) -> Reply
    where
        Req: Message + Default,
        Resp: Message,
        S: Stream<Item = Result<Resp>> + Send + 'static,
    {
        let arrived = Instant::now();
        let stream = match decode::<Req>(method, payload).and_then(open) {
            Ok(stream) => stream,
            Err(e) => {
                self.metrics
                    .observe(Wire::Iroh, method, arrived.elapsed(), false);
                return Reply::Unary(Err(e.to_rpc()));
            }
        };
        let metrics = self.metrics.clone();
        let record = move |latency, ok| metrics.observe(Wire::Iroh, method, latency, ok);
        let encoded = Box::pin(stream.map(|item| {
            item.map(|m| Bytes::from(m.encode_to_vec()))
                .map_err(|e| e.to_rpc())
        }));
        Reply::Stream(Box::pin(Timed::new(encoded, arrived, rule, record)))
    }
}

/// A request that is not the method's message is the caller's mistake.
fn decode<Req: Message + Default>(method: Method, payload: &[u8]) -> Result<Req> {
    Req::decode(payload).map_err(|e| {
        Error::invalid(
            "request",
            format!("malformed {} message: {e}", method.name()),
        )
    })
}

impl Dispatch for IrohAdapter {
    /// Boxed: the services' futures nest deep, and the RPC server holds a call's future in the
    /// type of every stream's task, which the compiler would otherwise lay out in full.
    fn call(
        &self,
        service: u16,
        method: u16,
        payload: Bytes,
        ctx: CallContext,
    ) -> impl Future<Output = Reply> + Send {
        Box::pin(async move {
            let Some(method) = Method::from_ids(service, method) else {
                let message = format!("no method {method} in service {service}");
                return Reply::Unary(Err(RpcError::new(Code::Unimplemented, message)));
            };
            // Raft messages are not protobuf and carry no trace id.
            let trace_id = (method.service() != quiver_rpc::ServiceName::Raft)
                .then(|| quiver_rpc::trace::from_message(&payload))
                .flatten();
            super::traced(trace_id, method, self.serve(method, payload, ctx)).await
        })
    }

    fn changes_state(&self, service: u16, method: u16) -> bool {
        Method::from_ids(service, method).is_none_or(Method::changes_state)
    }
}

impl IrohAdapter {
    async fn serve(&self, method: Method, payload: Bytes, ctx: CallContext) -> Reply {
        if let Err(refused) = self.services.modes.check(method.service(), Wire::Iroh) {
            self.metrics.refused(Wire::Iroh, method);
            return Reply::Unary(Err(refused.to_rpc()));
        }
        let s = &self.services;
        match method {
            Method::HealthCheck => {
                self.unary(method, payload, |r| async move { s.health.check(&r) })
                    .await
            }
            Method::GetStatus => {
                self.unary(method, payload, |r| async move { s.status.get_status(&r) })
                    .await
            }
            Method::PutVm => {
                self.unary(method, payload, |r| async move { s.vm.put_vm(&r).await })
                    .await
            }
            Method::DeleteVm => {
                self.unary(method, payload, |r| async move { s.vm.delete_vm(&r).await })
                    .await
            }
            Method::GetVm => {
                self.unary(method, payload, |r| async move { s.vm.get_vm(&r) })
                    .await
            }
            Method::ListVms => {
                self.unary(method, payload, |r| async move { s.vm.list_vms(&r) })
                    .await
            }
            Method::WatchVmStatus => {
                self.stream(method, &payload, FirstResponse::MessageOrIdle, |r| {
                    s.vm.watch_vm_status(&r).map(|w| w.map(Ok))
                })
            }
            Method::StreamConsole => self.stream(method, &payload, FirstResponse::Message, |r| {
                s.vm.stream_console(&r)
            }),
            Method::WriteConsole => {
                self.unary(
                    method,
                    payload,
                    |r| async move { s.vm.write_console(&r).await },
                )
                .await
            }
            Method::GetMetrics => {
                self.unary(
                    method,
                    payload,
                    |r| async move { s.monitoring.get_metrics(&r) },
                )
                .await
            }
            Method::GetResourceSummary => {
                self.unary(method, payload, |r| async move {
                    s.monitoring.get_resource_summary(&r)
                })
                .await
            }
            Method::SetTransports => {
                self.unary(
                    method,
                    payload,
                    |r| async move { s.admin.set_transports(&r) },
                )
                .await
            }
            Method::RaftVote
            | Method::RaftAppendEntries
            | Method::RaftInstallSnapshot
            | Method::RaftPropose => {
                let caller = quiver_raft::node_id(&ctx.peer);
                self.raft(method, &payload, caller).await
            }
        }
    }
}
