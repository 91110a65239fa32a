//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field set is the set of leaf paths in FieldsV1 notation (`f:spec`, `f:cpus`;
//! `k:{"name":"a"}` for items of keyed lists; `v:"x"` for set members). Lists are atomic unless
//! the schema (or, for built-in kinds, the strategic-merge metadata) gives them keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

mod paths;

use crate::error::{ApiError, Cause, Result};
use crate::schema::Schema;

use self::paths::{
    Leaves, from_fields_v1, leaves, merge, remove_all, remove_emptied, to_fields_v1,
};

type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    set: FieldSet,
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
    let new_leaves = leaves(new, schema);
    let old_leaves = old.map(|o| leaves(o, schema)).unwrap_or_default();
    let changed: FieldSet = new_leaves
        .iter()
        .filter(|(p, v)| old_leaves.get(*p) != Some(*v))
        .map(|(p, _)| p.clone())
        .collect();
    let new_set: FieldSet = new_leaves.into_keys().collect();
    let mut list = entries(old.unwrap_or(&Value::Null));
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

/// A field another manager owns with a different value.
struct Conflict {
    /// The owner's name, operation and subresource.
    owner: (String, String, String),
    /// The manager as Kubernetes names it in the message (`"kubectl" using v1`).
    shown: String,
    path: Path,
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
    let applied_leaves = leaves(applied, schema);
    let applied_set = scoped(applied_leaves.keys().cloned().collect(), subresource);
    let mut list = entries(current);
    // Kubernetes tells managers apart by name, operation and subresource: the same name
    // applying to `/scale` and to the object itself is two managers.
    let is_this_apply =
        |e: &Entry| e.manager == manager && e.operation == "Apply" && e.subresource == subresource;
    let conflicts = find_conflicts(
        list.iter().filter(|e| !is_this_apply(e)),
        &applied_set,
        &leaves(current, schema),
        &applied_leaves,
    );
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    let mut result = current.clone();
    merge(&mut result, applied, schema, "");
    let previous: FieldSet = list
        .iter()
        .filter(|e| is_this_apply(e))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let others: FieldSet = list
        .iter()
        .filter(|e| !is_this_apply(e))
        .flat_map(|e| e.set.iter().cloned())
        .collect();
    let dropped: Vec<&[String]> = previous
        .difference(&applied_set)
        .filter(|p| !others.contains(*p))
        .map(Vec::as_slice)
        .collect();
    remove_all(&mut result, &dropped);
    let owned: FieldSet = applied_set.union(&others).cloned().collect();
    remove_emptied(&mut result, &dropped, &owned);
    if force {
        take_over(&mut list, &conflicts);
    }
    list.retain(|e| !is_this_apply(e));
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

/// Fields the applied configuration sets to a value other than the one another manager
/// (or this one through an update or another subresource) owns.
fn find_conflicts<'e>(
    others: impl Iterator<Item = &'e Entry>,
    applied_set: &FieldSet,
    current: &Leaves<'_>,
    applied: &Leaves<'_>,
) -> Vec<Conflict> {
    let mut conflicts = Vec::new();
    for e in others {
        for p in e.set.intersection(applied_set) {
            if current.get(p) != applied.get(p) && p.last().is_none_or(|s| s != ".") {
                conflicts.push(Conflict {
                    owner: owner(e),
                    shown: shown_manager(e),
                    path: p.clone(),
                });
            }
        }
    }
    conflicts
}

fn owner(e: &Entry) -> (String, String, String) {
    (
        e.manager.clone(),
        e.operation.clone(),
        e.subresource.clone(),
    )
}

/// The manager of an entry as Kubernetes prints it: quoted, with its subresource, and for
/// updates with the API version they wrote.
fn shown_manager(e: &Entry) -> String {
    let mut out = format!("{:?}", e.manager);
    if !e.subresource.is_empty() {
        out = format!("{out} with subresource {:?}", e.subresource);
    }
    if e.operation == "Update" {
        out = format!("{out} using {}", e.api_version);
    }
    out
}

/// The 409 Kubernetes answers: one line for one conflict, else the paths grouped by manager.
fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let message = if let [one] = conflicts {
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.shown,
            display_path(&one.path)
        )
    } else {
        let mut by_manager: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for c in conflicts {
            by_manager
                .entry(&c.shown)
                .or_default()
                .push(format!("- {}", display_path(&c.path)));
        }
        let lines: Vec<String> = by_manager
            .into_iter()
            .flat_map(|(m, paths)| std::iter::once(format!("conflicts with {m}:")).chain(paths))
            .collect();
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    let causes = conflicts
        .iter()
        .map(|c| Cause {
            reason: "FieldManagerConflict",
            field: display_path(&c.path),
            message: format!("conflict with {}", c.shown),
        })
        .collect();
    ApiError::new(409, "Conflict", message).with_causes(causes)
}

/// A forced apply takes the conflicting fields away from their previous owners.
fn take_over(list: &mut [Entry], conflicts: &[Conflict]) {
    let mut taken: BTreeMap<(String, String, String), FieldSet> = BTreeMap::new();
    for c in conflicts {
        taken
            .entry(c.owner.clone())
            .or_default()
            .insert(c.path.clone());
    }
    for e in list {
        if let Some(lost) = taken.get(&owner(e)) {
            e.set.retain(|p| !lost.contains(p));
        }
    }
}

/// A path as Kubernetes prints it: `.spec.ports[port=80,protocol="TCP"].name`, `[="x"]` for
/// a set member.
fn display_path(p: &Path) -> String {
    p.iter()
        .filter(|s| *s != ".")
        .map(|s| {
            if let Some(field) = s.strip_prefix("f:") {
                format!(".{field}")
            } else if let Some(key) = s.strip_prefix("k:") {
                let pairs = serde_json::from_str::<serde_json::Map<String, Value>>(key)
                    .map(|m| {
                        let pairs: Vec<String> =
                            m.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        pairs.join(",")
                    })
                    .unwrap_or_else(|_| key.to_string());
                format!("[{pairs}]")
            } else if let Some(value) = s.strip_prefix("v:") {
                format!("[={value}]")
            } else if let Some(index) = s.strip_prefix("i:") {
                format!("[{index}]")
            } else {
                s.clone()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
