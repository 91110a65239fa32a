//! An agent's methods over gRPC: one tonic channel, calls addressed by [`Method::grpc_path`]
//! with the strict codec (so the generated clients are not needed).

use futures::StreamExt as _;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::MessageStream;
use crate::error::{ClientError, ClientResult as Result};
use crate::grpc::MAX_MESSAGE_BYTES;
use crate::grpc::codec::StrictCodec;
use crate::grpc::errors::{from_connect, from_status};
use crate::methods::Method;
use crate::pki::TlsFiles;

/// A gRPC channel to one agent.
#[derive(Clone, Debug)]
pub struct GrpcRoute {
    channel: Channel,
    /// Named in errors, so that a caller talking to many agents can tell which failed.
    endpoint: String,
}

impl GrpcRoute {
    /// Connects to `endpoint` (`http://host:port`, or `https://` with `tls`: this client's
    /// certificate and the CA, and the name the agent's certificate must carry). With `lazy`,
    /// nothing is dialed until the first call.
    ///
    /// # Errors
    /// A malformed endpoint, unreadable credentials, or (unless `lazy`) a failed connect.
    pub async fn connect(
        endpoint: impl Into<String>,
        tls: Option<(&TlsFiles, &str)>,
        lazy: bool,
    ) -> Result<Self> {
        let endpoint = endpoint.into();
        let failed = |e| from_connect(&endpoint, &e);
        let mut builder = Endpoint::from_shared(endpoint.clone()).map_err(failed)?;
        if let Some((files, server_name)) = tls {
            let config = files
                .client_config(server_name)
                .map_err(ClientError::Credentials)?;
            builder = builder.tls_config(config).map_err(failed)?;
        }
        let channel = if lazy {
            builder.connect_lazy()
        } else {
            builder.connect().await.map_err(failed)?
        };
        Ok(Self { channel, endpoint })
    }

    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The channel, for callers that need the generated clients (tests).
    #[must_use]
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn fail(&self, status: &tonic::Status) -> ClientError {
        from_status(&self.endpoint, status)
    }

    /// A ready client for one call. A request over [`MAX_MESSAGE_BYTES`] is refused before it
    /// is sent: tonic would abort it mid-stream, which reads as an opaque HTTP/2 error.
    async fn grpc(
        &self,
        method: Method,
        request_len: usize,
    ) -> Result<(tonic::client::Grpc<Channel>, PathAndQuery)> {
        if request_len > MAX_MESSAGE_BYTES {
            return Err(ClientError::InvalidRequest(format!(
                "{method}: request of {request_len} bytes is over the {MAX_MESSAGE_BYTES}-byte limit"
            )));
        }
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready().await.map_err(|e| ClientError::Unreachable {
            peer: self.endpoint.clone(),
            source: e.to_string().into(),
        })?;
        let path = PathAndQuery::try_from(method.grpc_path())
            .map_err(|e| ClientError::InvalidRequest(format!("{method}: not a gRPC path: {e}")))?;
        Ok((grpc, path))
    }

    pub(super) async fn unary<Req, Resp>(&self, method: Method, req: Req) -> Result<Resp>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let (mut grpc, path) = self.grpc(method, req.encoded_len()).await?;
        let codec = StrictCodec::<Req, Resp>::default();
        grpc.unary(traced(req), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.fail(&s))
    }

    pub(super) async fn server_stream<Req, Resp>(
        &self,
        method: Method,
        req: Req,
    ) -> Result<MessageStream<Resp>>
    where
        Req: prost::Message + Send + 'static,
        Resp: prost::Message + Default + Send + 'static,
    {
        let (mut grpc, path) = self.grpc(method, req.encoded_len()).await?;
        let codec = StrictCodec::<Req, Resp>::default();
        let stream = grpc
            .server_streaming(traced(req), path, codec)
            .await
            .map_err(|s| self.fail(&s))?
            .into_inner();
        let endpoint = self.endpoint.clone();
        Ok(Box::pin(stream.map(move |item| {
            item.map_err(|s| from_status(&endpoint, &s))
        })))
    }
}

/// A request carrying the running task's trace id.
fn traced<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    crate::trace::to_grpc(&mut request);
    request
}
