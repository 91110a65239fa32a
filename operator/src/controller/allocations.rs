//! Memory in use per host, as placement counts it, without a pass over every VM per
//! placement (N placements × N VMs was the operator's largest cost at thousands of VMs).
//!
//! A full count over the VM store runs at most once per [`RECOUNT_EVERY`]; in between, each
//! placement adds its VM. Between two counts a VM deleted, halted or moved still counts where
//! it was: placement then sees less free memory than there is, never more, and the next
//! count (at most a second later) corrects it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

pub const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// One VM's share: its host and memory (MiB).
type Share = (String, u64);

#[derive(Debug, Default)]
pub struct Allocations {
    counted_at: Option<Instant>,
    by_vm: HashMap<String, Share>,
    by_host: HashMap<String, u64>,
}

impl Allocations {
    /// Whether a full count is due at `now`.
    #[must_use]
    pub fn stale(&self, now: Instant) -> bool {
        self.counted_at
            .is_none_or(|at| now.saturating_duration_since(at) >= RECOUNT_EVERY)
    }

    /// Replaces everything with a full count: `(uid, host, memory MiB)` of every VM that
    /// holds memory on a host.
    pub fn recount(&mut self, now: Instant, vms: impl IntoIterator<Item = (String, String, u64)>) {
        self.by_vm.clear();
        self.by_host.clear();
        for (uid, host, memory) in vms {
            self.add(uid, host, memory);
        }
        self.counted_at = Some(now);
    }

    /// `uid` now holds `memory` on `host` (replacing what it held before).
    pub fn add(&mut self, uid: String, host: String, memory: u64) {
        if let Some((old_host, old_memory)) = self.by_vm.remove(&uid)
            && let Some(total) = self.by_host.get_mut(&old_host)
        {
            *total = total.saturating_sub(old_memory);
        }
        *self.by_host.entry(host.clone()).or_default() += memory;
        self.by_vm.insert(uid, (host, memory));
    }

    /// Memory in use on `host`, not counting `uid` (the VM being placed).
    #[must_use]
    pub fn on_host_without(&self, host: &str, uid: &str) -> u64 {
        let total = self.by_host.get(host).copied().unwrap_or(0);
        match self.by_vm.get(uid) {
            Some((h, memory)) if h == host => total.saturating_sub(*memory),
            _ => total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(uid: &str, host: &str, memory: u64) -> (String, String, u64) {
        (uid.to_owned(), host.to_owned(), memory)
    }

    #[test]
    fn placements_add_up_between_counts_and_a_count_replaces_them() {
        let t0 = Instant::now();
        let mut a = Allocations::default();
        assert!(a.stale(t0), "nothing counted yet");
        a.recount(
            t0,
            [vm("1", "h1", 64), vm("2", "h1", 128), vm("3", "h2", 32)],
        );
        assert!(!a.stale(t0 + Duration::from_millis(999)));
        assert_eq!(a.on_host_without("h1", "x"), 192);
        assert_eq!(a.on_host_without("h1", "2"), 64, "the VM being placed");
        a.add("4".into(), "h2".into(), 256);
        a.add("1".into(), "h2".into(), 64);
        assert_eq!(a.on_host_without("h1", "x"), 128, "a VM placed anew moves");
        assert_eq!(a.on_host_without("h2", "x"), 352);
        assert!(a.stale(t0 + RECOUNT_EVERY));
        a.recount(t0 + RECOUNT_EVERY, [vm("3", "h2", 32)]);
        assert_eq!(a.on_host_without("h1", "x"), 0);
        assert_eq!(a.on_host_without("h2", "x"), 32);
    }
}
