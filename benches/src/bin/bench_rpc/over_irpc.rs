//! (c) `irpc-iroh` 0.17: n0's RPC library on the same kind of Iroh endpoint, one echo request.
//! Its requests and replies are postcard-encoded serde types; each call opens a bi-stream.

use bytes::Bytes;
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler};
use irpc::{Client, WithChannels, channel::oneshot, rpc_requests};
use serde::{Deserialize, Serialize};

use crate::load::Echo;

pub const ALPN: &[u8] = b"quiver-bench/irpc-echo/1";

#[derive(Debug, Serialize, Deserialize)]
pub struct EchoRequest(Vec<u8>);

#[rpc_requests(message = EchoMessage)]
#[derive(Debug, Serialize, Deserialize)]
pub enum EchoProtocol {
    #[rpc(tx = oneshot::Sender<Vec<u8>>)]
    Echo(EchoRequest),
}

/// The server: every request is answered in its own task, as `quiver/rpc/1` does.
#[derive(Clone, Debug)]
pub struct IrpcEchoServer;

impl ProtocolHandler for IrpcEchoServer {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Some(message) = irpc_iroh::read_request::<EchoProtocol>(&conn).await? {
            tokio::spawn(async move {
                let EchoMessage::Echo(WithChannels { tx, inner, .. }) = message;
                tx.send(inner.0).await.ok();
            });
        }
        conn.closed().await;
        Ok(())
    }
}

/// A client over one connection.
pub struct IrpcEcho {
    client: Client<EchoProtocol>,
}

impl IrpcEcho {
    pub fn new(conn: Connection) -> Self {
        Self {
            client: Client::boxed(irpc_iroh::IrohRemoteConnection::new(conn)),
        }
    }
}

impl Echo for IrpcEcho {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        let reply = self.client.rpc(EchoRequest(payload.to_vec())).await?;
        Ok(Bytes::from(reply))
    }
}
