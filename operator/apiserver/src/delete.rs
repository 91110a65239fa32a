//! Deletion: finalizers and deletionTimestamp, ownerReference garbage collection, namespace
//! termination and CRD removal.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{Api, Inner, ListOptions, ObjRef, Scope};
use crate::error::{ApiError, Result};
use crate::registry::Behavior;
use crate::untrusted;
use crate::write::now;

/// A delete's preconditions: the object's uid and resourceVersion, when given, must match.
fn check_preconditions(
    scope: &Scope,
    existing: &Value,
    name: &str,
    opts: &DeleteOptions,
) -> Result<()> {
    let meta_str = |k: &str| {
        existing
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let failed = |why: &str| ApiError::conflict(&scope.rt.group, &scope.rt.plural, name, why);
    if opts.precondition_uid.is_some() && opts.precondition_uid != meta_str("uid") {
        return Err(failed(
            "Precondition failed: UID in precondition does not match the UID in record. The object might have been deleted and then recreated",
        ));
    }
    if opts.precondition_rv.is_some() && opts.precondition_rv != meta_str("resourceVersion") {
        return Err(failed(
            "the object has been modified; please apply your changes to the latest version and try again",
        ));
    }
    Ok(())
}

/// `propagationPolicy` of a delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub propagation: Propagation,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    /// Reads a `DeleteOptions` body (may be empty; JSON, or protobuf when `content_type`
    /// says so) plus query parameters.
    pub fn parse(
        body: &[u8],
        content_type: &str,
        query_policy: Option<&str>,
        dry_run: bool,
    ) -> Result<Self> {
        let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else if content_type.starts_with(crate::protobuf::CONTENT_TYPE) {
            crate::protobuf::decode(body)?
        } else {
            serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions body: {e}")))?
        };
        crate::shape::check_delete_options(&v)?;
        let policy = v
            .get("propagationPolicy")
            .and_then(Value::as_str)
            .or(query_policy);
        let propagation = match policy {
            None | Some("Background") => Propagation::Background,
            Some("Foreground") => Propagation::Foreground,
            Some("Orphan") => Propagation::Orphan,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "propagationPolicy: Unsupported value: {other:?}: supported values: \"Background\", \"Foreground\", \"Orphan\""
                )));
            }
        };
        let orphan = v.get("orphanDependents").and_then(Value::as_bool) == Some(true);
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_string);
        let dry = dry_run
            || v.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        Ok(Self {
            propagation: if orphan {
                Propagation::Orphan
            } else {
                propagation
            },
            precondition_uid: s("/preconditions/uid"),
            precondition_rv: s("/preconditions/resourceVersion"),
            dry_run: dry,
        })
    }
}

impl Api {
    pub fn delete(&self, scope: &Scope, name: &str, opts: &DeleteOptions) -> Result<Value> {
        let mut inner = self.lock();
        let out = inner.delete(scope, name, opts)?;
        inner.collect_garbage();
        Ok(deleted_answer(scope, out))
    }

    pub fn delete_collection(
        &self,
        scope: &Scope,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> Result<Value> {
        let (items, _, _) = self.list(scope, list)?;
        let mut inner = self.lock();
        let mut deleted = Vec::new();
        for obj in items {
            let (ns, name) = crate::store::key_of(&obj);
            let scope = Scope {
                namespace: (!ns.is_empty()).then_some(ns),
                ..scope.clone()
            };
            match inner.delete(&scope, &name, opts) {
                Ok(v) => deleted.push(v),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        inner.collect_garbage();
        Ok(Api::list_object(
            scope,
            &deleted.into_iter().map(Arc::new).collect::<Vec<_>>(),
            inner.store.current_rv(),
            None,
        ))
    }
}

/// What a DELETE answers. An object that is gone at once is answered with a `Success`
/// Status naming it (`details.kind` is the resource, as Kubernetes fills it), except for kinds
/// whose registry sets `ReturnDeletedObject`, which answer with the object; an object that
/// only got a deletionTimestamp (finalizers pending) is always answered with itself.
fn deleted_answer(scope: &Scope, object: Value) -> Value {
    if scope.rt.returns_deleted_object() || object.pointer("/metadata/deletionTimestamp").is_some()
    {
        return object;
    }
    let text = |ptr: &str| object.pointer(ptr).cloned().unwrap_or(json!(""));
    let mut details = json!({
        "name": text("/metadata/name"),
        "kind": scope.rt.plural,
        "uid": text("/metadata/uid"),
    });
    // Go leaves the empty core group out.
    if !scope.rt.group.is_empty() {
        details["group"] = json!(scope.rt.group);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

impl Inner {
    pub fn delete(&mut self, scope: &Scope, name: &str, opts: &DeleteOptions) -> Result<Value> {
        let key = scope.rt.key();
        let existing = self
            .store
            .get(&key, scope.ns(), name)
            .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))?;
        check_preconditions(scope, &existing, name, opts)?;
        if opts.dry_run {
            return Ok(scope.present(&existing));
        }
        let mut finalizers: Vec<Value> = existing
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let orphan = opts.propagation == Propagation::Orphan;
        if orphan {
            self.orphan_dependents(&existing);
        } else if opts.propagation == Propagation::Foreground && self.has_dependents(&existing) {
            let f = json!("foregroundDeletion");
            if !finalizers.contains(&f) {
                finalizers.push(f);
            }
        }
        let terminating_ns = scope.rt.behavior == Behavior::Namespace;
        if finalizers.is_empty() && !terminating_ns {
            return self.remove_now(scope, name).map(|o| scope.present(&o));
        }
        if existing.pointer("/metadata/deletionTimestamp").is_some()
            && existing
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(Vec::len)
                == Some(finalizers.len())
        {
            return Ok(scope.present(&existing));
        }
        let mut obj = (*existing).clone();
        let generation = obj
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let meta = untrusted::object_at(&mut obj, &["metadata"])?;
        meta.insert("finalizers".into(), Value::Array(finalizers));
        if !meta.contains_key("deletionTimestamp") {
            meta.insert("deletionTimestamp".into(), Value::String(now()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if scope.rt.has_generation() {
                meta.insert("generation".into(), json!(generation.saturating_add(1)));
            }
        }
        if terminating_ns {
            untrusted::set(&mut obj, &["status", "phase"], json!("Terminating"))?;
        }
        let stored = self.commit(scope, obj);
        Ok(scope.present(&stored))
    }

    /// Removes an object from storage and does what its kind requires afterwards.
    pub(crate) fn remove_now(&mut self, scope: &Scope, name: &str) -> Result<Arc<Value>> {
        let key = scope.rt.key();
        let gone = self
            .store
            .remove(&key, scope.ns(), name)
            .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))?;
        if let Some(uid) = gone.pointer("/metadata/uid").and_then(Value::as_str) {
            self.uids.remove(uid);
        }
        self.rbac_changed(&key);
        if scope.rt.behavior == Behavior::Crd {
            let group = gone
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let plural = gone
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            for obj in self.store.list(&format!("{group}/{plural}"), None) {
                let (ns, n) = crate::store::key_of(&obj);
                self.store.remove(&format!("{group}/{plural}"), &ns, &n);
            }
            self.registry.remove(&group, &plural);
        }
        Ok(gone)
    }

    fn has_dependents(&self, owner: &Value) -> bool {
        let Some(uid) = owner.pointer("/metadata/uid").and_then(Value::as_str) else {
            return false;
        };
        self.dependents.get(uid).is_some_and(|d| {
            d.iter()
                .any(|(r, ns, n)| self.store.get(r, ns, n).is_some())
        })
    }

    fn orphan_dependents(&mut self, owner: &Value) {
        let Some(uid) = owner
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        for (r, ns, n) in self.dependents.remove(&uid).unwrap_or_default() {
            let Some(obj) = self.store.get(&r, &ns, &n) else {
                continue;
            };
            let mut obj = (*obj).clone();
            if let Some(refs) = obj
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|o| o.get("uid").and_then(Value::as_str) != Some(uid.as_str()));
            }
            self.store.put(&r, obj);
        }
    }

    /// Background garbage collection and namespace termination, run after deletes until
    /// nothing more changes.
    pub(crate) fn collect_garbage(&mut self) {
        loop {
            let mut changed = false;
            let dead_owners: Vec<String> = self
                .dependents
                .keys()
                .filter(|u| !self.exists_uid(u))
                .cloned()
                .collect();
            // Each orphan once, however many of its owners are gone.
            let orphans: BTreeSet<ObjRef> = dead_owners
                .iter()
                .flat_map(|owner| self.dependents.remove(owner).unwrap_or_default())
                .collect();
            for (r, ns, n) in orphans {
                changed |= self.collect_dependent(&r, &ns, &n);
            }
            changed |= self.finish_foreground_deletions();
            changed |= self.finish_namespaces();
            if !changed {
                break;
            }
        }
    }

    fn scope_for(&self, resource: &str, ns: &str) -> Option<Scope> {
        let (group, plural) = resource.split_once('/')?;
        let rt = self.registry.get(group, plural)?;
        let version = rt.storage_version().name.clone();
        Some(Scope {
            rt,
            version,
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
        })
    }

    /// Deletes a dependent whose owners are all gone.
    fn collect_dependent(&mut self, resource: &str, ns: &str, name: &str) -> bool {
        let Some(obj) = self.store.get(resource, ns, name) else {
            return false;
        };
        if obj.pointer("/metadata/deletionTimestamp").is_some() {
            return false;
        }
        let live_owner = obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("uid").and_then(Value::as_str))
            .any(|u| self.exists_uid(u));
        if live_owner {
            return false;
        }
        let Some(scope) = self.scope_for(resource, ns) else {
            return false;
        };
        self.delete(&scope, name, &DeleteOptions::default()).is_ok()
    }

    /// Removes the `foregroundDeletion` finalizer once an owner has no dependents left.
    fn finish_foreground_deletions(&mut self) -> bool {
        let mut changed = false;
        let candidates = std::mem::take(&mut self.foreground);
        let waiting: Vec<ObjRef> = candidates
            .into_iter()
            .filter(|(r, ns, n)| {
                self.store.get(r, ns, n).is_some_and(|o| {
                    o.pointer("/metadata/finalizers")
                        .and_then(Value::as_array)
                        .is_some_and(|f| f.contains(&json!("foregroundDeletion")))
                })
            })
            .collect();
        // Still waiting ones go back; commits below re-add any that keep the finalizer.
        self.foreground.extend(waiting.iter().cloned());
        for (r, ns, n) in waiting {
            let Some(obj) = self.store.get(&r, &ns, &n) else {
                continue;
            };
            if let Some(uid) = obj.pointer("/metadata/uid").and_then(Value::as_str) {
                for (dr, dns, dn) in self.dependents.get(uid).cloned().unwrap_or_default() {
                    if let Some(scope) = self.scope_for(&dr, &dns) {
                        changed |=
                            self.store.get(&dr, &dns, &dn).is_some_and(|d| {
                                d.pointer("/metadata/deletionTimestamp").is_none()
                            }) && self.delete(&scope, &dn, &DeleteOptions::default()).is_ok();
                    }
                }
            }
            if self.has_dependents(&obj) {
                continue;
            }
            let mut updated = (*obj).clone();
            if let Some(f) = updated
                .pointer_mut("/metadata/finalizers")
                .and_then(Value::as_array_mut)
            {
                f.retain(|x| x != "foregroundDeletion");
            }
            let Some(scope) = self.scope_for(&r, &ns) else {
                continue;
            };
            if updated
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                changed |= self.remove_now(&scope, &n).is_ok();
            } else {
                self.commit(&scope, updated);
                changed = true;
            }
        }
        changed
    }

    /// Empties terminating namespaces and removes them once nothing is left inside.
    fn finish_namespaces(&mut self) -> bool {
        let mut changed = false;
        let terminating: Vec<String> = self
            .store
            .list("/namespaces", None)
            .iter()
            .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
            .map(|n| crate::store::key_of(n).1)
            .collect();
        for ns in terminating {
            let mut remaining = 0;
            let types: Vec<_> = self
                .registry
                .all()
                .filter(|t| t.namespaced)
                .cloned()
                .collect();
            for t in types {
                let scope = Scope {
                    version: t.storage_version().name.clone(),
                    rt: t.clone(),
                    namespace: Some(ns.clone()),
                };
                for obj in self.store.list(&t.key(), Some(&ns)) {
                    remaining += 1;
                    if obj.pointer("/metadata/deletionTimestamp").is_none() {
                        let name = crate::store::key_of(&obj).1;
                        changed |= self
                            .delete(&scope, &name, &DeleteOptions::default())
                            .is_ok();
                    }
                }
            }
            if (remaining == 0
                || self
                    .registry
                    .all()
                    .filter(|t| t.namespaced)
                    .all(|t| self.store.list(&t.key(), Some(&ns)).is_empty()))
                && let Some(scope) = self.scope_for("/namespaces", "")
            {
                changed |= self.remove_now(&scope, &ns).is_ok();
            }
        }
        changed
    }
}
