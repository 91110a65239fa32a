//! gRPC (tonic) adapters: decode, call the one service implementation, record metrics,
//! map [`Error`] to `tonic::Status`. No behaviour lives here. Latency runs from the request's
//! arrival to the reply; for server streams, to the first response ([`timed`]). The generated
//! servers decode with `quiver_rpc::grpc::codec` (malformed messages are `INVALID_ARGUMENT`).

pub mod timed;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::time::Instant;

use futures::{Stream, StreamExt};
use tokio::net::TcpListener;
use tonic::{Request, Response};

use self::timed::{FirstResponse, Timed};
use crate::metrics::Metrics;
use crate::services::Services;
use crate::{Error, Result};
use quiver_rpc::proto;
use quiver_rpc::proto::health_server::{Health, HealthServer};
use quiver_rpc::proto::monitoring_server::{Monitoring, MonitoringServer};
use quiver_rpc::proto::status_server::StatusServer;
use quiver_rpc::proto::vm_server::{Vm, VmServer};

const TRANSPORT: &str = "grpc";

type GrpcResult<T> = std::result::Result<Response<T>, tonic::Status>;
type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, tonic::Status>> + Send>>;

/// Maps the agent's error to a gRPC status. Invalid-argument messages keep the field name.
pub fn status_from(e: &Error) -> tonic::Status {
    let msg = bounded(e.to_string());
    match e {
        Error::InvalidArgument { .. } => tonic::Status::invalid_argument(msg),
        Error::NotFound { .. } => tonic::Status::not_found(msg),
        Error::StaleEpoch { .. } => tonic::Status::failed_precondition(msg),
        Error::Conflict(_) => tonic::Status::aborted(msg),
        Error::ShuttingDown => tonic::Status::unavailable(msg),
        _ => tonic::Status::internal(msg),
    }
}

/// Longest error message sent. Messages may quote the request (a path, a uid), and gRPC sends
/// them in an HTTP/2 header, which a peer refuses above its header-size limit (16 KiB by
/// default, and the message is percent-encoded): an unbounded echo would turn a clean refusal
/// into a reset stream.
const MAX_MESSAGE_CHARS: usize = 1024;

fn bounded(msg: String) -> String {
    match msg.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((cut, _)) => format!("{}… ({} bytes cut)", &msg[..cut], msg.len() - cut),
        None => msg,
    }
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

    async fn unary<T>(
        &self,
        service: &'static str,
        method: &'static str,
        call: impl Future<Output = Result<T>>,
    ) -> GrpcResult<T> {
        let start = Instant::now();
        let result = call.await;
        self.metrics
            .observe(TRANSPORT, service, method, start.elapsed(), result.is_ok());
        result.map(Response::new).map_err(|e| status_from(&e))
    }

    /// Streams count once: from `arrived` (before the service opened the stream) to their
    /// first response as `rule` defines it, or to the refusal when opening failed.
    fn stream<T, S>(
        &self,
        method: &'static str,
        arrived: Instant,
        rule: FirstResponse,
        opened: Result<S>,
    ) -> GrpcResult<BoxStream<T>>
    where
        S: Stream<Item = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let stream = match opened {
            Ok(stream) => stream,
            Err(e) => {
                self.metrics
                    .observe(TRANSPORT, "Vm", method, arrived.elapsed(), false);
                return Err(status_from(&e));
            }
        };
        let metrics = self.metrics.clone();
        let record = move |latency, ok| metrics.observe(TRANSPORT, "Vm", method, latency, ok);
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
        self.unary("Health", "Check", async {
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
        self.unary("Status", "GetStatus", async {
            self.services.status.get_status(req.get_ref())
        })
        .await
    }
}

#[tonic::async_trait]
impl Vm for GrpcAdapter {
    async fn put_vm(&self, req: Request<proto::PutVmRequest>) -> GrpcResult<proto::PutVmResponse> {
        self.unary("Vm", "PutVm", self.services.vm.put_vm(req.get_ref()))
            .await
    }

    async fn delete_vm(
        &self,
        req: Request<proto::DeleteVmRequest>,
    ) -> GrpcResult<proto::DeleteVmResponse> {
        self.unary("Vm", "DeleteVm", async {
            self.services.vm.delete_vm(req.get_ref())
        })
        .await
    }

    async fn get_vm(&self, req: Request<proto::GetVmRequest>) -> GrpcResult<proto::VmStatus> {
        self.unary("Vm", "GetVm", async {
            self.services.vm.get_vm(req.get_ref())
        })
        .await
    }

    async fn list_vms(
        &self,
        req: Request<proto::ListVmsRequest>,
    ) -> GrpcResult<proto::ListVmsResponse> {
        self.unary("Vm", "ListVms", async {
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
        let opened = self
            .services
            .vm
            .watch_vm_status(req.get_ref())
            .map(|s| s.map(Ok));
        self.stream(
            "WatchVmStatus",
            arrived,
            FirstResponse::MessageOrIdle,
            opened,
        )
    }

    type StreamConsoleStream = BoxStream<proto::ConsoleChunk>;

    async fn stream_console(
        &self,
        req: Request<proto::StreamConsoleRequest>,
    ) -> GrpcResult<Self::StreamConsoleStream> {
        let arrived = Instant::now();
        self.stream(
            "StreamConsole",
            arrived,
            FirstResponse::Message,
            self.services.vm.stream_console(req.get_ref()),
        )
    }
}

#[tonic::async_trait]
impl Monitoring for GrpcAdapter {
    async fn get_metrics(
        &self,
        req: Request<proto::GetMetricsRequest>,
    ) -> GrpcResult<proto::MetricsSnapshot> {
        self.unary("Monitoring", "GetMetrics", async {
            self.services.monitoring.get_metrics(req.get_ref())
        })
        .await
    }

    async fn get_resource_summary(
        &self,
        req: Request<proto::GetResourceSummaryRequest>,
    ) -> GrpcResult<proto::ResourceSummary> {
        self.unary("Monitoring", "GetResourceSummary", async {
            self.services.monitoring.get_resource_summary(req.get_ref())
        })
        .await
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
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
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
            MonitoringServer::new(a)
                .max_decoding_message_size(m)
                .max_encoding_message_size(m),
        )
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Transport(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_quoting_huge_input_are_cut_on_a_char_boundary() {
        let uid = "é".repeat(100_000);
        let status = status_from(&Error::NotFound { uid });
        assert_eq!(status.code(), tonic::Code::NotFound);
        assert!(status.message().chars().count() < MAX_MESSAGE_CHARS + 40);
        assert!(status.message().ends_with("bytes cut)"));
        let short = status_from(&Error::invalid("spec.cpus", "must be at least 1"));
        assert_eq!(
            short.message(),
            "invalid argument: spec.cpus: must be at least 1"
        );
    }
}
