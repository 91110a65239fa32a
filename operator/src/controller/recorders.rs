//! One kube [`Recorder`] per object. A recorder caches the events it published (to turn a
//! repeat into a series) and scans that whole cache on every publish: one recorder shared
//! by every object made each Event cost grow with the fleet, a third of the operator's CPU
//! at a few thousand VMs. Per object, a publish scans only that object's few events.
//!
//! Recorders idle for longer than kube keeps an event in its cache are dropped (checked at
//! most once a minute, so the scan stays off the per-event path).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};

/// How long kube's recorder keeps an event for series (its `CACHE_TTL`).
const IDLE: Duration = Duration::from_secs(6 * 60);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Values by object, created on first use and dropped when idle for [`IDLE`].
#[derive(Debug)]
struct ByObject<T> {
    entries: HashMap<String, (T, Instant)>,
    pruned: Instant,
}

impl<T: Clone> ByObject<T> {
    fn new(now: Instant) -> Self {
        Self {
            entries: HashMap::new(),
            pruned: now,
        }
    }

    fn get(&mut self, key: String, now: Instant, make: impl FnOnce() -> T) -> T {
        if now.saturating_duration_since(self.pruned) >= PRUNE_EVERY {
            self.entries
                .retain(|_, (_, used)| now.saturating_duration_since(*used) < IDLE);
            self.pruned = now;
        }
        let entry = self.entries.entry(key).or_insert_with(|| (make(), now));
        entry.1 = now;
        entry.0.clone()
    }
}

/// The operator's Event recorders.
pub struct Recorders {
    client: Client,
    reporter: Reporter,
    by_object: Mutex<ByObject<Recorder>>,
}

impl Recorders {
    #[must_use]
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            by_object: Mutex::new(ByObject::new(Instant::now())),
        }
    }

    /// The recorder of the object `reference` names (by uid, else by kind, namespace, name).
    pub fn of(&self, reference: &ObjectReference) -> Recorder {
        let key = reference.uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}/{}",
                reference.kind.as_deref().unwrap_or_default(),
                reference.namespace.as_deref().unwrap_or_default(),
                reference.name.as_deref().unwrap_or_default()
            )
        });
        let mut by_object = self
            .by_object
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        by_object.get(key, Instant::now(), || {
            Recorder::new(self.client.clone(), self.reporter.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn each_object_keeps_its_own_value_until_idle_past_the_cache_ttl() {
        let start = Instant::now();
        let mut made = 0;
        let mut by_object = ByObject::new(start);
        let mut get = |key: &str, at: Duration| {
            by_object.get(key.to_owned(), start + at, || {
                made += 1;
                Arc::new(made)
            })
        };
        let a = get("a", Duration::ZERO);
        let b = get("b", Duration::ZERO);
        assert!(!Arc::ptr_eq(&a, &b), "objects do not share a recorder");
        assert!(
            Arc::ptr_eq(&a, &get("a", Duration::from_secs(300))),
            "a series goes on"
        );
        // b idle for 7 minutes: dropped at the next prune; a (used at 5 min) stays.
        let b_again = get("b", Duration::from_secs(7 * 60));
        assert!(!Arc::ptr_eq(&b, &b_again), "an idle recorder is made anew");
        assert!(Arc::ptr_eq(&a, &get("a", Duration::from_secs(7 * 60))));
    }
}
