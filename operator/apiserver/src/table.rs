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
    let mut out = vec![Column {
        format: "name".into(),
        description: "Name must be unique within a namespace.".into(),
        ..col("Name", "string", ".metadata.name")
    }];
    // The reason of the `Stored` condition the server sets on workloads it does not run.
    let stored_path = format!(
        ".status.conditions[?(@.type==\"{}\")].reason",
        crate::write::stored::CONDITION
    );
    let stored_status = || Column {
        description: "Stored (not run): no controller runs this kind in the dev control plane."
            .into(),
        ..col("Status", "string", &stored_path)
    };
    let custom = t
        .version(version)
        .map(|v| v.columns.clone())
        .unwrap_or_default();
    let builtin: Vec<Column> = match (t.group.as_str(), t.plural.as_str()) {
        ("", "namespaces") => vec![col("Status", "string", ".status.phase")],
        ("", "secrets") => vec![col("Type", "string", ".type")],
        ("coordination.k8s.io", "leases") => vec![col("Holder", "string", ".spec.holderIdentity")],
        // No controller runs workloads here: `Available` stays empty unless /status is written,
        // and Status shows the server's `Stored` condition.
        ("apps", "deployments") => vec![
            col("Replicas", "integer", ".spec.replicas"),
            col("Available", "integer", ".status.availableReplicas"),
            stored_status(),
        ],
        ("apps", "daemonsets") => vec![stored_status()],
        ("", "services") => vec![
            col("Type", "string", ".spec.type"),
            col("Cluster-IP", "string", ".spec.clusterIP"),
            stored_status(),
        ],
        ("", "events") => vec![
            col("Type", "string", ".type"),
            col("Reason", "string", ".reason"),
            col("Object", "string", ".involvedObject.name"),
            col("Message", "string", ".message"),
        ],
        ("apiextensions.k8s.io", _) => {
            vec![col("Created At", "date", ".metadata.creationTimestamp")]
        }
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
    let Some(path) = JsonPath::parse(&c.json_path) else {
        return Value::Null;
    };
    let values = path.eval(obj);
    match values.as_slice() {
        [] => Value::Null,
        [Value::String(t)] if c.type_ == "date" => Value::String(age(t)),
        [one] => match (c.type_.as_str(), one) {
            ("string" | "date", Value::String(_))
            | ("integer" | "number", Value::Number(_))
            | ("boolean", Value::Bool(_)) => (*one).clone(),
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

/// `date` cells are rendered as ages (`5m`, `2d3h`), as the Kubernetes table convertor does.
fn age(timestamp: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(timestamp) {
        Ok(t) => human_duration((chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_seconds()),
        Err(_) => "<invalid>".into(),
    }
}

/// Kubernetes' `HumanDuration`: coarser the older it gets.
pub fn human_duration(secs: i64) -> String {
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    let with = |big: i64, unit: &str, small: i64, sunit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{sunit}")
        }
    };
    match secs {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 120 => format!("{s}s"),
        _ if m < 10 => with(m, "m", secs % 60, "s"),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 => with(h, "h", m % 60, "m"),
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => with(d, "d", h % 24, "h"),
        _ if h < 24 * 365 * 2 => format!("{d}d"),
        _ if h < 24 * 365 * 8 => with(d / 365, "y", d % 365, "d"),
        _ => format!("{}y", d / 365),
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
pub fn table(
    cols: &[Column],
    objects: &[Arc<Value>],
    include: IncludeObject,
    list_meta: &Value,
) -> Value {
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
    fn ages_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600 * 5 + 60), "5h1m");
        assert_eq!(human_duration(86_400 * 3), "3d");
        assert_eq!(human_duration(86_400 * 400), "400d");
        assert_eq!(human_duration(86_400 * 800), "2y70d");
    }

    #[test]
    fn builtin_without_columns_gets_name_and_age() {
        let cm = builtins()
            .into_iter()
            .find(|t| t.plural == "configmaps")
            .expect("configmaps");
        let names: Vec<String> = columns(&cm, "v1").into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["Name", "Age"]);
    }

    #[test]
    fn rows_carry_cells_and_partial_metadata() {
        let cm = builtins()
            .into_iter()
            .find(|t| t.plural == "configmaps")
            .expect("configmaps");
        let cols = columns(&cm, "v1");
        let obj = json!({"metadata": {"name": "a", "creationTimestamp": "2026-01-01T00:00:00Z"}, "data": {}});
        let r = row(&cols, &obj, IncludeObject::Metadata);
        assert_eq!(r["cells"][0], "a");
        assert!(
            r["cells"][1]
                .as_str()
                .is_some_and(|age| age.ends_with('d') || age.ends_with('y')),
            "{}",
            r["cells"][1]
        );
        assert_eq!(r["object"]["kind"], "PartialObjectMetadata");
        assert!(r["object"].get("data").is_none());
    }
}
