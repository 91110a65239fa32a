//! One connection on the server: take its streams, within its limits, until it ends.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};

use futures::FutureExt as _;
use iroh::EndpointId;
use iroh::endpoint::{
    Accepting, Connection, ConnectionState, IncomingZeroRttConnection, RecvStream, SendStream,
    VarInt,
};
use iroh::protocol::AcceptError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::WaitForCancellationFuture;

use super::{ServerConfig, ServerStats, Shared, stream};
use crate::dispatch::Dispatch;

/// What one connection may use at once.
#[derive(Clone)]
pub(super) struct Limits {
    streams: Arc<Semaphore>,
    calls: Arc<Semaphore>,
}

impl Limits {
    fn new(config: &ServerConfig) -> Self {
        Self {
            streams: Arc::new(Semaphore::new(config.max_streams)),
            calls: Arc::new(Semaphore::new(config.max_calls)),
        }
    }
}

/// Serves the streams of an established connection until it closes or the server shuts down.
pub(super) async fn serve<D: Dispatch>(shared: &Arc<Shared<D>>, conn: Connection) {
    ServerStats::bump(&shared.stats.connections);
    shared.peers.connected(&conn);
    let max_streams = u32::try_from(shared.config.max_streams).unwrap_or(u32::MAX);
    conn.set_max_concurrent_bi_streams(VarInt::from_u32(max_streams));
    let limits = shared
        .early
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&conn.stable_id())
        .unwrap_or_else(|| Limits::new(&shared.config));
    let peer = conn.remote_id();
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);
    while let Some((permit, send, recv)) = next_stream(&mut shutdown, &conn, &limits).await {
        let task = stream::serve(
            Arc::clone(shared),
            peer,
            Arc::clone(&limits.calls),
            send,
            recv,
        );
        spawn(shared, permit, Some(peer), task);
    }
}

/// Takes the streams of a connection still in its handshake (0-RTT data). Each one's calls
/// wait for the handshake, and with it the allowlist hook: a peer the allowlist refuses gets
/// nothing served, not even a read-only call.
pub(super) async fn accept_early<D: Dispatch>(
    shared: &Arc<Shared<D>>,
    accepting: Accepting,
) -> Result<Connection, AcceptError> {
    let early = accepting.into_0rtt();
    let limits = Limits::new(&shared.config);
    let shutdown = shared.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            done = early.handshake_completed() => {
                let conn = done?;
                shared
                    .early
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(conn.stable_id(), limits);
                return Ok(conn);
            }
            next = next_stream(&mut shutdown, &early, &limits) => {
                let Some((permit, send, recv)) = next else {
                    return Ok(early.handshake_completed().await?);
                };
                let task = serve_early(Arc::clone(shared), early.clone(), Arc::clone(&limits.calls), send, recv);
                spawn(shared, permit, None, task);
            }
        }
    }
}

async fn serve_early<D: Dispatch>(
    shared: Arc<Shared<D>>,
    early: IncomingZeroRttConnection,
    calls: Arc<Semaphore>,
    send: SendStream,
    recv: RecvStream,
) {
    match early.handshake_completed().await {
        Ok(conn) => stream::serve(shared, conn.remote_id(), calls, send, recv).await,
        Err(error) => tracing::debug!("dropping a 0-RTT stream: the handshake failed: {error}"),
    }
}

/// The next stream with a permit to serve it; `None` once the connection ends or the server
/// shuts down (`shutdown`, made once per connection: polling a new one registers it anew).
/// Waiting for the permit first leaves further streams queued in QUIC, where flow control
/// bounds them.
async fn next_stream<S: ConnectionState>(
    shutdown: &mut Pin<&mut WaitForCancellationFuture<'_>>,
    conn: &Connection<S>,
    limits: &Limits,
) -> Option<(OwnedSemaphorePermit, SendStream, RecvStream)> {
    let next = async {
        let permit = Arc::clone(&limits.streams).acquire_owned().await.ok()?;
        match conn.accept_bi().await {
            Ok((send, recv)) => Some((permit, send, recv)),
            Err(error) => {
                tracing::debug!("connection ended: {error}");
                None
            }
        }
    };
    tokio::select! {
        () = shutdown => None,
        next = next => next,
    }
}

/// Runs a stream's task on the server's tracker (so shutdown waits for it), counting panics.
fn spawn<D: Dispatch>(
    shared: &Arc<Shared<D>>,
    permit: OwnedSemaphorePermit,
    peer: Option<EndpointId>,
    task: impl Future<Output = ()> + Send + 'static,
) {
    ServerStats::bump(&shared.stats.streams);
    let for_task = Arc::clone(shared);
    // A combinator, not an `async` block: a block would hold `task` twice (as captured, and
    // as awaited), and the task's size is allocated for every stream.
    let task = AssertUnwindSafe(task).catch_unwind().map(move |outcome| {
        drop(permit);
        if outcome.is_err() {
            ServerStats::bump(&for_task.stats.panics);
            tracing::error!(?peer, "a stream task panicked");
        }
    });
    shared.tasks.spawn(task);
}
