//! Path routing: discovery and OpenAPI documents, then
//! `/api[s]/{group}/{version}/[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]`
//! dispatched by verb.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use super::{AppState, Call, Reply, access, body};
use crate::api::{ListOptions, Scope};
use crate::delete::DeleteOptions;
use crate::error::{ApiError, Result};
use crate::patch::PatchType;
use crate::registry::{Behavior, Registry, ResourceType};
use crate::table::{self, IncludeObject};
use crate::watch::WatchParams;
use crate::write::{FieldValidation, ScaleBody, WriteOptions, Written};
use crate::{discovery, openapi};

/// A resolved resource path.
struct Target<'a> {
    scope: Scope,
    name: Option<&'a str>,
    /// `"status"`, `"scale"` or `"token"` for those subresources, empty otherwise.
    sub: &'static str,
}

pub(super) fn route(st: &AppState, call: &Call<'_>) -> Result<Reply> {
    let segs: Vec<&str> = call.path.split('/').filter(|s| !s.is_empty()).collect();
    let registry = st.api.registry();
    if call.method == Method::GET
        && let Some(reply) = documents(st, &registry, &segs, call.headers)
    {
        return reply.ok_or_else(|| ApiError::not_found_path(call.path));
    }
    let target = resolve(&registry, &segs).ok_or_else(|| ApiError::not_found_path(call.path))?;
    if target.sub == "scale" {
        return scale(st, call, &target);
    }
    let create_only = target.sub == "token" || target.scope.rt.behavior == Behavior::Review;
    if create_only && call.method != Method::POST {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            call.method, call.path
        )));
    }
    if target.sub == "token" {
        let name = target.name.unwrap_or_default();
        return access::token_request(st, call, &target.scope, name);
    }
    if target.scope.rt.behavior == Behavior::Review {
        if target.name.is_some() {
            return Err(ApiError::not_found_path(call.path));
        }
        return access::review(st, call, call.user, &target.scope);
    }
    match (call.method, target.name) {
        (&Method::GET, None) => list_or_watch(st, call, &target.scope),
        (&Method::GET, Some(name)) => get(st, call, &target.scope, name),
        (&Method::POST, None) => {
            let obj = body::parse(call.headers, call.body)?;
            written(st.api.create(&target.scope, obj, &write_options(call)?)?)
        }
        (&Method::PUT, Some(name)) => {
            let obj = body::parse(call.headers, call.body)?;
            let opts = write_options(call)?;
            written(st.api.update(&target.scope, name, target.sub, obj, &opts)?)
        }
        (&Method::PATCH, Some(name)) => {
            let kind = PatchType::from_content_type(body::content_type(call.headers))?;
            let opts = write_options(call)?;
            written(
                st.api
                    .patch(&target.scope, name, target.sub, kind, call.body, &opts)?,
            )
        }
        (&Method::DELETE, Some(name)) => {
            let opts = delete_options(call)?;
            json_ok(st.api.delete(&target.scope, name, &opts)?)
        }
        (&Method::DELETE, None) => {
            let list = ListOptions::parse(
                &target.scope,
                call.query("labelSelector"),
                call.query("fieldSelector"),
                None,
                None,
            )?;
            let opts = delete_options(call)?;
            json_ok(st.api.delete_collection(&target.scope, &list, &opts)?)
        }
        _ => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource ({} {})",
            call.method, call.path
        ))),
    }
}

/// GET, PUT and PATCH of `/scale`.
fn scale(st: &AppState, call: &Call<'_>, target: &Target<'_>) -> Result<Reply> {
    let name = target.name.unwrap_or_default();
    let scope = &target.scope;
    let body = match *call.method {
        Method::GET => return json_ok(st.api.get_scale(scope, name)?),
        Method::PUT => ScaleBody::Put(body::parse(call.headers, call.body)?),
        Method::PATCH => ScaleBody::Patch(
            PatchType::from_content_type(body::content_type(call.headers))?,
            call.body,
        ),
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({} {})",
                call.method, call.path
            )));
        }
    };
    written(
        st.api
            .write_scale(scope, name, body, &write_options(call)?)?,
    )
}

fn json_ok(v: Value) -> Result<Reply> {
    Ok(Reply::Json(StatusCode::OK, v, Vec::new()))
}

fn written(w: Written) -> Result<Reply> {
    let code = if w.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(Reply::Json(code, w.object, w.warnings))
}

/// Health, version, discovery and OpenAPI: `Some` when the path names one of them (`None`
/// inside when that document does not exist), `None` for resource paths.
fn documents(
    st: &AppState,
    registry: &Registry,
    segs: &[&str],
    headers: &HeaderMap,
) -> Option<Option<Reply>> {
    let json = |v: Option<Value>| v.map(|v| Reply::Json(StatusCode::OK, v, Vec::new()));
    let aggregated = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(discovery::wants_aggregated);
    if aggregated && matches!(segs, ["api" | "apis"]) {
        let doc = discovery::aggregated(registry, segs == ["api"]);
        return Some(Some(Reply::Typed(discovery::AGGREGATED_TYPE, doc)));
    }
    Some(match segs {
        ["healthz" | "livez" | "readyz"] => Some(Reply::Text("ok")),
        ["version"] => json(Some(discovery::version())),
        ["api"] => json(Some(discovery::api_versions(&st.address))),
        ["apis"] => json(Some(discovery::api_group_list(registry))),
        ["api", v] => json(discovery::resource_list(registry, "", v)),
        ["apis", g] => json(discovery::api_group(registry, g)),
        ["apis", g, v] => json(discovery::resource_list(registry, g, v)),
        ["openapi", "v3"] => json(Some(openapi::index(registry))),
        ["openapi", "v3", "api", v] => json(openapi::gv_document(registry, "", v)),
        ["openapi", "v3", "apis", g, v] => json(openapi::gv_document(registry, g, v)),
        _ => return None,
    })
}

/// Resolves `[namespaces/{ns}/]{resource}[/{name}[/{subresource}]]` under a group/version.
fn resolve<'a>(registry: &Registry, segs: &[&'a str]) -> Option<Target<'a>> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    if rest.len() > 5 {
        return None;
    }
    let lookup = |plural: &str| registry.lookup(group, version, plural);
    let (rt, namespace, tail): (Arc<ResourceType>, Option<String>, &[&str]) = match rest {
        ["namespaces", ns, res, tail @ ..]
            if !matches!(*res, "status" | "finalize") || !tail.is_empty() =>
        {
            let rt = lookup(res).filter(|rt| rt.namespaced)?;
            (rt, Some((*ns).to_string()), tail)
        }
        [res, tail @ ..] => {
            let rt = lookup(res)?;
            if rt.namespaced && !tail.is_empty() {
                return None;
            }
            (rt, None, tail)
        }
        [] => return None,
    };
    let sub = match tail.get(1).copied() {
        None => "",
        Some("status") if rt.has_status(version) => "status",
        Some("scale") if rt.scale(version).is_some() => "scale",
        Some("token") if rt.group.is_empty() && rt.plural == "serviceaccounts" => "token",
        Some("finalize") if rt.plural == "namespaces" => "",
        Some(_) => return None,
    };
    Some(Target {
        name: tail.first().copied(),
        sub,
        scope: Scope {
            version: version.to_string(),
            rt,
            namespace,
        },
    })
}

fn list_or_watch(st: &AppState, call: &Call<'_>, scope: &Scope) -> Result<Reply> {
    let list = ListOptions::parse(
        scope,
        call.query("labelSelector"),
        call.query("fieldSelector"),
        call.query("limit"),
        call.query("continue"),
    )?;
    let table = table_request(call, scope);
    if call.query("watch").is_some_and(|w| w == "true" || w == "1") {
        let params = WatchParams {
            resource_version: call.query("resourceVersion").map(str::to_string),
            send_initial_events: call.query("sendInitialEvents") == Some("true"),
            bookmarks: call.query("allowWatchBookmarks") == Some("true"),
            timeout: Duration::from_secs(
                call.query("timeoutSeconds")
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(1800),
            ),
            bookmark_interval: st.bookmark_interval,
            table,
        };
        return st.api.watch(scope.clone(), list, params).map(Reply::Stream);
    }
    let (items, rv, cont) = st.api.list(scope, &list)?;
    let Some((cols, include)) = table else {
        return Ok(Reply::Bytes(st.api.list_bytes(scope, &items, rv, cont)));
    };
    let items: Vec<Arc<Value>> = items.iter().map(|o| Arc::new(scope.present(o))).collect();
    let meta = match cont {
        Some(c) => json!({"resourceVersion": rv.to_string(), "continue": c}),
        None => json!({"resourceVersion": rv.to_string()}),
    };
    json_ok(table::table(&cols, &items, include, &meta))
}

fn get(st: &AppState, call: &Call<'_>, scope: &Scope, name: &str) -> Result<Reply> {
    let obj = st.api.get(scope, name)?;
    let Some((cols, include)) = table_request(call, scope) else {
        return json_ok(obj);
    };
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or_default();
    json_ok(table::table(
        &cols,
        &[Arc::new(obj)],
        include,
        &json!({"resourceVersion": rv}),
    ))
}

/// The columns and row contents of an `as=Table` request, if this is one.
fn table_request(
    call: &Call<'_>,
    scope: &Scope,
) -> Option<(Vec<crate::registry::Column>, IncludeObject)> {
    wants_table(call.headers).then(|| {
        (
            table::columns(&scope.rt, &scope.version),
            IncludeObject::parse(call.query("includeObject")),
        )
    })
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .any(|a| a.split(',').any(|m| m.contains("as=Table")))
}

fn write_options(call: &Call<'_>) -> Result<WriteOptions> {
    Ok(WriteOptions {
        manager: call
            .query("fieldManager")
            .map_or_else(|| default_manager(call.headers), str::to_string),
        validation: FieldValidation::parse(call.query("fieldValidation"))?,
        dry_run: call.query("dryRun") == Some("All"),
        force: call.query("force") == Some("true"),
    })
}

fn delete_options(call: &Call<'_>) -> Result<DeleteOptions> {
    DeleteOptions::parse(
        call.body,
        body::content_type(call.headers),
        call.query("propagationPolicy"),
        call.query("dryRun") == Some("All"),
    )
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
