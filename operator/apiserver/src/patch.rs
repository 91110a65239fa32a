//! PATCH bodies: JSON merge patch, JSON patch and strategic merge patch.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::{ApiError, Result};
use crate::untrusted;

/// The patch formats, by request `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self> {
        let base = ct.split(';').next().unwrap_or_default().trim();
        match base {
            "application/merge-patch+json" => Ok(Self::Merge),
            "application/json-patch+json" => Ok(Self::Json),
            "application/strategic-merge-patch+json" => Ok(Self::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"
            ))),
        }
    }
}

/// Applies a merge, JSON or strategic merge patch to `target`.
pub fn apply_patch(target: &mut Value, kind: PatchType, body: &[u8]) -> Result<()> {
    match kind {
        PatchType::Merge => {
            let patch: Value = parse_json(body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "merge patch body must be a JSON object",
                ));
            }
            json_patch::merge(target, &patch);
            Ok(())
        }
        PatchType::Json => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut growth = GrowthBound::new(target)?;
            for op in patch.0 {
                growth.admit(target, &op)?;
                // As in Kubernetes, testing that a missing path is null succeeds.
                if let json_patch::PatchOperation::Test(t) = &op
                    && t.value.is_null()
                    && target.pointer(t.path.as_str()).is_none()
                {
                    continue;
                }
                json_patch::patch(target, &[op]).map_err(|e| {
                    ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    )
                })?;
            }
            Ok(())
        }
        PatchType::Strategic => {
            let patch: Value = parse_json(body)?;
            let Value::Object(p) = patch else {
                return Err(ApiError::bad_request(
                    "strategic merge patch body must be a JSON object",
                ));
            };
            strategic_object(target, &p);
            Ok(())
        }
        PatchType::Apply => Err(ApiError::internal(
            "apply patches go through server-side apply",
        )),
    }
}

/// An upper bound of the size a JSON patch can make its target: the operations that add
/// (`add`, `replace`, `copy`, `move`) count what they bring. `copy` can double an object with
/// each operation, so a patch of a few kilobytes could otherwise ask for terabytes.
struct GrowthBound(usize);

impl GrowthBound {
    fn new(target: &Value) -> Result<Self> {
        untrusted::size_within(target, untrusted::MAX_OBJECT_BYTES)
            .map(Self)
            .ok_or_else(untrusted::too_large)
    }

    fn admit(&mut self, target: &Value, op: &json_patch::PatchOperation) -> Result<()> {
        use json_patch::PatchOperation as Op;
        let added = match op {
            Op::Add(o) => Some(&o.value),
            Op::Replace(o) => Some(&o.value),
            Op::Copy(o) => target.pointer(o.from.as_str()),
            Op::Move(_) | Op::Remove(_) | Op::Test(_) => None,
        };
        let room = untrusted::MAX_OBJECT_BYTES.saturating_sub(self.0);
        let size = match added {
            None => 0,
            Some(v) => untrusted::size_within(v, room).ok_or_else(untrusted::too_large)?,
        };
        self.0 += size;
        Ok(())
    }
}

fn parse_json(body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))
}

/// Merge key of a list field of the built-in kinds (their strategic merge patch metadata).
/// `ports` are keyed by `containerPort` in containers and by `port` in Services: the first
/// candidate key that `has` accepts (the list's items carry it) wins.
pub fn merge_key(field: &str, has: impl Fn(&str) -> bool) -> Option<&'static str> {
    let candidates: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => &["name"],
        "ownerReferences" => &["uid"],
        "conditions" => &["type"],
        "volumeMounts" => &["mountPath"],
        "ports" => &["containerPort", "port"],
        _ => &[],
    };
    candidates.iter().copied().find(|key| has(key))
}

/// Primitive lists merged as sets.
fn is_set_list(field: &str) -> bool {
    field == "finalizers"
}

fn strategic_object(target: &mut Value, patch: &Map<String, Value>) {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *target = Value::Object(replaced);
            return;
        }
        Some("delete") => {
            *target = Value::Object(Map::new());
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, pv) in patch {
        if k.starts_with('$') {
            if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/")
                && let (Some(Value::Array(items)), Some(remove)) = (t.get_mut(field), pv.as_array())
            {
                let remove = item_set(remove);
                items.retain(|i| !remove.contains(&i.to_string()));
            }
            // $setElementOrder and $retainKeys only order or prune lists kubectl already sends whole.
            continue;
        }
        match pv {
            Value::Null => {
                t.remove(k);
            }
            Value::Object(po) => strategic_object(t.entry(k.clone()).or_insert(Value::Null), po),
            Value::Array(items) => match (merge_key(k, |key| carries(items, key)), t.get_mut(k)) {
                (Some(key), Some(Value::Array(existing))) => merge_keyed(existing, items, key),
                (None, Some(Value::Array(existing))) if is_set_list(k) => {
                    let mut present = item_set(existing);
                    for i in items {
                        if present.insert(i.to_string()) {
                            existing.push(i.clone());
                        }
                    }
                }
                _ => {
                    t.insert(
                        k.clone(),
                        Value::Array(items.iter().map(strip_directives).collect()),
                    );
                }
            },
            other => {
                t.insert(k.clone(), other.clone());
            }
        }
    }
}

/// Merges a keyed list item by item; items are found through an index of the list, so the
/// cost stays linear in the lists' lengths.
fn merge_keyed(existing: &mut Vec<Value>, patch: &[Value], key: &str) {
    let mut index: HashMap<String, usize> = HashMap::new();
    for (i, e) in existing.iter().enumerate() {
        if let Some(id) = e.get(key) {
            index.entry(id.to_string()).or_insert(i);
        }
    }
    let mut deleted = HashSet::new();
    for item in patch {
        let Some(id) = item.get(key).map(Value::to_string) else {
            continue;
        };
        let pos = index.get(&id).copied().filter(|i| !deleted.contains(i));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete, item.as_object()) {
            (Some(i), true, _) => {
                deleted.insert(i);
            }
            (Some(i), false, Some(po)) => {
                if let Some(target) = existing.get_mut(i) {
                    strategic_object(target, po);
                }
            }
            (None, false, _) => {
                index.insert(id, existing.len());
                existing.push(strip_directives(item));
            }
            _ => {}
        }
    }
    if !deleted.is_empty() {
        let mut i = 0;
        existing.retain(|_| {
            i += 1;
            !deleted.contains(&(i - 1))
        });
    }
}

/// Whether some item of a list has the field `key`.
fn carries(items: &[Value], key: &str) -> bool {
    items.iter().any(|i| i.get(key).is_some())
}

/// The items of a list as strings, for set membership in linear time.
fn item_set(items: &[Value]) -> HashSet<String> {
    items.iter().map(Value::to_string).collect()
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let mut t = json!({"spec": {"cpus": 1, "kernel": "/k"}});
        apply_patch(
            &mut t,
            PatchType::Merge,
            br#"{"spec": {"cpus": 2, "kernel": null}}"#,
        )
        .expect("patch");
        assert_eq!(t, json!({"spec": {"cpus": 2}}));
    }

    #[test]
    fn json_patch_test_of_missing_path_against_null_passes() {
        let mut t = json!({"metadata": {}});
        let patch = br#"[{"op": "test", "path": "/metadata/finalizers", "value": null}, {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}]"#;
        apply_patch(&mut t, PatchType::Json, patch).expect("patch");
        assert_eq!(t["metadata"]["finalizers"], json!(["f"]));
    }

    #[test]
    fn json_patch_failure_is_reported() {
        let mut t = json!({"spec": {}});
        let err = apply_patch(
            &mut t,
            PatchType::Json,
            br#"[{"op": "test", "path": "/spec/cpus", "value": 1}]"#,
        )
        .expect_err("test fails");
        assert_eq!(err.code, 422);
    }

    #[test]
    fn strategic_merge_merges_keyed_lists_and_finalizers() {
        let mut t = json!({"metadata": {"finalizers": ["a"], "ownerReferences": [{"uid": "1", "name": "x"}]}});
        let patch = br#"{"metadata": {"finalizers": ["b"], "ownerReferences": [{"uid": "1", "name": "y"}, {"uid": "2", "name": "z"}],
            "$setElementOrder/finalizers": ["a", "b"]}}"#;
        apply_patch(&mut t, PatchType::Strategic, patch).expect("patch");
        assert_eq!(t["metadata"]["finalizers"], json!(["a", "b"]));
        assert_eq!(
            t["metadata"]["ownerReferences"],
            json!([{"uid": "1", "name": "y"}, {"uid": "2", "name": "z"}])
        );
        apply_patch(
            &mut t,
            PatchType::Strategic,
            br#"{"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}"#,
        )
        .expect("patch");
        assert_eq!(t["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn service_ports_merge_by_port_and_container_ports_by_container_port() {
        let mut service = json!({"spec": {"ports": [{"name": "metrics", "port": 8080}]}});
        let moved = br#"{"spec": {"ports": [{"name": "metrics", "port": 9091}, {"$patch": "delete", "port": 8080}]}}"#;
        apply_patch(&mut service, PatchType::Strategic, moved).expect("patch");
        assert_eq!(
            service["spec"]["ports"],
            json!([{"name": "metrics", "port": 9091}])
        );
        let mut container = json!({"ports": [{"containerPort": 80, "name": "http"}]});
        let renamed = br#"{"ports": [{"containerPort": 80, "name": "web"}]}"#;
        apply_patch(&mut container, PatchType::Strategic, renamed).expect("patch");
        assert_eq!(
            container["ports"],
            json!([{"containerPort": 80, "name": "web"}])
        );
    }

    #[test]
    fn unknown_patch_content_type_is_415() {
        assert_eq!(
            PatchType::from_content_type("text/plain")
                .expect_err("unknown")
                .code,
            415
        );
    }
}
