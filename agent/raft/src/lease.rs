//! Leases, the two halves of fencing, as pure functions of an injected monotonic clock (ms).
//!
//! - The **holder** (every agent): a renewal is a `RenewLease` committed through Raft, so it
//!   proves a quorum heard the agent. The lease runs `ttl` from when the renewal was *sent*
//!   (never from when the answer came back), so the holder's deadline is never later than the
//!   one a leader can compute. Past its deadline the agent must run no VM.
//! - The **watcher** (the leader): a host is down once the leader has seen no renewal from it
//!   for `ttl + margin` of its own monotonic time. A new leader starts every host's clock at its
//!   own election: a lease granted under the old leader ended before `election + ttl`, since
//!   no renewal can commit once a quorum voted for the new term. So between a host's deadline
//!   and its `HostDown` there is always at least `margin`, which covers clock-rate drift and
//!   the time a fenced agent takes to kill its VMs.
//!
//! Time never enters the ledger from here except inside `RenewLease` / `HostDown`, which carry
//! the leader's clock; the ledger's own check is only a second line.

use std::collections::BTreeMap;
use std::time::Duration;

/// Lease parameters, the same on every agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long one renewal keeps a host's VMs allowed to run.
    pub ttl: Duration,
    /// How often an agent renews (well under `ttl`, so one lost renewal does not fence).
    pub renew_every: Duration,
    /// Added by the leader before declaring a host down: clock-rate drift plus the time a
    /// fenced host needs to kill its VMs.
    pub margin: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(6),
            renew_every: Duration::from_secs(1),
            margin: Duration::from_secs(2),
        }
    }
}

impl LeaseConfig {
    /// Refuses parameters under which fencing cannot hold.
    ///
    /// # Errors
    /// Names the parameter that is out of range.
    pub fn check(&self) -> Result<(), String> {
        if self.ttl.is_zero() || self.renew_every.is_zero() {
            return Err("lease ttl and renew interval must be positive".into());
        }
        if self.renew_every * 2 > self.ttl {
            return Err(format!(
                "lease renew interval {:?} must be at most half the ttl {:?}",
                self.renew_every, self.ttl
            ));
        }
        if self.margin < Duration::from_millis(500) {
            return Err(format!(
                "lease margin {:?} is below 500 ms: a fenced host needs time to kill its VMs",
                self.margin
            ));
        }
        Ok(())
    }

    fn ttl_ms(&self) -> u64 {
        u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX)
    }

    fn down_after_ms(&self) -> u64 {
        u64::try_from((self.ttl + self.margin).as_millis()).unwrap_or(u64::MAX)
    }
}

/// What a host may do under its lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Past the deadline: run nothing.
    Lapsed,
    /// Valid, but this node's ledger has not yet applied the renewal that granted it: the
    /// ledger may be older than the lease (say, an agent back from a partition whose VMs were
    /// moved away meanwhile). Keep what runs, start nothing, until the ledger catches up.
    Behind,
    /// Valid, and the ledger is at least as new as the lease: follow it.
    Current,
}

/// The agent's own lease.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Holder {
    /// Monotonic ms until which VMs may run; 0 = no lease yet.
    deadline_ms: u64,
    /// The log index the ledger must have applied before it is followed: that of the renewal
    /// that granted the lease or, after a restart, the last entry in the node's log.
    granted_index: u64,
}

impl Holder {
    /// A holder that resumes `deadline_ms` (e.g. the watchdog's file after an agent restart)
    /// with `last_logged` the last index in the node's log on disk. The node re-applies its
    /// log only up to the committed index it saved, which may lag what it had applied (and
    /// acted on) before it stopped: until its ledger reaches `last_logged` again it is
    /// `Behind`, so it stops nothing it runs for want of an entry it has not re-applied yet.
    #[must_use]
    pub fn resume(deadline_ms: u64, last_logged: u64) -> Self {
        Self {
            deadline_ms,
            granted_index: last_logged,
        }
    }

    /// A renewal sent at `sent_ms` was committed at log `index`: the lease runs `ttl` from
    /// the sending.
    pub fn renewed(&mut self, sent_ms: u64, index: u64, config: &LeaseConfig) {
        self.deadline_ms = self
            .deadline_ms
            .max(sent_ms.saturating_add(config.ttl_ms()));
        self.granted_index = self.granted_index.max(index);
    }

    #[must_use]
    pub fn valid_at(&self, now_ms: u64) -> bool {
        now_ms < self.deadline_ms
    }

    /// The lease at `now_ms` for a node whose ledger has applied up to `applied_index`.
    #[must_use]
    pub fn state(&self, now_ms: u64, applied_index: u64) -> LeaseState {
        if !self.valid_at(now_ms) {
            LeaseState::Lapsed
        } else if applied_index < self.granted_index {
            LeaseState::Behind
        } else {
            LeaseState::Current
        }
    }

    #[must_use]
    pub fn deadline_ms(&self) -> u64 {
        self.deadline_ms
    }
}

/// The leader's view of every host's renewals.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Watcher {
    /// Host → monotonic ms of the last renewal this leader saw (or of its own election).
    last_seen: BTreeMap<String, u64>,
}

impl Watcher {
    /// This node became leader at `now_ms`: every host's clock starts now.
    #[must_use]
    pub fn elected<'a>(now_ms: u64, hosts: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            last_seen: hosts.into_iter().map(|h| (h.to_owned(), now_ms)).collect(),
        }
    }

    /// A renewal from `host` arrived at `now_ms`.
    pub fn renewed(&mut self, host: &str, now_ms: u64) {
        let seen = self.last_seen.entry(host.to_owned()).or_insert(now_ms);
        *seen = (*seen).max(now_ms);
    }

    /// Hosts (among `live`, the ones not yet down in the ledger) whose lease lapsed by
    /// `now_ms` with the margin. A host the watcher has not seen yet starts its clock now.
    pub fn lapsed<'a>(
        &mut self,
        now_ms: u64,
        live: impl IntoIterator<Item = &'a str>,
        config: &LeaseConfig,
    ) -> Vec<String> {
        let mut lapsed = Vec::new();
        for host in live {
            let seen = *self.last_seen.entry(host.to_owned()).or_insert(now_ms);
            if now_ms.saturating_sub(seen) >= config.down_after_ms() {
                lapsed.push(host.to_owned());
            }
        }
        lapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000;

    fn config() -> LeaseConfig {
        LeaseConfig {
            ttl: Duration::from_secs(4),
            renew_every: Duration::from_secs(1),
            margin: Duration::from_secs(2),
        }
    }

    #[test]
    fn a_holder_lease_runs_from_the_sending_and_never_shrinks() {
        let c = config();
        let mut h = Holder::default();
        assert!(!h.valid_at(0), "no lease before the first renewal");
        h.renewed(10 * SEC, 1, &c);
        assert!(h.valid_at(14 * SEC - 1));
        assert!(!h.valid_at(14 * SEC));
        h.renewed(9 * SEC, 1, &c);
        assert_eq!(
            h.deadline_ms(),
            14 * SEC,
            "a late answer to an older renewal"
        );
    }

    #[test]
    fn a_lease_granted_past_the_ledger_starts_nothing_until_the_ledger_catches_up() {
        let c = config();
        let mut h = Holder::resume(0, 0);
        h.renewed(10 * SEC, 40, &c);
        assert_eq!(h.state(11 * SEC, 39), LeaseState::Behind);
        assert_eq!(h.state(11 * SEC, 40), LeaseState::Current);
        assert_eq!(h.state(14 * SEC, 40), LeaseState::Lapsed);
        h.renewed(11 * SEC, 7, &c);
        assert_eq!(h.state(12 * SEC, 39), LeaseState::Behind, "never lowered");
        assert_eq!(Holder::resume(20 * SEC, 0).state(1, 0), LeaseState::Current);
    }

    #[test]
    fn a_restarted_holder_follows_its_ledger_only_once_it_reaches_its_log() {
        let resumed = Holder::resume(20 * SEC, 57);
        assert_eq!(resumed.state(SEC, 50), LeaseState::Behind);
        assert_eq!(resumed.state(SEC, 57), LeaseState::Current);
        assert_eq!(resumed.state(21 * SEC, 50), LeaseState::Lapsed);
    }

    #[test]
    fn the_leader_declares_a_host_down_only_after_ttl_plus_margin() {
        let c = config();
        let mut w = Watcher::elected(0, ["a", "b"]);
        w.renewed("a", 5 * SEC);
        assert_eq!(w.lapsed(6 * SEC - 1, ["a", "b"], &c), Vec::<String>::new());
        assert_eq!(w.lapsed(6 * SEC, ["a", "b"], &c), ["b"]);
        assert_eq!(w.lapsed(11 * SEC, ["a"], &c), ["a"]);
    }

    #[test]
    fn a_new_leader_gives_every_host_a_full_lease_from_its_election() {
        let c = config();
        let mut w = Watcher::elected(100 * SEC, ["a"]);
        assert!(w.lapsed(105 * SEC, ["a"], &c).is_empty());
        assert_eq!(w.lapsed(106 * SEC, ["a"], &c), ["a"]);
        // A host that registers later starts its clock when the leader first sees it.
        assert!(w.lapsed(200 * SEC, ["new"], &c).is_empty());
        assert_eq!(w.lapsed(206 * SEC, ["new"], &c), ["new"]);
    }

    #[test]
    fn the_holder_is_fenced_before_the_watcher_may_reassign() {
        // Same clock rate on both sides; any send time, any answer delay, any election time
        // after the renewal: the holder's deadline comes `margin` before the watcher acts.
        let c = config();
        for sent in [0, 3 * SEC, 7 * SEC + 13] {
            for arrival_delay in [0, 1, 900] {
                let mut h = Holder::default();
                h.renewed(sent, 1, &c);
                let mut w = Watcher::elected(0, ["a"]);
                w.renewed("a", sent + arrival_delay);
                let first_down = (sent..sent + 20 * SEC)
                    .find(|t| !w.clone().lapsed(*t, ["a"], &c).is_empty())
                    .expect("declared down eventually");
                assert!(h.deadline_ms() + 2 * SEC <= first_down);
            }
        }
    }

    #[test]
    fn unsafe_parameters_are_refused_by_name() {
        let mut c = config();
        c.renew_every = Duration::from_secs(3);
        assert!(c.check().unwrap_err().contains("renew interval"));
        let mut c = config();
        c.margin = Duration::from_millis(100);
        assert!(c.check().unwrap_err().contains("margin"));
        config().check().expect("defaults hold");
    }
}
