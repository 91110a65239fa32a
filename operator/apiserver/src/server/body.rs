//! Request bodies: reading within the size limit, and decoding by content type.
//!
//! A body over the limit is answered with a `413` Status. Over HTTP/2 the answer goes out on
//! the request's own stream, which the stack then ends with `RST_STREAM(NO_ERROR)` (RFC 9113
//! §8.1), so nothing more is read. HTTP/1.1 has no such thing: a server that answers and
//! closes while the client is still sending makes the client's TCP stack discard the answer
//! (the close turns into a reset). So over HTTP/1.1 the rest of the body is read and dropped,
//! up to [`DRAIN_LIMIT`] bytes or [`DRAIN_TIME`], before the answer.

use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Version, header};
use http_body_util::BodyExt as _;
use serde_json::Value;

use super::status_response;
use crate::error::{ApiError, Result};
use crate::protobuf;

/// Most an HTTP/1.1 client may still send after its body was refused, read to keep the
/// connection able to carry the answer.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(10);

/// Reads the whole body, or answers in its place: `413` once the body is known to exceed
/// `limit` bytes, `400` when it breaks off.
pub async fn read(
    mut body: Body,
    version: Version,
    headers: &HeaderMap,
    limit: usize,
) -> Result<Bytes, Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut out = BytesMut::new();
    let mut over = declared.is_some_and(|n| n > limit as u64);
    while !over && let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            status_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )))
        })?;
        if let Ok(data) = frame.into_data() {
            over = out.len() + data.len() > limit;
            if !over {
                out.extend_from_slice(&data);
            }
        }
    }
    if !over {
        return Ok(out.freeze());
    }
    if version < Version::HTTP_2 {
        let _ = tokio::time::timeout(DRAIN_TIME, drain(body)).await;
    }
    Err(status_response(&ApiError::too_large(limit)))
}

/// Reads and drops what is left of a body, up to [`DRAIN_LIMIT`] bytes.
async fn drain(mut body: Body) {
    let mut left = DRAIN_LIMIT;
    while let Some(Ok(frame)) = body.frame().await {
        let n = frame.data_ref().map_or(0, Bytes::len);
        match left.checked_sub(n) {
            Some(rest) => left = rest,
            None => return,
        }
    }
}

/// Decodes a create or update body by its `Content-Type` into a JSON object.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json");
    let v: Value = if ct.starts_with(protobuf::CONTENT_TYPE) {
        protobuf::decode(body)?
    } else if ct.contains("yaml") {
        yaml(body)?
    } else if ct.contains("json") || ct.is_empty() {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    } else {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({ct}) - accepted media types include: application/json, application/yaml, {}",
            protobuf::CONTENT_TYPE
        )));
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(v)
}

/// Decodes a YAML body. JSON is YAML, and clients send most YAML-typed bodies (apply patches
/// above all) as JSON: an object is tried with the JSON parser first, several times faster.
pub fn yaml(body: &[u8]) -> Result<Value> {
    if body.trim_ascii_start().starts_with(b"{")
        && let Ok(v) = serde_json::from_slice(body)
    {
        return Ok(v);
    }
    serde_yaml_ng::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
}

/// The request's `Content-Type`, empty when absent or unreadable.
pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::yaml;

    #[test]
    fn yaml_bodies_read_the_same_by_either_parser() {
        let want = json!({"metadata": {"name": "a"}, "spec": {"n": 1, "x": [true, null]}});
        let json_body = br#" {"metadata":{"name":"a"},"spec":{"n":1,"x":[true,null]}}"#;
        let yaml_body = b"metadata:\n  name: a\nspec:\n  n: 1\n  x: [true, null]\n";
        // A YAML flow mapping is not JSON: it falls back to the YAML parser.
        let flow_body = b"{metadata: {name: a}, spec: {n: 1, x: [true, null]}}";
        for body in [&json_body[..], yaml_body, flow_body] {
            assert_eq!(yaml(body).expect("decodes"), want);
        }
        let bad = yaml(b"{metadata: [").expect_err("malformed");
        assert!(bad.to_string().contains("YAML"), "{bad}");
    }
}
