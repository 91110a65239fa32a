//! A dev control plane with a kube-rs client and a two-version `Widget` CRD (`example.dev`,
//! served as v1 and v2, stored as v2) that declares `/status`, `/scale` and a CEL rule with
//! `messageExpression`; and the real kubectl pointed at it.

#![allow(dead_code)]

use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use quiver_apiserver::{Config, DevApiServer};
use serde_json::json;

pub async fn start() -> anyhow::Result<(DevApiServer, kube::Client)> {
    let server = DevApiServer::start(Config::default()).await?;
    let client = client_for(&server, server.token()).await?;
    install_widgets(&client).await?;
    Ok((server, client))
}

/// A client that authenticates with `token` (the admin token or a ServiceAccount's).
pub async fn client_for(server: &DevApiServer, token: &str) -> anyhow::Result<kube::Client> {
    let yaml = quiver_apiserver::kubeconfig_yaml(&server.url(), token, server.ca_pem());
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

fn version(name: &str, storage: bool, only: &str) -> serde_json::Value {
    json!({
        "name": name, "served": true, "storage": storage,
        "subresources": {"status": {}, "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector"}},
        "schema": {"openAPIV3Schema": {"type": "object", "properties": {
            "spec": {"type": "object",
                "properties": {
                    "replicas": {"type": "integer"},
                    "x": {"type": "integer"},
                    only: {"type": "string"},
                    "sub": {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}},
                "x-kubernetes-validations": [{
                    "rule": "!has(self.x) || self.x < 10",
                    "messageExpression": "'x is ' + string(self.x) + ', at most 9'",
                    "reason": "FieldValueForbidden",
                    "fieldPath": ".x"}]},
            "status": {"type": "object", "properties": {
                "replicas": {"type": "integer"}, "selector": {"type": "string"}}}}}}
    })
}

async fn install_widgets(client: &kube::Client) -> anyhow::Result<()> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.dev"},
        "spec": {"group": "example.dev", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [version("v1", false, "old"), version("v2", true, "new")]}
    });
    crds.create(&PostParams::default(), &serde_json::from_value(crd)?)
        .await?;
    Ok(())
}

pub fn widget_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.dev", version, "Widget"),
        "widgets",
    )
}

pub fn widgets(client: &kube::Client, version: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), "default", &widget_resource(version))
}

/// What the server answered to a request sent as it is: the code, the `Content-Type` and the
/// body as JSON, whatever the code.
pub struct RawAnswer {
    pub code: u16,
    pub content_type: String,
    pub body: serde_json::Value,
}

/// Sends `request` through `client` (its token and TLS) without interpreting the answer.
pub async fn raw(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
) -> anyhow::Result<RawAnswer> {
    let answer = client.send(request.map(kube::client::Body::from)).await?;
    let code = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let bytes = answer.into_body().collect_bytes().await?;
    Ok(RawAnswer {
        code,
        content_type,
        body: serde_json::from_slice(&bytes)?,
    })
}

/// Runs the real kubectl (`$QUIVER_KUBECTL`, else `kubectl`) against `server`; its stdout,
/// or an error with its stderr.
pub async fn kubectl(server: &DevApiServer, args: &[&str]) -> anyhow::Result<String> {
    kubectl_as(server, server.token(), args).await
}

pub async fn kubectl_as(
    server: &DevApiServer,
    token: &str,
    args: &[&str],
) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        quiver_apiserver::kubeconfig_yaml(&server.url(), token, server.ca_pem()),
    )?;
    let binary = std::env::var("QUIVER_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
    let out = tokio::process::Command::new(binary)
        .args(args)
        .env("KUBECONFIG", &kubeconfig)
        .env("KUBECACHEDIR", dir.path().join("cache"))
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        anyhow::bail!(
            "kubectl {args:?} exited {}: {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    }
}
