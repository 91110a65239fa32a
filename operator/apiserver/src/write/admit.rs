//! What every write passes before it is stored: the envelope and type checks of the body,
//! namespaces, kind-specific normalization, size limits, the structural schema and, for
//! workloads, their selector.

use std::sync::Arc;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{FieldValidation, WriteOptions, name_of, now, workload};
use crate::api::{Inner, Scope};
use crate::error::{ApiError, Cause, Result};
use crate::registry::{Behavior, from_crd};
use crate::schema::Schema;
use crate::{shape, untrusted};

/// Checks a body (or a patched object) before the server writes into it: an object whose
/// `apiVersion` and `kind`, when given, are the request's, whose fields have the kind's types,
/// and that stays within the size and depth limits.
pub(super) fn check_body(scope: &Scope, obj: &Value) -> Result<()> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    let want = scope.rt.api_version(&scope.version);
    match obj.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(got)) if *got == want => {}
        Some(got) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({}) does not match the expected API version ({want})",
                untrusted_text(got)
            )));
        }
    }
    match obj.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if *kind == scope.rt.kind => {}
        Some(kind) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({}) does not match the expected kind ({})",
                untrusted_text(kind),
                scope.rt.kind
            )));
        }
    }
    untrusted::check_limits(obj)?;
    shape::check(scope, obj)
}

/// A value from a body, shortened for an error message.
fn untrusted_text(v: &Value) -> String {
    let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
    text.chars().take(64).collect()
}

/// The structural schema of the request's version, if the kind has one.
pub(super) fn schema_of(scope: &Scope) -> Option<Arc<Schema>> {
    scope
        .rt
        .version(&scope.version)
        .and_then(|v| v.schema.clone())
}

impl Inner {
    /// Sets the request's namespace on a namespaced object (refusing a different one), and
    /// drops any namespace from a cluster-scoped one.
    pub(super) fn check_namespace(scope: &Scope, obj: &mut Value) -> Result<()> {
        if !scope.rt.namespaced {
            if let Some(meta) = obj.get_mut("metadata") {
                untrusted::remove(meta, "namespace");
            }
            return Ok(());
        }
        let ns = scope.ns();
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )),
            _ => untrusted::set(obj, &["metadata", "namespace"], Value::String(ns.into())),
        }
    }

    pub(super) fn namespace_accepts_creates(&self, scope: &Scope) -> Result<()> {
        if !scope.rt.namespaced {
            return Ok(());
        }
        let ns = self
            .store
            .get("/namespaces", "", scope.ns())
            .ok_or_else(|| ApiError::not_found("", "namespaces", scope.ns()))?;
        if ns.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!(
                    "unable to create new content in namespace {} because it is being terminated",
                    scope.ns()
                ),
            ));
        }
        Ok(())
    }

    /// Kind-specific normalization, then schema pruning, defaulting and validation; returns
    /// the warnings for the response.
    pub(super) fn admit(
        &self,
        scope: &Scope,
        obj: &mut Value,
        old: Option<&Value>,
        opts: &WriteOptions,
    ) -> Result<Vec<String>> {
        let rt = &scope.rt;
        let name = name_of(obj).to_string();
        match rt.behavior {
            Behavior::Secret => normalize_secret(obj, &name)?,
            Behavior::Namespace => normalize_namespace(obj, &name)?,
            Behavior::Crd => {
                from_crd(obj)?;
                establish_crd(obj)?;
            }
            Behavior::Plain
            | Behavior::Custom
            | Behavior::EventsV1
            | Behavior::Review
            | Behavior::SpecStatus => {}
        }
        untrusted::check_limits(obj)?;
        let Some(schema) = schema_of(scope) else {
            return Ok(Vec::new());
        };
        let warnings = prune_unknown(scope, &schema, obj, opts.validation)?;
        schema.apply_defaults(obj);
        let mut causes = schema.validate(obj, old);
        if rt.behavior == Behavior::SpecStatus && rt.group == "apps" {
            causes.extend(workload::check(&rt.kind, obj, old));
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
        }
        to_storage_version(scope, obj)?;
        Ok(warnings)
    }
}

/// Converts a custom resource written at one version to the storage version as Kubernetes
/// does without a conversion webhook (strategy `None`: only `apiVersion` changes), then
/// prunes it to the storage version's schema. Reading at any version prunes again to that
/// version's schema (`Scope::present`), so a field survives only where every schema on its
/// way (written, stored, read) declares it.
fn to_storage_version(scope: &Scope, obj: &mut Value) -> Result<()> {
    let rt = &scope.rt;
    let storage = rt.storage_version();
    if rt.behavior != Behavior::Custom || storage.name == scope.version {
        return Ok(());
    }
    if let Some(schema) = &storage.schema {
        schema.prune(obj);
    }
    untrusted::set(
        obj,
        &["apiVersion"],
        Value::String(rt.api_version(&storage.name)),
    )
}

/// Prunes fields the schema does not know: an error with `fieldValidation=Strict`, warnings
/// with `Warn`, silence with `Ignore`.
fn prune_unknown(
    scope: &Scope,
    schema: &Schema,
    obj: &mut Value,
    validation: FieldValidation,
) -> Result<Vec<String>> {
    let unknown: Vec<String> = schema
        .prune(obj)
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match validation {
        _ if unknown.is_empty() => Ok(Vec::new()),
        FieldValidation::Strict => Err(ApiError::bad_request(format!(
            "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
            unknown.join(", "),
            kind = scope.rt.kind,
            version = scope.version
        ))),
        FieldValidation::Warn => Ok(unknown),
        FieldValidation::Ignore => Ok(Vec::new()),
    }
}

/// Namespaces always carry the `kubernetes` finalizer, a phase and their name label.
fn normalize_namespace(obj: &mut Value, name: &str) -> Result<()> {
    untrusted::set(obj, &["spec", "finalizers"], json!(["kubernetes"]))?;
    if obj.pointer("/status/phase").is_none() {
        untrusted::set(obj, &["status"], json!({"phase": "Active"}))?;
    }
    untrusted::set(
        obj,
        &["metadata", "labels", "kubernetes.io/metadata.name"],
        Value::String(name.to_string()),
    )
}

/// `stringData` is write-only: it is encoded into `data`.
fn normalize_secret(obj: &mut Value, name: &str) -> Result<()> {
    let invalid = |field: String, message: &str| {
        ApiError::invalid("", "Secret", name, vec![Cause::invalid(field, message)])
    };
    let Some(string_data) = untrusted::remove(obj, "stringData") else {
        return Ok(());
    };
    let entries = match string_data {
        Value::Object(entries) => entries,
        Value::Null => return Ok(()),
        _ => {
            return Err(invalid(
                "stringData".into(),
                "Invalid value: must be a map of strings",
            ));
        }
    };
    let data = untrusted::object_at(obj, &["data"])?;
    for (k, v) in entries {
        let text = v.as_str().ok_or_else(|| {
            invalid(
                format!("stringData[{k}]"),
                "Invalid value: must be a string",
            )
        })?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        data.insert(k, Value::String(encoded));
    }
    if obj.get("type").is_none() {
        untrusted::set(obj, &["type"], json!("Opaque"))?;
    }
    Ok(())
}

/// A registered CRD is accepted and established at once (no controller to wait for).
fn establish_crd(obj: &mut Value) -> Result<()> {
    let names = obj
        .pointer("/spec/names")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let storage: Vec<Value> = obj
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .filter_map(|v| v.get("name").cloned())
                .collect()
        })
        .unwrap_or_default();
    let since = obj
        .pointer("/status/conditions/0/lastTransitionTime")
        .filter(|t| t.is_string())
        .cloned()
        .unwrap_or_else(|| Value::String(now()));
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": since});
    untrusted::set(
        obj,
        &["status"],
        json!({
            "acceptedNames": names,
            "storedVersions": storage,
            "conditions": [cond("NamesAccepted", "NoConflicts", "no conflicts found"), cond("Established", "InitialNamesAccepted", "the initial names have been accepted")],
        }),
    )
}
