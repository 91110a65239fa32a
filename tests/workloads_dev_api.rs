//! Deployments, DaemonSets and Services in the dev control plane: stored and checked against
//! their Kubernetes OpenAPI schemas, served to kubectl like any other kind, and run by nothing
//! (they carry the server's `Stored` condition until something writes `/status`).

use quiver_tests::kube_helpers::raw;
use quiver_tests::{ControlPlane, eventually};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
          ports:
            - {containerPort: 80, name: http}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
    - {port: 80, targetPort: http}
";

fn deployment(spec: &Value) -> Vec<u8> {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bad"}, "spec": spec})
        .to_string()
        .into_bytes()
}

fn template() -> Value {
    json!({"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "a", "image": "a"}]}})
}

#[tokio::test]
async fn bad_deployments_are_refused_naming_the_field() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let client = cp.client().await?;

    let no_selector = deployment(&json!({"template": template()}));
    let (code, status) = raw(
        &client,
        "POST",
        DEPLOYMENTS,
        "application/json",
        no_selector,
    )
    .await?;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    assert_eq!(status["details"]["kind"], "Deployment");
    assert_eq!(status["details"]["causes"][0]["field"], "spec.selector");
    assert_eq!(
        status["message"],
        "Deployment.apps \"bad\" is invalid: spec.selector: Required value"
    );

    let nameless_container = deployment(&json!({
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"spec": {"containers": [{"image": "a"}]}},
    }));
    let (code, status) = raw(
        &client,
        "POST",
        DEPLOYMENTS,
        "application/json",
        nameless_container,
    )
    .await?;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.template.spec.containers[0].name"
    );

    let unselected = deployment(&json!({
        "selector": {"matchLabels": {"app": "b"}}, "template": template(),
    }));
    let (code, status) = raw(&client, "POST", DEPLOYMENTS, "application/json", unselected).await?;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );

    // A wrong type is a decoding error, 400 as in Kubernetes, naming the field.
    let text_replicas = deployment(&json!({
        "replicas": "x", "selector": {"matchLabels": {"app": "a"}}, "template": template(),
    }));
    let (code, status) = raw(
        &client,
        "POST",
        DEPLOYMENTS,
        "application/json",
        text_replicas,
    )
    .await?;
    assert_eq!(code, 400, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "Deployment in version \"v1\" cannot be handled as a Deployment: spec.replicas: "
        ),
        "{message}"
    );

    let unknown = deployment(&json!({
        "replicas": 1, "selector": {"matchLabels": {"app": "a"}}, "template": template(),
        "replica": 3,
    }));
    let strict = format!("{DEPLOYMENTS}?fieldValidation=Strict");
    let (code, status) = raw(&client, "POST", &strict, "application/json", unknown).await?;
    assert_eq!(code, 400, "{status}");
    let message = status["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("unknown field \"spec.replica\""),
        "{message}"
    );

    let k = cp.kubectl();
    let err = k
        .fail(
            &["apply", "-f", "-"],
            Some("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  template:\n    spec:\n      containers: [{name: a, image: a}]\n"),
        )
        .await?;
    assert!(
        err.contains("The DaemonSet \"agent\" is invalid: spec.selector: Required value"),
        "{err}"
    );
    assert_eq!(
        k.run(&["get", "deployments,daemonsets", "-o", "name"])
            .await?,
        ""
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_applies_gets_scales_watches_and_deletes_deployments() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let k = cp.kubectl();
    let mut watch = k.spawn(&["get", "deployments", "-w", "-o", "name"])?;
    let mut watched = tokio::io::BufReader::new(watch.stdout.take().expect("piped")).lines();

    let out = k.run_with_stdin(&["apply", "-f", "-"], Some(WEB)).await?;
    assert!(out.contains("deployment.apps/web created"), "{out}");
    assert!(out.contains("service/web created"), "{out}");
    let seen =
        tokio::time::timeout(std::time::Duration::from_secs(20), watched.next_line()).await??;
    assert_eq!(seen.as_deref(), Some("deployment.apps/web"));

    let table = k.run(&["get", "deployments"]).await?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "REPLICAS", "AVAILABLE", "STATUS", "AGE"],
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains(" 2 ") && l.contains(" StoredNotRun ")),
        "{table}"
    );
    let apps = k.run(&["api-resources", "--api-group=apps"]).await?;
    for (name, short, kind) in [
        ("deployments", "deploy", "Deployment"),
        ("daemonsets", "ds", "DaemonSet"),
    ] {
        assert!(
            apps.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells == [name, short, "apps/v1", "true", kind]
            }),
            "{apps}"
        );
    }
    let all = k.run(&["get", "all", "-o", "name"]).await?;
    assert!(
        all.contains("deployment.apps/web") && all.contains("service/web"),
        "{all}"
    );
    let again = k.run_with_stdin(&["apply", "-f", "-"], Some(WEB)).await?;
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");

    let moved = WEB.replace(
        "matchLabels: {app: web}",
        "matchLabels: {app: web, v: \"2\"}",
    );
    let moved = moved.replace("labels: {app: web}", "labels: {app: web, v: \"2\"}");
    let err = k.fail(&["apply", "-f", "-"], Some(&moved)).await?;
    assert!(err.contains("spec.selector: Invalid value"), "{err}");
    assert!(err.contains("field is immutable"), "{err}");

    k.run(&["scale", "deployment", "web", "--replicas=5"])
        .await?;
    let jsonpath = |path: &str| {
        let k = k.clone();
        let path = format!("jsonpath={path}");
        async move { k.run(&["get", "deployment", "web", "-o", &path]).await }
    };
    assert_eq!(jsonpath("{.spec.replicas}").await?, "5");
    assert_eq!(jsonpath("{.metadata.generation}").await?, "2");
    assert_eq!(
        jsonpath("{.status.replicas}{.status.availableReplicas}").await?,
        "",
        "nothing runs the Deployment"
    );
    assert_eq!(
        jsonpath("{.status.conditions[0].reason}").await?,
        "StoredNotRun",
        "the server says nothing runs it"
    );

    // kubectl create sends protobuf for built-in kinds.
    k.run(&[
        "create",
        "deployment",
        "api",
        "--image=api:1",
        "--replicas=3",
        "--port=8080",
    ])
    .await?;
    k.run(&["create", "service", "clusterip", "api", "--tcp=80:8080"])
        .await?;
    let created = k
        .run(&[
            "get",
            "deployment/api",
            "service/api",
            "-o",
            "jsonpath={.items[0].spec.replicas} {.items[0].spec.template.spec.containers[0].image} {.items[0].spec.template.spec.containers[0].ports[0].containerPort} {.items[1].spec.ports[0].targetPort}",
        ])
        .await?;
    assert_eq!(created, "3 api:1 8080 8080");

    let explained = k.run(&["explain", "deployment.spec.selector"]).await?;
    assert!(explained.contains("matchLabels"), "{explained}");

    k.run_with_stdin(&["delete", "-f", "-"], Some(WEB)).await?;
    k.run(&["delete", "deployment/api", "service/api"]).await?;
    eventually(
        std::time::Duration::from_secs(10),
        "the Deployment and Service are gone",
        || async {
            let left = k
                .run(&["get", "deployments,services", "-o", "name"])
                .await?;
            Ok(left.is_empty().then_some(()))
        },
    )
    .await?;
    Ok(())
}
