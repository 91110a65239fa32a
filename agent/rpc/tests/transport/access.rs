//! Access at the handshake: unknown endpoint ids are refused, removed ones cut off.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use iroh::SecretKey;
use quiver_rpc::error::ClientError;
use quiver_rpc::{Priority, ServerConfig};

use crate::common::{ECHO, GATED, SERVICE, TestServer, client, eventually, pair};

const DEADLINE: Option<Duration> = Some(Duration::from_secs(20));

#[tokio::test]
async fn an_unknown_endpoint_id_is_refused_at_the_handshake() {
    let stranger = client().await;
    let someone_else = SecretKey::generate().public();
    let server = TestServer::start(&[someone_else], ServerConfig::default()).await;
    let result = stranger
        .unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::from("hi"),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    match result {
        Err(ClientError::Refused { peer, reason }) => {
            assert_eq!(peer, server.addr.id.to_string());
            assert!(reason.contains("not on the allowlist"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let access = server.allowlist.stats();
    assert_eq!((access.accepted, access.refused), (0, 1));
    assert_eq!(
        server.service.calls.load(Ordering::SeqCst),
        0,
        "nothing reached the service"
    );
    assert_eq!(
        server.server.stats().connections,
        0,
        "no connection reached the handler"
    );
}

#[tokio::test]
async fn a_peer_added_later_is_admitted() {
    let late = client().await;
    let server = TestServer::start(&[], ServerConfig::default()).await;
    server.allowlist.insert(late.endpoint().id());
    let reply = late
        .unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::from("hi"),
            Priority::Normal,
            DEADLINE,
        )
        .await
        .expect("admitted");
    assert_eq!(reply, Bytes::from("hi"));
}

#[tokio::test]
async fn removing_a_peer_closes_its_connection_and_refuses_it_afterwards() {
    let (server, client) = pair(ServerConfig::default()).await;
    client
        .unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::new(),
            Priority::Normal,
            DEADLINE,
        )
        .await
        .expect("allowed at first");
    let running = tokio::spawn({
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

    assert!(server.allowlist.remove(&client.endpoint().id()));
    assert_eq!(server.allowlist.stats().revoked, 1);
    let cut = running.await.expect("call task");
    assert!(
        matches!(cut, Err(ClientError::Refused { .. })),
        "the running call: {cut:?}"
    );

    let again = client
        .unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::new(),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    assert!(
        matches!(again, Err(ClientError::Refused { .. })),
        "the next call: {again:?}"
    );
    assert!(
        server.allowlist.stats().refused >= 1,
        "refused at the handshake"
    );
}

#[tokio::test]
async fn a_client_with_an_allowlist_refuses_a_server_not_on_it() {
    let server_key = SecretKey::generate();
    let guarded = quiver_rpc::RpcClient::new(
        crate::common::endpoint(
            SecretKey::generate(),
            crate::common::loopback(),
            Some(quiver_rpc::Allowlist::new([])),
        )
        .await,
        quiver_rpc::ClientConfig::default(),
    );
    let server = TestServer::start_at(
        server_key,
        crate::common::loopback(),
        &[guarded.endpoint().id()],
        ServerConfig::default(),
    )
    .await;
    let result = guarded
        .unary(
            &server.addr,
            SERVICE,
            ECHO,
            Bytes::new(),
            Priority::Normal,
            DEADLINE,
        )
        .await;
    assert!(
        matches!(result, Err(ClientError::Refused { .. })),
        "{result:?}"
    );
    assert_eq!(server.service.calls.load(Ordering::SeqCst), 0);
}
