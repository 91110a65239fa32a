//! HTTP: authentication, body limits, path routing and content negotiation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde_json::Value;

use crate::api::{Api, ListOptions, Scope};
use crate::delete::DeleteOptions;
use crate::error::{ApiError, Result};
use crate::patch::PatchType;
use crate::table::{self, IncludeObject};
use crate::watch::WatchParams;
use crate::write::{FieldValidation, WriteOptions};
use crate::{discovery, openapi};

pub struct AppState {
    pub api: Arc<Api>,
    pub token: String,
    pub address: String,
    pub max_body_bytes: usize,
    pub bookmark_interval: Duration,
}

enum Reply {
    Json(StatusCode, Value, Vec<String>),
    /// A body already serialized as JSON.
    Bytes(Vec<u8>),
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
    Text(&'static str),
}

pub async fn handle(State(st): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query: HashMap<String, String> =
        serde_urlencoded::from_str::<Vec<(String, String)>>(parts.uri.query().unwrap_or_default())
            .map(|v| v.into_iter().collect())
            .unwrap_or_default();
    let reply = match authorize(&st, &parts.headers, &path) {
        Err(e) => Err(e),
        Ok(()) => match axum::body::to_bytes(body, st.max_body_bytes).await {
            Err(_) => Err(ApiError::too_large(st.max_body_bytes)),
            Ok(bytes) => route(&st, &parts.method, &path, &query, &parts.headers, &bytes),
        },
    };
    match reply {
        Ok(Reply::Json(code, v, warnings)) => json_response(code, &v, &warnings),
        Ok(Reply::Bytes(body)) => {
            let mut resp = (StatusCode::OK, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Ok(Reply::Stream(rx)) => {
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
                .map(Ok::<_, std::convert::Infallible>);
            let mut resp = Response::new(Body::from_stream(stream));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        }
        Ok(Reply::Text(t)) => t.into_response(),
        Err(e) => {
            tracing::debug!(%path, method = %parts.method, code = e.code, reason = e.reason, "request failed: {}", e.message);
            json_response(
                StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                &e.to_status(),
                &[],
            )
        }
    }
}

use tokio_stream::StreamExt as _;

fn json_response(code: StatusCode, v: &Value, warnings: &[String]) -> Response {
    let mut resp = (code, serde_json::to_vec(v).unwrap_or_default()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for w in warnings {
        if let Ok(h) = HeaderValue::from_str(&format!("299 - {:?}", w.replace('"', "'"))) {
            resp.headers_mut().append(header::WARNING, h);
        }
    }
    resp
}

fn authorize(st: &AppState, headers: &HeaderMap, path: &str) -> Result<()> {
    if matches!(path, "/healthz" | "/livez" | "/readyz" | "/version") {
        return Ok(());
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    let same = given.len() == st.token.len()
        && given
            .bytes()
            .zip(st.token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

fn route(
    st: &AppState,
    method: &Method,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Reply> {
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let registry = st.api.registry();
    let ok = |v: Value| Ok(Reply::Json(StatusCode::OK, v, Vec::new()));
    let not_found = || ApiError::not_found_path(path);
    if method == Method::GET {
        match segs.as_slice() {
            ["healthz" | "livez" | "readyz"] => return Ok(Reply::Text("ok")),
            ["version"] => return ok(discovery::version()),
            ["api"] => return ok(discovery::api_versions(&st.address)),
            ["apis"] => return ok(discovery::api_group_list(&registry)),
            ["api", v] => {
                return discovery::resource_list(&registry, "", v)
                    .map_or_else(|| Err(not_found()), ok);
            }
            ["apis", g] => {
                return discovery::api_group(&registry, g).map_or_else(|| Err(not_found()), ok);
            }
            ["apis", g, v] => {
                return discovery::resource_list(&registry, g, v)
                    .map_or_else(|| Err(not_found()), ok);
            }
            ["openapi", "v3"] => return ok(openapi::index(&registry)),
            ["openapi", "v3", "api", v] => {
                return openapi::gv_document(&registry, "", v).map_or_else(|| Err(not_found()), ok);
            }
            ["openapi", "v3", "apis", g, v] => {
                return openapi::gv_document(&registry, g, v).map_or_else(|| Err(not_found()), ok);
            }
            _ => {}
        }
    }
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Err(not_found()),
    };
    let lookup = |plural: &str| {
        registry
            .lookup(group, version, plural)
            .ok_or_else(not_found)
    };
    // Resolve `[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`.
    let (rt, ns, name, sub) = match rest {
        ["namespaces", ns, res, tail @ ..]
            if !matches!(*res, "status" | "finalize") || !tail.is_empty() =>
        {
            let rt = lookup(res)?;
            if !rt.namespaced {
                return Err(not_found());
            }
            (
                rt,
                Some((*ns).to_string()),
                tail.first().copied(),
                tail.get(1).copied(),
            )
        }
        [res, tail @ ..] => {
            let rt = lookup(res)?;
            if rt.namespaced && !tail.is_empty() {
                return Err(not_found());
            }
            (rt, None, tail.first().copied(), tail.get(1).copied())
        }
        [] => return Err(not_found()),
    };
    if rest.len() > 5
        || sub.is_some_and(|s| s != "status" && !(s == "finalize" && rt.plural == "namespaces"))
    {
        return Err(not_found());
    }
    let scope = Scope {
        version: version.to_string(),
        rt,
        namespace: ns,
    };
    if sub == Some("status") && !scope.rt.has_status(version) {
        return Err(not_found());
    }
    let sub = sub.filter(|s| *s == "status").unwrap_or_default();
    let qs = |k: &str| q.get(k).map(String::as_str);
    let table = wants_table(headers).then(|| {
        (
            table::columns(&scope.rt, version),
            IncludeObject::parse(qs("includeObject")),
        )
    });
    let opts = || -> Result<WriteOptions> {
        Ok(WriteOptions {
            manager: q
                .get("fieldManager")
                .cloned()
                .unwrap_or_else(|| default_manager(headers)),
            validation: FieldValidation::parse(qs("fieldValidation"))?,
            dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
            force: q.get("force").is_some_and(|f| f == "true"),
        })
    };
    let written = |w: crate::write::Written| {
        let code = if w.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(Reply::Json(code, w.object, w.warnings))
    };
    match (method, name) {
        (&Method::GET, None) => {
            let list = ListOptions::parse(
                &scope,
                qs("labelSelector"),
                qs("fieldSelector"),
                qs("limit"),
                qs("continue"),
            )?;
            if qs("watch").is_some_and(|w| w == "true" || w == "1") {
                let params = WatchParams {
                    resource_version: q.get("resourceVersion").cloned(),
                    send_initial_events: qs("sendInitialEvents") == Some("true"),
                    bookmarks: qs("allowWatchBookmarks") == Some("true"),
                    timeout: Duration::from_secs(
                        qs("timeoutSeconds")
                            .and_then(|t| t.parse().ok())
                            .unwrap_or(1800),
                    ),
                    bookmark_interval: st.bookmark_interval,
                    table,
                };
                return st.api.watch(scope, list, params).map(Reply::Stream);
            }
            let (items, rv, cont) = st.api.list(&scope, &list)?;
            match table {
                Some((cols, include)) => {
                    let items: Vec<Arc<Value>> =
                        items.iter().map(|o| Arc::new(scope.present(o))).collect();
                    let mut meta = serde_json::json!({"resourceVersion": rv.to_string()});
                    if let Some(c) = cont {
                        meta["continue"] = Value::String(c);
                    }
                    ok(table::table(&cols, &items, include, &meta))
                }
                None => Ok(Reply::Bytes(Api::list_bytes(&scope, &items, rv, cont))),
            }
        }
        (&Method::GET, Some(name)) => {
            let obj = st.api.get(&scope, name)?;
            match table {
                Some((cols, include)) => ok(table::table(
                    &cols,
                    &[Arc::new(obj.clone())],
                    include,
                    &serde_json::json!({"resourceVersion": obj.pointer("/metadata/resourceVersion").cloned().unwrap_or_default()}),
                )),
                None => ok(obj),
            }
        }
        (&Method::POST, None) => written(st.api.create(
            &scope,
            parse_body(headers, body)?,
            &opts()?,
        )?),
        (&Method::PUT, Some(name)) => {
            written(
                st.api
                    .update(&scope, name, sub, parse_body(headers, body)?, &opts()?)?,
            )
        }
        (&Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or_default();
            written(st.api.patch(
                &scope,
                name,
                sub,
                PatchType::from_content_type(ct)?,
                body,
                &opts()?,
            )?)
        }
        (&Method::DELETE, Some(name)) => {
            let d =
                DeleteOptions::parse(body, qs("propagationPolicy"), qs("dryRun") == Some("All"))?;
            ok(st.api.delete(&scope, name, &d)?)
        }
        (&Method::DELETE, None) => {
            let list =
                ListOptions::parse(&scope, qs("labelSelector"), qs("fieldSelector"), None, None)?;
            let d =
                DeleteOptions::parse(body, qs("propagationPolicy"), qs("dryRun") == Some("All"))?;
            ok(st.api.delete_collection(&scope, &list, &d)?)
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({method} {path})"
        ))),
    }
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(|a| a.split(',').any(|m| m.contains("as=Table")))
}

/// Without `fieldManager`, Kubernetes names the manager after the client's user agent.
fn default_manager(headers: &HeaderMap) -> String {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("unknown");
    ua.split('/')
        .next()
        .unwrap_or("unknown")
        .chars()
        .take(128)
        .collect()
}

fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Value> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("application/json");
    let v: Value = if ct.starts_with(crate::protobuf::CONTENT_TYPE) {
        crate::protobuf::decode(body)?
    } else if ct.contains("yaml") {
        serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?
    } else if ct.contains("json") || ct.is_empty() {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))?
    } else {
        return Err(ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format ({ct}) - accepted media types include: application/json, application/yaml"
        )));
    };
    if !v.is_object() {
        return Err(ApiError::bad_request("the request body must be an object"));
    }
    Ok(v)
}
