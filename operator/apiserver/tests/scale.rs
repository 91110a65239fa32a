//! The `/scale` subresource beyond GET and PUT (those are in `fidelity.rs`): the exact Scale a
//! real API server answers, for a custom resource and for a Deployment (whose selector is its
//! `spec.selector` written out), each patch type Kubernetes accepts there, server-side apply
//! of a Scale, and field ownership recorded under the subresource `scale`.

mod kube_common;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube_common::{raw, start, widgets};
use serde_json::{Value, json};

fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (text("manager"), text("operation"), text("subresource"))
        })
        .collect()
}

fn api_error<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
) -> anyhow::Result<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => Ok(*status),
        other => anyhow::bail!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn deployment_scale_shows_its_selector_and_takes_every_patch_type() -> anyhow::Result<()> {
    let (_server, client) = start().await?;
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let created = deployments
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "web"}, "spec": {"replicas": 2,
                "selector": {"matchLabels": {"app": "web"},
                    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
                "template": {"metadata": {"labels": {"app": "web", "tier": "a"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}))?,
        )
        .await?;
    let path = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let answer = raw(&client, http::Request::get(path).body(Vec::new())?).await?;
    let meta = &created.metadata;
    assert_eq!(
        answer.body,
        json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {"name": "web", "namespace": "default", "uid": meta.uid,
                "resourceVersion": meta.resource_version,
                "creationTimestamp": meta.creation_timestamp},
            "spec": {"replicas": 2}, "status": {"replicas": 0, "selector": "app=web,tier in (a,b)"}})
    );

    // A built-in kind takes a strategic merge patch on /scale.
    let patched = deployments
        .patch_scale(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 3}})),
        )
        .await?;
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(3));

    // Server-side apply of a Scale: owned by the applier under the subresource `scale`,
    // forced, since the patch above took the replicas.
    let applied = deployments
        .patch_scale(
            "web",
            &PatchParams::apply("autoscaler").force(),
            &Patch::Apply(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
                "spec": {"replicas": 4}})),
        )
        .await?;
    assert_eq!(applied.spec.and_then(|s| s.replicas), Some(4));
    let stored = serde_json::to_value(deployments.get("web").await?)?;
    assert_eq!(stored["spec"]["replicas"], 4);
    let entry = stored["metadata"]["managedFields"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["manager"] == "autoscaler"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (
            &entry["operation"],
            &entry["subresource"],
            &entry["fieldsV1"]
        ),
        (
            &json!("Apply"),
            &json!("scale"),
            &json!({"f:spec": {"f:replicas": {}}})
        )
    );
    Ok(())
}

fn widget(replicas: i64) -> Patch<Value> {
    Patch::Apply(json!({"apiVersion": "example.dev/v2", "kind": "Widget",
        "metadata": {"name": "w"}, "spec": {"replicas": replicas, "x": 1}}))
}

fn scale(replicas: i64) -> Patch<Value> {
    Patch::Apply(json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "spec": {"replicas": replicas}}))
}

#[tokio::test]
async fn custom_resource_scale_applies_with_conflicts_and_updates_own_the_replicas()
-> anyhow::Result<()> {
    let (_server, client) = start().await?;
    let ws = widgets(&client, "v2");
    ws.patch("w", &PatchParams::apply("ops"), &widget(1))
        .await?;

    // The replicas belong to the manager that applied the Widget.
    let refused = api_error(
        ws.patch_scale("w", &PatchParams::apply("autoscaler"), &scale(5))
            .await,
    )?;
    assert_eq!(refused.code, 409);
    assert_eq!(
        refused.message,
        "Apply failed with 1 conflict: conflict with \"ops\": .spec.replicas"
    );
    let forced = ws
        .patch_scale("w", &PatchParams::apply("autoscaler").force(), &scale(5))
        .await?;
    assert_eq!(forced.spec.and_then(|s| s.replicas), Some(5));
    let stored: DynamicObject = ws.get("w").await?;
    let stored = serde_json::to_value(stored)?;
    assert_eq!(stored["spec"], json!({"replicas": 5, "x": 1}));
    assert!(
        managers(&stored).contains(&("autoscaler".into(), "Apply".into(), "scale".into())),
        "{:?}",
        managers(&stored)
    );

    // Re-applying the Widget without force now conflicts with the Scale's applier, named
    // with its subresource.
    let refused = api_error(ws.patch("w", &PatchParams::apply("ops"), &widget(1)).await)?;
    assert_eq!(
        refused.message,
        "Apply failed with 1 conflict: conflict with \"autoscaler\" with subresource \"scale\": .spec.replicas"
    );

    // An update of the Scale is recorded under `scale` too, with its API version.
    ws.patch_scale(
        "w",
        &PatchParams {
            field_manager: Some("scaler".into()),
            ..PatchParams::default()
        },
        &Patch::Merge(json!({"spec": {"replicas": 6}})),
    )
    .await?;
    let stored = serde_json::to_value(ws.get("w").await?)?;
    assert!(
        managers(&stored).contains(&("scaler".into(), "Update".into(), "scale".into())),
        "{:?}",
        managers(&stored)
    );
    let refused = api_error(ws.patch("w", &PatchParams::apply("ops"), &widget(1)).await)?;
    assert_eq!(
        refused.message,
        "Apply failed with 1 conflict: conflict with \"scaler\" with subresource \"scale\" using example.dev/v2: .spec.replicas"
    );

    // The Scale itself carries no field ownership, as in Kubernetes.
    let path = "/apis/example.dev/v2/namespaces/default/widgets/w/scale";
    let answer = raw(&client, http::Request::get(path).body(Vec::new())?).await?;
    assert_eq!(
        (&answer.body["kind"], &answer.body["apiVersion"]),
        (&json!("Scale"), &json!("autoscaling/v1"))
    );
    assert_eq!(
        (&answer.body["spec"], &answer.body["status"]),
        (&json!({"replicas": 6}), &json!({"replicas": 0}))
    );
    assert!(answer.body["metadata"].get("managedFields").is_none());

    // Custom resources have no strategic merge patch, on /scale as elsewhere.
    let refused = api_error(
        ws.patch_scale(
            "w",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"replicas": 2}})),
        )
        .await,
    )?;
    assert_eq!(refused.code, 415);
    assert_eq!(
        refused.message,
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    Ok(())
}
