//! The gRPC (tonic) adapter: decode, check the service is served over gRPC, call the one
//! service implementation, record metrics, map [`Error`] to `tonic::Status`. No behaviour lives
//! here. Latency runs from the request's arrival to the reply; for server streams, to the
//! first response ([`timed`](super::timed)). The generated servers decode with
//! `quiver_rpc::grpc::codec` (malformed messages are `INVALID_ARGUMENT`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response};

use super::timed::{FirstResponse, Timed};
use crate::metrics::Metrics;
use crate::services::Services;
use crate::{Error, Result};
use quiver_rpc::proto::admin_server::{Admin, AdminServer};
use quiver_rpc::proto::health_server::{Health, HealthServer};
use quiver_rpc::proto::monitoring_server::{Monitoring, MonitoringServer};
use quiver_rpc::proto::raft_server::{Raft, RaftServer};
use quiver_rpc::proto::status_server::StatusServer;
use quiver_rpc::proto::vm_server::{Vm, VmServer};
use quiver_rpc::{Method, Wire, proto};

type GrpcResult<T> = std::result::Result<Response<T>, tonic::Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, tonic::Status>> + Send>>;

/// The agent's error as a gRPC status (same code and message as over Iroh).
pub fn status_from(e: &Error) -> tonic::Status {
    let reply = e.to_rpc();
    tonic::Status::new(tonic::Code::from_i32(reply.code as i32), reply.message)
}

/// The adapter for every service: the shared implementations plus metrics.
#[derive(Clone)]
pub struct GrpcAdapter {
    services: Services,
    metrics: Arc<Metrics>,
}

impl GrpcAdapter {
    pub fn new(services: Services) -> Self {
        let metrics = services.metrics.clone();
        GrpcAdapter { services, metrics }
    }

    async fn unary<T, R>(
        &self,
        method: Method,
        request: &Request<R>,
        call: impl Future<Output = Result<T>>,
    ) -> GrpcResult<T> {
        let trace_id = quiver_rpc::trace::from_grpc(request.metadata());
        super::traced(trace_id, method, self.serve_unary(method, call)).await
    }

    async fn serve_unary<T>(
        &self,
        method: Method,
        call: impl Future<Output = Result<T>>,
    ) -> GrpcResult<T> {
        let start = Instant::now();
        if let Err(refused) = self.services.modes.check(method.service(), Wire::Grpc) {
            self.metrics.refused(Wire::Grpc, method);
            return Err(status_from(&refused));
        }
        let result = match self.services.faults.apply(Wire::Grpc, method).await {
            Ok(()) => call.await,
            Err(injected) => Err(injected),
        };
        self.metrics
            .observe(Wire::Grpc, method, start.elapsed(), result.is_ok());
        result.map(Response::new).map_err(|e| status_from(&e))
    }

    /// Streams count once: from `arrived` (before the service opened the stream) to their
    /// first response as `rule` defines it, or to the refusal when opening failed.
    fn stream<T, S>(
        &self,
        method: Method,
        arrived: Instant,
        rule: FirstResponse,
        open: impl FnOnce() -> Result<S>,
    ) -> GrpcResult<BoxStream<T>>
    where
        S: Stream<Item = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        if let Err(refused) = self.services.modes.check(method.service(), Wire::Grpc) {
            self.metrics.refused(Wire::Grpc, method);
            return Err(status_from(&refused));
        }
        let stream = match open() {
            Ok(stream) => stream,
            Err(e) => {
                self.metrics
                    .observe(Wire::Grpc, method, arrived.elapsed(), false);
                return Err(status_from(&e));
            }
        };
        let metrics = self.metrics.clone();
        let record = move |latency, ok| metrics.observe(Wire::Grpc, method, latency, ok);
        let mapped = Box::pin(stream.map(|r| r.map_err(|e| status_from(&e))));
        Ok(Response::new(Box::pin(Timed::new(
            mapped, arrived, rule, record,
        ))))
    }
}

#[tonic::async_trait]
impl Health for GrpcAdapter {
    async fn check(
        &self,
        req: Request<proto::HealthCheckRequest>,
    ) -> GrpcResult<proto::HealthCheckResponse> {
        self.unary(Method::HealthCheck, &req, async {
            self.services.health.check(req.get_ref())
        })
        .await
    }
}

#[tonic::async_trait]
impl proto::status_server::Status for GrpcAdapter {
    async fn get_status(
        &self,
        req: Request<proto::GetStatusRequest>,
    ) -> GrpcResult<proto::AgentStatus> {
        self.unary(Method::GetStatus, &req, async {
            self.services.status.get_status(req.get_ref())
        })
        .await
    }
}

#[tonic::async_trait]
impl Vm for GrpcAdapter {
    async fn put_vm(&self, req: Request<proto::PutVmRequest>) -> GrpcResult<proto::PutVmResponse> {
        self.unary(Method::PutVm, &req, self.services.vm.put_vm(req.get_ref()))
            .await
    }

    async fn delete_vm(
        &self,
        req: Request<proto::DeleteVmRequest>,
    ) -> GrpcResult<proto::DeleteVmResponse> {
        self.unary(
            Method::DeleteVm,
            &req,
            self.services.vm.delete_vm(req.get_ref()),
        )
        .await
    }

    async fn get_vm(&self, req: Request<proto::GetVmRequest>) -> GrpcResult<proto::VmStatus> {
        self.unary(Method::GetVm, &req, async {
            self.services.vm.get_vm(req.get_ref())
        })
        .await
    }

    async fn list_vms(
        &self,
        req: Request<proto::ListVmsRequest>,
    ) -> GrpcResult<proto::ListVmsResponse> {
        self.unary(Method::ListVms, &req, async {
            self.services.vm.list_vms(req.get_ref())
        })
        .await
    }

    type WatchVmStatusStream = BoxStream<proto::VmStatus>;

    async fn watch_vm_status(
        &self,
        req: Request<proto::WatchVmStatusRequest>,
    ) -> GrpcResult<Self::WatchVmStatusStream> {
        let arrived = Instant::now();
        let vm = &self.services.vm;
        self.stream(
            Method::WatchVmStatus,
            arrived,
            FirstResponse::MessageOrIdle,
            || vm.watch_vm_status(req.get_ref()).map(|s| s.map(Ok)),
        )
    }

    type StreamConsoleStream = BoxStream<proto::ConsoleChunk>;

    async fn stream_console(
        &self,
        req: Request<proto::StreamConsoleRequest>,
    ) -> GrpcResult<Self::StreamConsoleStream> {
        let arrived = Instant::now();
        let vm = &self.services.vm;
        self.stream(
            Method::StreamConsole,
            arrived,
            FirstResponse::Message,
            || vm.stream_console(req.get_ref()),
        )
    }

    async fn write_console(
        &self,
        req: Request<proto::WriteConsoleRequest>,
    ) -> GrpcResult<proto::WriteConsoleResponse> {
        self.unary(
            Method::WriteConsole,
            &req,
            self.services.vm.write_console(req.get_ref()),
        )
        .await
    }
}

#[tonic::async_trait]
impl Monitoring for GrpcAdapter {
    async fn get_metrics(
        &self,
        req: Request<proto::GetMetricsRequest>,
    ) -> GrpcResult<proto::MetricsSnapshot> {
        self.unary(Method::GetMetrics, &req, async {
            self.services.monitoring.get_metrics(req.get_ref())
        })
        .await
    }

    async fn get_resource_summary(
        &self,
        req: Request<proto::GetResourceSummaryRequest>,
    ) -> GrpcResult<proto::ResourceSummary> {
        self.unary(Method::GetResourceSummary, &req, async {
            self.services.monitoring.get_resource_summary(req.get_ref())
        })
        .await
    }
}

#[tonic::async_trait]
impl Admin for GrpcAdapter {
    async fn set_transports(
        &self,
        req: Request<proto::SetTransportsRequest>,
    ) -> GrpcResult<proto::SetTransportsResponse> {
        self.unary(Method::SetTransports, &req, async {
            self.services.admin.set_transports(req.get_ref())
        })
        .await
    }
}

impl GrpcAdapter {
    async fn raft(
        &self,
        method: Method,
        req: Request<proto::RaftMessage>,
    ) -> GrpcResult<proto::RaftMessage> {
        let trace_id = quiver_rpc::trace::from_grpc(req.metadata());
        let message = req.into_inner().message;
        let serve = self.serve_unary(method, async {
            // The agents share one certificate: it names no node.
            let message = self.services.raft(method, &message, None).await?;
            Ok(proto::RaftMessage { message })
        });
        super::traced(trace_id, method, serve).await
    }
}

#[tonic::async_trait]
impl Raft for GrpcAdapter {
    async fn vote(&self, req: Request<proto::RaftMessage>) -> GrpcResult<proto::RaftMessage> {
        self.raft(Method::RaftVote, req).await
    }

    async fn append_entries(
        &self,
        req: Request<proto::RaftMessage>,
    ) -> GrpcResult<proto::RaftMessage> {
        self.raft(Method::RaftAppendEntries, req).await
    }

    async fn install_snapshot(
        &self,
        req: Request<proto::RaftMessage>,
    ) -> GrpcResult<proto::RaftMessage> {
        self.raft(Method::RaftInstallSnapshot, req).await
    }

    async fn propose(&self, req: Request<proto::RaftMessage>) -> GrpcResult<proto::RaftMessage> {
        self.raft(Method::RaftPropose, req).await
    }
}

/// Serves every service on `listener` until `shutdown` resolves. Messages above
/// `max_message_bytes` are refused in both directions.
pub async fn serve(
    services: Services,
    listener: TcpListener,
    max_message_bytes: usize,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let a = GrpcAdapter::new(services);
    let m = max_message_bytes;
    // Replies go out at once (no Nagle): a unary reply is several small writes (headers, data,
    // trailers), and Nagle holding the last one for the client's delayed ack cost 40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::Transport(e.to_string()))?;
    }
    builder
        .add_service(
            HealthServer::new(a.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .add_service(
            StatusServer::new(a.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .add_service(
            VmServer::new(a.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .add_service(
            MonitoringServer::new(a.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .add_service(
            AdminServer::new(a.clone())
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .add_service(
            RaftServer::new(a)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}
