//! Priorities: a heartbeat gets through while a bulk stream fills the connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use quiver_rpc::{ClientConfig, Priority, RpcClient, ServerConfig};

use crate::common::{BULK, SERVICE, TestServer, client, pair_of_u32};

const CHUNKS: u32 = 64;
const CHUNK: u32 = 256 * 1024;

/// Bulk bytes the client had received when the heartbeat's echo came back, of the total.
async fn heartbeat_during_bulk(priorities: bool) -> (u64, u64) {
    let client = RpcClient::new(
        client().await.endpoint().clone(),
        ClientConfig {
            priorities,
            ..ClientConfig::default()
        },
    );
    let server = TestServer::start(
        &[client.endpoint().id()],
        ServerConfig {
            priorities,
            ..ServerConfig::default()
        },
    )
    .await;
    let mut bulk = client
        .server_stream(
            &server.addr,
            SERVICE,
            BULK,
            pair_of_u32(CHUNKS, CHUNK),
            Priority::Snapshot,
            Some(Duration::from_secs(60)),
        )
        .await
        .expect("bulk stream");
    let received = Arc::new(AtomicU64::new(0));
    let first = bulk.message().await.expect("first chunk").expect("a chunk");
    received.fetch_add(first.len() as u64, Ordering::SeqCst);
    let reader = tokio::spawn({
        let received = Arc::clone(&received);
        async move {
            while let Some(chunk) = bulk.message().await.expect("chunk") {
                received.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            received.load(Ordering::SeqCst)
        }
    });
    client
        .heartbeat(&server.addr, Duration::from_secs(60))
        .await
        .expect("heartbeat");
    let at_echo = received.load(Ordering::SeqCst);
    let total = reader.await.expect("reader");
    (at_echo, total)
}

#[tokio::test]
async fn a_heartbeat_overtakes_a_bulk_stream_in_flight() {
    let (at_echo, total) = heartbeat_during_bulk(true).await;
    eprintln!(
        "priorities on: {at_echo} of {total} bulk bytes had arrived when the heartbeat echoed"
    );
    assert_eq!(total, u64::from(CHUNKS) * u64::from(CHUNK));
    assert!(
        at_echo < total,
        "the heartbeat waited for the whole bulk stream"
    );
}

#[tokio::test]
async fn without_priorities_the_heartbeat_still_completes() {
    let (at_echo, total) = heartbeat_during_bulk(false).await;
    eprintln!(
        "priorities off: {at_echo} of {total} bulk bytes had arrived when the heartbeat echoed"
    );
    assert_eq!(total, u64::from(CHUNKS) * u64::from(CHUNK));
}
