//! Decoding of Kubernetes protobuf request bodies for the few built-in kinds kubectl creates
//! with its typed clients (`kubectl create namespace|configmap|secret|serviceaccount`).
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` {typeMeta, raw}; `raw` is the object's
//! own message. Only the fields a create can carry are read; everything else is skipped by
//! wire type. Every length is checked against the remaining input, so malformed bodies are a
//! `400`, never a panic or an oversized allocation. Responses are always JSON.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::error::{ApiError, Result};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

fn bad(what: &str) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf body: {what}"))
}

/// One field of a message: number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or_else(|| bad("truncated varint"))?;
        *buf = rest;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad("varint too long"))
}

/// Splits a message into fields.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(&mut buf)?),
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                if buf.len() < n {
                    return Err(bad("truncated fixed-width field"));
                }
                buf = &buf[n..];
                continue;
            }
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| bad("length overflow"))?;
                if len > buf.len() {
                    return Err(bad("length beyond the end of the message"));
                }
                let (bytes, rest) = buf.split_at(len);
                buf = rest;
                Field::Bytes(bytes)
            }
            _ => return Err(bad("unsupported wire type")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|_| bad("string is not UTF-8"))
}

/// A `map<string, string|bytes>` entry: `(key, value bytes)`.
fn entry(bytes: &[u8]) -> Result<(String, &[u8])> {
    let (mut k, mut v) = (String::new(), &[][..]);
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => k = text(b)?,
            (2, Field::Bytes(b)) => v = b,
            _ => {}
        }
    }
    Ok((k, v))
}

fn put_entry(obj: &mut Value, field: &str, bytes: &[u8], binary: bool) -> Result<()> {
    let (k, v) = entry(bytes)?;
    let value = if binary {
        base64::engine::general_purpose::STANDARD.encode(v)
    } else {
        text(v)?
    };
    obj[field][k] = Value::String(value);
    Ok(())
}

fn object_meta(bytes: &[u8]) -> Result<Value> {
    let mut meta = json!({});
    for (n, f) in fields(bytes)? {
        match (n, f) {
            (1, Field::Bytes(b)) => meta["name"] = Value::String(text(b)?),
            (2, Field::Bytes(b)) => meta["generateName"] = Value::String(text(b)?),
            (3, Field::Bytes(b)) => meta["namespace"] = Value::String(text(b)?),
            (6, Field::Bytes(b)) => meta["resourceVersion"] = Value::String(text(b)?),
            (11, Field::Bytes(b)) => put_entry(&mut meta, "labels", b, false)?,
            (12, Field::Bytes(b)) => put_entry(&mut meta, "annotations", b, false)?,
            (14, Field::Bytes(b)) => push(&mut meta, "finalizers", Value::String(text(b)?)),
            _ => {}
        }
    }
    Ok(meta)
}

fn push(obj: &mut Value, field: &str, v: Value) {
    match obj.get_mut(field).and_then(Value::as_array_mut) {
        Some(list) => list.push(v),
        None => obj[field] = json!([v]),
    }
}

fn object(kind: &str, raw: &[u8]) -> Result<Value> {
    let mut obj = Value::Object(Map::new());
    for (n, f) in fields(raw)? {
        let Field::Bytes(b) = f else {
            if let (Field::Varint(v), "ConfigMap", 4) | (Field::Varint(v), "Secret", 5) =
                (&f, kind, n)
            {
                obj["immutable"] = Value::Bool(*v != 0);
            }
            if let (Field::Varint(v), "ServiceAccount", 4) = (&f, kind, n) {
                obj["automountServiceAccountToken"] = Value::Bool(*v != 0);
            }
            continue;
        };
        match (kind, n) {
            (_, 1) => obj["metadata"] = object_meta(b)?,
            ("ConfigMap", 2) => put_entry(&mut obj, "data", b, false)?,
            ("ConfigMap", 3) | ("Secret", 2) => put_entry(
                &mut obj,
                if kind == "Secret" {
                    "data"
                } else {
                    "binaryData"
                },
                b,
                true,
            )?,
            ("Secret", 3) => obj["type"] = Value::String(text(b)?),
            ("Secret", 4) => put_entry(&mut obj, "stringData", b, false)?,
            ("Namespace", 2) => {
                for (fnum, ff) in fields(b)? {
                    if let (1, Field::Bytes(s)) = (fnum, ff) {
                        push(&mut obj["spec"], "finalizers", Value::String(text(s)?));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(obj)
}

/// Decodes a protobuf request body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s magic prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(envelope)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    match (tn, tf) {
                        (1, Field::Bytes(b)) => api_version = text(b)?,
                        (2, Field::Bytes(b)) => kind = text(b)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    if !matches!(
        kind.as_str(),
        "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
    ) {
        return Err(ApiError::unsupported_media_type(format!(
            "the dev control plane decodes protobuf only for Namespace, ConfigMap, Secret and ServiceAccount, not {kind:?}; send JSON (e.g. kubectl apply -f)"
        )));
    }
    let mut obj = object(&kind, raw)?;
    obj["apiVersion"] = Value::String(api_version);
    obj["kind"] = Value::String(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![
            u8::try_from((n << 3) | 2).unwrap_or_default(),
            u8::try_from(bytes.len()).unwrap_or_default(),
        ];
        out.extend_from_slice(bytes);
        out
    }

    fn config_map() -> Vec<u8> {
        let meta = [
            field(1, b"settings"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let raw = [
            field(1, &meta),
            field(2, &[field(1, b"mode"), field(2, b"fast")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        [MAGIC.to_vec(), field(1, &type_meta), field(2, &raw)].concat()
    }

    #[test]
    fn decodes_a_config_map() {
        let obj = decode(&config_map()).expect("valid body");
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "labels": {"app": "web"}}, "data": {"mode": "fast"}})
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let body = config_map();
        for cut in 0..body.len() {
            let _ = decode(&body[..cut]);
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(&huge).expect_err("length beyond end").code, 400);
    }

    #[test]
    fn other_kinds_are_415() {
        let type_meta = [field(1, b"apps/v1"), field(2, b"Deployment")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta)].concat();
        assert_eq!(decode(&body).expect_err("unsupported").code, 415);
    }
}
