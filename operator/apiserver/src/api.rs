//! The API semantics: one lock around the store and the registry, and the reads.
//! Writes live in `write.rs`, deletion and garbage collection in `delete.rs`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::encoded::EncodedObjects;
use crate::error::{ApiError, Result};
use crate::persist::Journal;
use crate::registry::{Registry, ResourceType, from_crd};
use crate::selector::{FieldSelector, LabelSelector, extra_fields};
use crate::store::{Store, key_of, rv_of};

/// `(resource key, namespace, name)`.
pub type ObjRef = (String, String, String);

/// Where a request points: a resource type at a served version, maybe in a namespace.
#[derive(Debug, Clone)]
pub struct Scope {
    pub rt: Arc<ResourceType>,
    pub version: String,
    pub namespace: Option<String>,
}

impl Scope {
    pub fn ns(&self) -> &str {
        self.namespace.as_deref().unwrap_or_default()
    }

    /// Sets the requested apiVersion on an object read from storage.
    pub fn present(&self, obj: &Value) -> Value {
        if self.rt.behavior == crate::registry::Behavior::EventsV1 {
            return crate::events::to_v1(obj);
        }
        let want = self.rt.api_version(&self.version);
        let mut out = obj.clone();
        if out.get("apiVersion").and_then(Value::as_str) != Some(want.as_str())
            && let Some(m) = out.as_object_mut()
        {
            m.insert("apiVersion".into(), Value::String(want));
            // Read at another version than stored: pruned to the read version's schema.
            if self.rt.behavior == crate::registry::Behavior::Custom
                && let Some(schema) = self
                    .rt
                    .version(&self.version)
                    .and_then(|v| v.schema.as_ref())
            {
                schema.prune(&mut out);
            }
        }
        out
    }
}

/// Options for list and watch.
#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
}

impl ListOptions {
    pub fn parse(
        scope: &Scope,
        label: Option<&str>,
        field: Option<&str>,
        limit: Option<&str>,
        cont: Option<&str>,
    ) -> Result<Self> {
        let limit = match limit {
            None | Some("") | Some("0") => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            ),
        };
        // events.k8s.io/v1 selects on its own field names (checked as such, so an error
        // names them); storage holds core/v1 Events, so the selector is then translated.
        let fields = match scope.rt.behavior {
            crate::registry::Behavior::EventsV1 => {
                let text = field.unwrap_or_default();
                FieldSelector::parse(text, extra_fields(&scope.rt.group, &scope.rt.plural))?;
                let core: Vec<String> = text.split(',').map(crate::events::core_field).collect();
                FieldSelector::parse(&core.join(","), extra_fields("", "events"))?
            }
            _ => FieldSelector::parse(
                field.unwrap_or_default(),
                extra_fields(&scope.rt.group, &scope.rt.plural),
            )?,
        };
        Ok(Self {
            labels: LabelSelector::parse(label.unwrap_or_default())?,
            fields,
            limit,
            continue_token: cont.filter(|c| !c.is_empty()).map(str::to_string),
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
}

pub(crate) struct Inner {
    pub store: Store,
    pub registry: Registry,
    /// uid → object, for owner lookups.
    pub uids: HashMap<String, ObjRef>,
    /// owner uid → objects that name it in ownerReferences (may hold stale entries).
    pub dependents: HashMap<String, BTreeSet<ObjRef>>,
    /// Objects that carried the `foregroundDeletion` finalizer when last written.
    pub foreground: BTreeSet<ObjRef>,
    /// The RBAC index, rebuilt whenever an RBAC object changes.
    pub policy: Arc<crate::rbac::Policy>,
}

/// The dev control plane's API: thread-safe, shared by all request handlers.
pub struct Api {
    inner: Mutex<Inner>,
    /// Held for writing while watches are interrupted (see [`Api::interrupt_watches`]).
    pub(crate) watch_gate: tokio::sync::RwLock<()>,
    /// Bumped to end every open watch stream.
    pub(crate) watch_epoch: tokio::sync::watch::Sender<u64>,
    /// Stored objects' JSON for list responses.
    encoded: EncodedObjects,
}

impl Api {
    pub fn new(history_limit: usize, journal: Option<crate::persist::Replayed>) -> Result<Self> {
        let mut inner = Inner {
            store: Store::new(history_limit),
            registry: Registry::with_builtins(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            foreground: BTreeSet::new(),
            policy: Arc::default(),
        };
        if let Some(r) = journal {
            inner.store.restore(r.rv, r.objects, r.journal);
        }
        inner.reindex();
        inner.ensure_default_namespaces();
        Ok(Self {
            inner: Mutex::new(inner),
            watch_gate: tokio::sync::RwLock::new(()),
            watch_epoch: tokio::sync::watch::Sender::new(0),
            encoded: EncodedObjects::default(),
        })
    }

    pub fn open(path: &std::path::Path, history_limit: usize) -> Result<Self> {
        let replayed = Journal::open(path)
            .map_err(|e| ApiError::internal(format!("opening {}: {e}", path.display())))?;
        Self::new(history_limit, Some(replayed))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the maps half-written in a way later
        // requests would misread, so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn registry(&self) -> Registry {
        self.lock().registry.clone()
    }

    /// Drops the watch history: resuming from any earlier version now gets `410 Gone`.
    pub fn compact(&self) {
        self.lock().store.compact();
    }

    /// Fault injection for client tests: ends every open watch (as an API server restart
    /// would) and holds new watches until the returned guard is dropped. Writes and
    /// [`Api::compact`] in between let a test push clients' versions out of the window.
    pub async fn interrupt_watches(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        let guard = self.watch_gate.write().await;
        self.watch_epoch.send_modify(|e| *e += 1);
        guard
    }

    pub fn flush(&self) {
        self.lock().store.flush();
    }

    pub fn get(&self, scope: &Scope, name: &str) -> Result<Value> {
        let inner = self.lock();
        inner
            .store
            .get(&scope.rt.key(), scope.ns(), name)
            .map(|o| scope.present(&o))
            .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))
    }

    /// Lists matching objects; returns `(items, list resourceVersion, continue token)`.
    pub fn list(
        &self,
        scope: &Scope,
        opts: &ListOptions,
    ) -> Result<(Vec<Arc<Value>>, u64, Option<String>)> {
        let inner = self.lock();
        let rv = inner.store.current_rv();
        let (start_after, token_rv) = match &opts.continue_token {
            Some(t) => decode_continue(t)?,
            None => (None, rv),
        };
        if token_rv < inner.store.compacted_rv() && opts.continue_token.is_some() {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        let ns = scope.namespace.as_deref();
        let candidates: Vec<Arc<Value>> = match opts.fields.name() {
            Some(name) => match ns {
                Some(ns) => inner
                    .store
                    .get(&scope.rt.key(), ns, name)
                    .into_iter()
                    .collect(),
                None => inner
                    .store
                    .list(&scope.rt.key(), None)
                    .into_iter()
                    .filter(|o| key_of(o).1 == name)
                    .collect(),
            },
            None => inner.store.list(&scope.rt.key(), ns),
        };
        let mut items = Vec::new();
        let mut next = None;
        for obj in candidates {
            let key = key_of(&obj);
            if start_after.as_ref().is_some_and(|s| &key <= s) || !opts.matches(&obj) {
                continue;
            }
            if opts.limit.is_some_and(|l| items.len() >= l) {
                next = items
                    .last()
                    .map(|last: &Arc<Value>| encode_continue(&key_of(last), token_rv));
                break;
            }
            items.push(obj);
        }
        Ok((
            items,
            if opts.continue_token.is_some() {
                token_rv
            } else {
                rv
            },
            next,
        ))
    }

    /// A `…List` object for a list response.
    pub fn list_object(
        scope: &Scope,
        items: &[Arc<Value>],
        rv: u64,
        cont: Option<String>,
    ) -> Value {
        let items: Vec<Value> = items.iter().map(|o| scope.present(o)).collect();
        json!({"kind": scope.rt.list_kind, "apiVersion": scope.rt.api_version(&scope.version), "metadata": list_meta(rv, cont), "items": items})
    }

    /// The same list, serialized straight from storage: objects stored at the version asked
    /// for are written from their cached JSON, others converted first.
    pub fn list_bytes(
        &self,
        scope: &Scope,
        items: &[Arc<Value>],
        rv: u64,
        cont: Option<String>,
    ) -> Vec<u8> {
        let api_version = scope.rt.api_version(&scope.version);
        let head = json!({"kind": scope.rt.list_kind, "apiVersion": api_version, "metadata": list_meta(rv, cont)});
        let mut out = serde_json::to_vec(&head).unwrap_or_default();
        out.pop();
        out.extend_from_slice(b",\"items\":[");
        let stored_version = |obj: &Arc<Value>| {
            obj.get("apiVersion").and_then(Value::as_str) == Some(api_version.as_str())
        };
        if items.iter().all(stored_version) {
            self.encoded.write_list(&mut out, items);
        } else {
            for (i, obj) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                if let Err(e) = serde_json::to_writer(&mut out, &scope.present(obj)) {
                    tracing::error!(error = %e, "serializing a stored object failed");
                }
            }
        }
        out.extend_from_slice(b"]}");
        out
    }
}

fn list_meta(rv: u64, cont: Option<String>) -> Value {
    match cont {
        Some(c) => json!({"resourceVersion": rv.to_string(), "continue": c}),
        None => json!({"resourceVersion": rv.to_string()}),
    }
}

fn encode_continue(key: &(String, String), rv: u64) -> String {
    let raw = json!({"rv": rv, "ns": key.0, "name": key.1}).to_string();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

fn decode_continue(token: &str) -> Result<(Option<(String, String)>, u64)> {
    let bad = || ApiError::bad_request(format!("continue key is not valid: {token:?}"));
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(bad)
    };
    Ok((
        Some((s("ns")?, s("name")?)),
        v.get("rv").and_then(Value::as_u64).ok_or_else(bad)?,
    ))
}

impl Inner {
    /// Rebuilds the uid and owner indexes and CRD registrations from stored objects.
    fn reindex(&mut self) {
        for crd in self
            .store
            .list("apiextensions.k8s.io/customresourcedefinitions", None)
        {
            match from_crd(&crd) {
                Ok(t) => self.registry.insert(t),
                Err(e) => tracing::warn!(error = %e, "stored CRD no longer valid; not serving it"),
            }
        }
        let keys: Vec<String> = self.registry.all().map(|t| t.key()).collect();
        for key in keys {
            for obj in self.store.list(&key, None) {
                self.index(&key, &obj);
            }
        }
        self.rebuild_policy();
    }

    pub fn index(&mut self, resource: &str, obj: &Value) {
        let (ns, name) = key_of(obj);
        let me: ObjRef = (resource.to_string(), ns, name);
        if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
            self.uids.insert(uid.to_string(), me.clone());
        }
        for owner in obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(uid) = owner.get("uid").and_then(Value::as_str) {
                self.dependents
                    .entry(uid.to_string())
                    .or_default()
                    .insert(me.clone());
            }
        }
        let finalizers = obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array);
        if finalizers.is_some_and(|f| f.iter().any(|x| x == "foregroundDeletion")) {
            self.foreground.insert(me);
        }
    }

    fn ensure_default_namespaces(&mut self) {
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            if self.store.get("/namespaces", "", ns).is_none() {
                let obj = json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "uid": uuid::Uuid::new_v4().to_string(), "creationTimestamp": crate::write::now(), "labels": {"kubernetes.io/metadata.name": ns}},
                    "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
                });
                let stored = self.store.put("/namespaces", obj);
                self.index("/namespaces", &stored);
            }
        }
    }

    pub fn exists_uid(&self, uid: &str) -> bool {
        self.uids.get(uid).is_some_and(|(r, ns, name)| {
            self.store
                .get(r, ns, name)
                .is_some_and(|o| o.pointer("/metadata/uid").and_then(Value::as_str) == Some(uid))
        })
    }
}

/// The resourceVersion of a stored object, for callers outside the crate.
pub fn resource_version(obj: &Value) -> u64 {
    rv_of(obj)
}
