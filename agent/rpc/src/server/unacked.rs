//! Replies written and finished, kept until a graceful shutdown has seen them acknowledged.
//!
//! A stream task could wait for its own reply's acknowledgement (`SendStream::stopped`), but
//! that keeps a task alive and costs it a wake-up for every call, which showed in the unary
//! benchmark at 16 and 64 calls in flight. QUIC delivers a finished stream's data by itself
//! while the connection lives; only a shutdown, which closes the endpoint, could cut it off. So
//! the stream hands its finished `SendStream` here, and a shutdown waits for these. Streams kept
//! longer than [`KEPT`] are let go: acknowledged long since, or their peer is gone.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use iroh::endpoint::SendStream;
use tokio::time::Instant;

/// How long a finished stream is kept for a shutdown to wait on.
const KEPT: Duration = Duration::from_secs(5);

/// At most this many are kept (a bound on memory whatever the call rate).
const MAX_KEPT: usize = 4096;

#[derive(Debug, Default)]
pub(super) struct Unacked {
    streams: Mutex<VecDeque<(Instant, SendStream)>>,
}

impl Unacked {
    /// Keeps `send`, finished, for a shutdown; lets go of the oldest ones past their time.
    pub(super) fn keep(&self, send: SendStream) {
        let now = Instant::now();
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        while streams
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > KEPT || streams.len() >= MAX_KEPT)
        {
            streams.pop_front();
        }
        streams.push_back((now, send));
    }

    /// Waits until every stream kept is acknowledged (or stopped) by its peer.
    pub(super) async fn acknowledged(&self) {
        let streams: Vec<_> = self
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .collect();
        futures::future::join_all(streams.into_iter().map(|(_, send)| async move {
            let _ = send.stopped().await;
        }))
        .await;
    }
}
