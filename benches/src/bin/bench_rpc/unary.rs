//! Unary echo over the five transports (and (f), (f0) in a child process when it is built),
//! interleaved: each round runs every transport at one in-flight level before the next round
//! starts, so that a change in the machine's load during the run (the cores are shared) falls
//! on every transport alike rather than on whichever ran last. The order turns by one each
//! round: no transport always runs first or always follows the same one.

use std::sync::Arc;

use bytes::Bytes;

use crate::load::{self, Echo, LoadResult};
use crate::over_iroh::{RAW_ALPN, RawEchoClient, RpcEcho, Server, client_endpoint, rpc_client};
use crate::tonic_iroh::Remote;
use crate::{IN_FLIGHT, REQUEST_BYTES, Sizes, grpc, over_irpc, tcp};

/// Unary results of one transport, one per in-flight level.
pub struct Unary {
    pub name: &'static str,
    /// All rounds of a level pooled.
    pub levels: Vec<LoadResult>,
    /// Per level, each round's p50 (seconds) and calls per second: their spread is the run's
    /// own measure of its noise.
    pub rounds: Vec<Vec<(f64, f64)>>,
}

/// The transports under test, each with a client ready to call.
enum Transport {
    Rpc(Arc<RpcEcho>),
    Grpc(Arc<grpc::Grpc>),
    Irpc(Arc<over_irpc::IrpcEcho>),
    Raw(Arc<RawEchoClient>),
    Tcp(Arc<tcp::TcpEcho>),
    /// (f) or (f0), by the child's name for it.
    Remote(Arc<Remote>, &'static str),
}

impl Transport {
    fn name(&self) -> &'static str {
        match self {
            Self::Rpc(_) => "(a) quiver/rpc/1 over Iroh",
            Self::Grpc(_) => "(b) tonic, TCP + mTLS",
            Self::Irpc(_) => "(c) irpc-iroh 0.17",
            Self::Raw(_) => "(d) raw Iroh bi-stream echo",
            Self::Tcp(_) => "(e) raw TCP, loopback",
            Self::Remote(_, "f") => "(f) tonic over tonic-iroh-transport 0.9 (iroh 0.98)",
            Self::Remote(_, _) => "(f0) raw bi-stream echo on iroh 0.98",
        }
    }

    async fn run(
        &self,
        payload: Bytes,
        in_flight: usize,
        calls: usize,
        warmup: usize,
    ) -> anyhow::Result<LoadResult> {
        async fn go<E: Echo>(
            echo: &Arc<E>,
            payload: Bytes,
            in_flight: usize,
            calls: usize,
            warmup: usize,
        ) -> anyhow::Result<LoadResult> {
            load::run(Arc::clone(echo), payload, in_flight, calls, warmup).await
        }
        match self {
            Self::Rpc(e) => go(e, payload, in_flight, calls, warmup).await,
            Self::Grpc(e) => go(e, payload, in_flight, calls, warmup).await,
            Self::Irpc(e) => go(e, payload, in_flight, calls, warmup).await,
            Self::Raw(e) => go(e, payload, in_flight, calls, warmup).await,
            Self::Tcp(e) => go(e, payload, in_flight, calls, warmup).await,
            Self::Remote(remote, which) => {
                remote
                    .run(which, payload.len(), in_flight, calls, warmup)
                    .await
            }
        }
    }
}

/// Runs every transport at 1, 16 and 64 calls in flight, `sizes.rounds` rounds each.
pub async fn all(sizes: Sizes) -> anyhow::Result<Vec<Unary>> {
    let endpoint = client_endpoint().await?;
    let server = Server::start(&[endpoint.id()], true).await?;
    let raw_conn = endpoint.connect(server.addr.clone(), RAW_ALPN).await?;
    let irpc_conn = endpoint
        .connect(server.addr.clone(), over_irpc::ALPN)
        .await?;
    let (tcp_addr, tcp_server) = tcp::server().await?;
    let mut transports = vec![
        Transport::Rpc(Arc::new(RpcEcho {
            // A clone: the endpoint closes, with every connection on it, when its last
            // handle drops.
            client: rpc_client(endpoint.clone(), true),
            peer: server.addr.clone(),
        })),
        Transport::Grpc(Arc::new(grpc::Grpc::start().await?)),
        Transport::Irpc(Arc::new(over_irpc::IrpcEcho::new(irpc_conn))),
        Transport::Raw(Arc::new(RawEchoClient { conn: raw_conn })),
        Transport::Tcp(tcp::TcpEcho::connect(tcp_addr, IN_FLIGHT[2]).await?),
    ];
    if let Some(remote) = Remote::start().await? {
        transports.push(Transport::Remote(Arc::clone(&remote), "f"));
        transports.push(Transport::Remote(remote, "f0"));
    }
    let payload = Bytes::from(vec![0x42; REQUEST_BYTES]);
    let mut results: Vec<Unary> = transports
        .iter()
        .map(|t| Unary {
            name: t.name(),
            levels: vec![LoadResult::default(); IN_FLIGHT.len()],
            rounds: vec![Vec::new(); IN_FLIGHT.len()],
        })
        .collect();
    for (level, (in_flight, calls)) in IN_FLIGHT.into_iter().zip(sizes.calls).enumerate() {
        let per_round = calls.div_ceil(sizes.rounds);
        for round in 0..sizes.rounds {
            // Each round starts one transport further on, so none always runs first or
            // always follows the same one.
            for turn in 0..transports.len() {
                let i = (round + turn) % transports.len();
                let (transport, result) = (&transports[i], &mut results[i]);
                let run = transport
                    .run(payload.clone(), in_flight, per_round, sizes.warmup)
                    .await
                    .map_err(|e| e.context(format!("{}, {in_flight} in flight", result.name)))?;
                result.levels[level].merge(&run);
                let p50 = run.latencies.clone().percentile(50.0).as_secs_f64();
                result.rounds[level].push((p50, run.per_second()));
            }
        }
        for result in &results {
            println!(
                "{}, {in_flight} in flight: {:.0} calls/s",
                result.name,
                result.levels[level].per_second()
            );
        }
    }
    tcp_server.abort();
    drop(transports);
    server.router.shutdown().await?;
    endpoint.close().await;
    Ok(results)
}
