//! Field paths of an object (FieldsV1 notation), with the values at them; removal of many
//! paths in one walk; and the structural merge of server-side apply.
//!
//! Every operation here is linear (or `n log n`) in the size of the object: lists are
//! matched by key through an index, never by scanning the list once per item, so a body of
//! tens of thousands of list items costs milliseconds, not minutes under the global lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::{Map, Value};

use super::{FieldSet, Path};
use crate::patch::merge_key;
use crate::schema::Schema;

/// Leaf paths of an object, each with its value (for keyed list items, the item itself).
pub type Leaves<'a> = BTreeMap<Path, &'a Value>;

/// Most path segments the leaves of one object may hold (about 50 MB). A 3 MiB object nested
/// deep with many leaves at the bottom would otherwise ask for gigabytes of paths; past the
/// budget, what is left of the object is owned as whole values (coarser, never wrong).
const SEGMENT_BUDGET: usize = 1 << 20;

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

/// Leaf paths of `v` that a writer can own, with their values.
pub fn leaves<'a>(v: &'a Value, schema: Option<&Schema>) -> Leaves<'a> {
    let mut out = Leaves::new();
    let mut budget = SEGMENT_BUDGET;
    let Value::Object(map) = v else { return out };
    for (k, cv) in map {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "metadata" => {
                let Value::Object(meta) = cv else { continue };
                for (mk, mv) in meta
                    .iter()
                    .filter(|(mk, _)| !SYSTEM_METADATA.contains(&mk.as_str()))
                {
                    let mut path = vec!["f:metadata".into(), format!("f:{mk}")];
                    collect(
                        mv,
                        None,
                        mk,
                        &mut path,
                        &mut Sink::new(&mut out, &mut budget),
                    );
                }
            }
            _ => {
                let child = schema.and_then(|s| s.properties.get(k));
                let mut path = vec![format!("f:{k}")];
                collect(
                    cv,
                    child,
                    k,
                    &mut path,
                    &mut Sink::new(&mut out, &mut budget),
                );
            }
        }
    }
    out
}

pub fn list_keys<'a>(schema: Option<&'a Schema>, field: &str) -> Option<Vec<&'a str>> {
    match schema {
        Some(s) if s.list_type.as_deref() == Some("map") => {
            Some(s.list_map_keys.iter().map(String::as_str).collect())
        }
        Some(_) => None,
        None => merge_key(field, |_| true).map(|k| vec![k]),
    }
}

pub fn is_set(schema: Option<&Schema>, field: &str) -> bool {
    schema.map_or(field == "finalizers", |s| {
        s.list_type.as_deref() == Some("set")
    })
}

/// The `k:{...}` segment of a keyed list item.
fn key_segment(item: &Value, keys: &[&str]) -> String {
    let id: Map<String, Value> = keys
        .iter()
        .filter_map(|k| item.get(*k).map(|x| ((*k).to_string(), x.clone())))
        .collect();
    format!("k:{}", Value::Object(id))
}

/// Where `collect` puts leaves, and what is left of the segment budget.
struct Sink<'s, 'a> {
    out: &'s mut Leaves<'a>,
    budget: &'s mut usize,
}

impl<'s, 'a> Sink<'s, 'a> {
    fn new(out: &'s mut Leaves<'a>, budget: &'s mut usize) -> Self {
        Self { out, budget }
    }

    fn insert(&mut self, path: &Path, v: &'a Value) {
        *self.budget = self.budget.saturating_sub(path.len());
        self.out.insert(path.clone(), v);
    }

    fn spent(&self) -> bool {
        *self.budget == 0
    }
}

fn collect<'a>(
    v: &'a Value,
    schema: Option<&Schema>,
    field: &str,
    path: &mut Path,
    out: &mut Sink<'_, 'a>,
) {
    if out.spent() {
        out.insert(path, v);
        return;
    }
    match v {
        Value::Object(m)
            if !m.is_empty()
                && !schema.is_some_and(|s| {
                    s.preserve_unknown && s.properties.is_empty() && s.additional.is_none()
                }) =>
        {
            for (k, cv) in m {
                if out.spent() {
                    // The rest of this object is owned as one value.
                    out.insert(path, v);
                    return;
                }
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
                    if out.spent() {
                        out.insert(path, v);
                        return;
                    }
                    path.push(key_segment(item, &keys));
                    path.push(".".into());
                    out.insert(path, item);
                    path.pop();
                    collect(item, item_schema, "", path, out);
                    path.pop();
                }
            } else if is_set(schema, field) {
                for item in items {
                    if out.spent() {
                        out.insert(path, v);
                        return;
                    }
                    path.push(format!("v:{item}"));
                    out.insert(path, item);
                    path.pop();
                }
            } else {
                out.insert(path, v);
            }
        }
        _ => out.insert(path, v),
    }
}

/// Removes every path in `paths` from `v` in one walk (an applier that stops applying fields
/// nobody else owns). A path ending in an item's `.` removes the item.
pub fn remove_all(v: &mut Value, paths: &[&[String]]) {
    let mut by_first: HashMap<&str, Vec<&[String]>> = HashMap::new();
    for p in paths {
        if let Some((first, rest)) = p.split_first() {
            by_first.entry(first.as_str()).or_default().push(rest);
        }
    }
    let gone = |tails: &[&[String]]| tails.iter().any(|t| t.is_empty() || *t == ["."]);
    match v {
        Value::Object(m) => {
            for (seg, tails) in &by_first {
                let Some(f) = seg.strip_prefix("f:") else {
                    continue;
                };
                if gone(tails) {
                    m.remove(f);
                } else if let Some(child) = m.get_mut(f) {
                    remove_all(child, tails);
                }
            }
        }
        Value::Array(items) => {
            let keys: Option<Vec<String>> = by_first.keys().find_map(|seg| {
                let id: Map<String, Value> = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
                Some(id.keys().cloned().collect())
            });
            let keys: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
            let mut keep = Vec::with_capacity(items.len());
            for mut item in std::mem::take(items) {
                let tails = by_first
                    .get(key_segment(&item, &keys).as_str())
                    .or_else(|| by_first.get(format!("v:{item}").as_str()));
                match tails {
                    Some(t) if gone(t) => continue,
                    Some(t) => remove_all(&mut item, t),
                    None => {}
                }
                keep.push(item);
            }
            *items = keep;
        }
        _ => {}
    }
}

/// After `remove_all`, removes the objects those removals left empty, deepest first, unless
/// some manager still owns that object or something under it: structured-merge-diff does the
/// same, so a manager that stops applying the only field it set in `spec.sub` leaves no
/// `sub: {}` behind (which could then fail the schema's required fields).
pub fn remove_emptied(v: &mut Value, dropped: &[&[String]], owned: &FieldSet) {
    let mut parents: BTreeSet<&[String]> = BTreeSet::new();
    for path in dropped {
        for len in 1..path.len() {
            let prefix = &path[..len];
            if prefix.iter().all(|s| s.starts_with("f:")) {
                parents.insert(prefix);
            }
        }
    }
    // Longest first, so a parent is checked after its emptied children went.
    let mut parents: Vec<&[String]> = parents.into_iter().collect();
    parents.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for prefix in parents {
        let owned_below = owned
            .range(prefix.to_vec()..)
            .next()
            .is_some_and(|p| p.starts_with(prefix));
        if owned_below {
            continue;
        }
        let Some((last, up)) = prefix.split_last() else {
            continue;
        };
        let parent = up.iter().try_fold(&mut *v, |cur, seg| {
            cur.as_object_mut()?.get_mut(seg.trim_start_matches("f:"))
        });
        let key = last.trim_start_matches("f:");
        if let Some(m) = parent.and_then(Value::as_object_mut)
            && m.get(key)
                .is_some_and(|c| c.as_object().is_some_and(Map::is_empty))
        {
            m.remove(key);
        }
    }
}

/// FieldsV1 JSON for a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Value::Object(Map::new());
    for path in set {
        let mut cur = &mut root;
        for seg in path {
            let Value::Object(m) = cur else { break };
            cur = m
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }
    root
}

pub fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
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

/// Structural merge: objects merge, keyed lists merge by key, sets by value, everything else
/// is replaced.
pub fn merge(target: &mut Value, applied: &Value, schema: Option<&Schema>, field: &str) {
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
                let mut index: HashMap<String, usize> = HashMap::new();
                for (i, e) in t.iter().enumerate() {
                    index.entry(key_segment(e, &keys)).or_insert(i);
                }
                for item in a {
                    let id = key_segment(item, &keys);
                    match index.get(&id) {
                        Some(&i) => merge(&mut t[i], item, item_schema, ""),
                        None => {
                            index.insert(id, t.len());
                            t.push(item.clone());
                        }
                    }
                }
            }
            None if is_set(schema, field) => {
                let mut present: HashSet<String> = t.iter().map(Value::to_string).collect();
                for item in a {
                    if present.insert(item.to_string()) {
                        t.push(item.clone());
                    }
                }
            }
            None => t.clone_from(a),
        },
        (t, a) => *t = a.clone(),
    }
}
