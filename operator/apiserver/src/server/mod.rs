//! HTTP: authentication, body limits, path routing and content negotiation.
//!
//! Layout: this file takes a request apart and renders the reply; `access` authenticates
//! (admin token, ServiceAccount tokens), authorizes (RBAC) and serves TokenRequest and the
//! reviews; `body` reads the body within the limit and decodes it; `route` resolves the
//! path and dispatches by verb;
//! `panic` is the last-resort layer that turns a panicking handler into a `500` Status.

mod access;
pub(crate) mod body;
mod panic;
mod route;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::Value;
use tokio_stream::StreamExt as _;

use crate::api::Api;
use crate::error::ApiError;

pub use self::panic::catch_panics;

pub struct AppState {
    pub api: Arc<Api>,
    pub token: String,
    /// Signs and checks ServiceAccount tokens.
    pub signer: crate::rbac::token::Signer,
    pub address: String,
    pub max_body_bytes: usize,
    pub bookmark_interval: Duration,
}

/// What a request produced, before it is rendered.
enum Reply {
    Json(StatusCode, Value, Vec<String>),
    /// A body already serialized as JSON.
    Bytes(Vec<u8>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
    Text(&'static str),
    /// JSON under another media type (aggregated discovery).
    Typed(&'static str, Value),
}

/// The parts of a request that routing reads.
struct Call<'a> {
    user: &'a crate::rbac::User,
    method: &'a http::Method,
    path: &'a str,
    query: &'a HashMap<String, String>,
    headers: &'a HeaderMap,
    body: &'a [u8],
}

impl Call<'_> {
    fn query(&self, key: &str) -> Option<&str> {
        self.query.get(key).map(String::as_str)
    }
}

pub async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(parts.uri.query().unwrap_or_default())
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
    // Health and version answer anyone (Kubernetes grants them to anonymous users through
    // `system:public-info-viewer`); every other path needs a token and RBAC's consent.
    let public = matches!(
        path.as_str(),
        "/healthz" | "/livez" | "/readyz" | "/version"
    );
    let user = match access::authenticate(&st, &parts.headers) {
        Ok(user) => user,
        Err(_) if public => crate::rbac::User::anonymous(),
        Err(e) => return error_response(&parts.method, &path, &e),
    };
    // The body is read (within its limit) before RBAC answers, so that a denial over
    // HTTP/1.1 never closes a connection the client is still writing to.
    let bytes = match body::read(body, parts.version, &parts.headers, st.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(answer) => return answer,
    };
    let watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let attrs = crate::rbac::attributes::with_selected_name(
        crate::rbac::attributes::of_request(&parts.method, &path, watch),
        query.get("fieldSelector").map(String::as_str),
    );
    if !public && let Err(e) = access::authorize(&st, &user, &attrs) {
        return error_response(&parts.method, &path, &e);
    }
    let call = Call {
        user: &user,
        method: &parts.method,
        path: &path,
        query: &query,
        headers: &parts.headers,
        body: &bytes,
    };
    match route::route(&st, &call) {
        Ok(reply) => render(reply),
        Err(e) => error_response(&parts.method, &path, &e),
    }
}

fn render(reply: Reply) -> Response {
    match reply {
        Reply::Json(code, v, warnings) => json_response(code, &v, &warnings),
        Reply::Bytes(body) => with_json_type((StatusCode::OK, body).into_response()),
        Reply::Stream(rx) => {
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(Ok::<_, std::convert::Infallible>);
            with_json_type(Response::new(Body::from_stream(stream)))
        }
        Reply::Text(t) => t.into_response(),
        Reply::Typed(media, v) => {
            let mut resp =
                (StatusCode::OK, serde_json::to_vec(&v).unwrap_or_default()).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
            resp
        }
    }
}

fn error_response(method: &http::Method, path: &str, e: &ApiError) -> Response {
    tracing::debug!(%path, %method, code = e.code, reason = e.reason, "request failed: {}", e.message);
    status_response(e)
}

fn status_response(e: &ApiError) -> Response {
    json_response(status_code(e), &e.to_status(), &[])
}

fn status_code(e: &ApiError) -> StatusCode {
    StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn with_json_type(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp =
        with_json_type((code, serde_json::to_vec(v).unwrap_or_default()).into_response());
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {:?}", w.replace('"', "'"))) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}
