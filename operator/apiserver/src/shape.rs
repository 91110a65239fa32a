//! Type checks of request bodies against the Kubernetes types, as a real API server decodes
//! them: a Namespace whose `spec` is a string, or `metadata.labels` that is not a map of
//! strings, is a `400 BadRequest` before anything else looks at the body.
//!
//! Built-in kinds are checked against their full `k8s-openapi` type; custom resources only
//! in their `metadata` (the CRD's structural schema checks the rest). A missing required
//! field is not a type error here: admission reports it as `422 Invalid`, as Kubernetes does.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::events::v1::Event as EventV1;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::Scope;
use crate::error::{ApiError, Result};

/// Checks `obj` (in the request's version) against the type of `scope`'s kind.
pub fn check(scope: &Scope, obj: &Value) -> Result<()> {
    let rt = &scope.rt;
    let fail = |e: serde_json::Error| {
        let field = misplaced_field(scope, obj).map_or_else(String::new, |f| format!("{f}: "));
        ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: {field}{e}",
            kind = rt.kind,
            version = scope.version
        ))
    };
    let typed = match (rt.group.as_str(), rt.plural.as_str()) {
        ("", "namespaces") => decodes::<Namespace>(obj),
        ("", "configmaps") => decodes::<ConfigMap>(obj),
        ("", "secrets") => decodes::<Secret>(obj),
        ("", "serviceaccounts") => decodes::<ServiceAccount>(obj),
        ("", "services") => decodes::<Service>(obj),
        ("apps", "deployments") => decodes::<Deployment>(obj),
        ("apps", "daemonsets") => decodes::<DaemonSet>(obj),
        ("", "events") => decodes::<Event>(obj),
        ("events.k8s.io", "events") => decodes::<EventV1>(obj),
        ("coordination.k8s.io", "leases") => decodes::<Lease>(obj),
        (crate::rbac::GROUP, "roles") => decodes::<Role>(obj),
        (crate::rbac::GROUP, "clusterroles") => decodes::<ClusterRole>(obj),
        (crate::rbac::GROUP, "rolebindings") => decodes::<RoleBinding>(obj),
        (crate::rbac::GROUP, "clusterrolebindings") => decodes::<ClusterRoleBinding>(obj),
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            decodes::<CustomResourceDefinition>(obj)
        }
        _ => match obj.get("metadata") {
            Some(meta) => decodes::<ObjectMeta>(meta),
            None => Ok(()),
        },
    };
    typed.map_err(fail)
}

/// The first field whose JSON type the kind's schema refuses, so that a decoding error names
/// it as Kubernetes' does (`spec.replicas: invalid type: string "x", expected i32`).
fn misplaced_field(scope: &Scope, obj: &Value) -> Option<String> {
    let schema = scope.rt.version(&scope.version)?.schema.as_ref()?;
    schema
        .validate(obj, None)
        .into_iter()
        .find(|c| c.message.contains("must be of type"))
        .map(|c| c.field)
}

/// Checks a `DeleteOptions` body.
pub fn check_delete_options(body: &Value) -> Result<()> {
    decodes::<DeleteOptions>(body)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions body: {e}")))
}

fn decodes<T: DeserializeOwned>(v: &Value) -> Result<(), serde_json::Error> {
    match T::deserialize(v) {
        Ok(_) => Ok(()),
        Err(e) if e.to_string().starts_with("missing field") => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    fn scope(group: &str, plural: &str) -> Scope {
        let rt = Registry::with_builtins()
            .get(group, plural)
            .expect("built-in kind");
        Scope {
            version: rt.storage_version().name.clone(),
            rt,
            namespace: None,
        }
    }

    #[test]
    fn wrong_types_in_built_in_kinds_are_400() {
        let ns = scope("", "namespaces");
        for body in [
            json!({"spec": "x"}),
            json!({"metadata": {"labels": "x"}}),
            json!({"metadata": {"labels": {"a": 1}}}),
            json!({"metadata": "x"}),
            json!({"kind": 5}),
        ] {
            let err = check(&ns, &body).expect_err("wrong type");
            assert_eq!(err.code, 400, "{body}");
            assert!(err.message.contains("cannot be handled as a Namespace"));
        }
        check(
            &ns,
            &json!({"metadata": {"name": "a"}, "spec": {"finalizers": ["x"]}}),
        )
        .expect("well-typed");
        let secret = scope("", "secrets");
        check(&secret, &json!({"data": {"k": "not base64!"}})).expect_err("bad base64");
    }

    #[test]
    fn a_wrong_type_in_a_deployment_is_400_naming_the_field() {
        let body = json!({"metadata": {"name": "d"}, "spec": {"replicas": "x"}});
        let err = check(&scope("apps", "deployments"), &body).expect_err("replicas is a string");
        assert_eq!(err.code, 400);
        assert!(
            err.message.starts_with(
                "Deployment in version \"v1\" cannot be handled as a Deployment: spec.replicas: "
            ),
            "{}",
            err.message
        );
    }

    #[test]
    fn missing_required_fields_are_left_to_admission() {
        check(&scope("", "events"), &json!({"metadata": {"name": "e"}}))
            .expect("no involvedObject");
        check(
            &scope("apiextensions.k8s.io", "customresourcedefinitions"),
            &json!({"metadata": {"name": "x"}}),
        )
        .expect("no spec");
    }
}
