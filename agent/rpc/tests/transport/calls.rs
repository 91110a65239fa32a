//! Calls that go right, and calls that fail the way they should.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use quiver_rpc::error::ClientError;
use quiver_rpc::{Code, FrameType, Priority, ServerConfig};

use crate::common::{
    COUNT, ECHO, GATED, MISSING, SERVICE, SLEEP, eventually, exchange, millis, pair,
    raw_connection, request, rpc_error,
};

const DEADLINE: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test]
async fn unary_call_returns_the_reply_over_one_reused_connection() {
    let (server, client) = pair(ServerConfig::default()).await;
    for i in 0..3u8 {
        let reply = client
            .unary(
                &server.addr,
                SERVICE,
                ECHO,
                Bytes::from(vec![i; 100]),
                Priority::Normal,
                DEADLINE,
            )
            .await
            .expect("echo");
        assert_eq!(reply, Bytes::from(vec![i; 100]));
    }
    assert_eq!(client.stats().dials, 1, "one connection for every call");
    assert_eq!(server.server.stats().connections, 1);
    assert_eq!(server.server.stats().streams, 3, "one stream per call");
}

#[tokio::test]
async fn remote_errors_keep_their_code_and_message() {
    let (server, client) = pair(ServerConfig::default()).await;
    let missing = client
        .unary(
            &server.addr,
            SERVICE,
            MISSING,
            Bytes::new(),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    assert!(
        matches!(&missing, Err(ClientError::Remote { code: Code::NotFound, message }) if message == "no such thing"),
        "{missing:?}"
    );
    let unknown = client
        .unary(
            &server.addr,
            SERVICE,
            999,
            Bytes::new(),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    assert!(
        matches!(
            unknown,
            Err(ClientError::Remote {
                code: Code::Unimplemented,
                ..
            })
        ),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn an_overlong_error_message_is_cut_not_the_answer() {
    let (server, client) = pair(ServerConfig::default()).await;
    let verbose = client
        .unary(
            &server.addr,
            SERVICE,
            crate::common::VERBOSE,
            Bytes::new(),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    match verbose {
        Err(ClientError::Remote {
            code: Code::Internal,
            message,
        }) => {
            assert!(
                message.len() <= 8 * 1024 && message.len() > 8 * 1024 - 2,
                "{}",
                message.len()
            );
        }
        other => panic!("expected the server's error, got {other:?}"),
    }
}

#[tokio::test]
async fn server_stream_yields_every_message_then_ends() {
    let (server, client) = pair(ServerConfig::default()).await;
    let mut stream = client
        .server_stream(
            &server.addr,
            SERVICE,
            COUNT,
            Bytes::copy_from_slice(&5u32.to_be_bytes()),
            Priority::Normal,
            DEADLINE,
        )
        .await
        .expect("stream");
    let mut got = Vec::new();
    while let Some(message) = stream.message().await.expect("message") {
        got.push(u32::from_be_bytes(message[..].try_into().expect("4 bytes")));
    }
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(stream.message().await.expect("after the end"), None);
}

#[tokio::test]
async fn batched_requests_on_one_stream_are_each_answered_by_request_id() {
    let (server, client) = pair(ServerConfig::default()).await;
    let conn = raw_connection(&client, &server).await;
    // The slow call comes first: the quick ones do not wait behind it.
    let frames = vec![
        request(SLEEP, 10, 0, millis(200)),
        request(ECHO, 11, 0, "eleven"),
        request(COUNT, 12, 0, Bytes::copy_from_slice(&2u32.to_be_bytes())),
        request(ECHO, 13, 0, "thirteen"),
    ];
    let (replies, error) = exchange(&conn, frames).await;
    assert_eq!(error, None);
    let of = |id: u64| -> Vec<(FrameType, Bytes)> {
        replies
            .iter()
            .filter(|f| f.header.request_id == id)
            .map(|f| (f.header.frame_type, f.payload.clone()))
            .collect()
    };
    assert_eq!(of(10), vec![(FrameType::Response, Bytes::new())]);
    assert_eq!(of(11), vec![(FrameType::Response, Bytes::from("eleven"))]);
    assert_eq!(of(13), vec![(FrameType::Response, Bytes::from("thirteen"))]);
    assert_eq!(
        of(12),
        vec![
            (
                FrameType::StreamData,
                Bytes::copy_from_slice(&0u32.to_be_bytes())
            ),
            (
                FrameType::StreamData,
                Bytes::copy_from_slice(&1u32.to_be_bytes())
            ),
            (FrameType::StreamEnd, Bytes::new()),
        ]
    );
    let last = replies.last().expect("replies");
    assert_eq!(last.header.request_id, 10, "the slow call answers last");
}

#[tokio::test]
async fn a_call_past_its_deadline_gets_deadline_exceeded_from_the_server() {
    let (server, client) = pair(ServerConfig::default()).await;
    let conn = raw_connection(&client, &server).await;
    let (replies, error) = exchange(&conn, vec![request(SLEEP, 1, 50, millis(60_000))]).await;
    assert_eq!(error, None);
    assert_eq!(replies.len(), 1);
    assert_eq!(rpc_error(&replies[0]).code, Code::DeadlineExceeded);
    assert_eq!(server.server.stats().deadline_exceeded, 1);

    let late = client
        .unary(
            &server.addr,
            SERVICE,
            SLEEP,
            millis(60_000),
            Priority::Normal,
            Some(Duration::from_millis(50)),
        )
        .await;
    assert!(
        matches!(late, Err(ClientError::DeadlineExceeded)),
        "{late:?}"
    );
}

#[tokio::test]
async fn heartbeats_are_echoed() {
    let (server, client) = pair(ServerConfig::default()).await;
    let rtt = client
        .heartbeat(&server.addr, Duration::from_secs(20))
        .await
        .expect("echo");
    assert!(rtt > Duration::ZERO);
    assert_eq!(server.server.stats().heartbeats, 1);
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_call_finish() {
    let (server, client) = pair(ServerConfig::default()).await;
    let call = tokio::spawn({
        let client = client.clone();
        let addr = server.addr.clone();
        async move {
            client
                .unary(
                    &addr,
                    SERVICE,
                    GATED,
                    Bytes::new(),
                    Priority::Normal,
                    DEADLINE,
                )
                .await
        }
    });
    let service = server.service.clone();
    eventually("the call is running", || {
        service.gated_waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    let router = server.router.clone();
    let shutdown = tokio::spawn(async move { router.shutdown().await });
    let handler = server.server.clone();
    eventually("the server is shutting down", || handler.is_shutting_down()).await;
    server.service.gate.add_permits(1);
    let reply = call.await.expect("call task");
    assert_eq!(
        reply.expect("the running call finished"),
        Bytes::from_static(b"done")
    );
    shutdown
        .await
        .expect("shutdown task")
        .expect("router shut down");
    let after = client
        .unary(
            &server.addr,
            SERVICE,
            crate::common::ECHO,
            Bytes::new(),
            Priority::Normal,
            Some(Duration::from_secs(2)),
        )
        .await;
    assert!(
        matches!(
            after,
            Err(ClientError::Unreachable { .. } | ClientError::DeadlineExceeded)
        ),
        "{after:?}"
    );
}

#[tokio::test]
async fn calls_beyond_the_connection_limit_are_refused_and_every_request_is_answered() {
    let (server, client) = pair(ServerConfig {
        max_calls: 2,
        reply_buffer: 1,
        ..ServerConfig::default()
    })
    .await;
    let conn = raw_connection(&client, &server).await;
    // Gated calls run until the test lets them go: the first two hold both slots meanwhile.
    let frames = (0..50).map(|id| request(GATED, id, 0, "")).collect();
    let exchanged = tokio::spawn(async move { exchange(&conn, frames).await });
    let stats = server.server.clone();
    eventually("48 calls refused", || stats.stats().overloaded == 48).await;
    server.service.gate.add_permits(2);
    let (replies, error) = exchanged.await.expect("exchange task");
    assert_eq!(error, None);
    assert_eq!(replies.len(), 50, "one answer per request");
    let refused = replies
        .iter()
        .filter(|f| f.header.frame_type == FrameType::Error)
        .inspect(|f| assert_eq!(rpc_error(f).code, Code::ResourceExhausted))
        .count();
    assert_eq!(refused, 48, "two calls ran, the rest were refused");
    assert_eq!(server.server.stats().overloaded, 48);
}

#[tokio::test]
async fn shutdown_drops_calls_still_running_after_the_grace_period() {
    let (server, client) = pair(ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let call = tokio::spawn({
        let client = client.clone();
        let addr = server.addr.clone();
        async move {
            client
                .unary(
                    &addr,
                    SERVICE,
                    GATED,
                    Bytes::new(),
                    Priority::Normal,
                    DEADLINE,
                )
                .await
        }
    });
    let service = server.service.clone();
    eventually("the call is running", || {
        service.gated_waiting.load(Ordering::SeqCst) == 1
    })
    .await;
    // The gate never opens: shutdown completes anyway, and the caller learns the server left.
    server.router.shutdown().await.expect("router shut down");
    let dropped = call.await.expect("call task");
    assert!(
        matches!(dropped, Err(ClientError::Unreachable { .. })),
        "{dropped:?}"
    );
}

#[tokio::test]
async fn a_deadline_covers_a_whole_server_stream() {
    let (server, client) = pair(ServerConfig::default()).await;
    let endless = Bytes::copy_from_slice(&u32::MAX.to_be_bytes());
    let mut stream = client
        .server_stream(
            &server.addr,
            SERVICE,
            COUNT,
            endless,
            Priority::Normal,
            Some(Duration::from_millis(300)),
        )
        .await
        .expect("stream");
    let mut messages = 0u64;
    let end = loop {
        match stream.message().await {
            Ok(Some(_)) => messages += 1,
            other => break other,
        }
    };
    assert!(matches!(end, Err(ClientError::DeadlineExceeded)), "{end:?}");
    assert!(messages > 0, "messages flowed until the deadline");
    assert_eq!(stream.message().await.expect("ended"), None);
}
