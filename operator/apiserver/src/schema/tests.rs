use super::*;
use serde_json::json;

fn microvm_schema() -> Schema {
    Schema::compile(&json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["kernel"],
                "properties": {
                    "cpus": {"type": "integer", "minimum": 1, "maximum": 64, "default": 1},
                    "kernel": {"type": "string", "minLength": 1},
                    "runStrategy": {"type": "string", "enum": ["Always", "Halted"], "default": "Always"},
                    "nodeSelector": {"type": "object", "additionalProperties": {"type": "string"}},
                    "disks": {"type": "array", "maxItems": 2, "items": {
                        "type": "object", "properties": {"name": {"type": "string", "maxLength": 8}}
                    }}
                }
            },
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
        }
    }))
    .expect("schema compiles")
}

#[test]
fn defaults_fill_absent_fields_only() {
    let mut obj = json!({"spec": {"kernel": "/k", "cpus": 4}});
    microvm_schema().apply_defaults(&mut obj);
    assert_eq!(obj["spec"]["cpus"], 4);
    assert_eq!(obj["spec"]["runStrategy"], "Always");
}

#[test]
fn unknown_fields_are_pruned_and_reported() {
    let mut obj = json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": "a", "x": 1},
        "spec": {"kernel": "/k", "bogus": true, "disks": [{"name": "d", "extra": 1}]},
        "status": {"anything": 1}});
    let removed = microvm_schema().prune(&mut obj);
    assert_eq!(
        removed,
        vec!["spec.bogus".to_string(), "spec.disks[0].extra".to_string()]
    );
    assert_eq!(
        obj["metadata"]["x"], 1,
        "metadata is not pruned by the schema"
    );
    assert_eq!(
        obj["status"]["anything"], 1,
        "preserve-unknown-fields keeps data"
    );
}

#[test]
fn range_violation_names_the_field() {
    let causes = microvm_schema().validate(&json!({"spec": {"kernel": "/k", "cpus": 0}}), None);
    assert_eq!(causes.len(), 1);
    assert_eq!(causes[0].field, "spec.cpus");
    assert!(
        causes[0].message.contains("greater than or equal to 1"),
        "{}",
        causes[0].message
    );
}

#[test]
fn wrong_type_enum_required_and_lengths_are_reported() {
    let obj = json!({"spec": {"cpus": "two", "runStrategy": "Sometimes",
        "nodeSelector": {"zone": 5}, "disks": [{"name": "much-too-long"}, {}, {}]}});
    let causes = microvm_schema().validate(&obj, None);
    let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
    assert!(fields.contains(&"spec.kernel"), "{fields:?}");
    assert!(fields.contains(&"spec.cpus"), "{fields:?}");
    assert!(fields.contains(&"spec.runStrategy"), "{fields:?}");
    assert!(fields.contains(&"spec.nodeSelector[zone]"), "{fields:?}");
    assert!(fields.contains(&"spec.disks"), "{fields:?}");
    assert!(fields.contains(&"spec.disks[0].name"), "{fields:?}");
}

#[test]
fn structural_errors_are_reported_with_paths() {
    let err =
        Schema::compile(&json!({"type": "object", "properties": {"spec": {"properties": {}}}}))
            .expect_err("untyped node with properties");
    assert_eq!(err[0].field, "properties[spec].type");
}

#[test]
fn null_for_a_non_nullable_field_is_dropped_then_defaulted() {
    let schema = microvm_schema();
    let mut obj = json!({"spec": {"kernel": "/k", "cpus": null}});
    assert!(
        schema.prune(&mut obj).is_empty(),
        "a dropped null is not an unknown field"
    );
    schema.apply_defaults(&mut obj);
    assert_eq!(obj["spec"]["cpus"], 1);
    assert!(schema.validate(&obj, None).is_empty());
}
