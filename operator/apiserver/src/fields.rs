//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field set is the set of leaf paths in FieldsV1 notation (`f:spec`, `f:cpus`;
//! `k:{"name":"a"}` for items of keyed lists; `v:"x"` for set members). Lists are atomic unless
//! the schema (or, for built-in kinds, the strategic-merge metadata) gives them keys.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::error::{ApiError, Result};
use crate::patch::merge_key;
use crate::schema::Schema;

type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Metadata fields the server owns; they never appear in a field set.
const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    set: FieldSet,
}

/// Leaf paths of `v` that a writer can own.
pub fn field_set(v: &Value, schema: Option<&Schema>) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(map) = v else { return out };
    for (k, cv) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                if let Value::Object(meta) = cv {
                    for (mk, mv) in meta
                        .iter()
                        .filter(|(mk, _)| !SYSTEM_METADATA.contains(&mk.as_str()))
                    {
                        collect(
                            mv,
                            None,
                            mk,
                            &mut vec!["f:metadata".into(), format!("f:{mk}")],
                            &mut out,
                        );
                    }
                }
            }
            _ => {
                let child = schema.and_then(|s| s.properties.get(k));
                collect(cv, child, k, &mut vec![format!("f:{k}")], &mut out);
            }
        }
    }
    out
}

fn list_keys<'a>(schema: Option<&'a Schema>, field: &str) -> Option<Vec<&'a str>> {
    match schema {
        Some(s) if s.list_type.as_deref() == Some("map") => {
            Some(s.list_map_keys.iter().map(String::as_str).collect())
        }
        Some(_) => None,
        None => merge_key(field).map(|k| vec![k]),
    }
}

fn is_set(schema: Option<&Schema>, field: &str) -> bool {
    schema.map_or(field == "finalizers", |s| {
        s.list_type.as_deref() == Some("set")
    })
}

fn collect(v: &Value, schema: Option<&Schema>, field: &str, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m)
            if !m.is_empty()
                && !schema.is_some_and(|s| {
                    s.preserve_unknown && s.properties.is_empty() && s.additional.is_none()
                }) =>
        {
            for (k, cv) in m {
                let child = schema.and_then(|s| s.properties.get(k).or(s.additional.as_deref()));
                path.push(format!("f:{k}"));
                collect(cv, child, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let item_schema = schema.and_then(|s| s.items.as_deref());
            if let Some(keys) = list_keys(schema, field).filter(|keys| {
                items
                    .iter()
                    .all(|i| keys.iter().all(|k| i.get(k).is_some()))
            }) {
                for item in items {
                    let id: Map<String, Value> = keys
                        .iter()
                        .filter_map(|k| item.get(*k).map(|x| ((*k).to_string(), x.clone())))
                        .collect();
                    path.push(format!("k:{}", Value::Object(id)));
                    path.push(".".into());
                    out.insert(path.clone());
                    path.pop();
                    collect(item, item_schema, "", path, out);
                    path.pop();
                }
            } else if is_set(schema, field) {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
            } else {
                out.insert(path.clone());
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path, if present.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = if let Some(f) = seg.strip_prefix("f:") {
            cur.get(f)?
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur.as_array()?
                .iter()
                .find(|i| id.iter().all(|(ik, iv)| i.get(ik) == Some(iv)))?
        } else if let Some(val) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(val).ok()?;
            cur.as_array()?.iter().find(|i| **i == want)?
        } else {
            cur
        };
    }
    Some(cur)
}

/// Removes the field at `path` (used when an applier stops applying a field nobody else owns).
fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parent_path)) = path.split_last() else {
        return;
    };
    if last == "." {
        return remove(v, parent_path);
    }
    let mut cur = v;
    for seg in parent_path {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let id: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|i| id.iter().all(|(ik, iv)| i.get(ik) == Some(iv)))
            })
        } else {
            None
        };
        let Some(n) = next else { return };
        cur = n;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Value::Object(m) = cur {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:").or_else(|| last.strip_prefix("v:")) {
        let Ok(want) = serde_json::from_str::<Value>(k) else {
            return;
        };
        if let Value::Array(items) = cur {
            items.retain(|i| match (&want, i) {
                (Value::Object(id), _) if last.starts_with("k:") => {
                    !id.iter().all(|(ik, iv)| i.get(ik) == Some(iv))
                }
                _ => *i != want,
            });
        }
    }
}

/// FieldsV1 JSON for a set.
fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let Value::Object(m) = cur else { break };
            cur = m.entry(seg.clone()).or_insert_with(|| json!({}));
        }
    }
    root
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else { return };
    if m.is_empty() && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
    for (k, cv) in m {
        prefix.push(k.clone());
        from_fields_v1(cv, prefix, out);
        prefix.pop();
    }
}

fn entries(obj: &Value) -> Vec<Entry> {
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|e| {
                    let mut set = FieldSet::new();
                    from_fields_v1(
                        e.get("fieldsV1").unwrap_or(&Value::Null),
                        &mut Vec::new(),
                        &mut set,
                    );
                    Entry {
                        manager: s(e, "manager"),
                        operation: s(e, "operation"),
                        subresource: s(e, "subresource"),
                        api_version: s(e, "apiVersion"),
                        time: s(e, "time"),
                        set,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, list: &[Entry]) {
    let out: Vec<Value> = list
        .iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation, "apiVersion": e.api_version, "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.set)});
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if out.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(out));
        }
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn scoped(set: FieldSet, subresource: &str) -> FieldSet {
    let status = |p: &Path| p.first().is_some_and(|s| s == "f:status");
    set.into_iter()
        .filter(|p| {
            if subresource == "status" {
                status(p)
            } else {
                !status(p) || subresource.is_empty()
            }
        })
        .collect()
}

/// Records an Update by `manager`: it takes ownership of every field whose value it changed.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    subresource: &str,
    schema: Option<&Schema>,
) {
    let new_set = field_set(new, schema);
    let mut list = entries(old.unwrap_or(&Value::Null));
    let changed: FieldSet = new_set
        .iter()
        .filter(|p| old.and_then(|o| lookup(o, p)) != lookup(new, p))
        .cloned()
        .collect();
    for e in &mut list {
        e.set
            .retain(|p| new_set.contains(p) && !changed.contains(p));
    }
    let api_version = new
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if !changed.is_empty() {
        match list.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.set.extend(changed);
                e.time = now();
            }
            None => list.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                subresource: subresource.into(),
                api_version,
                time: now(),
                set: changed,
            }),
        }
    }
    store_entries(new, &list);
}

/// Server-side apply of `applied` by `manager` onto `current` (or a new object).
pub fn server_side_apply(
    current: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: &str,
    schema: Option<&Schema>,
) -> Result<Value> {
    let applied_set = scoped(field_set(applied, schema), subresource);
    let mut list = entries(current);
    let mut conflicts = Vec::new();
    for e in list
        .iter()
        .filter(|e| e.manager != manager || e.operation != "Apply")
    {
        for p in e.set.intersection(&applied_set) {
            if lookup(current, p) != lookup(applied, p) && p.last().is_none_or(|s| s != ".") {
                conflicts.push((e.manager.clone(), p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, p)| format!("conflict with \"{m}\": {}", display_path(p)))
            .collect();
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                lines.len(),
                if lines.len() == 1 { "" } else { "s" },
                lines.join("\n")
            ),
        ));
    }
    let mut result = current.clone();
    merge(&mut result, applied, schema, "");
    let previous: FieldSet = list
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let others: FieldSet = list
        .iter()
        .filter(|e| !(e.manager == manager && e.operation == "Apply"))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    for p in previous
        .difference(&applied_set)
        .filter(|p| !others.contains(*p))
    {
        remove(&mut result, p);
    }
    for e in &mut list {
        if force {
            e.set
                .retain(|p| !conflicts.iter().any(|(m, cp)| *m == e.manager && cp == p));
        }
    }
    list.retain(|e| {
        !(e.manager == manager && e.operation == "Apply" && e.subresource == subresource)
    });
    let api_version = applied
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    list.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        subresource: subresource.into(),
        api_version,
        time: now(),
        set: applied_set,
    });
    store_entries(&mut result, &list);
    Ok(result)
}

fn display_path(p: &Path) -> String {
    p.iter()
        .filter(|s| *s != ".")
        .map(|s| {
            s.get(2..).map_or_else(String::new, |rest| {
                if s.starts_with("f:") {
                    format!(".{rest}")
                } else {
                    format!("[{rest}]")
                }
            })
        })
        .collect()
}

/// Structural merge: objects merge, keyed lists merge by key, everything else is replaced.
fn merge(target: &mut Value, applied: &Value, schema: Option<&Schema>, field: &str) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                let child = schema.and_then(|s| s.properties.get(k).or(s.additional.as_deref()));
                match t.get_mut(k) {
                    Some(tv) if k != "managedFields" => merge(tv, av, child, k),
                    _ => {
                        t.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a)) => match list_keys(schema, field) {
            Some(keys) => {
                let item_schema = schema.and_then(|s| s.items.as_deref());
                for item in a {
                    match t
                        .iter_mut()
                        .find(|e| keys.iter().all(|k| e.get(*k) == item.get(*k)))
                    {
                        Some(existing) => merge(existing, item, item_schema, ""),
                        None => t.push(item.clone()),
                    }
                }
            }
            None if is_set(schema, field) => {
                for item in a {
                    if !t.contains(item) {
                        t.push(item.clone());
                    }
                }
            }
            None => t.clone_from(a),
        },
        (t, a) => *t = a.clone(),
    }
}

#[cfg(test)]
#[path = "fields_tests.rs"]
mod tests;
