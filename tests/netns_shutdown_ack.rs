//! A graceful shutdown does not lose a reply that was sent but never arrived.
//!
//! The server and the client each run in their own network namespace, joined by a veth pair.
//! A call is running on the server when it begins a graceful shutdown, and nftables in the
//! server's namespace drops every packet the server sends: the call's reply leaves while the drop
//! is on and is lost on the wire. The drop ends after the call has finished. The server, still
//! waiting for the reply's acknowledgement, sends it again, and the call succeeds. A server that
//! closed its connections as soon as its calls had returned would lose that reply: the call would
//! fail.
//!
//! Run (as root; SKIPPED otherwise): `cargo test -p quiver-tests --test netns_shutdown_ack`.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::iroh::{EndpointAddr, SecretKey};
use quiver_rpc::{
    ALPN, Allowlist, CallContext, ClientConfig, Code, Dispatch, EndpointOptions, Priority, Reply,
    RpcClient, RpcError, RpcServer, ServerConfig,
};
use quiver_tests::netns::{Link, VETH_A, root_or_skip};
use tokio::sync::{mpsc, oneshot};

const SERVICE: u16 = 1;
/// Unary: waits the milliseconds its payload gives (u64, big-endian), then replies "done".
const SLOW: u16 = 1;
/// How long the call runs on the server; the drop begins as it starts.
const CALL_RUNS: Duration = Duration::from_millis(800);
/// From the call's start to the end of the drop: the reply has left, and been dropped, by then.
const DROP_ENDS: Duration = Duration::from_millis(1600);
/// Far above the drop, so that no connection times out because of it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const CALL_DEADLINE: Duration = Duration::from_secs(15);
/// The server's shutdown grace: far above everything else here.
const GRACE: Duration = Duration::from_secs(30);

/// The slow service; it tells the test when a call has started.
struct Slow {
    started: mpsc::UnboundedSender<()>,
}

impl Dispatch for Slow {
    async fn call(&self, service: u16, method: u16, payload: Bytes, _: CallContext) -> Reply {
        if (service, method) != (SERVICE, SLOW) {
            return Reply::Unary(Err(RpcError::new(Code::Unimplemented, "no such method")));
        }
        let Ok(millis) = <[u8; 8]>::try_from(&payload[..]) else {
            return Reply::Unary(Err(RpcError::new(Code::InvalidArgument, "payload: a u64")));
        };
        let _ = self.started.send(());
        tokio::time::sleep(Duration::from_millis(u64::from_be_bytes(millis))).await;
        Reply::Unary(Ok(Bytes::from_static(b"done")))
    }

    fn changes_state(&self, _service: u16, _method: u16) -> bool {
        false
    }
}

fn millis(duration: Duration) -> Bytes {
    let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    Bytes::copy_from_slice(&millis.to_be_bytes())
}

#[tokio::test]
async fn a_reply_lost_on_the_wire_during_a_graceful_shutdown_is_sent_again() -> anyhow::Result<()> {
    if !root_or_skip("a_reply_lost_on_the_wire_during_a_graceful_shutdown_is_sent_again") {
        return Ok(());
    }
    let link = Link::new("ack")?;
    let client_key = SecretKey::generate();
    let (server_ip, allowed) = (link.a_ip, client_key.public());

    let (ready_tx, ready_rx) = oneshot::channel();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = link.a.spawn(move || async move {
        let endpoint = EndpointOptions::new(SecretKey::generate())
            .bind_addr(SocketAddr::from((server_ip, 0)))
            .allowlist(Allowlist::new([allowed]))
            .liveness(IDLE_TIMEOUT, Duration::from_secs(1))
            .bind()
            .await?;
        let socket = *endpoint.bound_sockets().first().context("a bound socket")?;
        let addr = EndpointAddr::new(endpoint.id()).with_ip_addr(socket);
        let config = ServerConfig {
            shutdown_grace: GRACE,
            ..ServerConfig::default()
        };
        let rpc = RpcServer::new(
            Slow {
                started: started_tx,
            },
            config,
        );
        let router = Router::builder(endpoint).accept(ALPN, rpc).spawn();
        let _ = ready_tx.send(addr);
        let _ = shutdown_rx.await;
        let began = tokio::time::Instant::now();
        router.shutdown().await?;
        // Past the grace, the shutdown would have dropped what still ran, not seen it through.
        anyhow::ensure!(
            began.elapsed() < GRACE,
            "the shutdown waited out its grace period"
        );
        Ok(())
    });
    let Ok(server_addr) = ready_rx.await else {
        server.join().await?;
        bail!("the server stopped before it was ready");
    };

    let (release_tx, release_rx) = oneshot::channel::<()>();
    let (reply_tx, reply_rx) = oneshot::channel();
    let client = link.b.spawn(move || async move {
        let endpoint = EndpointOptions::new(client_key)
            .liveness(IDLE_TIMEOUT, Duration::from_secs(1))
            .bind()
            .await?;
        let client = RpcClient::new(endpoint, ClientConfig::default());
        let call = |runs: Duration| {
            client.unary(
                &server_addr,
                SERVICE,
                SLOW,
                millis(runs),
                Priority::Normal,
                Some(CALL_DEADLINE),
            )
        };
        // Connected first, so that the call below is the only thing in flight.
        call(Duration::ZERO).await.context("the first call")?;
        let _ = reply_tx.send(call(CALL_RUNS).await);
        // Until the server has shut down: the endpoint acknowledges what it receives.
        let _ = release_rx.await;
        client.endpoint().close().await;
        Ok(())
    });

    // The first call, then the one that matters.
    for _ in 0..2 {
        tokio::time::timeout(CALL_DEADLINE, started.recv())
            .await
            .context("waiting for a call to start")?
            .context("the server stopped")?;
    }
    let call_started = tokio::time::Instant::now();
    let blackout = link.a.nft_table(&format!(
        "chain out {{ type filter hook output priority 0; oifname \"{VETH_A}\" counter drop; }}"
    ))?;
    let _ = shutdown_tx.send(());
    tokio::time::sleep_until(call_started + DROP_ENDS).await;
    let dropped = blackout.list()?;
    drop(blackout);

    let reply = reply_rx.await;
    let served = server.join().await;
    drop(release_tx);
    client.join().await?;
    served?;
    let reply = reply.context("the client stopped before its call ended")?;
    assert!(
        !dropped.contains("packets 0 "),
        "the server sent nothing while its packets were dropped:\n{dropped}"
    );
    assert_eq!(
        reply.context("the call running when the shutdown began")?,
        Bytes::from_static(b"done")
    );
    Ok(())
}
