//! The real helm installs, upgrades, lists and uninstalls the Quiver chart against the dev
//! control plane, which stores the chart's Deployments, DaemonSets, Services, RBAC and the rest
//! (no controller runs them), and kubectl sees what helm wrote.
//!
//! The value sets in `charts/quiver/ci/` install too; their ServiceMonitors need a stand-in for
//! prometheus-operator's CRD, applied first.
//!
//! Needs helm (see [`quiver_tests::helm`]): skipped without it unless `QUIVER_REQUIRE_HELM` is
//! set.

use quiver_tests::helm::{self, Helm};
use quiver_tests::{ControlPlane, Kubectl, repo_root};
use serde_json::Value;

const NAMESPACE: &str = "quiver-system";

fn chart() -> String {
    repo_root()
        .join("charts/quiver")
        .to_string_lossy()
        .into_owned()
}

/// `kubectl get <kind> -n quiver-system -o name`, one name per line, sorted.
async fn names(k: &Kubectl, kinds: &str) -> anyhow::Result<Vec<String>> {
    let out = k
        .run(&["get", kinds, "-n", NAMESPACE, "-o", "name"])
        .await?;
    let mut names: Vec<String> = out.lines().map(str::to_owned).collect();
    names.sort();
    Ok(names)
}

/// The release's revision and status as `helm list` shows them, if it lists the release.
async fn release(h: &Helm) -> anyhow::Result<Option<(String, String)>> {
    let out = h.run(&["list", "-n", NAMESPACE, "-o", "json"]).await?;
    let releases: Vec<Value> = serde_json::from_str(&out)?;
    Ok(releases.iter().find(|r| r["name"] == "quiver").map(|r| {
        let text = |field: &str| r[field].as_str().unwrap_or_default().to_owned();
        (text("revision"), text("status"))
    }))
}

/// `jsonpath` of the operator's Deployment.
async fn operator_deployment(k: &Kubectl, jsonpath: &str) -> anyhow::Result<String> {
    k.run(&[
        "get",
        "deployment",
        "quiver-operator",
        "-n",
        NAMESPACE,
        "-o",
        &format!("jsonpath={jsonpath}"),
    ])
    .await
}

async fn operator_key(k: &Kubectl) -> anyhow::Result<String> {
    k.run(&[
        "get",
        "secret",
        "quiver-operator-iroh",
        "-n",
        NAMESPACE,
        "-o",
        "jsonpath={.data.iroh\\.key}",
    ])
    .await
}

#[tokio::test]
async fn helm_installs_upgrades_and_uninstalls_the_chart() -> anyhow::Result<()> {
    if !helm::available() {
        return Ok(());
    }
    let cp = ControlPlane::start().await?;
    let k = cp.kubectl();
    let h = Helm::new(&cp.kubeconfig_path(), &cp.dir.path().join("helm"));
    let chart = chart();

    h.run(&[
        "install",
        "quiver",
        &chart,
        "-n",
        NAMESPACE,
        "--create-namespace",
    ])
    .await?;
    assert_eq!(
        names(&k, "deployments,daemonsets,services").await?,
        [
            "daemonset.apps/quiver-agent",
            "deployment.apps/quiver-operator",
            "service/quiver-agent-metrics",
            "service/quiver-operator-metrics",
        ]
    );
    let deployments = k.run(&["get", "deployments", "-n", NAMESPACE]).await?;
    assert!(
        deployments
            .lines()
            .any(|l| l.starts_with("quiver-operator")),
        "{deployments}"
    );
    for kind in ["clusterroles", "clusterrolebindings"] {
        let out = k
            .run(&[
                "get",
                kind,
                "-l",
                "app.kubernetes.io/instance=quiver",
                "-o",
                "name",
            ])
            .await?;
        assert_eq!(out.lines().count(), 2, "{kind}: {out}");
    }
    assert_eq!(operator_deployment(&k, "{.spec.replicas}").await?, "2");
    assert_eq!(
        operator_deployment(
            &k,
            "{.metadata.managedFields[*].manager}/{.metadata.managedFields[*].operation}"
        )
        .await?,
        "helm/Apply",
        "helm 4 installs with server-side apply"
    );
    let key = operator_key(&k).await?;
    assert!(!key.is_empty(), "the chart made the operator's Iroh key");
    assert_eq!(
        release(&h).await?,
        Some(("1".into(), "deployed".into())),
        "helm list after install"
    );

    h.run(&[
        "upgrade",
        "quiver",
        &chart,
        "-n",
        NAMESPACE,
        "--set",
        "operator.replicas=3",
    ])
    .await?;
    assert_eq!(operator_deployment(&k, "{.spec.replicas}").await?, "3");
    assert_eq!(
        operator_key(&k).await?,
        key,
        "an upgrade keeps the operator's key"
    );
    assert_eq!(
        release(&h).await?,
        Some(("2".into(), "deployed".into())),
        "helm list after upgrade"
    );

    // Client-side apply: a three-way strategic merge patch. The metrics port moves in the
    // Deployment's container ports (keyed by containerPort) and the Service's (keyed by port).
    h.run(&[
        "upgrade",
        "quiver",
        &chart,
        "-n",
        NAMESPACE,
        "--server-side=false",
        "--set",
        "operator.replicas=1",
        "--set",
        "operator.metrics.port=9091",
    ])
    .await?;
    assert_eq!(operator_deployment(&k, "{.spec.replicas}").await?, "1");
    assert_eq!(
        operator_deployment(
            &k,
            "{.spec.template.spec.containers[0].ports[*].containerPort}"
        )
        .await?,
        "9091"
    );
    assert_eq!(
        operator_deployment(&k, "{.metadata.generation}").await?,
        "3"
    );
    let service_ports = k
        .run(&[
            "get",
            "service",
            "quiver-operator-metrics",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.spec.ports[*].port}",
        ])
        .await?;
    assert_eq!(service_ports, "9091");
    assert_eq!(
        release(&h).await?,
        Some(("3".into(), "deployed".into())),
        "helm list after the client-side upgrade"
    );

    h.run(&["uninstall", "quiver", "-n", NAMESPACE]).await?;
    assert_eq!(
        names(
            &k,
            "deployments,daemonsets,services,configmaps,serviceaccounts,roles,rolebindings"
        )
        .await?,
        Vec::<String>::new()
    );
    for kind in ["clusterroles", "clusterrolebindings"] {
        let out = k
            .run(&[
                "get",
                kind,
                "-l",
                "app.kubernetes.io/instance=quiver",
                "-o",
                "name",
            ])
            .await?;
        assert_eq!(out, "", "{kind} left after uninstall");
    }
    assert_eq!(
        names(&k, "secrets").await?,
        ["secret/quiver-operator-iroh"],
        "only the Secret the chart keeps (helm.sh/resource-policy: keep) stays"
    );
    assert_eq!(release(&h).await?, None, "helm list after uninstall");
    Ok(())
}

/// prometheus-operator's ServiceMonitor, reduced to its names: the dev control plane does not
/// carry that project's CRD, and a stand-in lets the chart's every option install.
const SERVICE_MONITOR_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {plural: servicemonitors, singular: servicemonitor, kind: ServiceMonitor, listKind: ServiceMonitorList}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

#[tokio::test]
async fn helm_installs_each_ci_value_set() -> anyhow::Result<()> {
    if !helm::available() {
        return Ok(());
    }
    let cp = ControlPlane::start().await?;
    let k = cp.kubectl();
    k.run_with_stdin(&["apply", "-f", "-"], Some(SERVICE_MONITOR_CRD))
        .await?;
    let h = Helm::new(&cp.kubeconfig_path(), &cp.dir.path().join("helm"));
    let chart = chart();
    let mut value_sets: Vec<_> = std::fs::read_dir(repo_root().join("charts/quiver/ci"))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    value_sets.sort();
    assert!(!value_sets.is_empty(), "charts/quiver/ci has value sets");
    for (i, values) in value_sets.iter().enumerate() {
        let release = format!("ci-{i}");
        let namespace = format!("ci-{i}");
        let values = values.to_string_lossy();
        h.run(&[
            "install",
            &release,
            &chart,
            "-n",
            &namespace,
            "--create-namespace",
            "-f",
            &values,
        ])
        .await?;
        let stored = k
            .run(&[
                "get",
                "deployments,daemonsets,services",
                "-n",
                &namespace,
                "-o",
                "name",
            ])
            .await?;
        assert!(
            stored.contains("deployment.apps/") && stored.contains("daemonset.apps/"),
            "{values}: {stored}"
        );
        h.run(&["uninstall", &release, "-n", &namespace]).await?;
    }
    let monitors = k
        .run(&["get", "servicemonitors", "-A", "-o", "name"])
        .await?;
    assert_eq!(monitors, "", "uninstall removed the ServiceMonitors");
    Ok(())
}
