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

/// `quiver-operator dev --transport iroh --relay-url … --relay-ca …` in a namespace where every
/// UDP packet is dropped: the operator and two agents (one Raft group) reach each other only
/// through a local relay whose certificate comes from the test's own CA, and a VM boots.
#[tokio::test]
async fn the_dev_cluster_runs_over_iroh_through_a_relay_when_udp_is_blocked() -> anyhow::Result<()>
{
    if !root_or_skip("the_dev_cluster_runs_over_iroh_through_a_relay_when_udp_is_blocked") {
        return Ok(());
    }
    let Some(guest) = quiver_tests::cluster::guest_dir() else {
        return Ok(());
    };
    let _serial = quiver_tests::vm::qemu_lock().await;
    let ns = Netns::new("devrelay")?;
    let no_udp = ns.nft_table(
        "chain out { type filter hook output priority 0; meta l4proto udp counter drop; }",
    )?;
    let hosts = ns
        .spawn(move || cluster_through_the_relay(guest))
        .join()
        .await?;
    let dropped = no_udp.list()?;
    for (name, relay) in &hosts {
        assert!(
            relay.starts_with("https://127.0.0.1:"),
            "{name} registered its relay: {relay:?}"
        );
    }
    assert_eq!(hosts.len(), 2, "both agents registered: {hosts:?}");
    assert!(
        !dropped.contains("packets 0 "),
        "direct paths were tried and blocked: {dropped}"
    );
    Ok(())
}

/// Relay, dev cluster and a VM, inside the namespace; returns each Host's `spec.irohRelayUrl`.
async fn cluster_through_the_relay(
    guest: std::path::PathBuf,
) -> anyhow::Result<Vec<(String, String)>> {
    let dir = tempfile::tempdir()?;
    let (relay, url, ca_file) = relay_with_ca(dir.path()).await?;
    let mut cluster = quiver_tests::dev::DevTestCluster::start_with(2, |options| {
        options.transport = quiver_rpc::TransportMode::Iroh;
        options.relay_url = Some(url.clone());
        options.relay_ca = Some(ca_file.clone());
    })
    .await?;
    let k = cluster.kubectl();
    k.apply(&quiver_tests::cluster::vm_manifest(&guest, "relayed", ""))
        .await?;
    let ready = k.wait_ready("relayed", quiver_tests::vm::BOOT).await;
    let hosts = k
        .run(&[
            "get",
            "hosts",
            "-o",
            r#"jsonpath={range .items[*]}{.metadata.name} {.spec.irohRelayUrl}{"\n"}{end}"#,
        ])
        .await?;
    let report = cluster.stop().await?;
    relay.shutdown().await?;
    let ready = ready?;
    eprintln!("relayed VM ready on {}; stop: {report}", ready.host);
    Ok(hosts
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, u)| (n.to_owned(), u.to_owned()))
        .collect())
}

/// An iroh relay on loopback (HTTPS only: its QUIC address discovery would need UDP) with a
/// certificate for 127.0.0.1 issued by a fresh CA; returns it, its URL and the CA's PEM file.
async fn relay_with_ca(
    dir: &std::path::Path,
) -> anyhow::Result<(iroh_relay::server::Server, String, std::path::PathBuf)> {
    use iroh_relay::server::{CertConfig, RelayConfig, Server, ServerConfig, TlsConfig};
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let ca = quiver_rpc::pki::Ca::generate()?;
    let leaf = ca.issue_server(&[])?;
    let ca_file = dir.join("relay-ca.pem");
    std::fs::write(&ca_file, ca.cert_pem())?;
    let certs =
        CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes())?;
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let mut relay = RelayConfig::new((Ipv4Addr::LOCALHOST, 0));
    relay.tls = Some(TlsConfig::new(
        (Ipv4Addr::LOCALHOST, 0),
        CertConfig::Manual { server_config: tls },
    ));
    let mut config = ServerConfig::default();
    config.relay = Some(relay);
    let server = Server::spawn(config).await?;
    let https = server.https_addr().context("the relay serves HTTPS")?;
    Ok((server, format!("https://{https}"), ca_file))
}
