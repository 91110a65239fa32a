//! The status a built-in workload (Deployment, DaemonSet, Service) starts with. The dev
//! control plane stores these kinds but runs no controller for them, and says so where users
//! look: a `Stored` condition in the status, shown by `kubectl get` (see `table.rs`).

use serde_json::{Value, json};

/// The condition's type, and the reason `kubectl get` shows in its Status column.
pub const CONDITION: &str = "Stored";
pub const REASON: &str = "StoredNotRun";

/// The initial status of a stored object of `kind` created at `now`, valid under the kind's
/// OpenAPI schema; `None` for kinds that are not stored-only workloads.
pub(super) fn initial_status(kind: &str, now: &str) -> Option<Value> {
    let message = match kind {
        "Deployment" | "DaemonSet" => format!(
            "the dev control plane stores this {kind} but runs no controller: no Pods are created"
        ),
        "Service" => "the dev control plane stores this Service but runs no proxy: it has no cluster IP or endpoints".to_string(),
        _ => return None,
    };
    let mut condition = json!({
        "type": CONDITION,
        "status": "True",
        "reason": REASON,
        "message": message,
        "lastTransitionTime": now,
    });
    Some(match kind {
        "Deployment" => {
            condition["lastUpdateTime"] = json!(now);
            json!({"conditions": [condition]})
        }
        // The four counts are required by the DaemonSet schema; nothing is scheduled.
        "DaemonSet" => json!({
            "currentNumberScheduled": 0,
            "desiredNumberScheduled": 0,
            "numberMisscheduled": 0,
            "numberReady": 0,
            "conditions": [condition],
        }),
        _ => json!({"loadBalancer": {}, "conditions": [condition]}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::builtins;

    #[test]
    fn every_stored_workload_starts_with_a_schema_valid_status() {
        let now = "2026-01-01T00:00:00Z";
        for kind in ["Deployment", "DaemonSet", "Service"] {
            let rt = builtins()
                .into_iter()
                .find(|t| t.kind == kind)
                .expect("a built-in kind");
            let schema = rt
                .version("v1")
                .and_then(|v| v.schema.clone())
                .expect("a schema");
            let status = initial_status(kind, now).expect("a stored kind");
            let mut obj = json!({"apiVersion": rt.api_version("v1"), "kind": kind,
                "metadata": {"name": "a", "namespace": "default"}, "status": status});
            let before = obj.clone();
            schema.prune(&mut obj);
            assert_eq!(obj, before, "{kind}: the schema prunes part of the status");
            assert!(
                schema.validate(&obj, None).is_empty(),
                "{kind}: {:?}",
                schema.validate(&obj, None)
            );
            assert_eq!(
                obj.pointer("/status/conditions/0/reason"),
                Some(&json!(REASON))
            );
        }
        assert_eq!(initial_status("ConfigMap", now), None);
    }
}
