//! Property test: mutated bodies (wrong JSON types at every path of valid objects, nulls,
//! deep nesting, huge strings, invalid UTF-8, wrong kinds and apiVersions, random protobuf)
//! sent to every served resource (the built-in kinds and the Quiver CRDs) with every verb
//! (create, update, status and scale updates, each patch type, server-side apply, delete
//! with DeleteOptions in JSON or protobuf), and to the endpoints that only answer POSTs (TokenRequest and the
//! authentication and authorization reviews); a fifth of them with the token of a
//! ServiceAccount that RBAC allows part of what the run asks and content type, over HTTP/2 and HTTP/1.1.
//!
//! Every answer must be a success or a Kubernetes `Status` with a 4xx code: never a 5xx, a
//! reset stream or a dropped connection. Afterwards the server still serves, and every object
//! that existed before the run and that no request named is exactly as it was.
//!
//! `QUIVER_FUZZ_CASES` sets the number of requests (default 3000, a few seconds in a debug
//! build); `QUIVER_FUZZ_SEED` replays a run (the seed is printed, and named on failure).

mod common;
mod hostile;

use std::collections::BTreeMap;

use anyhow::{Context as _, bail};
use common::{Answer, Client, Proto, install_crds, start};
use hostile::fixtures::{
    BYSTANDERS, Endpoint, Resource, TARGETS, create_only, resources, run_owned, scale_fixture,
    scaler_crd,
};
use hostile::mutate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// One request of the run.
struct Request {
    proto: Proto,
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body: String = String::from_utf8_lossy(&self.body)
            .chars()
            .take(300)
            .collect();
        write!(
            f,
            "{:?} {} {} ({:?}, {} bytes): {body}",
            self.proto,
            self.method,
            self.path,
            self.content_type,
            self.body.len()
        )
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_get_4xx_statuses_and_change_no_bystander() -> anyhow::Result<()> {
    let cases = env_number("QUIVER_FUZZ_CASES").unwrap_or(3000);
    let seed = env_number("QUIVER_FUZZ_SEED").unwrap_or_else(rand::random);
    eprintln!("hostile bodies: QUIVER_FUZZ_SEED={seed} QUIVER_FUZZ_CASES={cases}");
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let resources = resources();
    set_up(&mut client, &resources).await?;
    let endpoints = create_only();
    let unreached = hostile::coverage::unreached(&mut client, &resources, &endpoints).await?;
    assert!(
        unreached.is_empty(),
        "served but never fuzzed: {unreached:?}"
    );
    let before = snapshot(&mut client, &resources).await?;
    let mut rng = StdRng::seed_from_u64(seed);
    let mut agent = Client::with_token(&server, &service_account(&mut client).await?)?;
    let mut codes: BTreeMap<u16, u64> = BTreeMap::new();
    for case in 0..cases {
        let resource = &resources[rng.random_range(0..resources.len())];
        let request = if rng.random_bool(0.1) {
            let endpoint = &endpoints[rng.random_range(0..endpoints.len())];
            create_only_request(&mut rng, endpoint)
        } else {
            request(&mut client, &mut rng, resource, case).await?
        };
        // A fifth of the requests come from a ServiceAccount that RBAC lets do part of it.
        let sender = if rng.random_bool(0.2) {
            &mut agent
        } else {
            &mut client
        };
        let answer = sender
            .send(
                request.proto,
                request.method,
                &request.path,
                request.content_type,
                request.body.clone(),
            )
            .await;
        let verdict = match answer {
            Ok(answer) => {
                *codes.entry(answer.code).or_default() += 1;
                judge(&answer)
            }
            Err(e) => Err(e.context("transport failure")),
        };
        verdict.with_context(|| {
            format!("case {case} of QUIVER_FUZZ_SEED={seed} QUIVER_FUZZ_CASES={cases}: {request}")
        })?;
        if request.method == "DELETE" {
            ensure_target(&mut client, resource).await?;
        }
    }
    eprintln!("hostile bodies: answers by code {codes:?}");
    for proto in [Proto::Http1, Proto::Http2] {
        let health = client
            .send(proto, "GET", "/healthz", None, Vec::new())
            .await?;
        assert_eq!(
            health.code, 200,
            "the server stopped serving (QUIVER_FUZZ_SEED={seed})"
        );
    }
    let after = snapshot(&mut client, &resources).await?;
    for (path, obj) in &before {
        let now = after.get(path);
        assert_eq!(now, Some(obj), "{path} changed (QUIVER_FUZZ_SEED={seed})");
    }
    Ok(())
}

/// A success, or a `Status` with a 4xx code.
fn judge(answer: &Answer) -> anyhow::Result<()> {
    match answer.code {
        200..=299 => Ok(()),
        400..=499 if answer.status().is_some() => Ok(()),
        code => bail!(
            "answered {code}: {}",
            String::from_utf8_lossy(&answer.body)
                .chars()
                .take(500)
                .collect::<String>()
        ),
    }
}

/// Namespaces, the Quiver CRDs, and per resource a target and a bystander.
async fn set_up(client: &mut Client, resources: &[Resource]) -> anyhow::Result<()> {
    install_crds(client).await?;
    create(
        client,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        &scaler_crd(),
    )
    .await?;
    for ns in [TARGETS, BYSTANDERS] {
        create(
            client,
            "/api/v1/namespaces",
            &json!({"metadata": {"name": ns}}),
        )
        .await?;
    }
    for r in resources {
        let bystander = (r.fixture)(&r.bystander_name());
        create(client, &r.collection(BYSTANDERS), &bystander).await?;
        ensure_target(client, r).await?;
    }
    Ok(())
}

/// ServiceAccount `fuzz-agent` with a Role that allows some verbs on some resources (so its
/// requests meet both answers), and a token for it.
async fn service_account(client: &mut Client) -> anyhow::Result<String> {
    let ns = format!("/api/v1/namespaces/{TARGETS}");
    let rbac = format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{TARGETS}");
    create(
        client,
        &format!("{ns}/serviceaccounts"),
        &json!({"metadata": {"name": "fuzz-agent"}}),
    )
    .await?;
    create(
        client,
        &format!("{rbac}/roles"),
        &json!({"metadata": {"name": "fuzz-agent"}, "rules": [
        {"apiGroups": ["", "quiver.dev"], "resources": ["configmaps", "microvms/status", "secrets"],
            "verbs": ["get", "list", "patch", "update"]},
        {"apiGroups": ["fuzz.example"], "resources": ["*/scale"], "verbs": ["*"]}]}),
    )
    .await?;
    create(
        client,
        &format!("{rbac}/rolebindings"),
        &json!({"metadata": {"name": "fuzz-agent"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "fuzz-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "fuzz-agent", "namespace": TARGETS}]}),
    )
    .await?;
    let answer = client
        .json(
            Proto::Http2,
            "POST",
            &format!("{ns}/serviceaccounts/fuzz-agent/token"),
            &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
        )
        .await?;
    answer
        .json()
        .and_then(|t| t["status"]["token"].as_str().map(str::to_string))
        .with_context(|| format!("no token: {}", String::from_utf8_lossy(&answer.body)))
}

async fn create(client: &mut Client, path: &str, obj: &Value) -> anyhow::Result<()> {
    let answer = client.json(Proto::Http2, "POST", path, obj).await?;
    if answer.code != 201 {
        bail!(
            "creating in {path}: {} {}",
            answer.code,
            String::from_utf8_lossy(&answer.body)
        );
    }
    Ok(())
}

/// Re-creates the target after the run deleted it.
async fn ensure_target(client: &mut Client, r: &Resource) -> anyhow::Result<()> {
    let path = r.object(TARGETS, &r.target_name());
    let answer = client
        .send(Proto::Http2, "GET", &path, None, Vec::new())
        .await?;
    if answer.code == 404 {
        create(
            client,
            &r.collection(TARGETS),
            &(r.fixture)(&r.target_name()),
        )
        .await?;
    }
    Ok(())
}

/// Every object that exists now and that no request of the run names, by path.
async fn snapshot(
    client: &mut Client,
    resources: &[Resource],
) -> anyhow::Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for r in resources {
        let list = client.get(&format!("{}/{}", r.prefix, r.plural)).await?;
        for item in list["items"].as_array().into_iter().flatten() {
            let name = item["metadata"]["name"].as_str().unwrap_or_default();
            let ns = item["metadata"]["namespace"].as_str().unwrap_or_default();
            if run_owned(name) {
                continue;
            }
            out.insert(r.object(ns, name), item.clone());
        }
    }
    Ok(out)
}

fn proto(rng: &mut StdRng) -> Proto {
    if rng.random_bool(0.5) {
        Proto::Http2
    } else {
        Proto::Http1
    }
}

/// Query parameters a request may carry.
fn query(rng: &mut StdRng) -> &'static str {
    [
        "",
        "",
        "",
        "?fieldValidation=Strict",
        "?dryRun=All",
        "?fieldManager=fuzz",
        "?fieldValidation=Bogus",
    ][rng.random_range(0..7)]
}

/// A mutated body for an endpoint that only answers POSTs, or another verb on it.
fn create_only_request(rng: &mut StdRng, endpoint: &Endpoint) -> Request {
    let method = ["POST", "POST", "POST", "GET", "PUT", "PATCH", "DELETE"][rng.random_range(0..7)];
    let (content_type, body) = match rng.random_range(0..4) {
        0 => (
            Some("application/vnd.kubernetes.protobuf"),
            mutate::protobuf(rng, PROTOBUF_KINDS),
        ),
        _ => {
            let obj = mutate::mutate(rng, endpoint.body.clone());
            let bytes = serde_json::to_vec(&obj).unwrap_or_default();
            (Some("application/json"), mutate::damage(rng, bytes))
        }
    };
    Request {
        proto: proto(rng),
        method,
        path: endpoint.path.clone(),
        content_type,
        body,
    }
}

/// A body for a create or update in a random content type.
fn object_body(rng: &mut StdRng, r: &Resource, base: Value) -> (Option<&'static str>, Vec<u8>) {
    let obj = mutate::mutate(rng, base);
    match rng.random_range(0..10) {
        0 | 1 => {
            let yaml = serde_yaml_ng::to_string(&obj).unwrap_or_default();
            (
                Some("application/yaml"),
                mutate::damage(rng, yaml.into_bytes()),
            )
        }
        2 if r.builtin => (
            Some("application/vnd.kubernetes.protobuf"),
            mutate::protobuf(rng, PROTOBUF_KINDS),
        ),
        3 => (
            [
                None,
                Some("text/plain"),
                Some("application/vnd.kubernetes.protobuf"),
            ][rng.random_range(0..3)],
            serde_json::to_vec(&obj).unwrap_or_default(),
        ),
        _ => (
            Some("application/json"),
            mutate::damage(rng, serde_json::to_vec(&obj).unwrap_or_default()),
        ),
    }
}

const PROTOBUF_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "Event"),
    ("events.k8s.io/v1", "Event"),
    ("coordination.k8s.io/v1", "Lease"),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    ("authentication.k8s.io/v1", "TokenRequest"),
    ("authentication.k8s.io/v1", "TokenReview"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
    ("quiver.dev/v1alpha1", "MicroVM"),
    ("v1", "Pod"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "DaemonSet"),
    ("v1", "Service"),
    ("v1", "DeleteOptions"),
];

/// The target (or its Scale, for `/scale`) as stored now (the base of updates), or its
/// fixture when it is gone.
async fn current_target(client: &mut Client, r: &Resource, sub: &str) -> anyhow::Result<Value> {
    let sub = if sub == "/scale" { sub } else { "" };
    let path = format!("{}{sub}", r.object(TARGETS, &r.target_name()));
    let answer = client
        .send(Proto::Http2, "GET", &path, None, Vec::new())
        .await?;
    Ok(answer
        .json()
        .filter(|_| answer.code == 200)
        .unwrap_or_else(|| match sub {
            "/scale" => scale_fixture(&r.target_name()),
            _ => (r.fixture)(&r.target_name()),
        }))
}

async fn request(
    client: &mut Client,
    rng: &mut StdRng,
    r: &Resource,
    case: u64,
) -> anyhow::Result<Request> {
    let target = r.object(TARGETS, &r.target_name());
    let sub = if r.scale && rng.random_bool(0.3) {
        "/scale"
    } else if r.status && rng.random_bool(0.3) {
        "/status"
    } else {
        ""
    };
    // The object a write to `sub` carries: a Scale for `/scale`, else the resource's own.
    let fixture = |name: &str| {
        if sub == "/scale" {
            scale_fixture(name)
        } else {
            (r.fixture)(name)
        }
    };
    let q = query(rng);
    let (method, path, content_type, body) = match rng.random_range(0..8) {
        0 | 1 => {
            let name = match r.plural {
                "customresourcedefinitions" => format!("fuzz-c{case}.fuzz.example"),
                _ => format!("fuzz-c{case}"),
            };
            let (ct, body) = object_body(rng, r, (r.fixture)(&name));
            ("POST", format!("{}{q}", r.collection(TARGETS)), ct, body)
        }
        2 | 3 => {
            let base = current_target(client, r, sub).await?;
            let (ct, body) = object_body(rng, r, base);
            ("PUT", format!("{target}{sub}{q}"), ct, body)
        }
        4 => {
            let ct = [
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
            ][rng.random_range(0..2)];
            let base = fixture(&r.target_name());
            let patch = serde_json::to_vec(&mutate::mutate(rng, base))?;
            let body = mutate::damage(rng, patch);
            ("PATCH", format!("{target}{sub}{q}"), Some(ct), body)
        }
        5 => {
            let base = current_target(client, r, sub).await?;
            let body = serde_json::to_vec(&mutate::json_patch(rng, &base))?;
            (
                "PATCH",
                format!("{target}{sub}{q}"),
                Some("application/json-patch+json"),
                body,
            )
        }
        6 => {
            let applied = mutate::mutate(rng, fixture(&r.target_name()));
            let force = if rng.random_bool(0.5) {
                "&force=true"
            } else {
                ""
            };
            let (ct, body) = if rng.random_bool(0.7) {
                (
                    "application/apply-patch+yaml",
                    serde_yaml_ng::to_string(&applied)?.into_bytes(),
                )
            } else {
                (
                    "application/apply-patch+json",
                    serde_json::to_vec(&applied)?,
                )
            };
            let path = format!("{target}{sub}?fieldManager=fuzz-apply{force}");
            ("PATCH", path, Some(ct), mutate::damage(rng, body))
        }
        _ if rng.random_bool(0.2) => (
            "DELETE",
            format!("{target}{q}"),
            Some("application/vnd.kubernetes.protobuf"),
            mutate::protobuf(
                rng,
                &[("v1", "DeleteOptions"), ("meta.k8s.io/v1", "DeleteOptions")],
            ),
        ),
        _ => {
            let options = serde_json::to_vec(&mutate::delete_options(rng))?;
            let body = mutate::damage(rng, options);
            (
                "DELETE",
                format!("{target}{q}"),
                Some("application/json"),
                body,
            )
        }
    };
    Ok(Request {
        proto: proto(rng),
        method,
        path,
        content_type,
        body,
    })
}
