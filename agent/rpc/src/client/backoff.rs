//! Capped exponential backoff between connection attempts to one peer.

use std::time::Duration;

use tokio::time::Instant;

/// How long to wait before redialing a peer after `n` consecutive failures:
/// `initial × 2^(n-1)`, at most `max`. No jitter: peers redial a given agent at times set by
/// their own failures, which already spreads them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl BackoffPolicy {
    /// The wait after `failures` consecutive failures (none after none).
    #[must_use]
    pub fn delay(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let doublings = (failures - 1).min(31);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The backoff state of one peer.
#[derive(Debug)]
pub(crate) struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
    not_before: Option<Instant>,
}

impl Backoff {
    pub(crate) fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            not_before: None,
        }
    }

    /// A dial failed or a connection broke at `now`.
    pub(crate) fn failed(&mut self, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + self.policy.delay(self.failures));
    }

    /// A reply came back: the peer is healthy again.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
        self.not_before = None;
    }

    /// The earliest time of the next dial, if it must wait.
    pub(crate) fn not_before(&self) -> Option<Instant> {
        self.not_before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let delays: Vec<u128> = (0..7).map(|n| policy().delay(n).as_millis()).collect();
        assert_eq!(delays, vec![0, 100, 200, 400, 800, 1000, 1000]);
        assert_eq!(policy().delay(u32::MAX), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn each_failure_pushes_the_next_dial_further_and_a_reply_clears_it() {
        let mut backoff = Backoff::new(policy());
        assert_eq!(backoff.not_before(), None);
        let start = Instant::now();
        backoff.failed(Instant::now());
        assert_eq!(
            backoff.not_before(),
            Some(start + Duration::from_millis(100))
        );
        tokio::time::sleep_until(backoff.not_before().expect("waiting")).await;
        backoff.failed(Instant::now());
        assert_eq!(
            backoff.not_before(),
            Some(start + Duration::from_millis(300))
        );
        backoff.succeeded();
        assert_eq!(backoff.not_before(), None);
    }
}
