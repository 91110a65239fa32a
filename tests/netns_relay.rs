//! A local relay carries `quiver/rpc/1` when the direct path is blocked.
//!
//! In a network namespace of its own, where nftables drops every UDP packet (so no direct QUIC
//! path can exist), run iroh's test relay (`iroh::test_utils::run_relay_server`: HTTPS over TCP
//! on loopback, self-signed), an [`RpcServer`](quiver_rpc::RpcServer) and an [`RpcClient`],
//! both endpoints homed on that relay. The client knows the server only by endpoint id and
//! relay URL. Its calls succeed, and the relay is its only active path to the server; a client
//! without the relay, dialing the server's direct address, gets nowhere (the block is real).
//! One namespace holds all three because the test relay listens on 127.0.0.1 only; the
//! namespace is what confines the UDP block to the test.
//!
//! Run (as root; SKIPPED otherwise): `cargo test -p quiver-tests --test netns_relay`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use iroh::test_utils::run_relay_server;
use iroh::tls::CaTlsConfig;
use iroh::{EndpointAddr, RelayMap, RelayMode, SecretKey, TransportAddr};
use quiver_rpc::{Allowlist, ClientConfig, ClientError, EndpointOptions, RpcClient};
use quiver_tests::netns::{Netns, root_or_skip};
use quiver_tests::rpc_echo::{active_addrs, echo, serve};

const CALLS: u64 = 50;
const CALL_DEADLINE: Duration = Duration::from_secs(20);

/// What happened inside the namespace.
#[derive(Debug)]
struct Outcome {
    /// Calls the server ran.
    served: u64,
    /// The client's active addresses for the server after the calls.
    paths: Vec<TransportAddr>,
    /// A relay-less client's call to the server's direct address.
    direct: Result<(), ClientError>,
}

#[tokio::test]
async fn a_local_relay_carries_calls_when_the_direct_path_is_blocked() -> anyhow::Result<()> {
    if !root_or_skip("a_local_relay_carries_calls_when_the_direct_path_is_blocked") {
        return Ok(());
    }
    let ns = Netns::new("relay")?;
    let _no_udp =
        ns.nft_table("chain out { type filter hook output priority 0; meta l4proto udp drop; }")?;
    let outcome = ns.spawn(through_the_relay).join().await?;

    assert_eq!(outcome.served, CALLS, "every call reached the server");
    assert!(
        outcome
            .paths
            .iter()
            .any(|p| matches!(p, TransportAddr::Relay(_))),
        "the client uses the relay: {:?}",
        outcome.paths
    );
    assert!(
        !outcome
            .paths
            .iter()
            .any(|p| matches!(p, TransportAddr::Ip(_))),
        "and no direct path: {:?}",
        outcome.paths
    );
    assert!(
        outcome.direct.is_err(),
        "without the relay the server is out of reach"
    );
    eprintln!(
        "relay: {CALLS} calls through the relay, paths {:?}; direct: {:?}",
        outcome.paths, outcome.direct
    );
    Ok(())
}

/// Relay, server and clients, inside the namespace.
async fn through_the_relay() -> anyhow::Result<Outcome> {
    let (relays, relay_url, _relay) = run_relay_server().await?;
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let homed = |key: SecretKey| relayed(key, loopback, relays.clone());

    let (client_key, stranded_key) = (SecretKey::generate(), SecretKey::generate());
    let server_endpoint = homed(SecretKey::generate())
        .allowlist(Allowlist::new([client_key.public(), stranded_key.public()]))
        .bind()
        .await?;
    tokio::time::timeout(Duration::from_secs(60), server_endpoint.online())
        .await
        .context("the server never reached its relay")?;
    let server_id = server_endpoint.id();
    let direct_socket = *server_endpoint
        .bound_sockets()
        .first()
        .context("a bound socket")?;
    let (router, rpc) = serve(server_endpoint);

    let client = RpcClient::new(homed(client_key).bind().await?, ClientConfig::default());
    let via_relay = EndpointAddr::new(server_id).with_relay_url(relay_url);
    for i in 0..CALLS {
        let payload = Bytes::from(format!("call {i}"));
        echo(&client, &via_relay, payload, CALL_DEADLINE)
            .await
            .with_context(|| format!("call {i} through the relay"))?;
    }
    let paths = active_addrs(client.endpoint(), server_id).await;
    let served = rpc.stats().calls;

    let stranded = RpcClient::new(
        EndpointOptions::new(stranded_key)
            .bind_addr(loopback)
            .bind()
            .await?,
        ClientConfig::default(),
    );
    let direct = stranded
        .unary(
            &EndpointAddr::new(server_id).with_ip_addr(direct_socket),
            quiver_tests::rpc_echo::SERVICE,
            quiver_tests::rpc_echo::ECHO,
            Bytes::from_static(b"direct"),
            quiver_rpc::Priority::Normal,
            Some(Duration::from_secs(10)),
        )
        .await
        .map(drop);

    client.endpoint().close().await;
    stranded.endpoint().close().await;
    router.shutdown().await?;
    Ok(Outcome {
        served,
        paths,
        direct,
    })
}

/// Options for an endpoint homed on the test relay, whose self-signed certificate it accepts.
fn relayed(key: SecretKey, bind: SocketAddr, relays: RelayMap) -> EndpointOptions {
    EndpointOptions::new(key)
        .bind_addr(bind)
        .relay_mode(RelayMode::Custom(relays))
        .relay_ca(CaTlsConfig::insecure_skip_verify())
}
