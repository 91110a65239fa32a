//! The dev control plane driven by the real kubectl: what a user types and sees.

use std::time::Duration;

use quiver_tests::{ControlPlane, crd_dir, eventually, repo_root};
use tokio::io::AsyncBufReadExt as _;

async fn with_crds() -> anyhow::Result<ControlPlane> {
    let cp = ControlPlane::start().await?;
    let out = cp
        .kubectl()
        .run(&["apply", "-f", &crd_dir().to_string_lossy()])
        .await?;
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/microvms.quiver.dev created"),
        "{out}"
    );
    Ok(cp)
}

fn example() -> String {
    repo_root()
        .join("examples/microvm.yaml")
        .to_string_lossy()
        .into_owned()
}

#[tokio::test]
async fn kubectl_applies_crds_and_lists_them() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let k = cp.kubectl();
    let crds = k.run(&["get", "crd"]).await?;
    for name in [
        "hosts.quiver.dev",
        "microvms.quiver.dev",
        "rollouts.quiver.dev",
    ] {
        assert!(crds.contains(name), "{crds}");
    }
    let resources = k.run(&["api-resources", "--api-group=quiver.dev"]).await?;
    assert!(
        resources
            .lines()
            .any(|l| l.starts_with("microvms") && l.contains("mvm") && l.contains("MicroVM")),
        "{resources}"
    );
    let again = k
        .run(&["apply", "-f", &crd_dir().to_string_lossy()])
        .await?;
    assert!(
        again.contains("microvms.quiver.dev unchanged"),
        "re-applying is a no-op: {again}"
    );
    Ok(())
}

#[tokio::test]
async fn microvm_apply_get_patch_delete_round_trip() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let k = cp.kubectl();
    assert!(
        k.run(&["apply", "-f", &example()])
            .await?
            .contains("microvm.quiver.dev/demo created")
    );
    assert!(
        k.run(&["apply", "-f", &example()])
            .await?
            .contains("microvm.quiver.dev/demo unchanged")
    );

    let table = k.run(&["get", "mvm"]).await?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "PHASE", "HOST", "READY", "AGE"], "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|row| row.starts_with("demo")),
        "{table}"
    );

    // The operator's side: status through the status subresource shows in the columns.
    let status = r#"{"status":{"phase":"Running","host":"host-a","conditions":[{"type":"GuestReady","status":"True","reason":"MarkerSeen","message":"ok","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#;
    k.run(&[
        "patch",
        "mvm",
        "demo",
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .await?;
    let row = k.run(&["get", "mvm", "demo", "--no-headers"]).await?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..4], ["demo", "Running", "host-a", "True"], "{row}");

    let yaml = k.run(&["get", "mvm", "demo", "-o", "yaml"]).await?;
    let obj: serde_json::Value = serde_yaml_ng::from_str(&yaml)?;
    assert_eq!(
        obj["metadata"]["generation"], 1,
        "a status write does not bump generation"
    );
    assert_eq!(
        obj["spec"]["network"]["mode"], "none",
        "schema default applied"
    );

    k.run(&[
        "patch",
        "mvm",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"cpus":2}}"#,
    ])
    .await?;
    k.run(&[
        "patch",
        "mvm",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/memoryMiB","value":512}]"#,
    ])
    .await?;
    let out = k
        .run(&[
            "get",
            "mvm",
            "demo",
            "-o",
            "jsonpath={.spec.cpus} {.spec.memoryMiB} {.metadata.generation} {.status.phase}",
        ])
        .await?;
    assert_eq!(
        out, "2 512 3 Running",
        "spec patches bump generation and keep status"
    );

    let err = k
        .fail(
            &["patch", "mvm", "demo", "-p", r#"{"spec":{"cpus":3}}"#],
            None,
        )
        .await?;
    assert!(
        err.contains("application/strategic-merge-patch+json is not supported"),
        "{err}"
    );

    assert!(
        k.run(&["delete", "mvm", "demo"])
            .await?
            .contains("microvm.quiver.dev \"demo\" deleted")
    );
    let err = k.fail(&["get", "mvm", "demo"], None).await?;
    assert!(
        err.contains("microvms.quiver.dev \"demo\" not found"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn delete_waits_for_finalizers() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let k = cp.kubectl();
    k.run(&["apply", "-f", &example()]).await?;
    k.run(&[
        "patch",
        "mvm",
        "demo",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["quiver.dev/vm"]}}"#,
    ])
    .await?;
    k.run(&["delete", "mvm", "demo", "--wait=false"]).await?;
    let ts = k
        .run(&[
            "get",
            "mvm",
            "demo",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}",
        ])
        .await?;
    assert!(!ts.is_empty(), "object stays, marked for deletion");
    let err = k
        .fail(
            &[
                "patch",
                "mvm",
                "demo",
                "--type=merge",
                "-p",
                r#"{"metadata":{"finalizers":["quiver.dev/vm","other"]}}"#,
            ],
            None,
        )
        .await?;
    assert!(err.contains("no new finalizers can be added"), "{err}");
    k.run(&[
        "patch",
        "mvm",
        "demo",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ])
    .await?;
    let err = k.fail(&["get", "mvm", "demo"], None).await?;
    assert!(
        err.contains("not found"),
        "removing the last finalizer deletes it: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_microvm_is_rejected_naming_the_field() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let k = cp.kubectl();
    let bad = "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: bad\nspec:\n  kernel: /k\n  cpus: 0\n  runStrategy: Sometimes\n";
    let err = k.fail(&["apply", "-f", "-"], Some(bad)).await?;
    assert!(err.contains("The MicroVM \"bad\" is invalid"), "{err}");
    assert!(err.contains("spec.cpus: Invalid value: 0"), "{err}");
    assert!(
        err.contains("spec.runStrategy: Unsupported value: \"Sometimes\""),
        "{err}"
    );

    let relative = "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: rel\nspec:\n  kernel: vmlinuz\n";
    let err = k.fail(&["apply", "-f", "-"], Some(relative)).await?;
    assert!(
        err.contains("spec.kernel") && err.contains("absolute path"),
        "CEL rule message: {err}"
    );

    let unknown = "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: unk\nspec:\n  kernel: /k\n  bogus: 1\n";
    let err = k.fail(&["apply", "-f", "-"], Some(unknown)).await?;
    assert!(err.contains("unknown field \"spec.bogus\""), "{err}");

    let out = k.run(&["get", "mvm", "-o", "name"]).await?;
    assert!(out.trim().is_empty(), "nothing stored: {out}");
    Ok(())
}

#[tokio::test]
async fn explain_shows_field_documentation() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let out = cp.kubectl().run(&["explain", "microvm.spec.cpus"]).await?;
    assert!(
        out.contains("KIND:       MicroVM") || out.contains("KIND:     MicroVM"),
        "{out}"
    );
    assert!(out.contains("FIELD: cpus <integer>"), "{out}");
    assert!(out.contains("Number of virtual CPUs"), "{out}");
    let spec = cp.kubectl().run(&["explain", "mvm.spec"]).await?;
    for field in ["runStrategy", "memoryMiB", "kernel", "readiness"] {
        assert!(spec.contains(field), "{field} listed: {spec}");
    }
    Ok(())
}

#[tokio::test]
async fn get_watch_streams_changes() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let k = cp.kubectl();
    k.run(&["apply", "-f", &example()]).await?;
    let mut watch = k.spawn(&["get", "mvm", "-w", "--output-watch-events", "--no-headers"])?;
    let stdout = watch
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(
        first.starts_with("ADDED") && first.contains("demo"),
        "{first}"
    );
    k.run(&[
        "patch",
        "mvm",
        "demo",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Starting"}}"#,
    ])
    .await?;
    let next = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(
        next.starts_with("MODIFIED") && next.contains("Starting"),
        "{next}"
    );
    k.run(&["delete", "mvm", "demo"]).await?;
    let last = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await??
        .unwrap_or_default();
    assert!(last.starts_with("DELETED"), "{last}");
    watch.kill().await?;
    Ok(())
}

#[tokio::test]
async fn namespaces_configmaps_and_server_side_apply() -> anyhow::Result<()> {
    let cp = with_crds().await?;
    let k = cp.kubectl();
    let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n";
    k.run_with_stdin(&["apply", "-f", "-"], Some(ns)).await?;
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: team\n  labels:\n    app: web\ndata:\n  mode: fast\n";
    // Client-side apply of a built-in kind: create, then a strategic merge patch.
    let plain = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\n  namespace: team\ndata:\n  a: one\n  b: two\n";
    k.run_with_stdin(&["apply", "-f", "-"], Some(plain)).await?;
    let changed = plain.replace("  b: two\n", "  c: three\n");
    k.run_with_stdin(&["apply", "-f", "-"], Some(&changed))
        .await?;
    let data = k
        .run(&["get", "cm", "plain", "-n", "team", "-o", "jsonpath={.data}"])
        .await?;
    assert_eq!(
        data, r#"{"a":"one","c":"three"}"#,
        "the dropped key is removed, the new one added"
    );
    k.run_with_stdin(&["apply", "--server-side", "-f", "-"], Some(cm))
        .await?;
    let conflicting = cm.replace("fast", "slow");
    let err = k
        .fail(
            &["apply", "--server-side", "--field-manager=other", "-f", "-"],
            Some(&conflicting),
        )
        .await?;
    assert!(
        err.contains("conflict") && err.contains(".data.mode"),
        "SSA conflict names the field: {err}"
    );
    k.run_with_stdin(
        &[
            "apply",
            "--server-side",
            "--field-manager=other",
            "--force-conflicts",
            "-f",
            "-",
        ],
        Some(&conflicting),
    )
    .await?;
    assert_eq!(
        k.run(&[
            "get",
            "cm",
            "settings",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.mode}"
        ])
        .await?,
        "slow"
    );
    assert!(
        k.run(&["get", "cm", "-n", "team", "-l", "app=web", "-o", "name"])
            .await?
            .contains("configmap/settings")
    );
    assert_eq!(
        k.run(&["get", "cm", "-n", "team", "-l", "app!=web", "-o", "name"])
            .await?
            .trim(),
        "configmap/plain"
    );

    k.run(&["delete", "namespace", "team", "--wait=false"])
        .await?;
    eventually(
        Duration::from_secs(20),
        "namespace and its contents gone",
        || async {
            let out = k.output(&["get", "ns", "team"], None).await?;
            Ok((!out.status.success()).then_some(()))
        },
    )
    .await?;
    let err = k
        .fail(&["get", "cm", "settings", "-n", "team"], None)
        .await?;
    assert!(err.contains("not found"), "{err}");
    Ok(())
}

#[tokio::test]
async fn kubectl_create_sends_protobuf_for_built_in_kinds() -> anyhow::Result<()> {
    let cp = ControlPlane::start().await?;
    let k = cp.kubectl();
    k.run(&["create", "namespace", "apps"]).await?;
    k.run(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "apps",
        "--from-literal=mode=fast",
    ])
    .await?;
    k.run(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "apps",
        "--from-literal=password=hunter2",
    ])
    .await?;
    assert_eq!(
        k.run(&[
            "get",
            "cm",
            "cfg",
            "-n",
            "apps",
            "-o",
            "jsonpath={.data.mode}"
        ])
        .await?,
        "fast"
    );
    assert_eq!(
        k.run(&[
            "get",
            "secret",
            "creds",
            "-n",
            "apps",
            "-o",
            "jsonpath={.data.password}"
        ])
        .await?,
        "aHVudGVyMg=="
    );
    assert!(k.run(&["get", "ns"]).await?.contains("apps"));
    Ok(())
}

#[tokio::test]
async fn events_recorded_through_events_k8s_io_show_in_describe() -> anyhow::Result<()> {
    use kube::Resource as _;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let cp = with_crds().await?;
    let k = cp.kubectl();
    k.run(&["apply", "-f", &example()]).await?;
    let client = cp.client().await?;
    let vm = kube::Api::<quiver_crds::MicroVM>::namespaced(client.clone(), "default")
        .get("demo")
        .await?;
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "quiver-operator".into(),
            instance: None,
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Scheduled".into(),
        note: Some("placed on host-a".into()),
        action: "Schedule".into(),
        secondary: None,
    };
    recorder.publish(&event, &vm.object_ref(&())).await?;
    recorder.publish(&event, &vm.object_ref(&())).await?;
    let described = k.run(&["describe", "mvm", "demo"]).await?;
    assert!(
        described.contains("Scheduled") && described.contains("placed on host-a"),
        "{described}"
    );
    let events = k
        .run(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=demo",
            "-o",
            "jsonpath={.items[*].reason}",
        ])
        .await?;
    assert_eq!(events, "Scheduled", "one event, counted twice");
    Ok(())
}
