//! `bench-tonic-iroh`: bench-rpc's (f) baseline, tonic over `tonic-iroh-transport` 0.9 (iroh
//! 0.98), and (f0) the raw bi-stream echo on the same iroh, so that the version of iroh can be
//! told apart from the transport.
//!
//! A separate crate with its own lockfile: iroh 0.98 and the workspace's iroh 1.x cannot share
//! one. `bench-rpc` runs this binary as a child process and drives it over stdin and stdout, one
//! line per run, so that (f) and (f0) take their turns in bench-rpc's interleaved rounds:
//!
//! ```text
//! → ready
//! ← <f|f0> <in flight> <calls> <warm-up calls> <request bytes>
//! → <elapsed ns> <latency ns> <latency ns> ...
//! ```
//!
//! Both servers and both clients live in this process, on loopback, like bench-rpc's own
//! transports; each client keeps one connection for the whole run.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use iroh::endpoint::{Connection, presets};
use iroh::protocol::{AcceptError, ProtocolHandler, Router};
use iroh::{Endpoint, EndpointAddr, RelayMode};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tonic_iroh_transport::{IrohChannel, IrohConnect as _, TransportBuilder};

mod proto {
    tonic::include_proto!("bench.v1");
}

use proto::Blob;
use proto::echo_client::EchoClient;
use proto::echo_server::EchoServer;

/// The raw echo's ALPN; the request is a 4-byte length and the bytes, the reply the bytes.
const RAW_ALPN: &[u8] = b"quiver-bench/raw-echo-0.98/1";
/// The raw echo's largest request.
const RAW_MAX: u32 = 1 << 20;

#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl proto::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: tonic::Request<Blob>,
    ) -> Result<tonic::Response<Blob>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

/// The raw echo: on each bi-stream, read a request, answer, finish.
#[derive(Clone, Debug)]
struct RawEcho;

impl ProtocolHandler for RawEcho {
    async fn accept(&self, conn: Connection) -> Result<(), AcceptError> {
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if recv.read_exact(&mut len).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes(len);
                if len > RAW_MAX {
                    return;
                }
                let mut request = vec![0u8; len as usize];
                if recv.read_exact(&mut request).await.is_ok()
                    && send.write_all(&request).await.is_ok()
                {
                    let _ = send.finish();
                }
            });
        }
        Ok(())
    }
}

/// An offline endpoint on loopback: no relay, no address lookup.
async fn endpoint() -> anyhow::Result<Endpoint> {
    Ok(Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .bind_addr(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?
        .bind()
        .await?)
}

fn addr_of(endpoint: &Endpoint) -> anyhow::Result<EndpointAddr> {
    let socket = endpoint
        .bound_sockets()
        .into_iter()
        .find(SocketAddr::is_ipv4)
        .context("the endpoint has no IPv4 socket")?;
    Ok(EndpointAddr::new(endpoint.id()).with_ip_addr(socket))
}

/// One transport's unary echo call.
trait Echo: Send + Sync + 'static {
    fn echo(&self, payload: Bytes) -> impl Future<Output = anyhow::Result<Bytes>> + Send;
}

/// (f) tonic's generated client on one `tonic-iroh-transport` channel.
struct TonicIroh(EchoClient<IrohChannel>);

impl Echo for TonicIroh {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        // As bench-rpc's (b): the generated message holds a `Vec<u8>`.
        let data = payload.to_vec();
        let reply = self.0.clone().echo(Blob { data }).await?;
        Ok(Bytes::from(reply.into_inner().data))
    }
}

/// (f0) the raw echo: one bi-stream per call on one connection.
struct RawClient(Connection);

impl Echo for RawClient {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        let (mut send, mut recv) = self.0.open_bi().await?;
        let mut request = Vec::with_capacity(4 + payload.len());
        request.extend_from_slice(&u32::try_from(payload.len())?.to_be_bytes());
        request.extend_from_slice(&payload);
        send.write_all(&request).await?;
        send.finish()?;
        let mut reply = vec![0u8; payload.len()];
        recv.read_exact(&mut reply).await?;
        Ok(Bytes::from(reply))
    }
}

/// `calls` echo calls, `in_flight` at a time (each of `in_flight` tasks calls in a loop), after
/// `warmup` uncounted ones; every reply checked. Returns the elapsed time and every latency, in
/// nanoseconds: bench-rpc's harness, call for call.
async fn run<E: Echo>(
    echo: &Arc<E>,
    payload: Bytes,
    in_flight: usize,
    calls: usize,
    warmup: usize,
) -> anyhow::Result<(u128, Vec<u128>)> {
    for _ in 0..warmup {
        check(&payload, &echo.echo(payload.clone()).await?)?;
    }
    let per_task = calls.div_ceil(in_flight);
    let started = Instant::now();
    let tasks: Vec<_> = (0..in_flight)
        .map(|_| {
            let echo = Arc::clone(echo);
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    let sent = Instant::now();
                    let reply = echo.echo(payload.clone()).await?;
                    latencies.push(sent.elapsed().as_nanos());
                    check(&payload, &reply)?;
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(per_task * in_flight);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((started.elapsed().as_nanos(), latencies))
}

fn check(sent: &Bytes, reply: &Bytes) -> anyhow::Result<()> {
    anyhow::ensure!(
        sent == reply,
        "echo returned {} bytes that differ from the {} sent",
        reply.len(),
        sent.len()
    );
    Ok(())
}

/// One line of the parent: which transport, in flight, calls, warm-up calls, request bytes.
struct Order {
    transport: String,
    in_flight: usize,
    calls: usize,
    warmup: usize,
    request_bytes: usize,
}

impl Order {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [transport, in_flight, calls, warmup, request_bytes] = fields[..] else {
            anyhow::bail!("expected `<f|f0> <in flight> <calls> <warm-up> <bytes>`, got {line:?}");
        };
        Ok(Self {
            transport: transport.to_owned(),
            in_flight: in_flight.parse().context("in flight")?,
            calls: calls.parse().context("calls")?,
            warmup: warmup.parse().context("warm-up")?,
            request_bytes: request_bytes.parse().context("request bytes")?,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let tonic_server = TransportBuilder::new(endpoint().await?)
        .add_rpc(EchoServer::new(EchoService))
        .spawn()
        .await?;
    let raw_server = Router::builder(endpoint().await?)
        .accept(RAW_ALPN, RawEcho)
        .spawn();
    let client = endpoint().await?;
    let channel =
        EchoServer::<EchoService>::connect(&client, addr_of(tonic_server.endpoint())?).await?;
    let tonic_iroh = Arc::new(TonicIroh(EchoClient::new(channel)));
    let raw = Arc::new(RawClient(
        client
            .connect(addr_of(raw_server.endpoint())?, RAW_ALPN)
            .await?,
    ));

    let mut out = tokio::io::stdout();
    out.write_all(b"ready\n").await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let order = Order::parse(&line)?;
        let payload = Bytes::from(vec![0x42; order.request_bytes]);
        let (elapsed, latencies) = match order.transport.as_str() {
            "f" => {
                run(
                    &tonic_iroh,
                    payload,
                    order.in_flight,
                    order.calls,
                    order.warmup,
                )
                .await
            }
            "f0" => run(&raw, payload, order.in_flight, order.calls, order.warmup).await,
            other => anyhow::bail!("unknown transport {other:?}: f or f0"),
        }?;
        let mut reply = elapsed.to_string();
        for latency in latencies {
            reply.push(' ');
            reply.push_str(&latency.to_string());
        }
        reply.push('\n');
        out.write_all(reply.as_bytes()).await?;
        out.flush().await?;
    }
    drop((tonic_iroh, raw));
    client.close().await;
    raw_server.shutdown().await?;
    tonic_server.shutdown().await?;
    Ok(())
}
