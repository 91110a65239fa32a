//! `as=Table` responses: the server-side printing kubectl uses for `kubectl get`.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::jsonpath::JsonPath;
use crate::registry::{Column, ResourceType};

/// What each row carries besides its cells (`includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Self {
        match s {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

/// The columns for a resource: Name first, then the CRD's printer columns (or built-in ones),
/// with Age when the definition has no columns of its own.
pub fn columns(t: &ResourceType, version: &str) -> Vec<Column> {
    let col = |name: &str, type_: &str, path: &str| Column {
        name: name.into(),
        type_: type_.into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: path.into(),
    };
    let mut out = vec![Column { format: "name".into(), description: "Name must be unique within a namespace.".into(), ..col("Name", "string", ".metadata.name") }];
    let custom = t.version(version).map(|v| v.columns.clone()).unwrap_or_default();
    let builtin: Vec<Column> = match (t.group.as_str(), t.plural.as_str()) {
        ("", "namespaces") => vec![col("Status", "string", ".status.phase")],
        ("", "secrets") => vec![col("Type", "string", ".type")],
        ("coordination.k8s.io", "leases") => vec![col("Holder", "string", ".spec.holderIdentity")],
        ("", "events") => vec![col("Type", "string", ".type"), col("Reason", "string", ".reason"), col("Object", "string", ".involvedObject.name"), col("Message", "string", ".message")],
        ("apiextensions.k8s.io", _) => vec![col("Created At", "date", ".metadata.creationTimestamp")],
        _ => Vec::new(),
    };
    if custom.is_empty() && builtin.is_empty() {
        out.push(col("Age", "date", ".metadata.creationTimestamp"));
    } else if custom.is_empty() {
        out.extend(builtin);
        if !out.iter().any(|c| c.type_ == "date") {
            out.push(col("Age", "date", ".metadata.creationTimestamp"));
        }
    } else {
        out.extend(custom);
    }
    out
}

fn cell(c: &Column, obj: &Value) -> Value {
    let Some(path) = JsonPath::parse(&c.json_path) else { return Value::Null };
    let values = path.eval(obj);
    match values.as_slice() {
        [] => Value::Null,
        [one] => match (c.type_.as_str(), one) {
            ("string" | "date", Value::String(_)) | ("integer" | "number", Value::Number(_)) | ("boolean", Value::Bool(_)) => (*one).clone(),
            ("string", other) => Value::String(other.to_string()),
            _ => (*one).clone(),
        },
        many => Value::String(
            many.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect::<Vec<_>>()
                .join(","),
        ),
    }
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

pub fn row(cols: &[Column], obj: &Value, include: IncludeObject) -> Value {
    let cells: Vec<Value> = cols.iter().map(|c| cell(c, obj)).collect();
    let mut row = json!({"cells": cells});
    match include {
        IncludeObject::None => {}
        IncludeObject::Metadata => row["object"] = partial_metadata(obj),
        IncludeObject::Object => row["object"] = obj.clone(),
    }
    row
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table(cols: &[Column], objects: &[Arc<Value>], include: IncludeObject, list_meta: Value) -> Value {
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": c.type_, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects.iter().map(|o| row(cols, o, include)).collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtins;

    #[test]
    fn builtin_without_columns_gets_name_and_age() {
        let cm = builtins().into_iter().find(|t| t.plural == "configmaps").expect("configmaps");
        let names: Vec<String> = columns(&cm, "v1").into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Age"]);
    }

    #[test]
    fn rows_carry_cells_and_partial_metadata() {
        let cm = builtins().into_iter().find(|t| t.plural == "configmaps").expect("configmaps");
        let cols = columns(&cm, "v1");
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {}});
        let r = row(&cols, &obj, IncludeObject::Metadata);
        assert_eq!(r["cells"], json!(["a", "2026-01-01T00:00:00Z"]));
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert!(r["object"].get("data").is_none());
    }
}
