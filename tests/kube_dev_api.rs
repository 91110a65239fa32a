//! The dev control plane driven by kube-rs, as the operator uses it: watches that survive
//! `410 Gone`, server-side apply on status, finalizers, conflicts, GC, persistence, bad input.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher};
use quiver_apiserver::Config;
use quiver_crds::{MicroVM, VM_FINALIZER};
use quiver_tests::kube_helpers::{install_crds, raw};
use quiver_tests::{ControlPlane, eventually};
use serde_json::json;

async fn setup(config: Config) -> anyhow::Result<(ControlPlane, kube::Client, Api<MicroVM>)> {
    let cp = ControlPlane::start_with(config).await?;
    let client = cp.client().await?;
    install_crds(&client).await?;
    let vms = Api::namespaced(client.clone(), "default");
    Ok((cp, client, vms))
}

#[tokio::test]
async fn reflector_recovers_after_410_gone() -> anyhow::Result<()> {
    let (cp, _client, vms) = setup(Config {
        history_limit: 16,
        ..Config::default()
    })
    .await?;
    for i in 0..3 {
        vms.create(&PostParams::default(), &MicroVM::test(&format!("vm-{i}")))
            .await?;
    }
    let (reader, writer) = reflector::store();
    let relists = Arc::new(AtomicUsize::new(0));
    let counter = relists.clone();
    let stream = reflector(writer, watcher(vms.clone(), watcher::Config::default()));
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if matches!(ev, Ok(watcher::Event::InitDone)) {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    eventually(Duration::from_secs(10), "reflector synced", || async {
        Ok((reader.state().len() == 3).then_some(()))
    })
    .await?;

    // Cut every watch, write past the history window, compact: resuming now gets 410 Gone.
    let guard = cp.server.api().interrupt_watches().await;
    for i in 3..40 {
        vms.create(&PostParams::default(), &MicroVM::test(&format!("vm-{i}")))
            .await?;
    }
    vms.delete("vm-0", &DeleteParams::default()).await?;
    cp.server.api().compact();
    drop(guard);

    eventually(
        Duration::from_secs(20),
        "reflector re-listed and converged",
        || async {
            Ok((reader.state().len() == 39 && relists.load(Ordering::SeqCst) >= 2).then_some(()))
        },
    )
    .await?;
    assert!(
        reader
            .state()
            .iter()
            .all(|vm| vm.metadata.name.as_deref() != Some("vm-0")),
        "the delete made during the gap is seen"
    );
    task.abort();
    Ok(())
}

#[tokio::test]
async fn watch_from_compacted_version_is_410_and_bookmarks_carry_versions() -> anyhow::Result<()> {
    let (cp, _client, vms) = setup(Config {
        bookmark_interval: Duration::from_millis(200),
        ..Config::default()
    })
    .await?;
    let first = vms
        .create(&PostParams::default(), &MicroVM::test("a"))
        .await?;
    let old_rv = first.metadata.resource_version.clone().unwrap_or_default();
    vms.create(&PostParams::default(), &MicroVM::test("b"))
        .await?;
    cp.server.api().compact();
    let mut stream = vms.watch(&WatchParams::default(), &old_rv).await?.boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => assert_eq!(e.code, 410, "{e:?}"),
        other => anyhow::bail!("expected a 410 ERROR event, got {other:?}"),
    }
    let list = vms.list(&ListParams::default()).await?;
    let rv = list.metadata.resource_version.unwrap_or_default();
    let mut stream = vms
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            },
            &rv,
        )
        .await?
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
        Some(Ok(WatchEvent::Bookmark(b))) => {
            assert!(b.metadata.resource_version.parse::<u64>()? >= rv.parse::<u64>()?);
        }
        other => anyhow::bail!("expected a bookmark, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn status_server_side_apply_owns_status_and_repeats_are_no_ops() -> anyhow::Result<()> {
    let (_cp, _client, vms) = setup(Config::default()).await?;
    vms.create(&PostParams::default(), &MicroVM::test("vm"))
        .await?;
    let params = PatchParams::apply("quiver-operator").force();
    let status = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "status": {"phase": "Running", "host": "a", "observedGeneration": 1}});
    let patched = vms
        .patch_status("vm", &params, &Patch::Apply(&status))
        .await?;
    let st = patched.status.clone().unwrap_or_default();
    assert_eq!(st.host.as_deref(), Some("a"));
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes leave generation alone"
    );
    let managed = patched.metadata.managed_fields.clone().unwrap_or_default();
    let entry = managed
        .iter()
        .find(|m| m.manager.as_deref() == Some("quiver-operator"))
        .ok_or_else(|| anyhow::anyhow!("no entry: {managed:?}"))?;
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    let again = vms
        .patch_status("vm", &params, &Patch::Apply(&status))
        .await?;
    assert_eq!(
        again.metadata.resource_version, patched.metadata.resource_version,
        "an identical apply writes nothing"
    );
    let spec_via_status = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "spec": {"cpus": 8}, "status": {"phase": "Running", "host": "a", "observedGeneration": 1}});
    let out = vms
        .patch_status("vm", &params, &Patch::Apply(&spec_via_status))
        .await?;
    assert_eq!(out.spec.cpus, 1, "the status subresource ignores spec");
    Ok(())
}

#[tokio::test]
async fn stale_update_conflicts_with_409() -> anyhow::Result<()> {
    let (_cp, _client, vms) = setup(Config::default()).await?;
    let created = vms
        .create(&PostParams::default(), &MicroVM::test("vm"))
        .await?;
    let mut first = created.clone();
    first.spec.cpus = 2;
    vms.replace("vm", &PostParams::default(), &first).await?;
    let mut stale = created;
    stale.spec.cpus = 3;
    match vms.replace("vm", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 409);
            assert_eq!(e.reason, "Conflict");
        }
        other => anyhow::bail!("expected 409, got {other:?}"),
    }
    assert_eq!(vms.get("vm").await?.spec.cpus, 2, "the first write stands");
    match vms
        .create(&PostParams::default(), &MicroVM::test("vm"))
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!((e.code, e.reason.as_str()), (409, "AlreadyExists")),
        other => anyhow::bail!("expected AlreadyExists, got {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn finalizer_helper_runs_cleanup_before_removal() -> anyhow::Result<()> {
    use kube::runtime::controller::Action;
    use kube::runtime::finalizer::{Event, finalizer};
    let (_cp, _client, vms) = setup(Config::default()).await?;
    vms.create(&PostParams::default(), &MicroVM::test("vm"))
        .await?;
    let cleaned = Arc::new(AtomicUsize::new(0));
    let reconcile = |vm: Arc<MicroVM>| {
        let (vms, cleaned) = (vms.clone(), cleaned.clone());
        async move {
            finalizer(&vms, VM_FINALIZER, vm, |ev| async move {
                if let Event::Cleanup(_) = ev {
                    cleaned.fetch_add(1, Ordering::SeqCst);
                }
                Ok::<_, kube::Error>(Action::await_change())
            })
            .await
        }
    };
    reconcile(Arc::new(vms.get("vm").await?)).await?;
    assert_eq!(
        vms.get("vm").await?.metadata.finalizers,
        Some(vec![VM_FINALIZER.to_string()])
    );
    vms.delete("vm", &DeleteParams::default()).await?;
    let deleting = vms.get("vm").await?;
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "kept until the finalizer is removed"
    );
    reconcile(Arc::new(deleting)).await?;
    assert_eq!(cleaned.load(Ordering::SeqCst), 1);
    assert!(
        vms.get_opt("vm").await?.is_none(),
        "gone once cleanup removed the finalizer"
    );
    Ok(())
}

#[tokio::test]
async fn owner_references_are_garbage_collected_unless_orphaned() -> anyhow::Result<()> {
    let (_cp, client, vms) = setup(Config::default()).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    for (vm, cm) in [("owner", "child"), ("keeper", "orphan")] {
        let owner = vms
            .create(&PostParams::default(), &MicroVM::test(vm))
            .await?;
        let child: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": cm, "ownerReferences": [{"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "name": vm, "uid": owner.metadata.uid}]}
        }))?;
        cms.create(&PostParams::default(), &child).await?;
    }
    vms.delete("owner", &DeleteParams::background()).await?;
    vms.delete("keeper", &DeleteParams::orphan()).await?;
    eventually(Duration::from_secs(5), "dependent collected", || async {
        Ok(cms.get_opt("child").await?.is_none().then_some(()))
    })
    .await?;
    let orphan = cms.get("orphan").await?;
    assert!(
        orphan
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty(),
        "orphaned dependents lose the reference"
    );
    Ok(())
}

#[tokio::test]
async fn restart_keeps_objects_and_versions_move_forward() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_file: Some(dir.path().join("state.jsonl")),
        ..Config::default()
    };
    let (cp, _client, vms) = setup(config.clone()).await?;
    let created = vms
        .create(&PostParams::default(), &MicroVM::test("kept"))
        .await?;
    let rv: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default()
        .parse()?;
    cp.server.shutdown().await;
    let cp = ControlPlane::start_with(config).await?;
    let vms: Api<MicroVM> = Api::namespaced(cp.client().await?, "default");
    let kept = vms.get("kept").await?;
    assert_eq!(kept.metadata.uid, created.metadata.uid);
    let next = vms
        .create(&PostParams::default(), &MicroVM::test("new"))
        .await?;
    assert!(
        next.metadata
            .resource_version
            .unwrap_or_default()
            .parse::<u64>()?
            > rv
    );
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_status_errors_and_loses_nothing() -> anyhow::Result<()> {
    let (_cp, client, vms) = setup(Config::default()).await?;
    vms.create(&PostParams::default(), &MicroVM::test("safe"))
        .await?;
    let coll = "/apis/quiver.dev/v1alpha1/namespaces/default/microvms";
    // (method, path, content type, body, expected code, expected reason)
    type Case = (
        &'static str,
        String,
        &'static str,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            "POST",
            coll.into(),
            "application/json",
            b"{not json".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            coll.into(),
            "application/json",
            b"[1,2]".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            coll.into(),
            "application/yaml",
            b"a: [unclosed".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            coll.into(),
            "application/json",
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}"#.to_vec(),
            400,
            "BadRequest",
        ),
        (
            "POST",
            coll.into(),
            "application/json",
            vec![b' '; 4 * 1024 * 1024],
            413,
            "RequestEntityTooLarge",
        ),
        (
            "POST",
            coll.into(),
            "text/plain",
            b"hello".to_vec(),
            415,
            "UnsupportedMediaType",
        ),
        (
            "PATCH",
            format!("{coll}/safe"),
            "application/apply-patch+yaml",
            b"spec: [".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{coll}/safe"),
            "application/json-patch+json",
            b"{}".to_vec(),
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            format!("{coll}/safe"),
            "application/merge-patch+json",
            br#"{"spec":{"cpus":"many"}}"#.to_vec(),
            422,
            "Invalid",
        ),
        (
            "GET",
            "/apis/quiver.dev/v1alpha1/namespaces/default/widgets".into(),
            "",
            Vec::new(),
            404,
            "NotFound",
        ),
        (
            "GET",
            "/no/such/path".into(),
            "",
            Vec::new(),
            404,
            "NotFound",
        ),
        (
            "GET",
            format!("{coll}?labelSelector=a%20in%20b"),
            "",
            Vec::new(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{coll}?watch=1&resourceVersion=abc"),
            "",
            Vec::new(),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{coll}?fieldSelector=spec.cpus%3D1"),
            "",
            Vec::new(),
            400,
            "BadRequest",
        ),
        (
            "PUT",
            coll.into(),
            "application/json",
            b"{}".to_vec(),
            405,
            "MethodNotAllowed",
        ),
        (
            "POST",
            "/api/v1/namespaces/nowhere/configmaps".into(),
            "application/json",
            br#"{"metadata":{"name":"x"}}"#.to_vec(),
            404,
            "NotFound",
        ),
    ];
    for (method, path, ct, body, code, reason) in cases {
        let (got, status) = raw(&client, method, &path, ct, body).await?;
        assert_eq!(got, code, "{method} {path}: {status}");
        assert_eq!(status["kind"], "Status", "{method} {path}: {status}");
        assert_eq!(status["reason"], reason, "{method} {path}: {status}");
        assert!(
            status["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{status}"
        );
    }
    let safe = vms.get("safe").await?;
    assert_eq!(
        safe.spec.cpus, 1,
        "the stored object survived every bad request"
    );
    assert_eq!(vms.list(&ListParams::default()).await?.items.len(), 1);
    Ok(())
}

#[tokio::test]
async fn pages_with_limit_and_continue_cover_every_object_once() -> anyhow::Result<()> {
    let (_cp, _client, vms) = setup(Config::default()).await?;
    for i in 0..7 {
        vms.create(&PostParams::default(), &MicroVM::test(&format!("vm-{i}")))
            .await?;
    }
    let mut names = Vec::new();
    let mut params = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = vms.list(&params).await?;
        pages += 1;
        names.extend(page.items.iter().filter_map(|vm| vm.metadata.name.clone()));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..7).map(|i| format!("vm-{i}")).collect();
    assert_eq!(names, want);
    let labelled = vms
        .list(&ListParams::default().labels("missing=label"))
        .await?;
    assert!(labelled.items.is_empty());
    Ok(())
}

#[tokio::test]
async fn label_selector_watch_sees_objects_enter_and_leave() -> anyhow::Result<()> {
    let (_cp, _client, vms) = setup(Config::default()).await?;
    vms.create(&PostParams::default(), &MicroVM::test("vm"))
        .await?;
    let rv = vms
        .list(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut stream = vms
        .watch(&WatchParams::default().labels("team=a"), &rv)
        .await?
        .boxed();
    let label = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"team": v}}}));
    vms.patch("vm", &PatchParams::default(), &label("a"))
        .await?;
    vms.patch("vm", &PatchParams::default(), &label("b"))
        .await?;
    let mut seen = Vec::new();
    for _ in 0..2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await? {
            Some(Ok(WatchEvent::Added(_))) => seen.push("ADDED"),
            Some(Ok(WatchEvent::Deleted(_))) => seen.push("DELETED"),
            other => anyhow::bail!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        ["ADDED", "DELETED"],
        "matching → ADDED, no longer matching → DELETED"
    );
    Ok(())
}

#[tokio::test]
async fn random_bodies_never_break_the_server() -> anyhow::Result<()> {
    let (_cp, client, vms) = setup(Config::default()).await?;
    vms.create(&PostParams::default(), &MicroVM::test("safe"))
        .await?;
    let coll = "/apis/quiver.dev/v1alpha1/namespaces/default/microvms";
    let targets = [
        ("POST", coll.to_string(), "application/json"),
        ("POST", coll.to_string(), "application/yaml"),
        (
            "POST",
            "/api/v1/namespaces/default/configmaps".to_string(),
            "application/vnd.kubernetes.protobuf",
        ),
        ("PUT", format!("{coll}/safe"), "application/json"),
        (
            "PATCH",
            format!("{coll}/safe"),
            "application/merge-patch+json",
        ),
        (
            "PATCH",
            format!("{coll}/safe"),
            "application/json-patch+json",
        ),
        (
            "PATCH",
            format!("{coll}/safe"),
            "application/apply-patch+yaml",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default".to_string(),
            "application/strategic-merge-patch+json",
        ),
        ("DELETE", format!("{coll}/safe"), "application/json"),
    ];
    // A fixed-seed generator: each body mixes structure-looking bytes with noise.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let alphabet = b"{}[]\":,0123456789abcdefk8s\0\n -tnrue$/.#";
    for round in 0..300 {
        let (method, path, ct) = &targets[round % targets.len()];
        let len = usize::try_from(next() % 200).unwrap_or(0);
        let mut body: Vec<u8> = (0..len)
            .map(|_| alphabet[usize::try_from(next()).unwrap_or(0) % alphabet.len()])
            .collect();
        if round % 3 == 0 {
            body.splice(0..0, b"k8s\0".iter().copied());
        }
        let (code, _) = raw(&client, method, path, ct, body).await?;
        assert!(code < 500, "{method} {path} ({ct}) answered {code}");
    }
    assert_eq!(vms.get("safe").await?.spec.cpus, 1);
    Ok(())
}

#[tokio::test]
async fn foreground_deletion_removes_dependents_before_the_owner() -> anyhow::Result<()> {
    let (_cp, client, vms) = setup(Config::default()).await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let owner = vms
        .create(&PostParams::default(), &MicroVM::test("owner"))
        .await?;
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "child", "finalizers": ["test/hold"],
            "ownerReferences": [{"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "name": "owner", "uid": owner.metadata.uid}]}
    }))?;
    cms.create(&PostParams::default(), &child).await?;
    vms.delete("owner", &DeleteParams::foreground()).await?;
    let waiting = vms.get("owner").await?;
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        waiting.metadata.finalizers,
        Some(vec!["foregroundDeletion".to_string()]),
        "the owner waits for its dependents"
    );
    assert!(
        cms.get("child")
            .await?
            .metadata
            .deletion_timestamp
            .is_some(),
        "the dependent is being deleted"
    );
    cms.patch(
        "child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await?;
    eventually(
        Duration::from_secs(5),
        "owner removed once its dependent is gone",
        || async { Ok(vms.get_opt("owner").await?.is_none().then_some(())) },
    )
    .await?;
    Ok(())
}

/// The operator's Events: the same event again becomes a series on the first Event (as
/// kube's Recorder does it), another reason is another Event, and `kubectl`'s view of them
/// (events.k8s.io/v1) shows the count.
#[tokio::test]
async fn operator_events_repeat_as_a_series() -> anyhow::Result<()> {
    use k8s_openapi::api::events::v1::Event;
    use kube::Resource as _;
    use kube::runtime::events::Reporter;
    use quiver_operator::controller::events::Events;
    use quiver_operator::status::Transition;

    let (_cp, client, vms) = setup(Config::default()).await?;
    let vm = vms
        .create(&PostParams::default(), &MicroVM::test("noisy"))
        .await?;
    let reference = vm.object_ref(&());
    let events = Events::new(
        client.clone(),
        Reporter {
            controller: "quiver-operator".into(),
            instance: Some("test".into()),
        },
    );
    let event = |reason: &'static str| Transition {
        warning: reason == "Failed",
        reason,
        note: format!("the VM {reason}"),
    };
    for reason in ["Failed", "Failed", "Failed", "Started"] {
        events
            .publish(&event(reason), "Reconcile", &reference)
            .await?;
    }
    let stored: Vec<Event> = Api::<Event>::namespaced(client, "default")
        .list(&ListParams::default())
        .await?
        .items;
    assert_eq!(stored.len(), 2, "{stored:?}");
    let failed = stored
        .iter()
        .find(|e| e.reason.as_deref() == Some("Failed"))
        .ok_or_else(|| anyhow::anyhow!("a Failed event: {stored:?}"))?;
    assert_eq!(failed.type_.as_deref(), Some("Warning"));
    assert_eq!(failed.series.as_ref().map(|s| s.count), Some(3));
    assert_eq!(
        failed.regarding.as_ref().and_then(|r| r.uid.clone()),
        vm.metadata.uid
    );
    let started = stored
        .iter()
        .find(|e| e.reason.as_deref() == Some("Started"))
        .ok_or_else(|| anyhow::anyhow!("a Started event: {stored:?}"))?;
    assert!(started.series.is_none());
    Ok(())
}
