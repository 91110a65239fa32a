//! `events.k8s.io/v1` Events are stored as `core/v1` Events, as in Kubernetes, so an event a
//! controller records through either API shows in `kubectl describe` (which reads core/v1).

use serde_json::{Map, Value};

/// `(events.k8s.io/v1 field, core/v1 field)`.
const RENAMES: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedCount", "count"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedSource", "source"),
];

fn rename(obj: Value, api_version: &str, from_v1: bool) -> Value {
    let Value::Object(map) = obj else { return obj };
    let mut out = Map::with_capacity(map.len());
    for (k, v) in map {
        let key = RENAMES
            .iter()
            .find(|(v1, core)| if from_v1 { *v1 == k } else { *core == k })
            .map_or(k.clone(), |(v1, core)| {
                if from_v1 {
                    (*core).to_string()
                } else {
                    (*v1).to_string()
                }
            });
        out.insert(key, v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    Value::Object(out)
}

/// An events.k8s.io/v1 Event in its stored (core/v1) form.
pub fn to_core(v1: Value) -> Value {
    let mut core = rename(v1, "v1", true);
    if core.get("source").is_none()
        && let Some(c) = core.get("reportingComponent").cloned()
        && let Some(m) = core.as_object_mut()
    {
        m.insert("source".into(), serde_json::json!({"component": c}));
    }
    core
}

/// A stored Event as events.k8s.io/v1 presents it.
pub fn to_v1(core: &Value) -> Value {
    rename(core.clone(), "events.k8s.io/v1", false)
}

/// Field selector names of events.k8s.io/v1 in core/v1 terms.
pub fn core_field(field: &str) -> String {
    // `field` is a whole requirement (`reportingController=x`): the name ends at `.`, `=`
    // or `!`.
    let end = field.find(['.', '=', '!']).unwrap_or(field.len());
    let (head, rest) = (&field[..end], &field[end..]);
    let head = RENAMES
        .iter()
        .find(|(v1, _)| *v1 == head)
        .map_or(head, |(_, core)| core);
    format!("{head}{rest}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_core() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "MicroVM", "name": "demo"}, "note": "booted", "reason": "Started",
            "reportingController": "quiver-operator", "type": "Normal"});
        let core = to_core(v1.clone());
        assert_eq!(core["involvedObject"]["name"], "demo");
        assert_eq!(core["message"], "booted");
        assert_eq!(core["source"]["component"], "quiver-operator");
        let back = to_v1(&core);
        assert_eq!(back["regarding"], v1["regarding"]);
        assert_eq!(back["note"], "booted");
        assert_eq!(core_field("regarding.name"), "involvedObject.name");
        assert_eq!(core_field("reason"), "reason");
        assert_eq!(core_field("reportingController=a"), "reportingComponent=a");
        assert_eq!(core_field("regarding.kind!=W"), "involvedObject.kind!=W");
    }
}
