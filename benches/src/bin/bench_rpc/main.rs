//! `bench-rpc`: the `quiver/rpc/1` transport against its baselines, in one run.
//!
//! Measures frame + protobuf codec times, unary round trips at 1/16/64 calls in flight over
//! this protocol on Iroh, tonic with mutual TLS, a raw Iroh bi-stream echo and raw TCP, bulk
//! throughput, connect and reconnect times, and heartbeat latency under bulk load with QUIC
//! priorities on and off. Rewrites the `rpc` section of `docs/benchmarks.md`; `--smoke` runs
//! every part at a tiny size and writes nothing (it keeps the harness from rotting in CI).

mod codec;
mod grpc;
mod load;
mod over_iroh;
mod over_irpc;
mod priority;
mod report;
mod tcp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_benches::{Samples, docs_path, write_section};
use quiver_rpc::Priority;

use crate::load::{Echo, LoadResult};
use crate::over_iroh::{
    RAW_ALPN, RawEchoClient, RpcEcho, Server, client_endpoint, raw_bulk, rpc_bulk, rpc_client,
};

/// How much of everything to run.
#[derive(Clone, Copy, Debug)]
pub struct Sizes {
    pub codec_batches: usize,
    pub codec_batch_time: Duration,
    /// Calls per in-flight level: 1, 16 and 64 in flight.
    pub calls: [usize; 3],
    pub warmup: usize,
    pub bulk_bytes: u64,
    pub bulk_runs: usize,
    pub connects: usize,
    pub reconnects: usize,
    pub idle_heartbeats: usize,
}

const FULL: Sizes = Sizes {
    codec_batches: 31,
    codec_batch_time: Duration::from_millis(5),
    calls: [5_000, 20_000, 40_000],
    warmup: 500,
    bulk_bytes: 256 << 20,
    bulk_runs: 3,
    connects: 20,
    reconnects: 5,
    idle_heartbeats: 500,
};

const SMOKE: Sizes = Sizes {
    codec_batches: 2,
    codec_batch_time: Duration::from_millis(1),
    calls: [20, 64, 128],
    warmup: 2,
    bulk_bytes: 4 << 20,
    bulk_runs: 1,
    connects: 2,
    reconnects: 1,
    idle_heartbeats: 5,
};

pub const IN_FLIGHT: [usize; 3] = [1, 16, 64];
pub const REQUEST_BYTES: usize = 64;
const CHUNK: u32 = 256 * 1024;

/// Unary results of one transport, one per in-flight level.
pub struct Unary {
    pub name: &'static str,
    pub levels: Vec<LoadResult>,
}

async fn unary<E: Echo>(name: &'static str, echo: Arc<E>, sizes: Sizes) -> anyhow::Result<Unary> {
    let payload = Bytes::from(vec![0x42; REQUEST_BYTES]);
    let mut levels = Vec::new();
    for (in_flight, calls) in IN_FLIGHT.into_iter().zip(sizes.calls) {
        let result = load::run(
            Arc::clone(&echo),
            payload.clone(),
            in_flight,
            calls,
            sizes.warmup,
        )
        .await
        .map_err(|e| e.context(format!("{name}, {in_flight} in flight")))?;
        println!(
            "{name}, {in_flight} in flight: {:.0} calls/s",
            result.per_second
        );
        levels.push(result);
    }
    Ok(Unary { name, levels })
}

/// Connect: a fresh client endpoint's first call (dial, handshake, call) for (a), and a bare
/// QUIC connect for (d). Reconnect: from the restarted server's bind to the first answered call.
pub struct Connects {
    pub rpc_first_call: Samples,
    pub raw_connect: Samples,
    pub reconnect: Samples,
}

async fn connects(sizes: Sizes) -> anyhow::Result<Connects> {
    let server = Server::start(&[], true).await?;
    let (mut rpc_first_call, mut raw_connect) = (Samples::default(), Samples::default());
    for _ in 0..sizes.connects {
        let endpoint = client_endpoint().await?;
        server.allowlist.insert(endpoint.id());
        let client = rpc_client(endpoint, true);
        let started = Instant::now();
        RpcEcho {
            client: client.clone(),
            peer: server.addr.clone(),
        }
        .echo(Bytes::from_static(b"hi"))
        .await?;
        rpc_first_call.push(started.elapsed());
        client.endpoint().close().await;

        let endpoint = client_endpoint().await?;
        server.allowlist.insert(endpoint.id());
        let started = Instant::now();
        let conn = endpoint.connect(server.addr.clone(), RAW_ALPN).await?;
        raw_connect.push(started.elapsed());
        drop(conn);
        endpoint.close().await;
    }
    server.router.shutdown().await?;

    let mut reconnect = Samples::default();
    let client = rpc_client(client_endpoint().await?, true);
    let allowed = [client.endpoint().id()];
    let mut server = Server::start(&allowed, true).await?;
    let echo = |peer| RpcEcho {
        client: client.clone(),
        peer,
    };
    echo(server.addr.clone())
        .echo(Bytes::from_static(b"hi"))
        .await?;
    for _ in 0..sizes.reconnects {
        let socket = *server
            .addr
            .ip_addrs()
            .next()
            .ok_or_else(|| anyhow::anyhow!("the server has no direct address"))?;
        let key = server.key.clone();
        server.router.shutdown().await?;
        drop(server);
        server = Server::start_at(key, socket, &allowed, true).await?;
        let started = Instant::now();
        let give_up = started + Duration::from_secs(60);
        loop {
            match echo(server.addr.clone())
                .echo(Bytes::from_static(b"hi"))
                .await
            {
                Ok(_) => break,
                Err(_) if Instant::now() < give_up => {
                    // The client backs off after a failed dial; poll until it redials.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(error) => return Err(error.context("no answer after the restart")),
            }
        }
        reconnect.push(started.elapsed());
    }
    server.router.shutdown().await?;
    Ok(Connects {
        rpc_first_call,
        raw_connect,
        reconnect,
    })
}

/// Bulk throughput in bytes per second, the median of the runs: (a) then (d).
async fn bulk(sizes: Sizes) -> anyhow::Result<(f64, f64)> {
    let client = rpc_client(client_endpoint().await?, true);
    let server = Server::start(&[client.endpoint().id()], true).await?;
    let conn = client
        .endpoint()
        .connect(server.addr.clone(), RAW_ALPN)
        .await?;
    let chunks = u32::try_from(sizes.bulk_bytes / u64::from(CHUNK))?;
    let (mut rpc, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..sizes.bulk_runs {
        let (bytes, took) =
            rpc_bulk(&client, &server.addr, chunks, CHUNK, Priority::Normal).await?;
        anyhow::ensure!(
            bytes == sizes.bulk_bytes,
            "(a) bulk delivered {bytes} bytes"
        );
        rpc.push(bytes as f64 / took.as_secs_f64());
        let (bytes, took) = raw_bulk(&conn, sizes.bulk_bytes).await?;
        anyhow::ensure!(
            bytes == sizes.bulk_bytes,
            "(d) bulk delivered {bytes} bytes"
        );
        raw.push(bytes as f64 / took.as_secs_f64());
    }
    server.router.shutdown().await?;
    Ok((median(&mut rpc), median(&mut raw)))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let smoke = std::env::args().any(|a| a == "--smoke");
    let write = !smoke && !std::env::args().any(|a| a == "--no-write");
    let sizes = if smoke { SMOKE } else { FULL };
    let load_before = report::load_average();

    let mut codec_rows = Vec::new();
    for case in codec::cases() {
        let timing = codec::time(&case, sizes.codec_batches, sizes.codec_batch_time)?;
        println!(
            "codec {}: ser {:?} de {:?}",
            case.name, timing.ser, timing.de
        );
        codec_rows.push((case, timing));
    }

    let client_endpoint = client_endpoint().await?;
    let server = Server::start(&[client_endpoint.id()], true).await?;
    let raw_conn = client_endpoint
        .connect(server.addr.clone(), RAW_ALPN)
        .await?;
    let irpc_conn = client_endpoint
        .connect(server.addr.clone(), over_irpc::ALPN)
        .await?;
    let rpc = Arc::new(RpcEcho {
        client: rpc_client(client_endpoint, true),
        peer: server.addr.clone(),
    });
    let mut unaries = vec![unary("(a) quiver/rpc/1 over Iroh", rpc, sizes).await?];
    let grpc = Arc::new(grpc::Grpc::start().await?);
    unaries.push(unary("(b) tonic, TCP + mTLS", grpc, sizes).await?);
    let irpc = Arc::new(over_irpc::IrpcEcho::new(irpc_conn));
    unaries.push(unary("(c) irpc-iroh 0.17", irpc, sizes).await?);
    let raw = Arc::new(RawEchoClient { conn: raw_conn });
    unaries.push(unary("(d) raw Iroh bi-stream echo", raw, sizes).await?);
    let (tcp_addr, tcp_server) = tcp::server().await?;
    let tcp = tcp::TcpEcho::connect(tcp_addr, IN_FLIGHT[2]).await?;
    unaries.push(unary("(e) raw TCP, loopback", tcp, sizes).await?);
    tcp_server.abort();
    server.router.shutdown().await?;

    let (bulk_rpc, bulk_raw) = bulk(sizes).await?;
    println!("bulk: (a) {bulk_rpc:.0} B/s, (d) {bulk_raw:.0} B/s");
    let connects = connects(sizes).await?;
    println!("connects measured");

    let idle = priority::idle(true, sizes.idle_heartbeats).await?;
    let mut priority_rows = Vec::new();
    for streams in [1, 4] {
        for priorities in [true, false] {
            let run = priority::under_bulk(priorities, streams, sizes.bulk_bytes).await?;
            println!(
                "heartbeats under {streams} bulk stream(s), priorities {priorities}: {} samples",
                run.heartbeats.len()
            );
            priority_rows.push((streams, priorities, run));
        }
    }

    let body = report::render(&report::Results {
        sizes,
        codec: codec_rows,
        unaries,
        bulk: (bulk_rpc, bulk_raw),
        connects,
        idle_heartbeats: idle,
        priorities: priority_rows,
        load_before,
        load_after: report::load_average(),
    });
    println!("{body}");
    if write {
        write_section(&docs_path(), "rpc", &body)?;
    }
    Ok(())
}
