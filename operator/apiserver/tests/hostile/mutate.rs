//! The seeded generator of hostile bodies: valid objects with wrong types at random paths,
//! nulls, deep nesting, huge strings, wrong kinds and apiVersions, broken bytes (truncation,
//! invalid UTF-8), random JSON patches and random protobuf.

use prost::Message as _;
use rand::Rng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

/// Every path into `v` (as keys and indexes), the root included.
fn paths(v: &Value) -> Vec<Vec<Value>> {
    let mut out = vec![Vec::new()];
    let mut stack = vec![(Vec::new(), v)];
    while let Some((path, v)) = stack.pop() {
        let children: Vec<(Value, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (json!(k), c)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, c)| (json!(i), c)).collect(),
            _ => continue,
        };
        for (key, child) in children {
            let mut p: Vec<Value> = path.clone();
            p.push(key);
            out.push(p.clone());
            stack.push((p, child));
        }
    }
    out
}

fn at_mut<'a>(v: &'a mut Value, path: &[Value]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |cur, key| match (cur, key) {
        (Value::Object(m), Value::String(k)) => m.get_mut(k),
        (Value::Array(a), Value::Number(i)) => a.get_mut(usize::try_from(i.as_u64()?).ok()?),
        _ => None,
    })
}

/// A JSON pointer for a path.
pub fn pointer(path: &[Value]) -> String {
    path.iter()
        .map(|k| {
            let k = k.as_str().map_or_else(|| k.to_string(), str::to_string);
            format!("/{}", k.replace('~', "~0").replace('/', "~1"))
        })
        .collect()
}

fn nested(rng: &mut StdRng, depth: usize) -> Value {
    let object = rng.random_bool(0.5);
    (0..depth).fold(json!("leaf"), |v, _| {
        if object { json!({"d": v}) } else { json!([v]) }
    })
}

/// A value of a random, probably wrong, type.
pub fn wrong_value(rng: &mut StdRng) -> Value {
    match rng.random_range(0..16) {
        0 => Value::Null,
        1 => json!("x"),
        2 => json!(0),
        3 => json!(-1),
        4 => json!(1.5e300),
        5 => json!(true),
        6 => json!([]),
        7 => json!({}),
        8 => json!([1, "a", null, {"b": []}]),
        9 => json!({"a": {"b": "c"}, "$patch": "replace"}),
        10 => json!(u64::MAX),
        11 => json!("\u{0}\u{ffff}\u{1F600}<>&\"'"),
        12 => {
            // Mostly large, now and then over the 3 MiB body limit.
            let len = if rng.random_bool(0.02) {
                3_300_000
            } else {
                rng.random_range(1_000..20_000)
            };
            Value::String("y".repeat(len))
        }
        13 => {
            let depth = rng.random_range(90..140);
            nested(rng, depth)
        }
        14 => json!({"metadata": {"name": "other"}, "kind": "Pod", "apiVersion": "v2"}),
        _ => json!("2026-13-45T99:99:99Z"),
    }
}

fn random_key(rng: &mut StdRng) -> String {
    const KEYS: &[&str] = &[
        "x",
        "",
        "$patch",
        "$retainKeys",
        "metadata",
        "spec",
        "status",
        "kind",
        "apiVersion",
        "labels",
        "finalizers",
        "managedFields",
        "ownerReferences",
        "data",
        "items",
        "name",
        "$deleteFromPrimitiveList/finalizers",
        "$setElementOrder/finalizers",
        "generation",
        "resourceVersion",
        "uid",
        "deletionTimestamp",
        "namespace",
    ];
    KEYS[rng.random_range(0..KEYS.len())].to_string()
}

/// One structural mutation of `v`.
fn mutate_once(rng: &mut StdRng, v: &mut Value) {
    let all = paths(v);
    let path = all[rng.random_range(0..all.len())].clone();
    match rng.random_range(0..6) {
        0 | 1 => {
            if let Some(slot) = at_mut(v, &path) {
                *slot = wrong_value(rng);
            }
        }
        2 => {
            if let Some((last, parent)) = path.split_last()
                && let Some(p) = at_mut(v, parent)
            {
                match (p, last) {
                    (Value::Object(m), Value::String(k)) => drop(m.remove(k)),
                    (Value::Array(a), Value::Number(i)) => {
                        let i = usize::try_from(i.as_u64().unwrap_or(0)).unwrap_or(0);
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        3 => {
            if let Some(Value::Object(m)) = at_mut(v, &path) {
                m.insert(random_key(rng), wrong_value(rng));
            }
        }
        4 => {
            let (key, value) = if rng.random_bool(0.5) {
                (
                    "kind",
                    json!(["Pod", "ConfigMap", "", "Status", "Namespace"][rng.random_range(0..5)]),
                )
            } else {
                (
                    "apiVersion",
                    json!(["v2", "v1", "quiver.dev/v1", "apps/v1", ""][rng.random_range(0..5)]),
                )
            };
            if let Some(m) = v.as_object_mut() {
                m.insert(key.into(), value);
            }
        }
        _ => {
            if let Some(slot) = at_mut(v, &path) {
                *slot = Value::Null;
            }
        }
    }
}

/// `v` with one to three mutations (or, rarely, none: valid bodies must keep working).
pub fn mutate(rng: &mut StdRng, mut v: Value) -> Value {
    let count = rng.random_range(0..4);
    for _ in 0..count {
        mutate_once(rng, &mut v);
    }
    v
}

/// Byte-level damage: truncation, invalid UTF-8, a flipped byte, or nothing.
pub fn damage(rng: &mut StdRng, mut bytes: Vec<u8>) -> Vec<u8> {
    match rng.random_range(0..10) {
        0 if !bytes.is_empty() => bytes.truncate(rng.random_range(0..bytes.len())),
        1 => {
            // Invalid UTF-8 inside the body (most likely inside a string).
            let at = rng.random_range(0..=bytes.len());
            let bad: &[u8] =
                [&[0xff][..], &[0xc3], &[0xed, 0xa0, 0x80], &[0xf8, 0x88]][rng.random_range(0..4)];
            bytes.splice(at..at, bad.iter().copied());
        }
        2 if !bytes.is_empty() => {
            let at = rng.random_range(0..bytes.len());
            bytes[at] ^= 1 << rng.random_range(0..8);
        }
        _ => {}
    }
    bytes
}

/// A JSON patch document of random operations on paths of `v`.
pub fn json_patch(rng: &mut StdRng, v: &Value) -> Value {
    let all = paths(v);
    let mut ops = Vec::new();
    for _ in 0..rng.random_range(0..5) {
        let path = pointer(&all[rng.random_range(0..all.len())]);
        let from = pointer(&all[rng.random_range(0..all.len())]);
        let path = match rng.random_range(0..8) {
            0 => format!("{path}/-"),
            1 => format!("{path}/~2x"),
            2 => "/metadata/labels/new".into(),
            _ => path,
        };
        let op =
            ["add", "remove", "replace", "move", "copy", "test", "bogus"][rng.random_range(0..7)];
        ops.push(json!({"op": op, "path": path, "from": from, "value": wrong_value(rng)}));
    }
    let mut doc = Value::Array(ops);
    if rng.random_bool(0.2) {
        mutate_once(rng, &mut doc);
    }
    doc
}

/// A DeleteOptions body, mostly with preconditions that fail (so targets mostly survive).
pub fn delete_options(rng: &mut StdRng) -> Value {
    let base = json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
        "preconditions": {"uid": "not-the-uid"}, "gracePeriodSeconds": 0, "dryRun": []});
    mutate(rng, base)
}

/// A protobuf body: random bytes, an envelope around random bytes, or a damaged valid one.
pub fn protobuf(rng: &mut StdRng, kinds: &[(&str, &str)]) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    let random =
        |rng: &mut StdRng, n: usize| (0..n).map(|_| rng.random::<u8>()).collect::<Vec<u8>>();
    let (api_version, kind) = kinds[rng.random_range(0..kinds.len())];
    let envelope = |raw: Vec<u8>| {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(api_version.into()),
                kind: Some(kind.into()),
            }),
            raw: Some(raw),
            ..Unknown::default()
        };
        [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat()
    };
    match rng.random_range(0..4) {
        0 => {
            let n = rng.random_range(0..300);
            random(rng, n)
        }
        1 => {
            let n = rng.random_range(0..300);
            let raw = random(rng, n);
            envelope(raw)
        }
        _ => {
            let cm = k8s_pb::api::core::v1::ConfigMap {
                metadata: Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                    name: Some(format!("pb-{}", rng.random::<u32>())),
                    labels: [("a".to_string(), "b".to_string())].into(),
                    ..Default::default()
                }),
                data: [("k".to_string(), "v".to_string())].into(),
                ..Default::default()
            };
            let mut body = envelope(cm.encode_to_vec());
            for _ in 0..rng.random_range(1..4) {
                body = damage(rng, body);
            }
            body
        }
    }
}
