//! Structural schemas for built-in kinds, generated from their `k8s-openapi` types (the
//! Kubernetes OpenAPI definitions): writes are pruned and validated against them as custom
//! resources are against their CRD's schema, so an unknown field is reported (or refused with
//! `fieldValidation=Strict`) and a missing required field is a `422` naming it. `kubectl
//! explain` reads the same schemas.
//!
//! The generated schemas carry no list-type markers; the lists whose items Kubernetes merges
//! by a key (`containers` by `name`...) get `x-kubernetes-list-type: map` here, so that
//! server-side apply owns their items one by one as it does in Kubernetes.

use std::sync::Arc;

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Value, json};

use crate::patch::merge_key;
use crate::schema::Schema;

/// The compiled schema of `T` and its OpenAPI form.
///
/// # Panics
/// If `k8s-openapi`'s schema of `T` is not structural, which its tests would catch.
pub fn schema_of<T: JsonSchema>() -> (Arc<Schema>, Value) {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let mut raw = generator.into_root_schema_for::<T>().to_value();
    mark_keyed_lists(&mut raw);
    let compiled = Schema::compile(&raw).unwrap_or_else(|causes| {
        panic!(
            "the OpenAPI schema of {} does not compile: {causes:?}",
            T::schema_name()
        )
    });
    (Arc::new(compiled), raw)
}

/// Marks the arrays under a property whose name has a strategic-merge key as map lists.
fn mark_keyed_lists(node: &mut Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    if let Some(props) = obj.get_mut("properties").and_then(Value::as_object_mut) {
        for (field, child) in props.iter_mut() {
            let is_array = child.get("type").and_then(Value::as_str) == Some("array");
            let key = child
                .pointer("/items/properties")
                .and_then(Value::as_object)
                .filter(|_| is_array)
                .and_then(|items| merge_key(field, |k| items.contains_key(k)));
            if let (Some(key), Some(list)) = (key, child.as_object_mut()) {
                list.insert("x-kubernetes-list-type".into(), json!("map"));
                list.insert("x-kubernetes-list-map-keys".into(), json!([key]));
            }
            mark_keyed_lists(child);
        }
    }
    for nested in ["items", "additionalProperties"] {
        if let Some(child) = obj.get_mut(nested) {
            mark_keyed_lists(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Service;

    #[test]
    fn deployment_schema_requires_selector_and_template() {
        let (schema, _) = schema_of::<Deployment>();
        let spec = &schema.properties["spec"];
        assert_eq!(spec.required, ["selector", "template"]);
        let causes = schema.validate(
            &json!({"metadata": {"name": "a"}, "spec": {"template": {}}}),
            None,
        );
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(causes[0].field, "spec.selector");
    }

    #[test]
    fn keyed_lists_are_map_lists_with_their_merge_key() {
        let (schema, _) = schema_of::<Deployment>();
        let pod = &schema.properties["spec"].properties["template"].properties["spec"];
        let containers = &pod.properties["containers"];
        assert_eq!(containers.list_type.as_deref(), Some("map"));
        assert_eq!(containers.list_map_keys, ["name"]);
        let container_ports = &containers.items.as_ref().expect("items").properties["ports"];
        assert_eq!(container_ports.list_map_keys, ["containerPort"]);
        let (service, _) = schema_of::<Service>();
        let ports = &service.properties["spec"].properties["ports"];
        assert_eq!(ports.list_map_keys, ["port"]);
    }
}
