//! The client redials a peer whose connection went away.

use std::time::Duration;

use bytes::Bytes;
use quiver_rpc::error::ClientError;
use quiver_rpc::{Priority, ServerConfig};
use tokio::time::Instant;

use crate::common::{ECHO, SERVICE, TestServer, client};

#[tokio::test]
async fn the_client_reconnects_after_the_server_restarts() {
    let client = client().await;
    let allowed = [client.endpoint().id()];
    let first = TestServer::start(&allowed, ServerConfig::default()).await;
    let addr = first.addr.clone();
    let call = |deadline: Duration| {
        let client = client.clone();
        let addr = addr.clone();
        async move {
            client
                .unary(
                    &addr,
                    SERVICE,
                    ECHO,
                    Bytes::from("hi"),
                    Priority::Normal,
                    Some(deadline),
                )
                .await
        }
    };
    call(Duration::from_secs(20))
        .await
        .expect("first server answers");

    let socket = *addr.ip_addrs().next().expect("a direct address");
    let key = first.key.clone();
    first.router.shutdown().await.expect("shut down");
    drop(first);
    let down = call(Duration::from_millis(500)).await;
    assert!(
        matches!(
            down,
            Err(ClientError::Unreachable { .. } | ClientError::DeadlineExceeded)
        ),
        "while the server is down: {down:?}"
    );

    // Same key, same address: the peer as a restarted agent looks. The old socket closes in
    // the background; binding waits for it.
    let second = TestServer::start_at(key, socket, &allowed, ServerConfig::default()).await;
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        match call(Duration::from_secs(5)).await {
            Ok(reply) => {
                assert_eq!(reply, Bytes::from("hi"));
                break;
            }
            Err(ClientError::Unreachable { .. } | ClientError::DeadlineExceeded)
                if Instant::now() < give_up => {}
            Err(other) => panic!("after the restart: {other}"),
        }
    }
    let stats = client.stats();
    assert!(stats.dials >= 2, "a new connection was dialed: {stats:?}");
    assert_eq!(second.server.stats().connections, 1);
}

#[tokio::test]
async fn a_failing_peer_is_redialed_only_after_the_backoff() {
    let client = client_with_long_backoff().await;
    // The server refuses this client: every attempt fails.
    let server = TestServer::start(&[], ServerConfig::default()).await;
    let call = |deadline: Duration| {
        client.unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::new(),
            Priority::Normal,
            Some(deadline),
        )
    };
    let first = call(Duration::from_secs(20)).await;
    assert!(
        matches!(first, Err(ClientError::Refused { .. })),
        "{first:?}"
    );
    // The next call waits out the backoff, past its own deadline, without dialing.
    let second = call(Duration::from_millis(300)).await;
    assert!(
        matches!(second, Err(ClientError::DeadlineExceeded)),
        "{second:?}"
    );
    assert_eq!(client.stats().dials, 1);
    assert_eq!(client.stats().failures, 1);
}

#[tokio::test]
async fn a_connection_closed_between_calls_is_replaced_by_the_next_call() {
    let client = client_with_long_backoff().await;
    let id = client.endpoint().id();
    let server = TestServer::start(&[id], ServerConfig::default()).await;
    let call = || {
        client.unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::from("hi"),
            Priority::Normal,
            Some(Duration::from_secs(20)),
        )
    };
    call().await.expect("the first call");

    // Revoking closes the connection; the peer is let back in at once. The client learns of
    // the close from the peer's CONNECTION_CLOSE, which loopback delivers within the second.
    assert!(server.allowlist.remove(&id));
    server.allowlist.insert(id);
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(call().await.expect("the call after the close"), "hi");
    let stats = client.stats();
    assert_eq!(stats.dials, 2, "{stats:?}");
    assert_eq!(stats.failures, 0, "{stats:?}");
}

/// A client whose backoff (10 minutes) is far past any call's deadline here: a call that
/// waited for it would fail.
async fn client_with_long_backoff() -> quiver_rpc::RpcClient {
    let endpoint = client().await.endpoint().clone();
    quiver_rpc::RpcClient::new(
        endpoint,
        quiver_rpc::ClientConfig {
            backoff: quiver_rpc::BackoffPolicy {
                initial: Duration::from_secs(600),
                max: Duration::from_secs(600),
            },
            ..quiver_rpc::ClientConfig::default()
        },
    )
}
