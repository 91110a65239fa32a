//! Request bodies: reading within the size limit, and decoding by content type.
//!
//! A body over the limit is answered with a `413` Status, without reading it at all when
//! `Content-Length` already says so. Over HTTP/2 the unread request stream stays referenced
//! by the response until the answer is written, so the stream ends with `RST_STREAM(NO_ERROR)`
//! after the Status (RFC 9113 §8.1), not with a reset in its place.

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, header};
use http_body_util::BodyExt as _;
use serde_json::Value;

use super::status_response;
use crate::error::{ApiError, Result};
use crate::protobuf;

/// Reads the whole body, or answers in its place: `413` once the body is known to exceed
/// `limit` bytes, `400` when it breaks off.
pub async fn read(mut body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, Response> {
    let too_large = || status_response(&ApiError::too_large(limit));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let mut out = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            status_response(&ApiError::bad_request(format!(
                "reading the request body: {e}"
            )))
        })?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(too_large());
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
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
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
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

/// The request's `Content-Type`, empty when absent or unreadable.
pub fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
}
