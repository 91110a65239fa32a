//! The Iroh side: `quiver/rpc/1` (RpcServer + RpcClient) and a raw bi-stream echo, the floor
//! that any protocol on one QUIC stream per request pays.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use iroh::endpoint::Connection;
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use quiver_rpc::{
    ALPN, Allowlist, CallContext, ClientConfig, Code, Dispatch, EndpointOptions, Priority, Reply,
    RpcClient, RpcError, RpcServer, ServerConfig,
};

use crate::load::Echo;

pub const SERVICE: u16 = 1;
/// Unary: replies with its payload.
pub const ECHO: u16 = 1;
/// Server stream: payload `chunks`, `size` (u32 BE each) → `chunks` messages of `size` bytes.
pub const BULK: u16 = 2;

/// The raw baseline's protocol: a request starts with a kind byte. `ECHO_TAG`, a u32 BE length
/// and that many bytes: the server sends the bytes back as soon as it has them (the client knows
/// how many to read, so neither side waits for the other's end of stream, just as a
/// `quiver/rpc/1` call needs only its frames). `BULK_TAG` and a u64 BE count: that many bytes
/// back, then the end of the stream.
pub const RAW_ALPN: &[u8] = b"quiver-bench/raw-echo/1";
const ECHO_TAG: u8 = 0xec;
const BULK_TAG: u8 = 0xb0;
/// Largest raw echo request served.
const RAW_MAX: u32 = 1 << 20;

#[derive(Clone, Debug)]
pub struct BenchDispatch;

impl Dispatch for BenchDispatch {
    async fn call(&self, service: u16, method: u16, mut payload: Bytes, _: CallContext) -> Reply {
        match (service, method) {
            (SERVICE, ECHO) => Reply::Unary(Ok(payload)),
            (SERVICE, BULK) if payload.len() == 8 => {
                let (chunks, size) = (payload.get_u32(), payload.get_u32());
                let chunk = Bytes::from(vec![0xab; size as usize]);
                Reply::Stream(Box::pin(futures::stream::iter(
                    (0..chunks).map(move |_| Ok(chunk.clone())),
                )))
            }
            _ => Reply::Unary(Err(RpcError::new(Code::Unimplemented, "no such method"))),
        }
    }

    fn changes_state(&self, _: u16, _: u16) -> bool {
        false
    }
}

/// The raw echo: read a request, answer, finish.
#[derive(Clone, Debug)]
pub struct RawEcho;

impl ProtocolHandler for RawEcho {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut kind = [0u8; 1];
                if recv.read_exact(&mut kind).await.is_err() {
                    return;
                }
                match kind[0] {
                    ECHO_TAG => {
                        let mut len = [0u8; 4];
                        if recv.read_exact(&mut len).await.is_err() {
                            return;
                        }
                        let len = u32::from_be_bytes(len);
                        if len > RAW_MAX {
                            return;
                        }
                        let mut request = vec![0u8; len as usize];
                        if recv.read_exact(&mut request).await.is_err()
                            || send.write_all(&request).await.is_err()
                        {
                            return;
                        }
                    }
                    BULK_TAG => {
                        let mut total = [0u8; 8];
                        if recv.read_exact(&mut total).await.is_err() {
                            return;
                        }
                        let total = u64::from_be_bytes(total);
                        let chunk = Bytes::from(vec![0xab; 256 * 1024]);
                        let mut sent = 0u64;
                        while sent < total {
                            let n = (total - sent).min(chunk.len() as u64);
                            if send.write_chunk(chunk.slice(..n as usize)).await.is_err() {
                                return;
                            }
                            sent += n;
                        }
                    }
                    _ => return,
                }
                let _ = send.finish();
            });
        }
        Ok(())
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// An endpoint's dialable address: its id and its IPv4 loopback socket.
pub fn addr_of(endpoint: &Endpoint) -> anyhow::Result<EndpointAddr> {
    let socket = endpoint
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow::anyhow!("the endpoint has no IPv4 socket"))?;
    Ok(EndpointAddr::new(endpoint.id()).with_ip_addr(socket))
}

/// A server endpoint serving both `quiver/rpc/1` and the raw echo.
pub struct Server {
    pub router: Router,
    pub addr: EndpointAddr,
    pub key: SecretKey,
    /// Shared with the endpoint's handshake hook: ids inserted later are let in.
    pub allowlist: Allowlist,
}

impl Server {
    pub async fn start(allowed: &[EndpointId], priorities: bool) -> anyhow::Result<Self> {
        Self::start_at(SecretKey::generate(), loopback(), allowed, priorities).await
    }

    /// Binds `bind`, waiting (up to 30 s) for a previous server on that port to let go of it.
    pub async fn start_at(
        key: SecretKey,
        bind: SocketAddr,
        allowed: &[EndpointId],
        priorities: bool,
    ) -> anyhow::Result<Self> {
        let allowlist = Allowlist::new(allowed.iter().copied());
        let give_up = Instant::now() + Duration::from_secs(30);
        let endpoint = loop {
            let options = EndpointOptions::new(key.clone())
                .bind_addr(bind)
                .allowlist(allowlist.clone());
            match options.bind().await {
                Ok(endpoint) => break endpoint,
                Err(_) if bind.port() != 0 && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let server = RpcServer::new(
            BenchDispatch,
            ServerConfig {
                priorities,
                ..ServerConfig::default()
            },
        );
        let addr = addr_of(&endpoint)?;
        let router = Router::builder(endpoint)
            .accept(ALPN, server)
            .accept(RAW_ALPN, RawEcho)
            .accept(crate::over_irpc::ALPN, crate::over_irpc::IrpcEchoServer)
            .spawn();
        Ok(Self {
            router,
            addr,
            key,
            allowlist,
        })
    }
}

/// A [`Server`] on a runtime of its own, as a server in another process would be: its tasks
/// do not queue behind the client's in one scheduler (the OS still shares the cores).
pub struct RemoteServer {
    runtime: Option<tokio::runtime::Runtime>,
    pub server: Server,
}

impl RemoteServer {
    pub async fn start(allowed: &[EndpointId], priorities: bool) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let allowed = allowed.to_vec();
        let server = runtime
            .spawn(async move { Server::start(&allowed, priorities).await })
            .await??;
        Ok(Self {
            runtime: Some(runtime),
            server,
        })
    }

    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let router = self.server.router.clone();
        if let Some(runtime) = self.runtime.take() {
            runtime
                .spawn(async move { router.shutdown().await })
                .await??;
            runtime.shutdown_background();
        }
        Ok(())
    }
}

impl Drop for RemoteServer {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub async fn client_endpoint() -> anyhow::Result<Endpoint> {
    Ok(EndpointOptions::new(SecretKey::generate())
        .bind_addr(loopback())
        .bind()
        .await?)
}

pub fn rpc_client(endpoint: Endpoint, priorities: bool) -> RpcClient {
    RpcClient::new(
        endpoint,
        ClientConfig {
            priorities,
            ..ClientConfig::default()
        },
    )
}

/// (a) `quiver/rpc/1` unary echo.
pub struct RpcEcho {
    pub client: RpcClient,
    pub peer: EndpointAddr,
}

impl Echo for RpcEcho {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        Ok(self
            .client
            .unary(
                &self.peer,
                SERVICE,
                ECHO,
                payload,
                Priority::Normal,
                // No deadline, like the baselines' calls: a deadline adds a timer on each side.
                None,
            )
            .await?)
    }
}

/// (d) raw echo: one bi-stream per request on one connection.
pub struct RawEchoClient {
    pub conn: Connection,
}

impl Echo for RawEchoClient {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        let (mut send, mut recv) = self.conn.open_bi().await?;
        let mut request = BytesMut::with_capacity(5 + payload.len());
        request.put_u8(ECHO_TAG);
        request.put_u32(u32::try_from(payload.len())?);
        request.put_slice(&payload);
        send.write_all(&request).await?;
        send.finish()?;
        let mut reply = vec![0u8; payload.len()];
        recv.read_exact(&mut reply).await?;
        Ok(Bytes::from(reply))
    }
}

pub fn bulk_request(chunks: u32, size: u32) -> Bytes {
    let mut out = BytesMut::with_capacity(8);
    out.put_u32(chunks);
    out.put_u32(size);
    out.freeze()
}

/// (a) bulk: a server stream of `chunks` × `size` bytes; returns the bytes received and the time.
pub async fn rpc_bulk(
    client: &RpcClient,
    peer: &EndpointAddr,
    chunks: u32,
    size: u32,
    priority: Priority,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut stream = client
        .server_stream(
            peer,
            SERVICE,
            BULK,
            bulk_request(chunks, size),
            priority,
            Some(Duration::from_secs(600)),
        )
        .await?;
    let mut received = 0u64;
    while let Some(message) = stream.message().await? {
        received += message.len() as u64;
    }
    Ok((received, started.elapsed()))
}

/// (d) bulk: `total` bytes on one raw stream.
pub async fn raw_bulk(conn: &Connection, total: u64) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await?;
    let mut request = vec![BULK_TAG];
    request.extend_from_slice(&total.to_be_bytes());
    send.write_all(&request).await?;
    send.finish()?;
    let mut received = 0u64;
    while let Some(chunk) = recv.read_chunk(1 << 20).await? {
        received += chunk.len() as u64;
    }
    Ok((received, started.elapsed()))
}
