use super::*;

fn vm(cpus: i64) -> Value {
    json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a", "labels": {"app": "x"}}, "spec": {"cpus": cpus, "kernel": "/k"}})
}

#[test]
fn update_gives_changed_fields_to_the_writer() {
    let mut created = vm(1);
    record_update(None, &mut created, "kubectl", "", None);
    let mut changed = created.clone();
    changed["spec"]["cpus"] = json!(2);
    record_update(Some(&created), &mut changed, "operator", "", None);
    let list = entries(&changed);
    let op = list
        .iter()
        .find(|e| e.manager == "operator")
        .expect("operator entry");
    assert_eq!(
        op.set,
        FieldSet::from([vec!["f:spec".into(), "f:cpus".into()]])
    );
    let kubectl = list
        .iter()
        .find(|e| e.manager == "kubectl")
        .expect("kubectl entry");
    assert!(
        !kubectl
            .set
            .contains(&vec!["f:spec".to_string(), "f:cpus".to_string()])
    );
    assert!(changed["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:kernel"].is_object());
}

#[test]
fn apply_conflicts_with_another_owner_unless_forced() {
    let mut created = vm(1);
    record_update(None, &mut created, "kubectl", "", None);
    let applied = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a"}, "spec": {"cpus": 4}});
    let err = server_side_apply(&created, &applied, "ops", false, "", None).expect_err("conflict");
    assert_eq!(err.code, 409);
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"kubectl\" using quiver.dev/v1alpha1: .spec.cpus"
    );
    let status = err.to_status();
    assert_eq!(
        status["details"],
        json!({"causes": [{"reason": "FieldManagerConflict", "field": ".spec.cpus",
            "message": "conflict with \"kubectl\" using quiver.dev/v1alpha1"}]})
    );
    let forced = server_side_apply(&created, &applied, "ops", true, "", None).expect("forced");
    assert_eq!(forced["spec"]["cpus"], 4);
    assert_eq!(forced["spec"]["kernel"], "/k");
    let owners: Vec<String> = entries(&forced).into_iter().map(|e| e.manager).collect();
    assert!(owners.contains(&"ops".to_string()));
}

#[test]
fn same_value_is_shared_not_a_conflict_and_dropped_fields_are_removed() {
    let mut created = vm(1);
    record_update(None, &mut created, "kubectl", "", None);
    let first = json!({"metadata": {"name": "a", "labels": {"team": "t"}}, "spec": {"cpus": 1}});
    let applied = server_side_apply(&created, &first, "ops", false, "", None)
        .expect("no conflict on equal value");
    assert_eq!(applied["metadata"]["labels"]["team"], "t");
    let second = json!({"metadata": {"name": "a"}, "spec": {"cpus": 1}});
    let reapplied = server_side_apply(&applied, &second, "ops", false, "", None).expect("apply");
    assert!(
        reapplied["metadata"]["labels"].get("team").is_none(),
        "label only ops owned is removed"
    );
    assert_eq!(
        reapplied["metadata"]["labels"]["app"], "x",
        "label kubectl owns stays"
    );
}

#[test]
fn status_apply_owns_only_status() {
    let base = vm(1);
    let applied = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "status": {"phase": "Running"}, "spec": {"cpus": 9}});
    let out = server_side_apply(&base, &applied, "quiver-operator", false, "status", None)
        .expect("apply");
    let list = entries(&out);
    assert!(list[0].set.iter().all(|p| p[0] == "f:status"));
    assert_eq!(list[0].subresource, "status");
}

#[test]
fn keyed_lists_merge_by_key() {
    let current = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
    let applied = json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}});
    let out = server_side_apply(&current, &applied, "m", false, "", None).expect("apply");
    assert_eq!(
        out["metadata"]["ownerReferences"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn deep_objects_with_many_leaves_stay_within_the_path_budget() {
    let wide: serde_json::Map<String, Value> =
        (0..20_000).map(|i| (format!("k{i}"), json!(1))).collect();
    let mut deep = Value::Object(wide);
    for _ in 0..95 {
        deep = json!({"d": deep});
    }
    let obj = json!({"spec": deep});
    let leaves = super::paths::leaves(&obj, None);
    let segments: usize = leaves.keys().map(Vec::len).sum();
    assert!(segments <= (1 << 20) + 1000, "{segments} path segments");
    assert!(!leaves.is_empty());
}

#[test]
fn dropping_the_only_owned_field_of_a_struct_removes_the_struct() {
    let first = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a"},
        "spec": {"kernel": "/k", "sub": {"x": 1}}});
    let created = server_side_apply(&json!({}), &first, "ops", false, "", None).expect("apply");
    let second = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a"},
        "spec": {"kernel": "/k"}});
    let after = server_side_apply(&created, &second, "ops", false, "", None).expect("apply");
    assert_eq!(after["spec"], json!({"kernel": "/k"}));
}

#[test]
fn a_struct_someone_else_still_owns_under_stays() {
    let first = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a"},
        "spec": {"sub": {"x": 1}}});
    let created = server_side_apply(&json!({}), &first, "ops", false, "", None).expect("apply");
    let other = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a"},
        "spec": {"sub": {"y": 2}}});
    let shared = server_side_apply(&created, &other, "other", false, "", None).expect("apply");
    let dropped = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a"}, "spec": {}});
    let after = server_side_apply(&shared, &dropped, "ops", false, "", None).expect("apply");
    assert_eq!(after["spec"], json!({"sub": {"y": 2}}));
}

#[test]
fn conflicts_are_grouped_by_manager_with_kubernetes_paths() {
    let mut created = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"ports": [{"port": 80, "name": "http"}], "type": "ClusterIP"}});
    record_update(None, &mut created, "kubectl", "", None);
    let mut scaled = created.clone();
    scaled["spec"]["type"] = json!("NodePort");
    record_update(Some(&created), &mut scaled, "hpa", "scale", None);
    let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a"},
        "spec": {"ports": [{"port": 80, "name": "web"}], "type": "LoadBalancer"}});
    let err = server_side_apply(&scaled, &applied, "ops", false, "", None).expect_err("conflicts");
    assert_eq!(
        err.message,
        "Apply failed with 2 conflicts: conflicts with \"hpa\" with subresource \"scale\" using v1:\n- .spec.type\nconflicts with \"kubectl\" using v1:\n- .spec.ports"
    );
    assert_eq!(
        display_path(&vec![
            "f:spec".into(),
            "f:ports".into(),
            "k:{\"port\":80,\"protocol\":\"TCP\"}".into(),
            "f:name".into()
        ]),
        ".spec.ports[port=80,protocol=\"TCP\"].name"
    );
    assert_eq!(
        display_path(&vec![
            "f:metadata".into(),
            "f:finalizers".into(),
            "v:\"a\"".into()
        ]),
        ".metadata.finalizers[=\"a\"]"
    );
}

#[test]
fn one_name_applying_to_the_object_and_to_scale_is_two_managers() {
    let applied = |replicas: i64| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"},
            "spec": {"replicas": replicas}})
    };
    let base = json!({"metadata": {"name": "a"}});
    let helm = server_side_apply(&base, &applied(2), "helm", false, "", None).expect("apply");
    let err = server_side_apply(&helm, &applied(3), "helm", false, "scale", None)
        .expect_err("the object's applier owns the replicas");
    assert_eq!(
        err.message,
        "Apply failed with 1 conflict: conflict with \"helm\": .spec.replicas"
    );
    let forced =
        server_side_apply(&helm, &applied(3), "helm", true, "scale", None).expect("forced");
    let owners: Vec<(String, String)> = entries(&forced)
        .into_iter()
        .map(|e| (e.subresource, e.set.len().to_string()))
        .collect();
    assert_eq!(owners, [("scale".to_string(), "1".to_string())]);
}
