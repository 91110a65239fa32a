//! Heartbeat round trips while snapshot-priority bulk streams fill the same connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use quiver_benches::Samples;
use quiver_rpc::Priority;
use tokio::sync::Notify;

use crate::over_iroh::{BULK, RemoteServer, SERVICE, bulk_request, client_endpoint, rpc_client};

const CHUNK: u32 = 256 * 1024;

pub struct PriorityRun {
    pub heartbeats: Samples,
    /// Bulk bytes per second over the bulk streams' lifetime.
    pub bulk_per_second: f64,
}

/// Heartbeat round trips on an idle connection.
pub async fn idle(priorities: bool, count: usize) -> anyhow::Result<Samples> {
    let client = rpc_client(client_endpoint().await?, priorities);
    let remote = RemoteServer::start(&[client.endpoint().id()], priorities).await?;
    let server = &remote.server;
    let mut samples = Samples::default();
    for _ in 0..count {
        samples.push(
            client
                .heartbeat(&server.addr, Duration::from_secs(30))
                .await?,
        );
    }
    remote.shutdown().await?;
    Ok(samples)
}

/// Heartbeats under 1 and then 4 bulk streams, priorities on then off: (streams, on, run).
pub async fn all(total: u64) -> anyhow::Result<Vec<(u32, bool, PriorityRun)>> {
    let mut rows = Vec::new();
    for streams in [1, 4] {
        for priorities in [true, false] {
            let run = under_bulk(priorities, streams, total).await?;
            println!(
                "heartbeats under {streams} bulk stream(s), priorities {priorities}: {} samples",
                run.heartbeats.len()
            );
            rows.push((streams, priorities, run));
        }
    }
    Ok(rows)
}

/// `streams` server streams at snapshot priority, `total` bytes over all of them, and back to
/// back heartbeats from the moment every stream has delivered its first chunk until the last
/// stream ends. `priorities` switches QUIC stream priorities on both client and server.
pub async fn under_bulk(priorities: bool, streams: u32, total: u64) -> anyhow::Result<PriorityRun> {
    let client = rpc_client(client_endpoint().await?, priorities);
    let remote = RemoteServer::start(&[client.endpoint().id()], priorities).await?;
    let server = &remote.server;
    client
        .heartbeat(&server.addr, Duration::from_secs(30))
        .await?;
    let chunks = u32::try_from(total / u64::from(CHUNK) / u64::from(streams))?.max(1);
    let started_streams = Arc::new(AtomicUsize::new(0));
    let all_started = Arc::new(Notify::new());
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        let (client, addr) = (client.clone(), server.addr.clone());
        let (started_streams, all_started, received) = (
            Arc::clone(&started_streams),
            Arc::clone(&all_started),
            Arc::clone(&received),
        );
        tasks.push(tokio::spawn(async move {
            let mut stream = client
                .server_stream(
                    &addr,
                    SERVICE,
                    BULK,
                    bulk_request(chunks, CHUNK),
                    Priority::Snapshot,
                    Some(Duration::from_secs(600)),
                )
                .await?;
            let mut first = true;
            while let Some(message) = stream.message().await? {
                received.fetch_add(message.len() as u64, Ordering::Relaxed);
                if first {
                    first = false;
                    if started_streams.fetch_add(1, Ordering::SeqCst) + 1 == streams as usize {
                        all_started.notify_one();
                    }
                }
            }
            anyhow::Ok(())
        }));
    }
    all_started.notified().await;
    let mut heartbeats = Samples::default();
    while tasks.iter().any(|task| !task.is_finished()) {
        heartbeats.push(
            client
                .heartbeat(&server.addr, Duration::from_secs(60))
                .await?,
        );
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    let bytes = received.load(Ordering::SeqCst);
    anyhow::ensure!(
        bytes == u64::from(chunks) * u64::from(CHUNK) * u64::from(streams),
        "bulk streams delivered {bytes} bytes"
    );
    remote.shutdown().await?;
    Ok(PriorityRun {
        heartbeats,
        bulk_per_second: bytes as f64 / elapsed.as_secs_f64(),
    })
}
