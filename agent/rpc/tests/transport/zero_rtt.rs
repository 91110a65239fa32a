//! 0-RTT: a client resuming a session may send calls before the handshake completes. Such
//! data can be replayed by an attacker, so no state-changing call is ever dispatched from it.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use iroh::endpoint::{ConnectOptions, ZeroRttStatus};
use iroh::{EndpointAddr, SecretKey};
use quiver_rpc::{ALPN, Code, Frame, FrameType, RpcClient, ServerConfig};

use crate::common::{ECHO, TestServer, WRITE, client, pair, read_all, request, rpc_error};
use crate::robustness::{echo_works, wire};

/// Sends each frame on its own stream in 0-RTT data of a new connection; returns whether the
/// server took the 0-RTT data, and each stream's replies. `None`: 0-RTT could not be attempted.
async fn in_0rtt(
    client: &RpcClient,
    addr: &EndpointAddr,
    frames: Vec<Frame>,
) -> Option<(bool, Vec<Vec<Frame>>)> {
    let connecting = client
        .endpoint()
        .connect_with_opts(addr.clone(), ALPN, ConnectOptions::default())
        .await
        .expect("dial");
    let early = connecting.into_0rtt().ok()?;
    let mut streams = Vec::new();
    for frame in frames {
        let (mut send, recv) = early.open_bi().await.expect("0-RTT stream");
        let _ = send.write_all(&wire(&frame)).await;
        let _ = send.finish();
        streams.push(recv);
    }
    let accepted = matches!(
        early.handshake_completed().await,
        Ok(ZeroRttStatus::Accepted(_))
    );
    let mut replies = Vec::new();
    for recv in streams {
        replies.push(read_all(recv).await.0);
    }
    Some((accepted, replies))
}

fn early_data() -> ServerConfig {
    ServerConfig {
        accept_0rtt: true,
        ..ServerConfig::default()
    }
}

#[tokio::test]
async fn by_default_0rtt_data_is_served_only_once_the_handshake_is_complete() {
    let (server, client) = pair(ServerConfig::default()).await;
    // A first connection leaves the client a session ticket for 0-RTT resumption.
    echo_works(&client, &server.addr).await;
    let (accepted, replies) = in_0rtt(&client, &server.addr, vec![request(WRITE, 1, 0, "")])
        .await
        .expect("the client can attempt 0-RTT after a first connection");
    assert!(accepted, "the server's QUIC stack takes 0-RTT data");
    // The bytes came early, but the call ran after the handshake, as a 1-RTT stream: a replayed
    // handshake never completes, so a replay runs nothing.
    assert_eq!(replies[0].len(), 1);
    assert_eq!(replies[0][0].header.frame_type, FrameType::Response);
    assert_eq!(server.service.writes.load(Ordering::SeqCst), 1);
    assert!(!server.service.write_in_0rtt.load(Ordering::SeqCst));
    assert_eq!(server.server.stats().refused_0rtt, 0);
}

#[tokio::test]
async fn with_early_data_a_state_changing_call_in_0rtt_is_refused_and_a_read_is_served() {
    let (server, client) = pair(early_data()).await;
    echo_works(&client, &server.addr).await;
    let (accepted, replies) = in_0rtt(
        &client,
        &server.addr,
        vec![request(WRITE, 1, 0, ""), request(ECHO, 2, 0, "early")],
    )
    .await
    .expect("the client can attempt 0-RTT after a first connection");
    assert!(accepted, "the server takes 0-RTT data");
    let write = &replies[0];
    assert_eq!(write.len(), 1);
    assert_eq!(write[0].header.request_id, 1);
    assert_eq!(rpc_error(&write[0]).code, Code::FailedPrecondition);
    let read = &replies[1];
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].header.frame_type, FrameType::Response);
    assert_eq!(read[0].payload, Bytes::from("early"));

    assert_eq!(server.server.stats().refused_0rtt, 1);
    assert_eq!(server.service.writes.load(Ordering::SeqCst), 0);
    assert!(!server.service.write_in_0rtt.load(Ordering::SeqCst));
    // The same call after the handshake goes through.
    client
        .unary(
            &server.addr,
            crate::common::SERVICE,
            WRITE,
            Bytes::new(),
            quiver_rpc::Priority::Normal,
            None,
        )
        .await
        .expect("a 1-RTT write");
    assert_eq!(server.service.writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn with_early_data_a_refused_peer_gets_nothing_served_from_0rtt() {
    let stranger = client().await;
    let server = TestServer::start(&[SecretKey::generate().public()], early_data()).await;
    // Refused at the handshake, though the handshake itself (and a session ticket) completed.
    let first = stranger
        .unary(
            &server.addr,
            crate::common::SERVICE,
            ECHO,
            Bytes::new(),
            quiver_rpc::Priority::Normal,
            None,
        )
        .await;
    assert!(first.is_err());
    let attempt = in_0rtt(&stranger, &server.addr, vec![request(ECHO, 1, 0, "sneak")]).await;
    if let Some((accepted, replies)) = attempt {
        eprintln!("0-RTT from a refused peer: accepted {accepted}, replies {replies:?}");
        assert!(
            replies.iter().all(Vec::is_empty),
            "a refused peer got replies: {replies:?}"
        );
    }
    assert_eq!(
        server.service.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the service"
    );
}
