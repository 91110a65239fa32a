//! A live Iroh connection survives the client's address change.
//!
//! The server and the client each run in their own network namespace, joined by a veth pair.
//! While the client's workers call the server without pause, the client's address on its veth
//! is swapped (`ip addr add` the new one, `ip addr del` the old one). QUIC moves the connection
//! to the new address: no call fails, the client never redials, and the server sees the client
//! at its new address on the same connection.
//!
//! Run (as root; SKIPPED otherwise): `cargo test -p quiver-tests --test netns_address_change`.
//! With `RUST_LOG=iroh=debug` (and `-- --nocapture`) iroh logs the change: the old path is
//! abandoned (`UnusableAfterNetworkChange`) and a new one opens from the new address.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use quiver_rpc::iroh::{EndpointAddr, SecretKey};
use quiver_rpc::{Allowlist, ClientConfig, ClientCounts, EndpointOptions, RpcClient, ServerCounts};
use quiver_tests::netns::{Link, VETH_B, root_or_skip};
use quiver_tests::rpc_echo::{echo, peer_addrs, serve};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Calls in flight at once.
const WORKERS: usize = 4;
/// Calls that succeed before the swap, and after it.
const BEFORE_SWAP: u64 = 100;
const AFTER_SWAP: u64 = 300;
/// The client's address after the swap (before it: the link's `b_ip`, 10.77.0.2).
const NEW_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const CALL_DEADLINE: Duration = Duration::from_secs(20);
/// How long the test waits for each phase's calls (generous: it never measures speed).
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

/// What the client's workers did so far, read by the test while they run.
#[derive(Debug, Default)]
struct Progress {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// What the client saw, once stopped.
#[derive(Debug)]
struct Outcome {
    counts: ClientCounts,
    /// The server's view of the client's addresses before the swap, and after.
    seen_before: String,
    seen_after: String,
}

#[tokio::test]
async fn an_iroh_connection_survives_the_clients_address_change() -> anyhow::Result<()> {
    if !root_or_skip("an_iroh_connection_survives_the_clients_address_change") {
        return Ok(());
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
    let link = Link::new("addr")?;
    // Otherwise deleting the old (primary) address takes the new one, in the same subnet, with it.
    link.b
        .sysctl("net.ipv4.conf.all.promote_secondaries", "1")?;
    let client_key = SecretKey::generate();

    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (server_ip, allowed) = (link.a_ip, client_key.public());
    let server = link.a.spawn(move || async move {
        let endpoint = EndpointOptions::new(SecretKey::generate())
            .bind_addr(SocketAddr::from((server_ip, 0)))
            .allowlist(Allowlist::new([allowed]))
            .bind()
            .await?;
        let socket = *endpoint.bound_sockets().first().context("a bound socket")?;
        let addr = EndpointAddr::new(endpoint.id()).with_ip_addr(socket);
        let (router, rpc) = serve(endpoint);
        let _ = ready_tx.send(addr);
        let _ = stop_rx.await;
        let counts = rpc.stats();
        router.shutdown().await?;
        Ok(counts)
    });
    let Ok(server_addr) = ready_rx.await else {
        server.join().await?;
        bail!("the server stopped before it was ready");
    };

    let progress = Arc::new(Progress::default());
    let client = link.b.spawn({
        let progress = Arc::clone(&progress);
        move || run_client(client_key, server_addr, progress)
    });

    wait_for(&progress, BEFORE_SWAP).await?;
    let new = format!("{NEW_IP}/24");
    link.b.ip(&["addr", "add", &new, "dev", VETH_B])?;
    link.b
        .ip(&["addr", "del", &format!("{}/24", link.b_ip), "dev", VETH_B])?;
    // Calls counted from here on were sent after the old address was gone (but the few in
    // flight at this instant).
    let at_swap = progress.ok.load(Ordering::SeqCst);
    let waited = wait_for(&progress, at_swap + AFTER_SWAP).await;

    progress.stop.store(true, Ordering::SeqCst);
    let outcome = client.join().await;
    drop(stop_tx);
    let served: ServerCounts = server.join().await?;
    waited?;
    let outcome = outcome?;

    let errors = progress.errors.lock().expect("errors").clone();
    assert_eq!(
        progress.failed.load(Ordering::SeqCst),
        0,
        "calls failed: {errors:?}"
    );
    assert_eq!(
        outcome.counts,
        ClientCounts {
            dials: 1,
            failures: 0
        },
        "the client kept its one connection"
    );
    assert_eq!(served.connections, 1, "the server saw one connection");
    let (old, new) = (link.b_ip.to_string(), NEW_IP.to_string());
    assert!(
        outcome.seen_before.contains(&old),
        "before the swap the server sees the client at {old}: {}",
        outcome.seen_before
    );
    assert!(
        outcome.seen_after.contains(&new) && !outcome.seen_after.contains(&old),
        "after the swap the server sees the client at {new} only: {}",
        outcome.seen_after
    );
    eprintln!(
        "address change: {} calls before, {} after, 0 failed; server saw {} then {}",
        at_swap,
        progress.ok.load(Ordering::SeqCst) - at_swap,
        outcome.seen_before,
        outcome.seen_after
    );
    Ok(())
}

/// Waits until `ok` calls have succeeded; fails at the first failed call or after
/// [`PHASE_TIMEOUT`].
async fn wait_for(progress: &Progress, ok: u64) -> anyhow::Result<()> {
    let give_up = Instant::now() + PHASE_TIMEOUT;
    loop {
        if progress.failed.load(Ordering::SeqCst) > 0 {
            let errors = progress.errors.lock().expect("errors").clone();
            bail!("a call failed: {errors:?}");
        }
        if progress.ok.load(Ordering::SeqCst) >= ok {
            return Ok(());
        }
        if Instant::now() > give_up {
            bail!(
                "only {} of {ok} calls succeeded in {PHASE_TIMEOUT:?}",
                progress.ok.load(Ordering::SeqCst)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The client, inside its namespace: its endpoint binds the unspecified address (so it keeps
/// working whatever address the veth has), then [`WORKERS`] call without pause until stopped.
async fn run_client(
    key: SecretKey,
    server: EndpointAddr,
    progress: Arc<Progress>,
) -> anyhow::Result<Outcome> {
    let endpoint = EndpointOptions::new(key).bind().await?;
    let client = RpcClient::new(endpoint, ClientConfig::default());
    let seen_before = peer_addrs(&client, &server).await?;
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let (client, server, progress) =
                (client.clone(), server.clone(), Arc::clone(&progress));
            tokio::spawn(async move {
                let payload = Bytes::from(vec![u8::try_from(worker).unwrap_or(0); 64]);
                while !progress.stop.load(Ordering::SeqCst) {
                    match echo(&client, &server, payload.clone(), CALL_DEADLINE).await {
                        Ok(()) => progress.ok.fetch_add(1, Ordering::SeqCst),
                        Err(error) => {
                            progress
                                .errors
                                .lock()
                                .expect("errors")
                                .push(format!("{error:#}"));
                            progress.failed.fetch_add(1, Ordering::SeqCst)
                        }
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let seen_after = peer_addrs(&client, &server).await?;
    let counts = client.stats();
    client.endpoint().close().await;
    Ok(Outcome {
        counts,
        seen_before,
        seen_after,
    })
}
