//! Request bodies are untrusted: checked writes into them, and the size and depth limits every
//! stored object keeps.
//!
//! `v["a"]["b"] = x` panics when `v["a"]` is a string, so nothing in the write path indexes
//! into a body that way; these helpers report a `400` naming the field instead. The limits
//! bound what a single request (a JSON patch that copies a subtree many times, say) or a series
//! of requests can make the server hold, and keep every stored object within what the recursive
//! walks (schema, fields, serialization) and the journal's own parser handle.

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

/// Deepest nesting a stored object may have. serde_json refuses to parse deeper than 128
/// levels; a journal line wraps the object in two more, so stored objects stay well below.
pub const MAX_DEPTH: usize = 100;

/// Largest serialized size a stored object may have (as the 3 MiB request limit).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

/// The JSON type name of a value, for error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn not_an_object(path: &str, v: &Value) -> ApiError {
    ApiError::bad_request(format!("{path}: must be an object, not a {}", type_name(v)))
}

/// `v` as an object, turning `null` into an empty object.
pub fn as_object<'a>(v: &'a mut Value, path: &str) -> Result<&'a mut Map<String, Value>> {
    if v.is_null() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => Ok(m),
        other => Err(not_an_object(path, other)),
    }
}

/// The object at `path` under `v`, created (as are missing or null parents) when absent.
pub fn object_at<'a>(v: &'a mut Value, path: &[&str]) -> Result<&'a mut Map<String, Value>> {
    let mut cur = as_object(v, "the request body")?;
    for (i, key) in path.iter().enumerate() {
        let child = cur
            .entry((*key).to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        cur = as_object(child, &path[..=i].join("."))?;
    }
    Ok(cur)
}

/// Sets `path` (at least one segment) under `v` to `value`, creating missing parents.
pub fn set(v: &mut Value, path: &[&str], value: Value) -> Result<()> {
    let Some((last, parents)) = path.split_last() else {
        return Err(ApiError::internal("empty field path"));
    };
    object_at(v, parents)?.insert((*last).to_string(), value);
    Ok(())
}

/// Removes `key` from `v` when `v` is an object.
pub fn remove(v: &mut Value, key: &str) -> Option<Value> {
    v.as_object_mut().and_then(|m| m.remove(key))
}

/// Refuses objects nested deeper than [`MAX_DEPTH`] or larger than [`MAX_OBJECT_BYTES`].
pub fn check_limits(v: &Value) -> Result<()> {
    if deeper_than(v, MAX_DEPTH) {
        return Err(ApiError::bad_request(format!(
            "the object is nested more than {MAX_DEPTH} levels deep"
        )));
    }
    if size_over(v, MAX_OBJECT_BYTES) {
        return Err(too_large());
    }
    Ok(())
}

pub fn too_large() -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("the object would be larger than the limit of {MAX_OBJECT_BYTES} bytes"),
    )
}

/// True when `v` nests more than `limit` levels; the walk never goes deeper than that.
pub fn deeper_than(v: &Value, limit: usize) -> bool {
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Array(a) => Box::new(a.iter()),
        Value::Object(m) => Box::new(m.values()),
        _ => return false,
    };
    let mut children = children.peekable();
    if children.peek().is_none() {
        return false;
    }
    limit == 0 || children.any(|c| deeper_than(c, limit - 1))
}

/// True when the serialized size of `v` exceeds `limit`; stops counting once it does.
pub fn size_over(v: &Value, limit: usize) -> bool {
    size_within(v, limit).is_none()
}

/// An estimate of the serialized size of `v`, or `None` once it exceeds `limit`.
pub fn size_within(v: &Value, limit: usize) -> Option<usize> {
    let mut budget = limit;
    fits(v, &mut budget).then(|| limit - budget)
}

/// Subtracts an estimate of `v`'s serialized size from `budget` (counting every string byte,
/// key and separator); false once the budget runs out.
fn fits(v: &Value, budget: &mut usize) -> bool {
    let mut take = |n: usize| match budget.checked_sub(n) {
        Some(rest) => {
            *budget = rest;
            true
        }
        None => false,
    };
    match v {
        Value::Null | Value::Bool(_) => take(5),
        Value::Number(_) => take(24),
        Value::String(s) => take(s.len() + 2),
        Value::Array(a) => take(2 + a.len()) && a.iter().all(|c| fits(c, budget)),
        Value::Object(m) => {
            take(2 + m.len())
                && m.iter().all(|(k, c)| {
                    budget
                        .checked_sub(k.len() + 3)
                        .map(|rest| *budget = rest)
                        .is_some()
                        && fits(c, budget)
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_through_a_string_are_refused_not_panicking() {
        let mut v = json!({"spec": "x"});
        let err = set(&mut v, &["spec", "finalizers"], json!([])).expect_err("spec is a string");
        assert_eq!(err.code, 400);
        assert!(
            err.message.contains("spec: must be an object"),
            "{}",
            err.message
        );
    }

    #[test]
    fn writes_create_missing_and_null_parents() {
        let mut v = json!({"metadata": null});
        set(&mut v, &["metadata", "labels", "a"], json!("b")).expect("set");
        assert_eq!(v, json!({"metadata": {"labels": {"a": "b"}}}));
    }

    #[test]
    fn depth_is_measured_without_walking_past_the_limit() {
        let mut deep = json!(1);
        for _ in 0..5 {
            deep = json!([deep]);
        }
        assert!(!deeper_than(&deep, 5));
        assert!(deeper_than(&deep, 4));
        assert!(!deeper_than(&json!({"a": {}}), 1));
    }

    #[test]
    fn size_counts_strings_and_stops_at_the_limit() {
        let v = json!({"data": {"k": "x".repeat(100)}});
        assert!(!size_over(&v, 200));
        assert!(size_over(&v, 100));
    }
}
