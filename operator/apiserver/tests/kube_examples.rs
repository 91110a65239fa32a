//! kube-rs's own `dynamic_api` and `kubectl` examples, run as a new user would run them
//! against the dev control plane: aggregated discovery (answered in the wire shape of a real
//! API server) finds every group, and `Api<DynamicObject>` resolved through it lists, applies,
//! gets, watches and deletes.

mod kube_common;

use std::collections::BTreeSet;

use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, ResourceExt};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiResource, Discovery, Scope, verbs};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube_common::{RawAnswer, raw, start};
use serde_json::{Value, json};

/// The `Accept` header kube-rs sends for aggregated discovery.
const KUBE_ACCEPT: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";

async fn discovery_document(client: &kube::Client, path: &str) -> anyhow::Result<RawAnswer> {
    let request = http::Request::get(path)
        .header(http::header::ACCEPT, KUBE_ACCEPT)
        .body(Vec::new())?;
    raw(client, request).await
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> anyhow::Result<&'a Value> {
    list.as_array()
        .and_then(|items| items.iter().find(|i| i.pointer(key) == Some(&json!(value))))
        .ok_or_else(|| anyhow::anyhow!("no {key} = {value:?} in {list}"))
}

#[tokio::test]
async fn aggregated_discovery_is_an_api_group_discovery_list_under_its_media_type()
-> anyhow::Result<()> {
    let (_server, client) = start().await?;
    let apis = discovery_document(&client, "/apis").await?;
    assert_eq!(apis.code, 200);
    assert_eq!(
        apis.content_type,
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(
        (&apis.body["kind"], &apis.body["apiVersion"]),
        (
            &json!("APIGroupDiscoveryList"),
            &json!("apidiscovery.k8s.io/v2")
        )
    );
    let items = &apis.body["items"];
    let apps = find(items, "/metadata/name", "apps")?;
    assert_eq!(apps["versions"][0]["version"], "v1");
    assert_eq!(apps["versions"][0]["freshness"], "Current");
    let deployments = find(
        &apps["versions"][0]["resources"],
        "/resource",
        "deployments",
    )?;
    assert_eq!(deployments["responseKind"]["kind"], "Deployment");
    assert_eq!(deployments["scope"], "Namespaced");
    assert_eq!(deployments["singularResource"], "deployment");
    assert_eq!(deployments["shortNames"], json!(["deploy"]));
    assert_eq!(deployments["categories"], json!(["all"]));
    assert_eq!(
        deployments["verbs"],
        json!([
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch"
        ])
    );
    let scale = find(&deployments["subresources"], "/subresource", "scale")?;
    assert_eq!(
        scale,
        &json!({"subresource": "scale", "verbs": ["get", "patch", "update"],
            "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}})
    );
    find(&deployments["subresources"], "/subresource", "status")?;

    // The preferred version first: the order kube-rs and kubectl take as preference.
    let widgets = find(items, "/metadata/name", "example.dev")?;
    let versions: Vec<&Value> = widgets["versions"]
        .as_array()
        .map(|vs| vs.iter().map(|v| &v["version"]).collect())
        .unwrap_or_default();
    assert_eq!(versions, [&json!("v2"), &json!("v1")]);
    let reviews = find(items, "/metadata/name", "authentication.k8s.io")?;
    let token_reviews = find(
        &reviews["versions"][0]["resources"],
        "/resource",
        "tokenreviews",
    )?;
    assert_eq!(
        (&token_reviews["scope"], &token_reviews["verbs"]),
        (&json!("Cluster"), &json!(["create"]))
    );

    // `/api` holds the core group alone, which has no name.
    let core = discovery_document(&client, "/api").await?;
    assert_eq!(core.content_type, apis.content_type);
    let groups = core.body["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(groups.len(), 1, "{}", core.body);
    assert!(groups[0]["metadata"].get("name").is_none());
    let service_accounts = find(
        &groups[0]["versions"][0]["resources"],
        "/resource",
        "serviceaccounts",
    )?;
    let token = find(&service_accounts["subresources"], "/subresource", "token")?;
    assert_eq!(
        token,
        &json!({"subresource": "token", "verbs": ["create"],
            "responseKind": {"group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest"}})
    );

    // A client that does not ask for it gets the plain documents.
    let plain = raw(&client, http::Request::get("/apis").body(Vec::new())?).await?;
    assert_eq!(plain.content_type, "application/json");
    assert_eq!(plain.body["kind"], "APIGroupList");
    Ok(())
}

/// kube's `dynamic_api` example: every resource that discovery says can be listed is listed
/// through `Api<DynamicObject>`.
#[tokio::test]
async fn dynamic_api_example_lists_every_discovered_resource() -> anyhow::Result<()> {
    let (_server, client) = start().await?;
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    let mut listed = BTreeSet::new();
    let mut create_only = BTreeSet::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            let key = format!("{}/{}", ar.group, ar.plural);
            if !caps.supports_operation(verbs::LIST) {
                create_only.insert(key);
                continue;
            }
            let api: Api<DynamicObject> = if caps.scope == Scope::Cluster {
                Api::all_with(client.clone(), &ar)
            } else {
                Api::default_namespaced_with(client.clone(), &ar)
            };
            api.list(&ListParams::default())
                .await
                .map_err(|e| anyhow::anyhow!("listing {key}: {e}"))?;
            listed.insert(key);
        }
    }
    for key in [
        "/configmaps",
        "/namespaces",
        "/secrets",
        "/serviceaccounts",
        "/services",
        "apps/deployments",
        "apps/daemonsets",
        "coordination.k8s.io/leases",
        "events.k8s.io/events",
        "apiextensions.k8s.io/customresourcedefinitions",
        "rbac.authorization.k8s.io/clusterrolebindings",
        "rbac.authorization.k8s.io/roles",
        "example.dev/widgets",
    ] {
        assert!(listed.contains(key), "{key} not listed: {listed:?}");
    }
    assert!(create_only.contains("authentication.k8s.io/tokenreviews"));
    assert!(create_only.contains("authorization.k8s.io/selfsubjectaccessreviews"));
    Ok(())
}

/// kube's `kubectl` example: resources named by kind or plural, at the group kubectl would
/// prefer.
fn resolve(discovery: &Discovery, name: &str) -> anyhow::Result<ApiResource> {
    discovery
        .groups()
        .flat_map(|group| {
            group
                .resources_by_stability()
                .into_iter()
                .map(move |res| (group, res))
        })
        .filter(|(_, (res, _))| {
            name.eq_ignore_ascii_case(&res.kind) || name.eq_ignore_ascii_case(&res.plural)
        })
        .min_by_key(|(group, _)| group.name())
        .map(|(_, (res, _))| res)
        .ok_or_else(|| anyhow::anyhow!("resource {name:?} not found"))
}

const MANIFESTS: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: settings, labels: {app: web}}
data: {mode: fast}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: 'nginx:1.27'}]}
---
apiVersion: example.dev/v2
kind: Widget
metadata: {name: w, labels: {app: web}}
spec: {replicas: 1, x: 3}
";

#[tokio::test]
async fn kubectl_example_applies_gets_watches_and_deletes_through_discovery() -> anyhow::Result<()>
{
    let (_server, client) = start().await?;
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    let api_for = |ar: &ApiResource| -> Api<DynamicObject> {
        Api::default_namespaced_with(client.clone(), ar)
    };

    // apply -f: each document resolved by its apiVersion and kind, applied server-side.
    let apply = PatchParams::apply("kubectl-light").force();
    for doc in serde_yaml_ng::Deserializer::from_str(MANIFESTS) {
        let obj: DynamicObject = serde::Deserialize::deserialize(doc)?;
        let types = obj
            .types
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("no TypeMeta"))?;
        let gvk = GroupVersionKind::try_from(types)?;
        let (ar, _) = discovery
            .resolve_gvk(&gvk)
            .ok_or_else(|| anyhow::anyhow!("{gvk:?} not discovered"))?;
        api_for(&ar)
            .patch(
                &obj.name_any(),
                &apply,
                &Patch::Apply(serde_json::to_value(&obj)?),
            )
            .await?;
    }

    let deployments = api_for(&resolve(&discovery, "deployment")?);
    assert_eq!(deployments.get("web").await?.data["spec"]["replicas"], 2);
    let widgets = resolve(&discovery, "widgets")?;
    assert_eq!(
        (widgets.group.as_str(), widgets.version.as_str()),
        ("example.dev", "v2")
    );
    let widgets = api_for(&widgets);
    let labelled = ListParams::default().labels("app=web");
    assert_eq!(widgets.list(&labelled).await?.items.len(), 1);

    // watch: the watcher's first event is the object named.
    let watch = watcher::Config::default().fields("metadata.name=settings");
    let configmaps = api_for(&resolve(&discovery, "ConfigMap")?);
    let seen = watcher(configmaps.clone(), watch)
        .applied_objects()
        .boxed()
        .try_next()
        .await?;
    assert_eq!(seen.map(|o| o.name_any()).as_deref(), Some("settings"));

    // delete NAME answers a Status (no finalizers), and delete -l a collection.
    let gone = deployments.delete("web", &DeleteParams::default()).await?;
    assert!(gone.is_right(), "a Deployment delete answers a Status");
    assert!(deployments.get_opt("web").await?.is_none());
    configmaps
        .delete_collection(&DeleteParams::default(), &labelled)
        .await?;
    widgets
        .delete_collection(&DeleteParams::default(), &labelled)
        .await?;
    assert!(configmaps.list(&labelled).await?.items.is_empty());
    assert!(widgets.list(&labelled).await?.items.is_empty());
    Ok(())
}
