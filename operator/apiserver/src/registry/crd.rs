//! CustomResourceDefinitions as served resource types: the parts of a definition that
//! serving depends on are checked here, and each served version's schema compiled.

use std::sync::Arc;

use serde_json::Value;

use super::{Behavior, Column, ResourceType, ScalePaths, Version};
use crate::error::{ApiError, Cause, Result};
use crate::schema::Schema;

/// Builds the resource type that a CustomResourceDefinition object describes, checking the
/// parts of the definition that serving depends on.
pub fn from_crd(crd: &Value) -> Result<ResourceType> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |causes: Vec<Cause>| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        )
    };
    let spec = crd
        .get("spec")
        .ok_or_else(|| invalid(vec![Cause::required("spec")]))?;
    let text = |ptr: &str| {
        spec.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let group = text("/group");
    let plural = text("/names/plural");
    let kind = text("/names/kind");
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind"));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = text("/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::unsupported(
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions = Vec::new();
    for (i, v) in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        versions.push(crd_version(v, &format!("spec.versions[{i}]"), &mut causes));
    }
    let storage_count = versions.iter().filter(|v| v.storage).count();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    } else if storage_count != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    if !causes.is_empty() {
        return Err(invalid(causes));
    }
    let strings = |ptr: &str| -> Vec<String> {
        spec.pointer(ptr)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = match text("/names/singular") {
        s if s.is_empty() => kind.to_lowercase(),
        s => s,
    };
    let list_kind = match text("/names/listKind") {
        s if s.is_empty() => format!("{kind}List"),
        s => s,
    };
    Ok(ResourceType {
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strings("/names/shortNames"),
        categories: strings("/names/categories"),
        versions,
        behavior: Behavior::Custom,
    })
}

fn crd_version(v: &Value, path: &str, causes: &mut Vec<Cause>) -> Version {
    let raw_schema = v.pointer("/schema/openAPIV3Schema").cloned();
    let schema = match &raw_schema {
        Some(raw) => match Schema::compile(raw) {
            Ok(s) => Some(Arc::new(s)),
            Err(mut errs) => {
                for c in &mut errs {
                    c.field = format!("{path}.schema.openAPIV3Schema{}", dotted(&c.field));
                }
                causes.extend(errs);
                None
            }
        },
        None => {
            causes.push(Cause::required(format!("{path}.schema.openAPIV3Schema")));
            None
        }
    };
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| cols.iter().map(column).collect())
        .unwrap_or_default();
    Version {
        name: v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
        schema,
        raw_schema,
        columns,
        status_subresource: v.pointer("/subresources/status").is_some(),
        scale: v.pointer("/subresources/scale").and_then(|s| {
            let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
            Some(ScalePaths {
                spec_replicas: text("specReplicasPath")?,
                status_replicas: text("statusReplicasPath")?,
                label_selector: text("labelSelectorPath"),
            })
        }),
    }
}

fn dotted(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(".{field}")
    }
}

fn column(c: &Value) -> Column {
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Column {
        name: s("name"),
        type_: s("type"),
        format: s("format"),
        description: s("description"),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        json_path: s("jsonPath"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(name: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": "quiver.dev",
                "scope": "Namespaced",
                "names": {"plural": "microvms", "kind": "MicroVM", "shortNames": ["mvm"]},
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]
                }]
            }
        })
    }

    #[test]
    fn crd_becomes_a_served_type() {
        let t = from_crd(&crd("microvms.quiver.dev")).expect("valid crd");
        assert_eq!(t.kind, "MicroVM");
        assert_eq!(t.list_kind, "MicroVMList");
        assert_eq!(t.singular, "microvm");
        assert!(t.namespaced);
        assert!(t.has_status("v1alpha1"));
        assert_eq!(t.versions[0].columns[0].json_path, ".status.phase");
    }

    #[test]
    fn crd_name_must_match_plural_and_group() {
        let err = from_crd(&crd("vms.quiver.dev")).expect_err("name mismatch");
        assert_eq!(err.code, 422);
        assert!(err.message.contains("metadata.name"), "{}", err.message);
    }
}
