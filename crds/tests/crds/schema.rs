use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use quiver_crds::{Host, MicroVM, Rollout};
use serde_json::{Value, json};

use crate::{node, schema_of};

fn all_crds() -> Vec<CustomResourceDefinition> {
    quiver_crds::generate::crds()
}

/// Calls `visit(path, node)` for every schema node below `schema`.
fn walk(schema: &Value, path: &str, visit: &mut impl FnMut(&str, &Value)) {
    visit(path, schema);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, child) in properties {
            walk(child, &format!("{path}.{name}"), visit);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = schema.get(key).filter(|c| c.is_object()) {
            walk(child, &format!("{path}[]"), visit);
        }
    }
}

#[test]
fn names_scopes_and_status_subresources() {
    let cases = [
        (MicroVM::crd(), "microvms", "MicroVM", "mvm", "Namespaced"),
        (Rollout::crd(), "rollouts", "Rollout", "qro", "Namespaced"),
        (Host::crd(), "hosts", "Host", "qh", "Cluster"),
    ];
    for (crd, plural, kind, short, scope) in cases {
        assert_eq!(crd.spec.group, quiver_crds::GROUP);
        assert_eq!(crd.spec.names.plural, plural);
        assert_eq!(crd.spec.names.kind, kind);
        assert_eq!(crd.spec.names.short_names, Some(vec![short.to_owned()]));
        assert_eq!(crd.spec.scope, scope);
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, quiver_crds::VERSION);
        assert!(version.served && version.storage);
        let subresources = version.subresources.as_ref().expect("subresources");
        assert!(
            subresources.status.is_some(),
            "{kind} has a status subresource"
        );
    }
}

fn columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String, i32)> {
    crd.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| {
            (
                c.name.clone(),
                c.type_.clone(),
                c.json_path.clone(),
                c.priority.unwrap_or(0),
            )
        })
        .collect()
}

fn default_columns(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    columns(crd)
        .into_iter()
        .filter(|c| c.3 == 0)
        .map(|(name, type_, path, _)| (name, type_, path))
        .collect()
}

fn owned(columns: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    columns
        .iter()
        .map(|(a, b, c)| ((*a).into(), (*b).into(), (*c).into()))
        .collect()
}

#[test]
fn microvm_columns_show_phase_host_guest_readiness_and_age() {
    assert_eq!(
        default_columns(&MicroVM::crd()),
        owned(&[
            ("Phase", "string", ".status.phase"),
            ("Host", "string", ".status.host"),
            (
                "Ready",
                "string",
                r#".status.conditions[?(@.type=="GuestReady")].status"#
            ),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
}

#[test]
fn rollout_columns_show_phase_step_weight_and_age() {
    assert_eq!(
        default_columns(&Rollout::crd()),
        owned(&[
            ("Phase", "string", ".status.phase"),
            ("Step", "integer", ".status.currentStepIndex"),
            ("Weight", "integer", ".status.currentWeight"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
}

#[test]
fn host_columns_show_ready_role_vms_heartbeat_and_age() {
    assert_eq!(
        default_columns(&Host::crd()),
        owned(&[
            (
                "Ready",
                "string",
                r#".status.conditions[?(@.type=="Ready")].status"#
            ),
            ("Role", "string", ".status.raft.role"),
            ("VMs", "integer", ".status.vms"),
            ("Heartbeat", "date", ".status.heartbeatTime"),
            ("Age", "date", ".metadata.creationTimestamp"),
        ])
    );
}

#[test]
fn every_column_path_points_into_the_schema() {
    for crd in all_crds() {
        let schema = schema_of(&crd);
        for (name, _, path, _) in columns(&crd) {
            if path.starts_with(".metadata.") {
                continue;
            }
            let plain = path.split("[?").next().unwrap().trim_start_matches('.');
            node(&schema, plain);
            assert!(!name.is_empty());
        }
    }
}

#[test]
fn defaults_are_in_the_schema() {
    let vm = schema_of(&MicroVM::crd());
    assert_eq!(node(&vm, "spec.runStrategy")["default"], "Always");
    assert_eq!(node(&vm, "spec.cpus")["default"], 1);
    assert_eq!(node(&vm, "spec.memoryMiB")["default"], 256);
    assert_eq!(
        node(&vm, "spec.network")["default"],
        json!({"mode": "none"})
    );
    assert_eq!(
        node(&vm, "spec.readiness.serialMarker")["default"],
        "QUIVER_GUEST_READY"
    );
    assert_eq!(node(&vm, "spec.readiness.timeoutSeconds")["default"], 120);
    assert_eq!(node(&vm, "spec.disks[].readOnly")["default"], false);

    let rollout = schema_of(&Rollout::crd());
    assert_eq!(node(&rollout, "spec.analysis.failureLimit")["default"], 3);
    assert_eq!(node(&rollout, "spec.analysis.interval")["default"], "30s");
    assert_eq!(
        node(&rollout, "spec.analysis.maxErrorRatePerMille")["default"],
        10
    );
    for control in ["paused", "promote", "abort"] {
        assert_eq!(node(&rollout, &format!("spec.{control}"))["default"], false);
    }
    assert_eq!(node(&rollout, "spec.retry")["default"], 0);
}

#[test]
fn bounds_are_in_the_schema() {
    let vm = schema_of(&MicroVM::crd());
    let cpus = node(&vm, "spec.cpus");
    assert_eq!(
        (cpus["minimum"].as_f64(), cpus["maximum"].as_f64()),
        (Some(1.0), Some(64.0))
    );
    let memory = node(&vm, "spec.memoryMiB");
    assert_eq!(
        (memory["minimum"].as_f64(), memory["maximum"].as_f64()),
        (Some(64.0), Some(262_144.0))
    );
    assert_eq!(node(&vm, "spec.cmdline")["maxLength"], 4096);
    assert_eq!(node(&vm, "spec.disks")["maxItems"], 16);
    assert_eq!(node(&vm, "spec.kernel")["minLength"], 1);
    assert_eq!(
        node(&vm, "spec.runStrategy")["enum"],
        json!(["Always", "Halted", "RerunOnFailure", "Once"])
    );
    assert_eq!(
        node(&vm, "status.phase")["enum"],
        json!([
            "Pending",
            "Scheduling",
            "Starting",
            "Running",
            "Stopping",
            "Stopped",
            "Failed"
        ])
    );

    let rollout = schema_of(&Rollout::crd());
    let weight = node(&rollout, "spec.steps[].setWeight");
    assert_eq!(
        (weight["minimum"].as_f64(), weight["maximum"].as_f64()),
        (Some(1.0), Some(100.0))
    );
    assert_eq!(
        node(&rollout, "spec.target.raft")["enum"],
        json!(["grpc", "iroh", "dual"])
    );
    assert_eq!(vm["required"], json!(["spec"]));
    assert_eq!(node(&vm, "spec")["required"], json!(["kernel"]));
}

#[test]
fn every_field_has_a_description() {
    for crd in all_crds() {
        let schema = schema_of(&crd);
        for top in ["spec", "status"] {
            walk(&schema["properties"][top], top, &mut |path, node| {
                let described = node["description"]
                    .as_str()
                    .is_some_and(|d| !d.trim().is_empty());
                let is_map_value = path.ends_with("[]") && node.get("properties").is_none();
                assert!(
                    described || is_map_value,
                    "{}: {path} has no description",
                    crd.spec.names.kind
                );
            });
        }
    }
}

#[test]
fn schemas_are_structural() {
    for crd in all_crds() {
        let kind = crd.spec.names.kind.clone();
        let schema = schema_of(&crd);
        walk(&schema, "", &mut |path, node| {
            assert!(
                node["type"].is_string(),
                "{kind}{path} has no single type: {node}"
            );
            for key in [
                "anyOf",
                "oneOf",
                "allOf",
                "not",
                "$ref",
                "x-kubernetes-int-or-string",
            ] {
                assert!(node.get(key).is_none(), "{kind}{path} uses {key}");
            }
            if let Some(format) = node["format"].as_str() {
                assert!(
                    ["int32", "int64", "double", "date-time"].contains(&format),
                    "{kind}{path} has format {format}, unknown to Kubernetes"
                );
            }
            let nullable = node.get("nullable").is_some();
            assert!(!nullable || path == ".status", "{kind}{path} is nullable");
            if node.get("x-kubernetes-validations").is_some() {
                let ok = node.get("maxLength").or(node.get("maxItems")).is_some()
                    || node["type"] != "string";
                assert!(ok, "{kind}{path}: CEL on an unbounded value");
            }
        });
    }
}

/// Every CEL rule, as (path, rule, message).
fn rules(crd: &CustomResourceDefinition) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    walk(&schema_of(crd), "", &mut |path, node| {
        for rule in node["x-kubernetes-validations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            found.push((
                path.to_owned(),
                rule["rule"].as_str().unwrap_or_default().to_owned(),
                rule["message"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    });
    found
}

#[test]
fn cel_rules_are_present_and_messages_name_the_field() {
    let vm_rules = rules(&MicroVM::crd());
    let paths: Vec<&str> = vm_rules.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".spec.disks",
            ".spec.disks[].image",
            ".spec.initrd",
            ".spec.kernel",
            ".spec.network",
            ".spec.network.portForwards",
            ".spec.network.portForwards"
        ]
    );
    let rollout_rules = rules(&Rollout::crd());
    let paths: Vec<&str> = rollout_rules.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(
        paths,
        [".spec", ".spec", ".spec.microVMs.template", ".spec.steps[]"]
    );
    assert!(rollout_rules[3].1.contains("has(self.setWeight)"));

    for (path, rule, message) in vm_rules.into_iter().chain(rollout_rules) {
        assert!(!rule.is_empty(), "{path}: empty rule");
        let field = path.trim_start_matches('.').trim_end_matches("[]");
        let field = field.split("[]").next().unwrap();
        assert!(
            message.contains(field),
            "{path}: message {message:?} does not name {field}"
        );
        cel::Program::compile(&rule)
            .unwrap_or_else(|e| panic!("{path}: {rule} does not parse: {e}"));
    }
}

#[test]
fn condition_lists_merge_by_type() {
    for crd in all_crds() {
        let conditions = node(&schema_of(&crd), "status.conditions").clone();
        assert_eq!(conditions["x-kubernetes-list-type"], "map");
        assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
    }
}
