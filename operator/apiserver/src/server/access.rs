//! Who a request is and whether it may proceed, and the endpoints about that: TokenRequest
//! (`POST .../serviceaccounts/<name>/token`), TokenReview, SelfSubjectReview,
//! SelfSubjectAccessReview, SubjectAccessReview and SelfSubjectRulesReview. Reviews are
//! answered (201) and never stored, as in Kubernetes.

use http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value, json};

use super::{AppState, Call, Reply, body};
use crate::api::Scope;
use crate::error::{ApiError, Cause, Result};
use crate::rbac::token::{Claims, ISSUER};
use crate::rbac::{self, Attributes, ResourceAttributes, User};

/// Token lifetimes Kubernetes accepts: at least 10 minutes, at most 2^32 seconds.
const MIN_EXPIRATION: i64 = 600;
const MAX_EXPIRATION: i64 = 1 << 32;
const DEFAULT_EXPIRATION: i64 = 3600;

fn same_secret(given: &str, token: &str) -> bool {
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The user a bearer token stands for: the admin, or a ServiceAccount whose token this
/// server signed, has not expired, is meant for the API server, and names the account's
/// current uid.
pub fn user_of_token(st: &AppState, token: &str, audiences: &[String]) -> Option<(User, Claims)> {
    if same_secret(token, &st.token) {
        return Some((User::admin(), Claims::admin()));
    }
    let claims = st.signer.verify(token, now()).ok()?;
    if !claims.audiences.iter().any(|a| audiences.contains(a)) {
        return None;
    }
    let uid = st
        .api
        .service_account_uid(&claims.namespace, &claims.name)?;
    (uid == claims.uid).then(|| {
        (
            User::service_account(&claims.namespace, &claims.name, &uid),
            claims,
        )
    })
}

pub fn authenticate(st: &AppState, headers: &HeaderMap) -> Result<User> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .unwrap_or_default();
    user_of_token(st, given, &[ISSUER.to_string()])
        .map(|(user, _)| user)
        .ok_or_else(ApiError::unauthorized)
}

/// Checks the request against RBAC; a denial is the 403 Status Kubernetes sends.
pub fn authorize(st: &AppState, user: &User, attrs: &Attributes) -> Result<()> {
    if user.is_admin() {
        return Ok(());
    }
    let decision = rbac::authorize(&st.api.policy(), user, attrs);
    if decision.allowed {
        return Ok(());
    }
    let mut why = rbac::forbidden_message(user, attrs);
    if !decision.reason.is_empty() {
        why = format!("{why}: {}", decision.reason);
    }
    Err(match attrs {
        Attributes::Resource(r) => ApiError::forbidden(&r.group, &r.resource, &r.name, &why),
        Attributes::NonResource { .. } => ApiError::forbidden("", "", "", &why),
    })
}

fn created(v: Value) -> Result<Reply> {
    Ok(Reply::Json(StatusCode::CREATED, v, Vec::new()))
}

/// A review body: an object of the review's kind with a `spec` object.
fn review_body(call: &Call<'_>, scope: &Scope) -> Result<Value> {
    let v = body::parse(call.headers, call.body)?;
    let kind = &scope.rt.kind;
    let fail = |why: &str| {
        ApiError::bad_request(format!(
            "{kind} in version \"v1\" cannot be handled as a {kind}: {why}"
        ))
    };
    if !v.is_object() {
        return Err(fail("the body is not an object"));
    }
    match v.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => {}
        _ => return Err(fail("kind does not match")),
    }
    match v.get("spec") {
        Some(Value::Object(_)) => Ok(v),
        // A SelfSubjectReview has no spec: the request itself is the question.
        None | Some(Value::Null) if scope.rt.plural == "selfsubjectreviews" => Ok(v),
        None | Some(Value::Null) => Err(ApiError::invalid(
            &scope.rt.group,
            kind,
            "",
            vec![Cause::required("spec")],
        )),
        Some(_) => Err(fail("spec is not an object")),
    }
}

fn text<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn strings(v: Option<&Value>, field: &str) -> Result<Vec<String>> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|s| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request(format!("{field} must hold strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request(format!("{field} must be a list"))),
    }
}

fn answer(scope: &Scope, mut review: Value, status: Value) -> Result<Reply> {
    if let Some(m) = review.as_object_mut() {
        m.insert(
            "apiVersion".into(),
            json!(scope.rt.api_version(&scope.version)),
        );
        m.insert("metadata".into(), json!({"creationTimestamp": null}));
        m.insert("status".into(), status);
    }
    created(review)
}

/// `POST` of a review kind.
pub fn review(st: &AppState, call: &Call<'_>, user: &User, scope: &Scope) -> Result<Reply> {
    let v = review_body(call, scope)?;
    let status = match scope.rt.plural.as_str() {
        "tokenreviews" => token_review(st, &v)?,
        "selfsubjectreviews" => json!({"userInfo": user_info(user)}),
        "selfsubjectaccessreviews" => access_review(st, user, &v)?,
        "subjectaccessreviews" => {
            let subject = User {
                name: text(&v, "/spec/user").to_string(),
                uid: text(&v, "/spec/uid").to_string(),
                groups: strings(v.pointer("/spec/groups"), "spec.groups")?,
            };
            access_review(st, &subject, &v)?
        }
        "selfsubjectrulesreviews" => rules_review(st, user, text(&v, "/spec/namespace")),
        _ => return Err(ApiError::not_found_path(call.path)),
    };
    answer(scope, v, status)
}

fn user_info(user: &User) -> Value {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    info
}

fn token_review(st: &AppState, v: &Value) -> Result<Value> {
    let token = text(v, "/spec/token");
    let mut wanted = strings(v.pointer("/spec/audiences"), "spec.audiences")?;
    if wanted.is_empty() {
        wanted.push(ISSUER.into());
    }
    Ok(match user_of_token(st, token, &wanted) {
        Some((user, claims)) => {
            let mut info = user_info(&user);
            if !claims.id.is_empty() {
                info["extra"] = json!({"authentication.kubernetes.io/credential-id": [format!("JTI={}", claims.id)]});
            }
            let audiences: Vec<&String> = wanted
                .iter()
                .filter(|a| user.is_admin() || claims.audiences.contains(a))
                .collect();
            json!({"authenticated": true, "user": info, "audiences": audiences})
        }
        // Kubernetes' authenticators pass over a token that is not a JWT without an error.
        None if st.signer.verify(token, now()) == Err("not a JWT") => json!({"user": {}}),
        None => json!({"user": {}, "error": "invalid bearer token"}),
    })
}

fn access_review(st: &AppState, user: &User, v: &Value) -> Result<Value> {
    let attrs = if let Some(r) = v
        .pointer("/spec/resourceAttributes")
        .filter(|r| !r.is_null())
    {
        Attributes::Resource(ResourceAttributes {
            verb: text(r, "/verb").into(),
            group: text(r, "/group").into(),
            version: text(r, "/version").into(),
            resource: text(r, "/resource").into(),
            subresource: text(r, "/subresource").into(),
            namespace: text(r, "/namespace").into(),
            name: text(r, "/name").into(),
        })
    } else if let Some(n) = v
        .pointer("/spec/nonResourceAttributes")
        .filter(|n| !n.is_null())
    {
        Attributes::NonResource {
            verb: text(n, "/verb").into(),
            path: text(n, "/path").into(),
        }
    } else {
        return Err(ApiError::invalid(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "",
            vec![Cause::invalid(
                "spec.resourceAttributes",
                "Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )],
        ));
    };
    let decision = rbac::authorize(&st.api.policy(), user, &attrs);
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    Ok(status)
}

fn rules_review(st: &AppState, user: &User, namespace: &str) -> Value {
    let (rules, incomplete) = rbac::rules_in(&st.api.policy(), user, namespace);
    let (mut resource_rules, mut non_resource_rules) = (Vec::new(), Vec::new());
    for rule in rules {
        let mut out = Map::new();
        out.insert("verbs".into(), json!(rule.verbs));
        let lists = [
            ("apiGroups", &rule.api_groups),
            ("resources", &rule.resources),
            ("resourceNames", &rule.resource_names),
        ];
        if rule.non_resource_urls.is_empty() {
            for (key, list) in lists {
                if !list.is_empty() {
                    out.insert(key.into(), json!(list));
                }
            }
            resource_rules.push(Value::Object(out));
        } else {
            out.insert("nonResourceURLs".into(), json!(rule.non_resource_urls));
            non_resource_rules.push(Value::Object(out));
        }
    }
    json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": incomplete})
}

/// `POST .../serviceaccounts/<name>/token`: a TokenRequest answered with a signed token.
pub fn token_request(st: &AppState, call: &Call<'_>, scope: &Scope, name: &str) -> Result<Reply> {
    let v = body::parse(call.headers, call.body)?;
    // Kubernetes names no object in this error: the TokenRequest itself has no name.
    let invalid =
        |cause: Cause| ApiError::invalid("authentication.k8s.io", "TokenRequest", "", vec![cause]);
    if !v.is_object()
        || v.get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k != "TokenRequest")
    {
        return Err(ApiError::bad_request(
            "TokenRequest in version \"v1\" cannot be handled as a TokenRequest: the body is not a TokenRequest",
        ));
    }
    let spec = match v.get("spec") {
        None | Some(Value::Null) => json!({}),
        Some(s @ Value::Object(_)) => s.clone(),
        Some(_) => return Err(ApiError::bad_request("spec must be an object")),
    };
    let mut audiences = strings(spec.get("audiences"), "spec.audiences")?;
    if audiences.is_empty() {
        audiences.push(ISSUER.into());
    }
    // As Kubernetes does: the account first (404), then the request's validation (422).
    let namespace = scope.ns();
    let uid = st
        .api
        .service_account_uid(namespace, name)
        .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => DEFAULT_EXPIRATION,
        Some(e) => e
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("spec.expirationSeconds must be an integer"))?,
    };
    if expiration < MIN_EXPIRATION {
        return Err(invalid(Cause::invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {expiration}: may not specify a duration less than 10 minutes"),
        )));
    }
    if expiration > MAX_EXPIRATION {
        return Err(invalid(Cause::invalid(
            "spec.expirationSeconds",
            format!(
                "Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds"
            ),
        )));
    }
    let issued_at = now();
    let claims = Claims {
        namespace: namespace.into(),
        name: name.into(),
        uid,
        audiences: audiences.clone(),
        issued_at,
        expires_at: issued_at + expiration,
        id: uuid::Uuid::new_v4().to_string(),
    };
    let token = st.signer.issue(&claims);
    let expires = chrono::DateTime::from_timestamp(claims.expires_at, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut out_spec = json!({"audiences": audiences, "expirationSeconds": expiration});
    if let Some(b) = spec.get("boundObjectRef").filter(|b| !b.is_null()) {
        out_spec["boundObjectRef"] = b.clone();
    }
    created(json!({
        "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": null},
        "spec": out_spec,
        "status": {"token": token, "expirationTimestamp": expires},
    }))
}
