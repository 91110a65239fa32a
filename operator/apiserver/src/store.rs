//! Versioned object storage with a bounded change history for watches.
//!
//! Every write takes the next global resourceVersion, like etcd's revision. The last
//! `history_limit` changes are kept so a watch can resume from any version in that window;
//! an older version gets `410 Gone`, which tells clients to re-list.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::persist::Journal;
use crate::untrusted;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One committed change.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub resource: String,
    pub type_: EventType,
    pub object: Arc<Value>,
    /// The object before this change (for selector transitions in watches).
    pub prev: Option<Arc<Value>>,
    /// Estimated serialized size of `object`, counted against the history's byte budget.
    size: usize,
}

/// Bytes of objects the change history may hold. Without it, the count limit alone would let
/// repeated writes of 3 MiB objects pin hundreds of gigabytes.
const HISTORY_BYTES: usize = 512 * 1024 * 1024;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type ObjKey = (String, String);

pub struct Store {
    rv: u64,
    objects: BTreeMap<String, BTreeMap<ObjKey, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    history_bytes: usize,
    history_byte_budget: usize,
    compacted_rv: u64,
    tx: broadcast::Sender<Arc<Event>>,
    journal: Option<Journal>,
}

pub fn key_of(obj: &Value) -> ObjKey {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

pub fn rv_of(obj: &Value) -> u64 {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Objects reach the store only through admission, which makes `metadata` an object; an
/// object without one is stored without a version rather than taking the server down.
fn set_resource_version(obj: &mut Value, rv: u64) {
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(meta) => {
            meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
        }
        None => tracing::error!("stored an object without metadata"),
    }
}

impl Store {
    pub fn new(history_limit: usize) -> Self {
        Self::with_byte_budget(history_limit, HISTORY_BYTES)
    }

    fn with_byte_budget(history_limit: usize, history_byte_budget: usize) -> Self {
        // A watcher that falls further behind than the history window is closed: it could not
        // resume from where it was anyway.
        let (tx, _) = broadcast::channel(history_limit.clamp(16, 16_384));
        Self {
            rv: 1,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            history_bytes: 0,
            history_byte_budget,
            compacted_rv: 0,
            tx,
            journal: None,
        }
    }

    /// Restores objects replayed from a journal and keeps writing to it.
    pub fn restore(
        &mut self,
        rv: u64,
        objects: BTreeMap<String, BTreeMap<ObjKey, Arc<Value>>>,
        journal: Journal,
    ) {
        self.rv = rv.max(self.rv);
        self.objects = objects;
        self.compacted_rv = self.rv;
        self.journal = Some(journal);
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// Forgets all history: any watch from an older version now gets `410 Gone`.
    pub fn compact(&mut self) {
        self.history.clear();
        self.history_bytes = 0;
        self.compacted_rv = self.rv;
    }

    pub fn get(&self, resource: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(resource)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// Objects of one resource, optionally in one namespace, in key order.
    pub fn list(&self, resource: &str, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(objs) = self.objects.get(resource) else {
            return Vec::new();
        };
        match ns {
            None => objs.values().cloned().collect(),
            Some(ns) => {
                let start = (ns.to_string(), String::new());
                objs.range(start..)
                    .take_while(|((n, _), _)| n == ns)
                    .map(|(_, v)| v.clone())
                    .collect()
            }
        }
    }

    /// Stores `obj` under the next resourceVersion and returns the stored copy.
    pub fn put(&mut self, resource: &str, mut obj: Value) -> Arc<Value> {
        self.rv += 1;
        set_resource_version(&mut obj, self.rv);
        let obj = Arc::new(obj);
        let key = key_of(&obj);
        let prev = self
            .objects
            .entry(resource.to_string())
            .or_default()
            .insert(key, obj.clone());
        let type_ = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        if let Some(j) = &mut self.journal {
            j.put(self.rv, resource, &obj);
        }
        self.record(resource, type_, obj.clone(), prev);
        obj
    }

    /// Removes an object; the DELETED event carries a fresh resourceVersion.
    pub fn remove(&mut self, resource: &str, ns: &str, name: &str) -> Option<Arc<Value>> {
        let prev = self
            .objects
            .get_mut(resource)?
            .remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let mut gone = (*prev).clone();
        set_resource_version(&mut gone, self.rv);
        let gone = Arc::new(gone);
        if let Some(j) = &mut self.journal {
            j.remove(self.rv, resource, ns, name);
        }
        self.record(resource, EventType::Deleted, gone.clone(), Some(prev));
        Some(gone)
    }

    fn record(
        &mut self,
        resource: &str,
        type_: EventType,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
    ) {
        let budget = self.history_byte_budget;
        let size = untrusted::size_within(&object, budget).unwrap_or(budget);
        let event = Arc::new(Event {
            rv: self.rv,
            resource: resource.to_string(),
            type_,
            object,
            prev,
            size,
        });
        while self.history.len() >= self.history_limit || self.history_bytes + size > budget {
            let Some(old) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= old.size;
            self.compacted_rv = old.rv;
        }
        self.history_bytes += size;
        self.history.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.tx.send(event);
    }

    /// Changes after `rv` still in the window, or `None` when `rv` was compacted away.
    pub fn since(&self, rv: u64) -> Option<Vec<Arc<Event>>> {
        if rv < self.compacted_rv {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some(self.history.range(start..).cloned().collect())
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    pub fn flush(&mut self) {
        if let Some(j) = &mut self.journal {
            j.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn every_write_takes_a_new_resource_version() {
        let mut s = Store::new(100);
        let a = s.put("/configmaps", cm("a"));
        let b = s.put("/configmaps", cm("a"));
        assert!(rv_of(&b) > rv_of(&a));
        let gone = s.remove("/configmaps", "default", "a").expect("exists");
        assert!(rv_of(&gone) > rv_of(&b));
        assert!(s.get("/configmaps", "default", "a").is_none());
    }

    #[test]
    fn history_resumes_after_a_version_and_expires_when_compacted() {
        let mut s = Store::new(2);
        let first = rv_of(&s.put("/configmaps", cm("a")));
        s.put("/configmaps", cm("b"));
        let events = s.since(first).expect("in window");
        assert_eq!(events.len(), 1);
        s.put("/configmaps", cm("c"));
        assert!(
            s.since(first - 1).is_none(),
            "oldest event fell out of the window"
        );
        s.compact();
        assert!(s.since(first).is_none());
        assert_eq!(
            s.since(s.current_rv()).expect("current rv is fine").len(),
            0
        );
    }

    #[test]
    fn history_of_large_objects_is_bounded_in_bytes() {
        let mut s = Store::with_byte_budget(1000, 10_000);
        let big = |name: &str| json!({"metadata": {"name": name, "namespace": "default"}, "data": "x".repeat(3000)});
        let first = rv_of(&s.put("/configmaps", big("a")));
        for i in 0..10 {
            s.put("/configmaps", big(&format!("b{i}")));
        }
        assert!(s.history_bytes <= 10_000, "{} bytes kept", s.history_bytes);
        assert!(
            s.since(first).is_none(),
            "the oldest change was dropped for room"
        );
        assert_eq!(s.since(s.current_rv() - 1).map(|e| e.len()), Some(1));
    }

    #[test]
    fn list_by_namespace_stays_inside_it() {
        let mut s = Store::new(10);
        s.put(
            "/configmaps",
            json!({"metadata": {"name": "x", "namespace": "a"}}),
        );
        s.put(
            "/configmaps",
            json!({"metadata": {"name": "y", "namespace": "b"}}),
        );
        assert_eq!(s.list("/configmaps", Some("a")).len(), 1);
        assert_eq!(s.list("/configmaps", None).len(), 2);
    }
}
