//! Latency of server streams, as the RPC metrics (and the rollout gate reading them) see it.
//!
//! A stream's latency runs from the request's arrival (before the service opens the stream)
//! to its first response: the first message, or the end of the stream if it ends (or fails)
//! first. A watch that has nothing to report yet is idle, not slow: for those
//! ([`FirstResponse::MessageOrIdle`]) the first poll that finds nothing ready also counts as
//! the first response. Each stream is counted once; `ok` is whether that first response was
//! not an error.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::time::Instant;

/// What counts as a stream's first response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstResponse {
    /// The first message or the end (a console: its first chunk).
    Message,
    /// Also the first poll with nothing ready (a watch with nothing to report).
    MessageOrIdle,
}

/// Wraps a stream and calls `record(latency, ok)` once, at its first response.
pub struct Timed<S, F> {
    inner: S,
    arrived: Instant,
    rule: FirstResponse,
    record: Option<F>,
}

impl<S, F> Timed<S, F> {
    pub fn new(inner: S, arrived: Instant, rule: FirstResponse, record: F) -> Self {
        Timed {
            inner,
            arrived,
            rule,
            record: Some(record),
        }
    }
}

impl<S, F, T, E> Stream for Timed<S, F>
where
    S: Stream<Item = Result<T, E>> + Unpin,
    F: FnOnce(Duration, bool) + Unpin,
{
    type Item = Result<T, E>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        let first = match &polled {
            Poll::Ready(Some(item)) => Some(item.is_ok()),
            Poll::Ready(None) => Some(true),
            Poll::Pending if self.rule == FirstResponse::MessageOrIdle => Some(true),
            Poll::Pending => None,
        };
        if let Some(ok) = first
            && let Some(record) = self.record.take()
        {
            record(self.arrived.elapsed(), ok);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::StreamExt as _;

    use super::*;

    type Seen = Arc<Mutex<Vec<(Duration, bool)>>>;

    fn recorder() -> (Seen, impl FnOnce(Duration, bool) + Unpin) {
        let seen: Seen = Arc::default();
        let sink = seen.clone();
        let record = move |d, ok| sink.lock().expect("lock").push((d, ok));
        (seen, record)
    }

    /// One message after `delay`, then nothing.
    fn after(delay: Duration, item: Result<u8, ()>) -> impl Stream<Item = Result<u8, ()>> {
        Box::pin(async_stream::stream! {
            tokio::time::sleep(delay).await;
            yield item;
            futures::future::pending::<()>().await;
        })
    }

    /// The one recorded latency, which must lie in `at_least..` (sleeps last at least as
    /// long as asked; how much longer depends on the machine, so there is no upper bound).
    fn recorded(seen: &Seen, at_least: Duration) -> bool {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 1, "recorded once: {seen:?}");
        let (latency, ok) = seen[0];
        assert!(latency >= at_least, "{latency:?} < {at_least:?}");
        ok
    }

    #[tokio::test]
    async fn latency_runs_from_arrival_to_the_first_message_not_from_the_open() {
        let arrived = Instant::now();
        // Opening the stream (e.g. listing every VM) takes 40 ms...
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (seen, record) = recorder();
        // ...and the first message 25 ms more.
        let inner = after(Duration::from_millis(25), Ok(1));
        let mut timed = Timed::new(inner, arrived, FirstResponse::Message, record);
        assert_eq!(timed.next().await, Some(Ok(1)));
        let next = tokio::time::timeout(Duration::from_millis(50), timed.next()).await;
        assert!(next.is_err(), "there is no second message");
        assert!(recorded(&seen, Duration::from_millis(65)));
    }

    #[tokio::test]
    async fn an_idle_watch_counts_as_answered_when_first_found_with_nothing_to_send() {
        let arrived = Instant::now();
        tokio::time::sleep(Duration::from_millis(7)).await;
        let (seen, record) = recorder();
        let inner = futures::stream::pending::<Result<u8, ()>>();
        let mut timed = Timed::new(inner, arrived, FirstResponse::MessageOrIdle, record);
        let idle = tokio::time::timeout(Duration::from_millis(50), timed.next()).await;
        assert!(idle.is_err());
        assert!(recorded(&seen, Duration::from_millis(7)));
    }

    #[tokio::test]
    async fn a_stream_failing_first_counts_as_an_error_once() {
        let arrived = Instant::now();
        let (seen, record) = recorder();
        let inner = futures::stream::iter([Err(()), Ok(2)]);
        let timed = Timed::new(inner, arrived, FirstResponse::Message, record);
        tokio::time::sleep(Duration::from_millis(3)).await;
        assert_eq!(timed.collect::<Vec<_>>().await, [Err(()), Ok(2)]);
        assert!(!recorded(&seen, Duration::from_millis(3)));
    }
}
