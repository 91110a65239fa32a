//! OpenAPI v3 documents, one per group/version, as `kubectl explain` and kubectl's
//! server-side field validation check read them.

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceType};

/// `/openapi/v3`: the index of group/version documents.
pub fn index(registry: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, version) in registry.group_versions().into_keys() {
        let p = gv_path(&group, &version);
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", hash(registry, &group, &version))}));
    }
    json!({"paths": paths})
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// A content hash so clients cache documents until a CRD changes.
fn hash(registry: &Registry, group: &str, version: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    gv_document(registry, group, version)
        .map(|d| d.to_string())
        .hash(&mut h);
    format!("{:016X}", h.finish())
}

fn schema_name(t: &ResourceType, version: &str) -> String {
    let reversed: Vec<&str> = t.group.split('.').rev().collect();
    let prefix = if t.group.is_empty() {
        "io.k8s.api.core".to_string()
    } else {
        reversed.join(".")
    };
    format!("{prefix}.{version}.{}", t.kind)
}

fn object_meta() -> Value {
    let s = |d: &str| json!({"type": "string", "description": d});
    json!({
        "description": "ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.",
        "type": "object",
        "properties": {
            "name": s("Name must be unique within a namespace."),
            "namespace": s("Namespace defines the space within which each name must be unique."),
            "generateName": s("An optional prefix, used by the server to generate a unique name."),
            "uid": s("UID is the unique in time and space value for this object."),
            "resourceVersion": s("An opaque value that represents the internal version of this object."),
            "generation": {"type": "integer", "format": "int64", "description": "A sequence number representing a specific generation of the desired state."},
            "creationTimestamp": s("The time this object was created."),
            "deletionTimestamp": s("The time after which this resource will be deleted; set when deletion is requested."),
            "labels": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Map of string keys and values used to organize and select objects."},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Unstructured key value map stored with a resource."},
            "finalizers": {"type": "array", "items": {"type": "string"}, "description": "Must be empty before the object is deleted from the registry."},
            "ownerReferences": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Objects depended by this object; when all are deleted, this object is garbage collected."},
            "managedFields": {"type": "array", "items": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}, "description": "Which managers own which fields."}
        }
    })
}

fn resource_schema(t: &ResourceType, version: &str) -> Value {
    let raw = t.version(version).and_then(|v| v.raw_schema.clone());
    let mut schema = raw
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
    let Some(root) = schema.as_object_mut() else {
        return schema;
    };
    root.insert(
        "x-kubernetes-group-version-kind".into(),
        json!([{"group": t.group, "version": version, "kind": t.kind}]),
    );
    let props = root.entry("properties").or_insert_with(|| json!({}));
    if let Some(props) = props.as_object_mut() {
        props.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
    }
    schema
}

fn operation(t: &ResourceType, version: &str, verb: &str, with_validation: bool) -> Value {
    let mut params = vec![json!({"name": "dryRun", "in": "query", "schema": {"type": "string"}})];
    if with_validation {
        params.push(json!({"name": "fieldManager", "in": "query", "schema": {"type": "string"}}));
        params
            .push(json!({"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}));
    }
    json!({
        "operationId": format!("{verb}{}", t.kind),
        "parameters": params,
        "responses": {"200": {"description": "OK"}},
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {"group": t.group, "version": version, "kind": t.kind},
    })
}

/// The OpenAPI v3 document for one group/version.
pub fn gv_document(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry
        .group_versions()
        .remove(&(group.to_string(), version.to_string()))?;
    let mut schemas = Map::new();
    let mut paths = Map::new();
    schemas.insert(
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta".into(),
        object_meta(),
    );
    let base = format!("/{}", gv_path(group, version));
    for t in &types {
        schemas.insert(schema_name(t, version), resource_schema(t, version));
        let collection = if t.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", t.plural)
        } else {
            format!("{base}/{}", t.plural)
        };
        paths.insert(collection.clone(), json!({"get": operation(t, version, "list", false), "post": operation(t, version, "post", true)}));
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": operation(t, version, "get", false),
                "put": operation(t, version, "put", true),
                "patch": operation(t, version, "patch", true),
                "delete": operation(t, version, "delete", false),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{}.0", crate::discovery::KUBE_MINOR)},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
