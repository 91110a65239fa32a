//! The spec/status split: a write to `/status` changes only the status; a write to the main
//! resource of a kind with a status subresource leaves the status as it was.

use std::sync::Arc;

use serde_json::Value;

use crate::api::Scope;
use crate::error::Result;
use crate::untrusted;

/// Takes from `obj` only what the request may change, given the subresource written to.
pub(super) fn split(
    scope: &Scope,
    existing: &Arc<Value>,
    obj: Value,
    sub: &str,
    operation: &str,
) -> Result<Value> {
    if sub == "status" {
        return status_only(scope, existing, obj, operation);
    }
    if !scope.rt.status_is_subresource(&scope.version) {
        return Ok(obj);
    }
    let mut obj = obj;
    match existing.get("status") {
        Some(s) => untrusted::set(&mut obj, &["status"], s.clone())?,
        None => drop(untrusted::remove(&mut obj, "status")),
    }
    Ok(obj)
}

/// The existing object with the written status (and, for apply, the new field ownership).
fn status_only(
    scope: &Scope,
    existing: &Arc<Value>,
    mut written: Value,
    operation: &str,
) -> Result<Value> {
    let status = untrusted::remove(&mut written, "status");
    let managed = written
        .pointer_mut("/metadata/managedFields")
        .map(Value::take);
    let mut obj = scope.present(existing);
    match status {
        Some(s) => untrusted::set(&mut obj, &["status"], s)?,
        None => drop(untrusted::remove(&mut obj, "status")),
    }
    if let Some(m) = managed.filter(|_| operation == "Apply") {
        untrusted::set(&mut obj, &["metadata", "managedFields"], m)?;
    }
    Ok(obj)
}
