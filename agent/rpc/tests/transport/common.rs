//! A test service behind the transport, and loopback endpoints to serve and call it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{BufMut as _, Bytes, BytesMut};
use futures::{SinkExt as _, StreamExt as _};
use iroh::endpoint::Connection;
use iroh::protocol::Router;
use iroh::{Endpoint, EndpointAddr, EndpointId, SecretKey};
use quiver_rpc::{
    ALPN, Allowlist, BackoffPolicy, CallContext, ClientConfig, Code, Dispatch, EndpointOptions,
    Frame, FrameCodec, FrameType, Header, Priority, Reply, RpcClient, RpcError, RpcServer,
    ServerConfig,
};
use tokio::sync::Semaphore;
use tokio_util::codec::{FramedRead, FramedWrite};

pub const SERVICE: u16 = 1;
/// Unary: replies with its payload.
pub const ECHO: u16 = 1;
/// Unary, state-changing: counts a write, replies empty.
pub const WRITE: u16 = 2;
/// Unary: sleeps for the payload's milliseconds (u64 BE), then replies empty.
pub const SLEEP: u16 = 3;
/// Server stream: payload `n` (u32 BE) → messages 0..n, each a u32 BE.
pub const COUNT: u16 = 4;
/// Server stream: payload `chunks` and `size` (u32 BE each) → `chunks` messages of `size` bytes.
pub const BULK: u16 = 5;
/// Unary: fails with NOT_FOUND.
pub const MISSING: u16 = 6;
/// Unary: waits for a permit of [`TestService::gate`], then replies "done".
pub const GATED: u16 = 7;
/// Unary: fails with INTERNAL and a 100 KiB message.
pub const VERBOSE: u16 = 8;

/// What the test service saw.
#[derive(Debug)]
pub struct TestService {
    pub writes: AtomicU64,
    pub calls: AtomicU64,
    /// A state-changing call reached the service from 0-RTT data (must never happen).
    pub write_in_0rtt: AtomicBool,
    pub gate: Semaphore,
    pub gated_waiting: AtomicU64,
}

impl Default for TestService {
    fn default() -> Self {
        Self {
            writes: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            write_in_0rtt: AtomicBool::new(false),
            gate: Semaphore::new(0),
            gated_waiting: AtomicU64::new(0),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TestDispatch(pub Arc<TestService>);

fn u32_at(payload: &[u8], at: usize) -> Result<u32, RpcError> {
    payload
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_be_bytes)
        .ok_or_else(|| RpcError::new(Code::InvalidArgument, "payload too short"))
}

impl Dispatch for TestDispatch {
    async fn call(&self, service: u16, method: u16, payload: Bytes, context: CallContext) -> Reply {
        let state = &self.0;
        state.calls.fetch_add(1, Ordering::SeqCst);
        if service != SERVICE {
            return Reply::Unary(Err(RpcError::new(Code::Unimplemented, "no such service")));
        }
        match method {
            ECHO => Reply::Unary(Ok(payload)),
            WRITE => {
                if context.zero_rtt {
                    state.write_in_0rtt.store(true, Ordering::SeqCst);
                }
                state.writes.fetch_add(1, Ordering::SeqCst);
                Reply::Unary(Ok(Bytes::new()))
            }
            SLEEP => {
                let ms = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_be_bytes);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Reply::Unary(Ok(Bytes::new()))
            }
            COUNT => match u32_at(&payload, 0) {
                Ok(n) => Reply::Stream(Box::pin(futures::stream::iter(
                    (0..n).map(|i| Ok(Bytes::copy_from_slice(&i.to_be_bytes()))),
                ))),
                Err(e) => Reply::Unary(Err(e)),
            },
            BULK => match (u32_at(&payload, 0), u32_at(&payload, 4)) {
                (Ok(chunks), Ok(size)) => {
                    let chunk = Bytes::from(vec![0xab; size as usize]);
                    Reply::Stream(Box::pin(futures::stream::iter(
                        (0..chunks).map(move |_| Ok(chunk.clone())),
                    )))
                }
                (Err(e), _) | (_, Err(e)) => Reply::Unary(Err(e)),
            },
            MISSING => Reply::Unary(Err(RpcError::new(Code::NotFound, "no such thing"))),
            GATED => {
                state.gated_waiting.fetch_add(1, Ordering::SeqCst);
                match state.gate.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => {
                        return Reply::Unary(Err(RpcError::new(Code::Aborted, "gate closed")));
                    }
                }
                Reply::Unary(Ok(Bytes::from_static(b"done")))
            }
            VERBOSE => Reply::Unary(Err(RpcError::new(Code::Internal, "é".repeat(50 * 1024)))),
            _ => Reply::Unary(Err(RpcError::new(Code::Unimplemented, "no such method"))),
        }
    }

    fn changes_state(&self, service: u16, method: u16) -> bool {
        // Unknown methods count as state-changing: the safe default.
        !(service == SERVICE
            && matches!(
                method,
                ECHO | SLEEP | COUNT | BULK | MISSING | GATED | VERBOSE
            ))
    }
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

pub async fn endpoint(key: SecretKey, bind: SocketAddr, allowlist: Option<Allowlist>) -> Endpoint {
    let mut options = EndpointOptions::new(key).bind_addr(bind);
    if let Some(allowlist) = allowlist {
        options = options.allowlist(allowlist);
    }
    options.bind().await.expect("bind a loopback endpoint")
}

/// Binds `bind`, waiting for a previous endpoint on the same port to let go of it.
async fn rebind(key: SecretKey, bind: SocketAddr, allowlist: &Allowlist) -> Endpoint {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let options = EndpointOptions::new(key.clone())
            .bind_addr(bind)
            .allowlist(allowlist.clone());
        match options.bind().await {
            Ok(endpoint) => return endpoint,
            Err(_) if bind.port() != 0 && tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("bind {bind}: {error}"),
        }
    }
}

/// An endpoint's dialable address: its id and its loopback socket.
pub fn addr_of(endpoint: &Endpoint) -> EndpointAddr {
    let socket = endpoint
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .expect("an IPv4 socket");
    EndpointAddr::new(endpoint.id()).with_ip_addr(socket)
}

pub struct TestServer {
    pub router: Router,
    pub server: RpcServer<TestDispatch>,
    pub service: Arc<TestService>,
    pub allowlist: Allowlist,
    pub addr: EndpointAddr,
    pub key: SecretKey,
}

impl TestServer {
    pub async fn start(allowed: &[EndpointId], config: ServerConfig) -> Self {
        Self::start_at(SecretKey::generate(), loopback(), allowed, config).await
    }

    pub async fn start_at(
        key: SecretKey,
        bind: SocketAddr,
        allowed: &[EndpointId],
        config: ServerConfig,
    ) -> Self {
        let allowlist = Allowlist::new(allowed.iter().copied());
        let endpoint = rebind(key.clone(), bind, &allowlist).await;
        let service = Arc::new(TestService::default());
        let server = RpcServer::new(TestDispatch(Arc::clone(&service)), config);
        let addr = addr_of(&endpoint);
        let router = Router::builder(endpoint)
            .accept(ALPN, server.clone())
            .spawn();
        Self {
            router,
            server,
            service,
            allowlist,
            addr,
            key,
        }
    }
}

/// A client on its own loopback endpoint, with a short backoff so tests redial quickly.
pub async fn client() -> RpcClient {
    let endpoint = endpoint(SecretKey::generate(), loopback(), None).await;
    RpcClient::new(
        endpoint,
        ClientConfig {
            backoff: BackoffPolicy {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
            },
            ..ClientConfig::default()
        },
    )
}

/// A server and an allowed client.
pub async fn pair(config: ServerConfig) -> (TestServer, RpcClient) {
    let client = client().await;
    let server = TestServer::start(&[client.endpoint().id()], config).await;
    (server, client)
}

/// A bare `quiver/rpc/1` connection from `client`'s endpoint to `server`, for tests that write
/// frames (or garbage) themselves.
pub async fn raw_connection(client: &RpcClient, server: &TestServer) -> Connection {
    client
        .endpoint()
        .connect(server.addr.clone(), ALPN)
        .await
        .expect("connect")
}

pub fn request(method: u16, request_id: u64, deadline_ms: u32, payload: impl Into<Bytes>) -> Frame {
    Frame::new(
        Header {
            frame_type: FrameType::Request,
            priority: Priority::Normal,
            service: SERVICE,
            method,
            request_id,
            deadline_ms,
        },
        payload,
    )
}

pub fn millis(ms: u64) -> Bytes {
    Bytes::copy_from_slice(&ms.to_be_bytes())
}

pub fn pair_of_u32(a: u32, b: u32) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u32(a);
    out.put_u32(b);
    out.freeze()
}

/// Sends `frames` on one new stream of `conn`, finishes it, and collects every reply frame
/// (stopping at the first error, which is returned as text).
pub async fn exchange(conn: &Connection, frames: Vec<Frame>) -> (Vec<Frame>, Option<String>) {
    let (send, recv) = conn.open_bi().await.expect("open a stream");
    let mut out = FramedWrite::new(send, FrameCodec::default());
    for frame in frames {
        out.send(frame).await.expect("send a frame");
    }
    out.into_inner().finish().expect("finish");
    read_all(recv).await
}

pub async fn read_all(recv: iroh::endpoint::RecvStream) -> (Vec<Frame>, Option<String>) {
    let mut replies = Vec::new();
    let mut frames = FramedRead::new(recv, FrameCodec::default());
    while let Some(item) = frames.next().await {
        match item {
            Ok(frame) => replies.push(frame),
            Err(error) => return (replies, Some(error.to_string())),
        }
    }
    (replies, None)
}

pub fn rpc_error(frame: &Frame) -> RpcError {
    assert_eq!(frame.header.frame_type, FrameType::Error, "{frame}");
    RpcError::decode(&frame.payload).expect("an RpcError payload")
}

/// Polls `condition` until it holds, failing after a generous time.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
