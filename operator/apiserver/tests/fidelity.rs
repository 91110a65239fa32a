//! Answers that kube-rs (and kubectl) expect from a real API server, for the places where
//! the dev control plane used to differ: aggregated discovery, DELETE's `Status`, `/scale`,
//! CEL messages, server-side apply field removal, multi-version CRDs and events.k8s.io field
//! selectors. Each test asserts the exact shape a real API server gives. `/scale` beyond GET
//! and PUT is in `scale.rs`, the wire shape of aggregated discovery and kube-rs's own
//! `dynamic_api` and `kubectl` examples in `kube_examples.rs`.

mod kube_common;

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use kube_common::{kubectl, start, widgets};
use serde_json::json;

#[tokio::test]
async fn aggregated_discovery_lists_every_group_for_kube() -> anyhow::Result<()> {
    let (server, client) = start().await?;
    let discovery = Discovery::new(client.clone()).run_aggregated().await?;
    for group in ["", "example.dev", "events.k8s.io", "apiextensions.k8s.io"] {
        assert!(discovery.has_group(group), "group {group:?} is discovered");
    }
    let (resource, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "Widget")
        .ok_or_else(|| anyhow::anyhow!("Widget is discovered"))?;
    assert_eq!(resource.plural, "widgets");
    assert_eq!(resource.version, "v2", "the storage version is preferred");
    assert_eq!(caps.scope, Scope::Namespaced);
    assert!(
        caps.subresources.iter().any(|(s, _)| s.plural == "scale"),
        "{:?}",
        caps.subresources
    );
    let (cm, _) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "ConfigMap")
        .ok_or_else(|| anyhow::anyhow!("ConfigMap is discovered"))?;
    assert_eq!((cm.group.as_str(), cm.version.as_str()), ("", "v1"));

    // kubectl asks for aggregated discovery first, too.
    let out = kubectl(
        &server,
        &["api-resources", "--api-group=example.dev", "-o", "wide"],
    )
    .await?;
    let row = out
        .lines()
        .find(|l| l.starts_with("widgets "))
        .ok_or_else(|| anyhow::anyhow!("widgets listed: {out}"))?;
    assert!(
        row.contains("example.dev/v2") && row.contains("Widget"),
        "{row}"
    );
    Ok(())
}

#[tokio::test]
async fn delete_answers_a_success_status_except_for_kinds_returning_the_object()
-> anyhow::Result<()> {
    let (server, client) = start().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "c"}}))?,
        )
        .await?;
    let status = cms
        .delete("c", &DeleteParams::default())
        .await?
        .right()
        .ok_or_else(|| anyhow::anyhow!("a ConfigMap delete answers a Status"))?;
    let details = status.details.ok_or_else(|| anyhow::anyhow!("details"))?;
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("c", "", "configmaps")
    );
    assert_eq!(Some(details.uid), cm.metadata.uid);
    assert_eq!(
        status.status,
        Some(kube::core::response::StatusSummary::Success)
    );

    // The exact body, as a real API server writes it.
    let raw = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "raw"}}))?,
        )
        .await?;
    let request =
        http::Request::delete("/api/v1/namespaces/default/configmaps/raw").body(Vec::new())?;
    let body: serde_json::Value = serde_json::from_str(&client.request_text(request).await?)?;
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": "raw", "kind": "configmaps", "uid": raw.metadata.uid}})
    );

    let ws = widgets(&client, "v2");
    ws.create(&PostParams::default(), &widget("w", 1)).await?;
    let status = ws
        .delete("w", &DeleteParams::default())
        .await?
        .right()
        .ok_or_else(|| anyhow::anyhow!("a custom resource delete answers a Status"))?;
    let details = status.details.ok_or_else(|| anyhow::anyhow!("details"))?;
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("example.dev", "widgets")
    );

    // With a finalizer the object is answered, carrying its deletionTimestamp.
    let mut held = widget("held", 1);
    held.metadata.finalizers = Some(vec!["example.dev/hold".into()]);
    ws.create(&PostParams::default(), &held).await?;
    let pending = ws
        .delete("held", &DeleteParams::default())
        .await?
        .left()
        .ok_or_else(|| anyhow::anyhow!("a pending delete answers the object"))?;
    assert!(pending.metadata.deletion_timestamp.is_some());

    // ServiceAccounts are registered with ReturnDeletedObject.
    let sas: Api<ServiceAccount> = Api::namespaced(client, "default");
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "s"}}))?,
    )
    .await?;
    let gone = sas.delete("s", &DeleteParams::default()).await?;
    assert!(gone.is_left(), "a ServiceAccount delete answers the object");

    ws.create(&PostParams::default(), &widget("k", 1)).await?;
    let out = kubectl(&server, &["delete", "widgets.example.dev", "k"]).await?;
    assert_eq!(out.trim(), "widget.example.dev \"k\" deleted");
    Ok(())
}

fn widget(name: &str, replicas: i64) -> DynamicObject {
    let mut w = DynamicObject::new(name, &kube_common::widget_resource("v2"));
    w.data = json!({"spec": {"replicas": replicas, "x": 1}});
    w
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_the_declared_paths() -> anyhow::Result<()> {
    let (server, client) = start().await?;
    let ws = widgets(&client, "v2");
    ws.create(&PostParams::default(), &widget("w", 2)).await?;
    ws.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1, "selector": "app=w"}})),
    )
    .await?;
    let scale = ws.get_scale("w").await?;
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    let status = scale.status.ok_or_else(|| anyhow::anyhow!("status"))?;
    assert_eq!(
        (status.replicas, status.selector.as_deref()),
        (1, Some("app=w"))
    );
    assert_eq!(scale.metadata.name.as_deref(), Some("w"));

    let patched = ws
        .patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(4));
    let mut scale = ws.get_scale("w").await?;
    scale.spec = Some(k8s_openapi::api::autoscaling::v1::ScaleSpec { replicas: Some(6) });
    let replaced = ws
        .replace_scale("w", &PostParams::default(), &scale)
        .await?;
    assert_eq!(replaced.spec.and_then(|s| s.replicas), Some(6));
    assert_eq!(ws.get("w").await?.data["spec"]["replicas"], 6);

    // A stale resourceVersion conflicts; a negative count is invalid.
    let stale = ws.replace_scale("w", &PostParams::default(), &scale).await;
    assert!(matches!(stale, Err(kube::Error::Api(s)) if s.code == 409));
    let mut negative = ws.get_scale("w").await?;
    negative.spec = Some(k8s_openapi::api::autoscaling::v1::ScaleSpec { replicas: Some(-1) });
    let refused = ws
        .replace_scale("w", &PostParams::default(), &negative)
        .await;
    assert!(matches!(refused, Err(kube::Error::Api(s)) if s.code == 422));

    let out = kubectl(&server, &["scale", "widgets.example.dev/w", "--replicas=3"]).await?;
    assert!(out.contains("widget.example.dev/w scaled"), "{out}");
    assert_eq!(ws.get("w").await?.data["spec"]["replicas"], 3);
    Ok(())
}

#[tokio::test]
async fn cel_message_expression_reason_and_field_path_show_as_kubernetes_renders_them()
-> anyhow::Result<()> {
    let (server, client) = start().await?;
    let ws = widgets(&client, "v2");
    let mut w = widget("w", 1);
    w.data["spec"]["x"] = json!(12);
    let err = ws
        .create(&PostParams::default(), &w)
        .await
        .expect_err("x over the limit");
    let kube::Error::Api(status) = err else {
        anyhow::bail!("not an API error: {err}");
    };
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(
        status.message,
        "Widget.example.dev \"w\" is invalid: spec.x: Forbidden: x is 12, at most 9"
    );
    let cause = status
        .details
        .and_then(|d| d.causes.into_iter().next())
        .ok_or_else(|| anyhow::anyhow!("a cause"))?;
    assert_eq!(
        (cause.reason.as_str(), cause.field.as_str()),
        ("FieldValueForbidden", "spec.x")
    );

    let manifest =
        "apiVersion: example.dev/v2\nkind: Widget\nmetadata:\n  name: w\nspec:\n  x: 11\n";
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("w.yaml");
    std::fs::write(&file, manifest)?;
    let path = file.to_string_lossy().into_owned();
    let err = kubectl(&server, &["create", "-f", &path])
        .await
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("The Widget \"w\" is invalid: spec.x: Forbidden: x is 11, at most 9"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn apply_that_drops_the_only_field_of_a_struct_removes_the_struct() -> anyhow::Result<()> {
    let (server, client) = start().await?;
    let ws = widgets(&client, "v2");
    let apply = |spec: serde_json::Value| {
        Patch::Apply(json!({"apiVersion": "example.dev/v2", "kind": "Widget",
            "metadata": {"name": "w"}, "spec": spec}))
    };
    let pp = PatchParams::apply("ops");
    ws.patch("w", &pp, &apply(json!({"x": 1, "sub": {"a": "on"}})))
        .await?;
    let after = ws.patch("w", &pp, &apply(json!({"x": 1}))).await?;
    assert_eq!(after.data["spec"], json!({"x": 1}));

    // The same through `kubectl apply --server-side`.
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("k.yaml");
    let file = file.to_string_lossy();
    let manifest = |spec: &str| {
        format!("apiVersion: example.dev/v2\nkind: Widget\nmetadata:\n  name: k\nspec: {spec}\n")
    };
    for spec in ["{x: 1, sub: {a: enabled}}", "{x: 1}"] {
        std::fs::write(&*file, manifest(spec))?;
        kubectl(&server, &["apply", "--server-side", "-f", &file]).await?;
    }
    let spec = kubectl(
        &server,
        &["get", "widgets.example.dev", "k", "-o", "jsonpath={.spec}"],
    )
    .await?;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&spec)?,
        json!({"x": 1})
    );
    Ok(())
}

#[tokio::test]
async fn multi_version_writes_are_pruned_to_the_written_stored_and_read_schemas()
-> anyhow::Result<()> {
    let (_server, client) = start().await?;
    let v1 = widgets(&client, "v1");
    let mut w = DynamicObject::new("w", &kube_common::widget_resource("v1"));
    // `old` is only in v1's schema, `new` only in v2's (the storage version).
    w.data = json!({"spec": {"x": 1, "old": "kept?", "new": "dropped", "sub": {"a": "both"}}});
    let created = v1.create(&PostParams::default(), &w).await?;
    assert_eq!(
        created.types.as_ref().map(|t| t.api_version.as_str()),
        Some("example.dev/v1")
    );
    assert_eq!(created.data["spec"], json!({"x": 1, "sub": {"a": "both"}}));
    let v2 = widgets(&client, "v2");
    let read = v2.get("w").await?;
    assert_eq!(
        read.types.as_ref().map(|t| t.api_version.as_str()),
        Some("example.dev/v2")
    );
    assert_eq!(read.data["spec"], json!({"x": 1, "sub": {"a": "both"}}));

    // Written at v2, a field only v2 declares is stored but not shown at v1.
    v2.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"new": "v2 only"}})),
    )
    .await?;
    assert_eq!(v2.get("w").await?.data["spec"]["new"], "v2 only");
    assert!(v1.get("w").await?.data["spec"].get("new").is_none());
    let listed = v1.list(&ListParams::default()).await?;
    assert!(listed.items[0].data["spec"].get("new").is_none());

    // An update through v1 drops what only v2 declares (conversion strategy None).
    v1.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"x": 2}})),
    )
    .await?;
    assert_eq!(
        v2.get("w").await?.data["spec"],
        json!({"x": 2, "sub": {"a": "both"}})
    );
    Ok(())
}

#[tokio::test]
async fn events_v1_field_selectors_use_the_events_v1_names() -> anyhow::Result<()> {
    let (server, client) = start().await?;
    let events: Api<Event> = Api::namespaced(client, "default");
    for (name, kind, controller, type_) in [
        ("a", "Widget", "widget-ctl", "Normal"),
        ("b", "Widget", "other-ctl", "Warning"),
        ("c", "ConfigMap", "widget-ctl", "Normal"),
    ] {
        events
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "eventTime": "2026-01-01T00:00:00.000000Z",
                    "regarding": {"kind": kind, "name": "w", "namespace": "default"},
                    "reportingController": controller, "reportingInstance": "i",
                    "action": "Sync", "reason": "Synced", "type": type_, "note": "n",
                }))?,
            )
            .await?;
    }
    let names = |sel: &str| {
        let events = events.clone();
        let sel = sel.to_string();
        async move {
            let list = events.list(&ListParams::default().fields(&sel)).await?;
            anyhow::Ok(
                list.items
                    .into_iter()
                    .filter_map(|e| e.metadata.name)
                    .collect::<Vec<_>>(),
            )
        }
    };
    assert_eq!(names("regarding.kind=Widget").await?, ["a", "b"]);
    assert_eq!(
        names("regarding.kind=Widget,reportingController=widget-ctl").await?,
        ["a"]
    );
    assert_eq!(
        names("regarding.name=w,regarding.namespace=default,type=Normal").await?,
        ["a", "c"]
    );
    let out = kubectl(
        &server,
        &[
            "get",
            "events.v1.events.k8s.io",
            "--field-selector=regarding.kind=Widget,type=Warning",
            "-o",
            "name",
        ],
    )
    .await?;
    assert_eq!(out.trim(), "event.events.k8s.io/b");
    let refused = names("involvedObject.kind=Widget").await;
    assert!(
        refused.as_ref().is_err_and(|e| e
            .to_string()
            .contains("field label not supported: involvedObject.kind")),
        "{refused:?}"
    );
    Ok(())
}

/// Deployments, DaemonSets and Services are stored, not run: the server says so in a
/// `Stored` condition that `kubectl get` shows, owned by no field manager, kept by updates.
#[tokio::test]
async fn built_in_workloads_say_they_are_stored_not_run() -> anyhow::Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    let (server, client) = start().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("workloads.yaml");
    let manifest = |replicas: u32| {
        format!(
            "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: default}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: nginx}}]}}
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: agent, namespace: default}}
spec:
  selector: {{matchLabels: {{app: agent}}}}
  template:
    metadata: {{labels: {{app: agent}}}}
    spec: {{containers: [{{name: agent, image: agent}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"
        )
    };
    std::fs::write(&path, manifest(2))?;
    kubectl(&server, &["apply", "-f", path.to_str().unwrap_or_default()]).await?;

    let out = kubectl(
        &server,
        &["get", "deployments,daemonsets,services", "-n", "default"],
    )
    .await?;
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let mut rows = 0;
    while let Some(header) = lines.next() {
        assert!(header.contains("STATUS"), "a Status column: {out}");
        let row = lines
            .next()
            .ok_or_else(|| anyhow::anyhow!("a row: {out}"))?;
        assert!(row.contains("StoredNotRun"), "{row}\n{out}");
        rows += 1;
    }
    assert_eq!(rows, 3, "{out}");

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let stored = deployments.get("web").await?;
    let conditions = stored.status.and_then(|s| s.conditions).unwrap_or_default();
    let [condition] = conditions.as_slice() else {
        anyhow::bail!("one condition: {conditions:?}");
    };
    assert_eq!(
        (
            condition.type_.as_str(),
            condition.status.as_str(),
            condition.reason.as_deref()
        ),
        ("Stored", "True", Some("StoredNotRun"))
    );
    assert!(
        condition
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("no Pods are created"),
        "{condition:?}"
    );
    let owned = serde_json::to_string(&stored.metadata.managed_fields)?;
    assert!(
        !owned.contains("f:status"),
        "the creator owns no status: {owned}"
    );

    // An update of the object keeps the server's status.
    std::fs::write(&path, manifest(3))?;
    kubectl(&server, &["apply", "-f", path.to_str().unwrap_or_default()]).await?;
    let updated = deployments.get("web").await?;
    assert_eq!(updated.spec.and_then(|s| s.replicas), Some(3));
    let reason = updated
        .status
        .and_then(|s| s.conditions)
        .and_then(|c| c.into_iter().next())
        .and_then(|c| c.reason);
    assert_eq!(reason.as_deref(), Some("StoredNotRun"));
    Ok(())
}
