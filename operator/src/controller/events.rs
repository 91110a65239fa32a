//! Kubernetes Events about the operator's objects, published as kube's `Recorder` publishes
//! them (events.k8s.io/v1; the same event again within six minutes becomes a series on the
//! first one), with a cache sized for fleets.
//!
//! kube's `Recorder` keeps every Event it sent, whole, and scans them all on each publish.
//! One recorder for every object made each Event cost grow with the fleet; one per object
//! held about 11 KB per VM at 10,000 VMs (its map's first allocation, of whole Events). Here a
//! sent event is remembered by its key, its name and its count, and old ones are dropped at
//! most once a minute.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::Reporter;
use serde_json::json;

use crate::status::Transition;

/// How long a sent event can still grow into a series (kube's `CACHE_TTL`).
const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// What makes two events the same event: what they are about and what they say happened.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    regarding: String,
    warning: bool,
    action: String,
    reason: String,
}

/// An event that was sent.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sent {
    namespace: String,
    name: String,
    count: i32,
    at: Instant,
}

/// What to do with an event.
#[derive(Debug, PartialEq, Eq)]
enum Publish {
    Create,
    /// Patch the series of the event sent before: its `count` now.
    Repeat(Sent),
}

/// The memory of sent events; pure, the clock passed in.
#[derive(Debug)]
struct SentEvents {
    by_key: HashMap<Key, Sent>,
    pruned: Instant,
}

impl SentEvents {
    fn new(now: Instant) -> Self {
        Self {
            by_key: HashMap::new(),
            pruned: now,
        }
    }

    fn decide(&mut self, key: &Key, now: Instant) -> Publish {
        if now.saturating_duration_since(self.pruned) >= PRUNE_EVERY {
            self.by_key
                .retain(|_, sent| now.saturating_duration_since(sent.at) < SERIES_TTL);
            self.pruned = now;
        }
        match self.by_key.get(key) {
            Some(sent) if now.saturating_duration_since(sent.at) < SERIES_TTL => {
                Publish::Repeat(Sent {
                    // A series counts the first occurrence too: its first repeat is 2.
                    count: sent.count.saturating_add(1),
                    at: now,
                    ..sent.clone()
                })
            }
            _ => Publish::Create,
        }
    }

    fn sent(&mut self, key: Key, sent: Sent) {
        self.by_key.insert(key, sent);
    }
}

/// The operator's Event publisher.
pub struct Events {
    client: Client,
    reporter: Reporter,
    sent: Mutex<SentEvents>,
}

impl Events {
    #[must_use]
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            sent: Mutex::new(SentEvents::new(Instant::now())),
        }
    }

    /// Creates the Event, or patches the series of the same one sent in the last six minutes.
    ///
    /// # Errors
    /// The API server refused the create or the patch.
    pub async fn publish(
        &self,
        event: &Transition,
        action: &str,
        regarding: &ObjectReference,
    ) -> kube::Result<()> {
        let key = Key {
            regarding: regarding.uid.clone().unwrap_or_else(|| {
                format!(
                    "{}/{}/{}",
                    regarding.kind.as_deref().unwrap_or_default(),
                    regarding.namespace.as_deref().unwrap_or_default(),
                    regarding.name.as_deref().unwrap_or_default()
                )
            }),
            warning: event.warning,
            action: action.to_owned(),
            reason: event.reason.to_owned(),
        };
        let now = Instant::now();
        let decision = self
            .sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .decide(&key, now);
        let sent = match decision {
            Publish::Repeat(sent) => {
                let api: Api<Event> = Api::namespaced(self.client.clone(), &sent.namespace);
                let series = json!({"series": {
                    "count": sent.count,
                    "lastObservedTime": MicroTime(Timestamp::now()),
                }});
                api.patch(&sent.name, &PatchParams::default(), &Patch::Merge(&series))
                    .await?;
                sent
            }
            Publish::Create => {
                let created = self.event(event, action, regarding);
                let namespace = created.metadata.namespace.clone().unwrap_or_default();
                let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
                let created = api.create(&PostParams::default(), &created).await?;
                Sent {
                    namespace,
                    name: created.metadata.name.unwrap_or_default(),
                    count: 1,
                    at: now,
                }
            }
        };
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sent(key, sent);
        Ok(())
    }

    /// The Event as kube's `Recorder` builds it. Cluster-scoped objects' Events go to
    /// `default`.
    fn event(&self, event: &Transition, action: &str, regarding: &ObjectReference) -> Event {
        let now = Timestamp::now();
        let controller = &self.reporter.controller;
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        Event {
            action: Some(action.to_owned()),
            reason: Some(event.reason.to_owned()),
            note: Some(event.note.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_ref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            type_: Some(if event.warning { "Warning" } else { "Normal" }.to_owned()),
            ..Event::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(reason: &str) -> Key {
        Key {
            regarding: "uid-1".into(),
            warning: false,
            action: "Reconcile".into(),
            reason: reason.into(),
        }
    }

    fn sent(count: i32, at: Instant) -> Sent {
        Sent {
            namespace: "default".into(),
            name: "vm.1".into(),
            count,
            at,
        }
    }

    #[test]
    fn a_repeat_within_six_minutes_grows_the_series_and_a_later_one_starts_anew() {
        let start = Instant::now();
        let mut events = SentEvents::new(start);
        assert_eq!(events.decide(&key("Started"), start), Publish::Create);
        events.sent(key("Started"), sent(1, start));
        let at = |s: u64| start + Duration::from_secs(s);

        assert_eq!(
            events.decide(&key("Started"), at(60)),
            Publish::Repeat(sent(2, at(60)))
        );
        events.sent(key("Started"), sent(2, at(60)));
        assert_eq!(
            events.decide(&key("Stopped"), at(60)),
            Publish::Create,
            "another reason is another event"
        );
        // Six minutes after the last occurrence the series is over, and the entry is pruned.
        assert_eq!(
            events.decide(&key("Started"), at(60 + 360)),
            Publish::Create
        );
        assert!(events.by_key.is_empty());
    }
}
