//! PUT, and the tail every update shares (PUT, patches, apply): immutable metadata, the
//! finalizer rule, generation, field ownership, and the no-op and finalized cases.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::admit::{check_body, schema_of};
use super::{WriteOptions, Written, name_mismatch, name_of, rv_text, stale, status};
use crate::api::{Inner, Scope};
use crate::error::{ApiError, Cause, Result};
use crate::fields::record_update;
use crate::registry::Behavior;
use crate::untrusted;

/// Metadata an update cannot change: it is always taken from the stored object.
const IMMUTABLE: &[&str] = &[
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
    "name",
    "generation",
];

impl Inner {
    pub fn update(
        &mut self,
        scope: &Scope,
        name: &str,
        sub: &str,
        obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        check_body(scope, &obj)?;
        let existing = self
            .store
            .get(&scope.rt.key(), scope.ns(), name)
            .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))?;
        let given = name_of(&obj);
        if !given.is_empty() && given != name {
            return Err(name_mismatch(given, name));
        }
        let given_rv = rv_text(&obj);
        if given_rv.is_empty() && scope.rt.behavior == Behavior::Custom {
            let cause = Cause::invalid(
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            );
            return Err(ApiError::invalid(
                &scope.rt.group,
                &scope.rt.kind,
                name,
                vec![cause],
            ));
        }
        if !given_rv.is_empty() && given_rv != rv_text(&existing) {
            return Err(stale(scope, name));
        }
        self.finish_update(scope, &existing, obj, sub, opts, "Update")
    }

    /// Shared tail of update, patch and apply: spec/status split, immutable metadata,
    /// generation, admission, ownership, and the no-op and finalizer rules.
    pub(super) fn finish_update(
        &mut self,
        scope: &Scope,
        existing: &Arc<Value>,
        mut obj: Value,
        sub: &str,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Written> {
        let name = name_of(existing).to_string();
        untrusted::object_at(&mut obj, &["metadata"])?;
        let events_v1 = scope.rt.behavior == Behavior::EventsV1;
        if events_v1 {
            obj = crate::events::to_core(obj);
        }
        let mut obj = status::split(scope, existing, obj, sub, operation)?;
        keep_immutable_metadata(existing, &mut obj)?;
        refuse_new_finalizers_while_deleting(scope, existing, &obj, &name)?;
        let old = if events_v1 {
            (**existing).clone()
        } else {
            scope.present(existing)
        };
        let warnings = self.admit(scope, &mut obj, Some(&old), opts)?;
        if scope.rt.has_generation() && spec_changed(&old, &obj) {
            let g = existing
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            untrusted::set(
                &mut obj,
                &["metadata", "generation"],
                json!(g.saturating_add(1)),
            )?;
        }
        if operation != "Apply" {
            record_update(
                Some(&old),
                &mut obj,
                &opts.manager,
                sub,
                schema_of(scope).as_deref(),
            );
        }
        let rv = old
            .pointer("/metadata/resourceVersion")
            .cloned()
            .unwrap_or(Value::Null);
        untrusted::set(&mut obj, &["metadata", "resourceVersion"], rv)?;
        if same_ignoring_times(&old, &obj) {
            return Ok(Written {
                object: scope.present(existing),
                warnings,
                created: false,
            });
        }
        if !opts.dry_run && finalized(&obj) {
            let gone = self.remove_now(scope, &name)?;
            return Ok(Written {
                object: scope.present(&gone),
                warnings,
                created: false,
            });
        }
        Ok(self.store_written(scope, obj, opts, warnings, false))
    }
}

fn keep_immutable_metadata(existing: &Value, obj: &mut Value) -> Result<()> {
    let meta = untrusted::object_at(obj, &["metadata"])?;
    for k in IMMUTABLE {
        match existing.pointer(&format!("/metadata/{k}")) {
            Some(v) => meta.insert((*k).into(), v.clone()),
            None => meta.remove(*k),
        };
    }
    Ok(())
}

/// Once an object is being deleted, finalizers can only be removed.
fn refuse_new_finalizers_while_deleting(
    scope: &Scope,
    existing: &Value,
    obj: &Value,
    name: &str,
) -> Result<()> {
    if existing.pointer("/metadata/deletionTimestamp").is_none() {
        return Ok(());
    }
    let finalizers = |v: &Value| -> Vec<Value> {
        v.pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let before = finalizers(existing);
    if finalizers(obj).iter().all(|f| before.contains(f)) {
        return Ok(());
    }
    let cause = Cause {
        reason: "FieldValueForbidden",
        field: "metadata.finalizers".into(),
        message: "Forbidden: no new finalizers can be added if the object is being deleted".into(),
    };
    Err(ApiError::invalid(
        &scope.rt.group,
        &scope.rt.kind,
        name,
        vec![cause],
    ))
}

/// A deleted object whose last finalizer went away is removed.
fn finalized(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
        && obj
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
}

/// True when anything outside metadata and status differs (generation rule).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let body = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    body(old) != body(new)
}

/// A write that changes nothing but managed-field timestamps is a no-op and is not stored.
fn same_ignoring_times(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in list {
                if let Some(m) = e.as_object_mut() {
                    m.remove("time");
                }
            }
        }
        v
    };
    strip(old) == strip(new)
}
