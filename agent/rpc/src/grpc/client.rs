//! A typed gRPC client of an agent (operator, tests, benches).
//!
//! ```no_run
//! # async fn demo() -> quiver_rpc::ClientResult<()> {
//! let agent = quiver_rpc::AgentClient::connect("http://127.0.0.1:7443").await?;
//! let vms = agent.list_vms().await?;
//! # Ok(()) }
//! ```
//! Errors are [`ClientError`]s naming the endpoint: connection failures and `UNAVAILABLE` are
//! `Unreachable`, TLS failures `Refused`, any other status the agent sent `Remote` with the
//! gRPC code's name (see [`ClientError::from_status`]).

use std::sync::Arc;

use futures::{Stream, StreamExt};
use tonic::transport::{Channel, Endpoint};

use crate::client_error::{ClientError, ClientResult as Result};
use crate::pki::TlsFiles;
use crate::proto;
use crate::proto::health_client::HealthClient;
use crate::proto::monitoring_client::MonitoringClient;
use crate::proto::status_client::StatusClient;
use crate::proto::vm_client::VmClient;

/// Largest message the client accepts (matches the server's default).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

#[derive(Clone)]
pub struct AgentClient {
    channel: Channel,
    /// Named in errors, so that a caller talking to many agents can tell which failed.
    endpoint: Arc<str>,
}

impl AgentClient {
    /// Connects to `endpoint` (`http://host:port`).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self> {
        let endpoint = endpoint.into();
        let failed = |e| ClientError::from_connect(&endpoint, &e);
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(failed)?
            .connect()
            .await
            .map_err(failed)?;
        Ok(AgentClient {
            channel,
            endpoint: endpoint.into(),
        })
    }

    /// Connects with mutual TLS (`https://host:port`); `server_name` must be in the server's
    /// certificate (`pki::DEV_SERVER_NAME` for dev certificates).
    pub async fn connect_tls(
        endpoint: impl Into<String>,
        files: &TlsFiles,
        server_name: &str,
    ) -> Result<Self> {
        let endpoint = endpoint.into();
        let failed = |e| ClientError::from_connect(&endpoint, &e);
        let tls = files
            .client_config(server_name)
            .map_err(ClientError::Credentials)?;
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(failed)?
            .tls_config(tls)
            .map_err(failed)?
            .connect()
            .await
            .map_err(failed)?;
        Ok(AgentClient {
            channel,
            endpoint: endpoint.into(),
        })
    }

    fn fail(&self, status: &tonic::Status) -> ClientError {
        ClientError::from_status(&self.endpoint, status)
    }

    /// The raw tonic clients, for callers that need gRPC details.
    pub fn vm_client(&self) -> VmClient<Channel> {
        VmClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub async fn health(&self) -> Result<proto::HealthCheckResponse> {
        let mut c = HealthClient::new(self.channel.clone());
        let req = proto::HealthCheckRequest::default();
        c.check(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }

    pub async fn status(&self) -> Result<proto::AgentStatus> {
        let mut c = StatusClient::new(self.channel.clone());
        let req = proto::GetStatusRequest {};
        c.get_status(req)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }

    /// A request over [`MAX_MESSAGE_BYTES`] is refused here: tonic would abort it mid-stream,
    /// which reads as an opaque HTTP/2 error rather than what it is.
    pub async fn put_vm(&self, req: proto::PutVmRequest) -> Result<proto::PutVmResponse> {
        let len = prost::Message::encoded_len(&req);
        if len > MAX_MESSAGE_BYTES {
            return Err(ClientError::Remote {
                code: format!("{:?}", tonic::Code::OutOfRange),
                message: format!(
                    "request of {len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"
                ),
            });
        }
        let r = self.vm_client().put_vm(req).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }

    pub async fn delete_vm(&self, uid: &str) -> Result<bool> {
        let req = proto::DeleteVmRequest {
            uid: uid.to_owned(),
        };
        let r = self.vm_client().delete_vm(req).await;
        r.map(|r| r.into_inner().existed).map_err(|s| self.fail(&s))
    }

    pub async fn get_vm(&self, uid: &str) -> Result<proto::VmStatus> {
        let req = proto::GetVmRequest {
            uid: uid.to_owned(),
        };
        let r = self.vm_client().get_vm(req).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }

    pub async fn list_vms(&self) -> Result<Vec<proto::VmStatus>> {
        let r = self.vm_client().list_vms(proto::ListVmsRequest {}).await;
        r.map(|r| r.into_inner().vms).map_err(|s| self.fail(&s))
    }

    /// Every VM's status, then every change.
    pub async fn watch(&self) -> Result<impl Stream<Item = Result<proto::VmStatus>> + use<>> {
        let r = self
            .vm_client()
            .watch_vm_status(proto::WatchVmStatusRequest {})
            .await;
        let stream = r.map_err(|s| self.fail(&s))?.into_inner();
        let endpoint = Arc::clone(&self.endpoint);
        Ok(stream.map(move |item| item.map_err(|s| ClientError::from_status(&endpoint, &s))))
    }

    pub async fn console(
        &self,
        uid: &str,
        offset: u64,
        follow: bool,
    ) -> Result<impl Stream<Item = Result<proto::ConsoleChunk>> + use<>> {
        let req = proto::StreamConsoleRequest {
            uid: uid.to_owned(),
            offset,
            follow,
        };
        let r = self.vm_client().stream_console(req).await;
        let stream = r.map_err(|s| self.fail(&s))?.into_inner();
        let endpoint = Arc::clone(&self.endpoint);
        Ok(stream.map(move |item| item.map_err(|s| ClientError::from_status(&endpoint, &s))))
    }

    pub async fn metrics(&self) -> Result<proto::MetricsSnapshot> {
        let mut c = MonitoringClient::new(self.channel.clone());
        let r = c.get_metrics(proto::GetMetricsRequest {}).await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }

    pub async fn resource_summary(&self) -> Result<proto::ResourceSummary> {
        let mut c = MonitoringClient::new(self.channel.clone());
        let r = c
            .get_resource_summary(proto::GetResourceSummaryRequest {})
            .await;
        r.map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }
}
