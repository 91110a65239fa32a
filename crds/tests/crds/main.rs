//! Tests of the generated CRDs, the fixtures and the examples, without an API server.

mod drift;
mod fixtures;
mod schema;
mod validation;
mod validator;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;

/// The `openAPIV3Schema` of a single-version CRD, as JSON.
fn schema_of(crd: &CustomResourceDefinition) -> Value {
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema.expect("CRD has a schema")).unwrap()
}

/// The schema node at a dotted path of property names (`spec.readiness.serialMarker`); `[]`
/// steps into array items.
fn node<'a>(schema: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(schema, |node, part| {
        let (name, items) = part.strip_suffix("[]").map_or((part, false), |n| (n, true));
        let child = &node["properties"][name];
        assert!(
            !child.is_null(),
            "no schema node at {path} (missing {name})"
        );
        if items { &child["items"] } else { child }
    })
}
