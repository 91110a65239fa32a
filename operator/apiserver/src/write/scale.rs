//! The `/scale` subresource of custom resources that declare `subresources.scale` (and of
//! Deployments): an `autoscaling/v1 Scale` read from the object at `specReplicasPath`,
//! `statusReplicasPath` and `labelSelectorPath`; a PUT, PATCH or server-side apply of the
//! Scale writes `spec.replicas` back to `specReplicasPath` and goes through the object's own
//! validation, as in Kubernetes. Field ownership is recorded on the object under the
//! subresource `scale`, so a manager's apply to `/scale` leaves what it applied to the object
//! itself alone.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::admit::schema_of;
use super::workload::selector_text;
use super::{WriteOptions, Written, name_mismatch, name_of, rv_text, stale};
use crate::api::{Api, Inner, Scope};
use crate::error::{ApiError, Cause, Result};
use crate::fields::server_side_apply;
use crate::patch::{PatchType, apply_patch};
use crate::registry::{Behavior, ScalePaths};
use crate::untrusted;

const SUBRESOURCE: &str = "scale";

/// `.spec.replicas` → `["spec", "replicas"]`.
fn segments(path: &str) -> Vec<&str> {
    path.split('.').filter(|s| !s.is_empty()).collect()
}

fn at<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    segments(path)
        .iter()
        .try_fold(obj, |v, key| v.as_object()?.get(*key))
}

/// The Scale of an object. Replicas that are absent read as 0; `spec.replicas` of 0 is left
/// out and `status.replicas` always shown, as the Go types serialize them. The selector is
/// the string at the selector path, or a `LabelSelector` object there in its text form.
pub fn scale_of(paths: &ScalePaths, obj: &Value) -> Value {
    let number = |path: &str| at(obj, path).and_then(Value::as_i64).unwrap_or(0);
    let mut metadata = Map::new();
    for key in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(v) = obj.pointer(&format!("/metadata/{key}")) {
            metadata.insert(key.into(), v.clone());
        }
    }
    let spec_replicas = number(&paths.spec_replicas);
    let spec = if spec_replicas == 0 {
        json!({})
    } else {
        json!({"replicas": spec_replicas})
    };
    let mut status = json!({"replicas": number(&paths.status_replicas)});
    if let Some(selector) = paths
        .label_selector
        .as_deref()
        .and_then(|p| at(obj, p))
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) => selector_text(v),
            _ => None,
        })
        .filter(|s| !s.is_empty())
    {
        status["selector"] = json!(selector);
    }
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": metadata, "spec": spec, "status": status})
}

/// The replicas a Scale body for object `name` asks for, refusing a body naming another object.
fn named_replicas(scale: &Value, name: &str) -> Result<i64> {
    let given = scale
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !given.is_empty() && given != name {
        return Err(name_mismatch(given, name));
    }
    requested_replicas(scale, name)
}

/// Checks a Scale body as Kubernetes does (kind, type and range of `spec.replicas`) and
/// returns the requested replicas.
pub fn requested_replicas(scale: &Value, name: &str) -> Result<i64> {
    if scale.get("kind").and_then(Value::as_str) != Some("Scale") {
        return Err(ApiError::bad_request(
            "the body of the request must be an autoscaling/v1 Scale",
        ));
    }
    let replicas = match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_i64().filter(|r| i32::try_from(*r).is_ok()).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: {} is not an int32",
                untrusted::type_name(v)
            ))
        })?,
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "autoscaling",
            "Scale",
            name,
            vec![Cause::invalid(
                "spec.replicas",
                format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            )],
        ));
    }
    Ok(replicas)
}

/// Writes `replicas` at `path`, creating the objects on the way.
fn set_at(obj: &mut Value, path: &str, replicas: i64) -> Result<()> {
    untrusted::set(obj, &segments(path), json!(replicas))
}

impl Api {
    pub fn get_scale(&self, scope: &Scope, name: &str) -> Result<Value> {
        let paths = paths(scope)?;
        Ok(scale_of(&paths, &self.get(scope, name)?))
    }

    /// PUT (`patch` `None`) or PATCH of the Scale.
    pub fn write_scale(
        &self,
        scope: &Scope,
        name: &str,
        body: ScaleBody<'_>,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let paths = paths(scope)?;
        let mut inner = self.lock();
        let written = inner.write_scale(scope, &paths, name, body, opts)?;
        inner.collect_garbage();
        Ok(Written {
            object: scale_of(&paths, &written.object),
            ..written
        })
    }
}

/// What a Scale write carries.
pub enum ScaleBody<'a> {
    Put(Value),
    Patch(PatchType, &'a [u8]),
}

fn paths(scope: &Scope) -> Result<ScalePaths> {
    scope
        .rt
        .scale(&scope.version)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, "scale"))
}

impl Inner {
    fn write_scale(
        &mut self,
        scope: &Scope,
        paths: &ScalePaths,
        name: &str,
        body: ScaleBody<'_>,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let existing = self
            .store
            .get(&scope.rt.key(), scope.ns(), name)
            .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))?;
        let current = scope.present(&existing);
        let scale = match body {
            ScaleBody::Put(v) => v,
            // Custom resources have no strategic merge; built-in kinds do.
            ScaleBody::Patch(PatchType::Strategic, _) if scope.rt.behavior == Behavior::Custom => {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            ScaleBody::Patch(PatchType::Apply, applied) => {
                return self.apply_scale(scope, paths, &existing, applied, opts);
            }
            ScaleBody::Patch(kind, patch) => {
                let mut scale = scale_of(paths, &current);
                apply_patch(&mut scale, kind, patch)?;
                scale
            }
        };
        let replicas = named_replicas(&scale, name)?;
        let given_rv = scale
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !given_rv.is_empty() && given_rv != rv_text(&existing) {
            return Err(stale(scope, name));
        }
        let mut obj = current;
        set_at(&mut obj, &paths.spec_replicas, replicas)?;
        self.finish_update(scope, &existing, obj, SUBRESOURCE, opts, "Update")
    }

    /// Server-side apply of a Scale: the manager's applied `spec.replicas` becomes an applied
    /// configuration of the object holding only the replicas path, owned under `scale`.
    fn apply_scale(
        &mut self,
        scope: &Scope,
        paths: &ScalePaths,
        existing: &Arc<Value>,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Written> {
        let name = name_of(existing);
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH requests with apply content type require a fieldManager",
            ));
        }
        let scale: Value = crate::server::body::yaml(body)?;
        let replicas = named_replicas(&scale, name)?;
        let mut applied = json!({"apiVersion": scope.rt.api_version(&scope.version),
            "kind": scope.rt.kind, "metadata": {"name": name}});
        if scale
            .pointer("/spec/replicas")
            .is_some_and(|r| !r.is_null())
        {
            set_at(&mut applied, &paths.spec_replicas, replicas)?;
        }
        let merged = server_side_apply(
            &scope.present(existing),
            &applied,
            &opts.manager,
            opts.force,
            SUBRESOURCE,
            schema_of(scope).as_deref(),
        )?;
        self.finish_update(scope, existing, merged, SUBRESOURCE, opts, "Apply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> ScalePaths {
        ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".status.selector".into()),
        }
    }

    #[test]
    fn scale_reads_the_declared_paths() {
        let obj = json!({"metadata": {"name": "a", "namespace": "default", "uid": "u", "resourceVersion": "7", "labels": {"x": "y"}},
            "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=a"}});
        assert_eq!(
            scale_of(&paths(), &obj),
            json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": "a", "namespace": "default", "uid": "u", "resourceVersion": "7"},
                "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=a"}})
        );
    }

    #[test]
    fn absent_replicas_read_as_zero() {
        let scale = scale_of(&paths(), &json!({"metadata": {"name": "a"}}));
        assert_eq!(scale["spec"], json!({}));
        assert_eq!(scale["status"], json!({"replicas": 0}));
    }

    #[test]
    fn negative_or_mistyped_replicas_are_refused() {
        let scale = |r: Value| json!({"kind": "Scale", "spec": {"replicas": r}});
        assert_eq!(requested_replicas(&scale(json!(4)), "a").ok(), Some(4));
        assert_eq!(
            requested_replicas(&scale(json!(-1)), "a")
                .map_err(|e| e.code)
                .err(),
            Some(422)
        );
        assert_eq!(
            requested_replicas(&scale(json!("3")), "a")
                .map_err(|e| e.code)
                .err(),
            Some(400)
        );
        assert_eq!(
            requested_replicas(&json!({"spec": {}}), "a")
                .map_err(|e| e.code)
                .err(),
            Some(400)
        );
    }

    #[test]
    fn replicas_are_written_through_missing_objects() {
        let mut obj = json!({"metadata": {"name": "a"}});
        set_at(&mut obj, ".spec.replicas", 5).expect("set");
        assert_eq!(obj["spec"]["replicas"], 5);
        let mut bad = json!({"spec": "text"});
        assert!(set_at(&mut bad, ".spec.replicas", 5).is_err());
    }
}
