//! Bulk throughput and connection set-up: `quiver/rpc/1` next to raw Iroh.

use std::time::{Duration, Instant};

use bytes::Bytes;
use quiver_benches::Samples;
use quiver_rpc::Priority;

use crate::Sizes;
use crate::load::Echo as _;
use crate::over_iroh::{
    RAW_ALPN, RpcEcho, Server, client_endpoint, raw_bulk, rpc_bulk, rpc_client,
};

const CHUNK: u32 = 256 * 1024;

/// Connect: a fresh client endpoint's first call (dial, handshake, call) for (a), and a bare
/// QUIC connect for (d). Reconnect: from the restarted server's bind to the first answered call.
pub struct Connects {
    pub rpc_first_call: Samples,
    pub raw_connect: Samples,
    pub reconnect: Samples,
}

pub async fn connects(sizes: Sizes) -> anyhow::Result<Connects> {
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
pub async fn bulk(sizes: Sizes) -> anyhow::Result<(f64, f64)> {
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
