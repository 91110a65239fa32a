//! Hostile and broken input: oversized frames, random garbage.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use iroh::endpoint::Connection;
use quiver_rpc::error::ClientError;
use quiver_rpc::{Code, Frame, FrameType, HEADER_LEN, Priority, RpcClient, ServerConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::common::{ECHO, SERVICE, exchange, pair, raw_connection, read_all, request, rpc_error};

const DEADLINE: Option<Duration> = Some(Duration::from_secs(20));
const SMALL_MAX: u32 = 64 * 1024;

fn small_payloads() -> ServerConfig {
    ServerConfig {
        max_payload: SMALL_MAX,
        ..ServerConfig::default()
    }
}

pub fn wire(frame: &Frame) -> BytesMut {
    let mut out = BytesMut::new();
    frame.encode(&mut out, u32::MAX).expect("encodable");
    out
}

pub async fn echo_works(client: &RpcClient, addr: &iroh::EndpointAddr) {
    let reply = client
        .unary(
            addr,
            SERVICE,
            ECHO,
            Bytes::from("still here"),
            Priority::Normal,
            DEADLINE,
        )
        .await
        .expect("the server still serves");
    assert_eq!(reply, Bytes::from("still here"));
}

#[tokio::test]
async fn an_oversized_frame_fails_its_request_while_another_stream_completes() {
    let (server, client) = pair(small_payloads()).await;
    let conn = raw_connection(&client, &server).await;

    // Stream A: a request one byte over the server's maximum, of which only part is sent.
    let (mut send, recv) = conn.open_bi().await.expect("stream A");
    let oversized = wire(&request(ECHO, 7, 0, vec![0u8; SMALL_MAX as usize + 1]));
    let _ = send.write_all(&oversized[..HEADER_LEN + 1000]).await;

    // Stream B, on the same connection, meanwhile: a normal call.
    let (replies, error) = exchange(&conn, vec![request(ECHO, 8, 0, "fine")]).await;
    assert_eq!(error, None);
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].header.frame_type, FrameType::Response);
    assert_eq!(replies[0].payload, Bytes::from("fine"));

    let (replies, error) = read_all(recv).await;
    assert_eq!(error, None);
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].header.request_id, 7);
    let failure = rpc_error(&replies[0]);
    assert_eq!(failure.code, Code::ResourceExhausted);
    assert!(
        failure.message.starts_with("payload length"),
        "{}",
        failure.message
    );
    assert_eq!(server.server.stats().malformed, 1);

    // Through the client: the call fails with the server's error, the connection lives on.
    let big = client
        .unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::from(vec![1u8; SMALL_MAX as usize + 1]),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    assert!(
        matches!(
            big,
            Err(ClientError::Remote {
                code: Code::ResourceExhausted,
                ..
            })
        ),
        "{big:?}"
    );
    echo_works(&client, &server.addr).await;
    assert_eq!(conn.close_reason(), None);
}

/// One stream's worth of hostile bytes.
fn garbage(rng: &mut StdRng) -> Vec<u8> {
    let valid = wire(&request(
        ECHO,
        rng.random(),
        rng.random_range(0..100),
        vec![7u8; rng.random_range(0..64)],
    ));
    match rng.random_range(0..5) {
        // Random bytes, often with a plausible version byte.
        0 => {
            let mut bytes: Vec<u8> = (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect();
            if let Some(first) = bytes.first_mut().filter(|_| rng.random_bool(0.5)) {
                *first = 1;
            }
            bytes
        }
        // A valid request with bits flipped.
        1 => {
            let mut bytes = valid.to_vec();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..bytes.len());
                bytes[at] ^= 1 << rng.random_range(0..8);
            }
            bytes
        }
        // A valid request cut short.
        2 => valid[..rng.random_range(0..valid.len())].to_vec(),
        // A header claiming a huge payload, then a little of it.
        3 => {
            let mut bytes = valid[..HEADER_LEN].to_vec();
            bytes[16..20].copy_from_slice(&rng.random_range(SMALL_MAX..=u32::MAX).to_be_bytes());
            bytes.extend((0..rng.random_range(0..100)).map(|_| rng.random::<u8>()));
            bytes
        }
        // Frames a client never sends (replies), or many valid requests in a row.
        _ => {
            let mut bytes = Vec::new();
            for _ in 0..rng.random_range(1..20) {
                let mut frame = request(ECHO, rng.random(), 0, "x");
                if rng.random_bool(0.3) {
                    frame.header.frame_type = FrameType::Response;
                    frame.header.deadline_ms = 0;
                }
                bytes.extend_from_slice(&wire(&frame));
            }
            bytes
        }
    }
}

async fn send_garbage(conn: &Connection, rng: &mut StdRng) {
    let Ok((mut send, recv)) = conn.open_bi().await else {
        return;
    };
    let bytes = garbage(rng);
    let _ = send.write_all(&bytes).await;
    if rng.random_bool(0.2) {
        let _ = send.reset(0u32.into());
    } else {
        let _ = send.finish();
    }
    // Whatever comes back, it ends: the server finishes or resets every stream.
    let replies = tokio::time::timeout(Duration::from_secs(20), read_all(recv)).await;
    assert!(replies.is_ok(), "the server left a hostile stream hanging");
}

#[tokio::test]
async fn random_garbage_on_streams_never_breaks_the_server() {
    let seed: u64 = std::env::var("QUIVER_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let (server, client) = pair(small_payloads()).await;
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..4 {
        let conn = raw_connection(&client, &server).await;
        for _ in 0..25 {
            send_garbage(&conn, &mut rng).await;
        }
        eprintln!("seed {seed}, round {round}: {:?}", server.server.stats());
        echo_works(&client, &server.addr).await;
    }
    let stats = server.server.stats();
    assert_eq!(stats.panics, 0);
    assert!(
        stats.malformed > 0,
        "the generator produced malformed frames: {stats:?}"
    );
}

#[tokio::test]
async fn a_frame_too_malformed_to_answer_stops_its_stream_and_nothing_else() {
    let (server, client) = pair(ServerConfig::default()).await;
    let conn = raw_connection(&client, &server).await;
    // A header of a version this server does not read: no request id to answer. The stream
    // stays open on this side, so only the server can end the exchange.
    let (mut send, recv) = conn.open_bi().await.expect("stream");
    send.write_all(&[9; HEADER_LEN]).await.expect("write");
    let stopped = tokio::time::timeout(Duration::from_secs(20), send.stopped())
        .await
        .expect("the server stops the stream")
        .expect("stream state");
    // STOP_SENDING code 1: malformed (docs/protocol.md).
    assert_eq!(stopped.map(|code| code.into_inner()), Some(1));
    let (replies, _) = read_all(recv).await;
    assert!(replies.is_empty(), "{replies:?}");
    assert_eq!(server.server.stats().malformed, 1);
    echo_works(&client, &server.addr).await;
}
