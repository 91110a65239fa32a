//! An agent's methods over Iroh (`quiver/rpc/1`): protobuf payloads in frames addressed by
//! [`Method`]'s ids, over the [`RpcClient`]'s shared connection to the agent.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use iroh::EndpointAddr;

use super::MessageStream;
use crate::client::RpcClient;
use crate::error::{ClientError, ClientResult as Result};
use crate::frame::Priority;
use crate::methods::Method;

/// One agent reached through an [`RpcClient`].
#[derive(Clone, Debug)]
pub struct IrohRoute {
    client: RpcClient,
    addr: EndpointAddr,
}

impl IrohRoute {
    /// Calls to the agent at `addr` (its endpoint id and direct addresses) through `client`.
    #[must_use]
    pub fn new(client: RpcClient, addr: EndpointAddr) -> Self {
        Self { client, addr }
    }

    #[must_use]
    pub fn addr(&self) -> &EndpointAddr {
        &self.addr
    }

    #[must_use]
    pub fn client(&self) -> &RpcClient {
        &self.client
    }

    pub(super) async fn unary<Req, Resp>(
        &self,
        method: Method,
        req: &Req,
        deadline: Option<Duration>,
    ) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let reply = self
            .client
            .unary(
                &self.addr,
                method.service().id(),
                method.id(),
                traced(req),
                Priority::Normal,
                deadline,
            )
            .await?;
        decode(&self.addr, method, &reply)
    }

    /// A call whose payload is already encoded, sent at `priority` (the Raft service).
    pub(super) async fn raw(
        &self,
        method: Method,
        payload: Bytes,
        priority: Priority,
        deadline: Option<Duration>,
    ) -> Result<Bytes> {
        self.client
            .unary(
                &self.addr,
                method.service().id(),
                method.id(),
                payload,
                priority,
                deadline,
            )
            .await
    }

    pub(super) async fn server_stream<Req, Resp>(
        &self,
        method: Method,
        req: &Req,
        deadline: Option<Duration>,
    ) -> Result<MessageStream<Resp>>
    where
        Req: prost::Message,
        Resp: prost::Message + Default + Send + 'static,
    {
        let stream = self
            .client
            .server_stream(
                &self.addr,
                method.service().id(),
                method.id(),
                traced(req),
                Priority::Normal,
                deadline,
            )
            .await?;
        let addr = self.addr.clone();
        Ok(Box::pin(stream.into_stream().map(move |item| {
            item.and_then(|message| decode(&addr, method, &message))
        })))
    }
}

/// A reply that is not the method's message is the agent's protocol violation.
fn decode<Resp: prost::Message + Default>(
    addr: &EndpointAddr,
    method: Method,
    payload: &[u8],
) -> Result<Resp> {
    Resp::decode(payload).map_err(|e| ClientError::Protocol {
        peer: addr.id.to_string(),
        detail: format!("{method} reply: {e}"),
    })
}

/// The request message, carrying the running task's trace id (see [`crate::trace`]).
fn traced(req: &impl prost::Message) -> Bytes {
    let mut message = req.encode_to_vec();
    crate::trace::to_message(&mut message);
    Bytes::from(message)
}
