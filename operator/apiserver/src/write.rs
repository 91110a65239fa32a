//! Create, update and patch: admission (names, namespaces, schemas), the spec/status split,
//! generation, optimistic concurrency and field ownership.

use std::sync::Arc;

use base64::Engine as _;
use rand::Rng as _;
use serde_json::{Map, Value, json};

use crate::api::{Api, Inner, Scope};
use crate::error::{ApiError, Cause, Result};
use crate::fields::{record_update, server_side_apply};
use crate::patch::{PatchType, apply_patch};
use crate::registry::{Behavior, from_crd};
use crate::schema::Schema;

/// `fieldValidation=`: what to do with fields the schema does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FieldValidation {
    Ignore,
    #[default]
    Warn,
    Strict,
}

impl FieldValidation {
    pub fn parse(s: Option<&str>) -> Result<Self> {
        match s {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Ignore") => Ok(Self::Ignore),
            Some("Strict") => Ok(Self::Strict),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: unsupported value {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""
            ))),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub manager: String,
    pub validation: FieldValidation,
    pub dry_run: bool,
    pub force: bool,
}

/// The result of a write: the object as stored (or as it would be, for dry runs).
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub warnings: Vec<String>,
    pub created: bool,
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

impl Api {
    pub fn create(&self, scope: &Scope, body: Value, opts: &WriteOptions) -> Result<Written> {
        self.lock().create(scope, body, opts)
    }

    pub fn update(
        &self,
        scope: &Scope,
        name: &str,
        sub: &str,
        body: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let mut inner = self.lock();
        let written = inner.update(scope, name, sub, body, opts)?;
        inner.collect_garbage();
        Ok(written)
    }

    pub fn patch(
        &self,
        scope: &Scope,
        name: &str,
        sub: &str,
        kind: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Written> {
        let mut inner = self.lock();
        let written = inner.patch(scope, name, sub, kind, body, opts)?;
        inner.collect_garbage();
        Ok(written)
    }
}

impl Inner {
    fn check_envelope(scope: &Scope, obj: &Value) -> Result<()> {
        if !obj.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON or YAML object",
            ));
        }
        let want = scope.rt.api_version(&scope.version);
        if let Some(got) = obj.get("apiVersion").and_then(Value::as_str)
            && got != want
        {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({got}) does not match the expected API version ({want})"
            )));
        }
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != scope.rt.kind
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind ({})",
                scope.rt.kind
            )));
        }
        Ok(())
    }

    fn check_namespace(&self, scope: &Scope, obj: &mut Value) -> Result<()> {
        if !scope.rt.namespaced {
            if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                m.remove("namespace");
            }
            return Ok(());
        }
        let ns = scope.ns().to_string();
        match obj.pointer("/metadata/namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => obj["metadata"]["namespace"] = Value::String(ns),
        }
        Ok(())
    }

    fn namespace_accepts_creates(&self, scope: &Scope) -> Result<()> {
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

    /// Type-specific normalization, schema pruning/defaulting/validation.
    fn admit(
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
            Behavior::Namespace => {
                obj["spec"]["finalizers"] = json!(["kubernetes"]);
                if obj.pointer("/status/phase").is_none() {
                    obj["status"] = json!({"phase": "Active"});
                }
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] =
                    Value::String(name.clone());
            }
            Behavior::Crd => {
                from_crd(obj)?;
                establish_crd(obj);
            }
            Behavior::Plain | Behavior::Custom | Behavior::EventsV1 => {}
        }
        let schema: Option<Arc<Schema>> = rt.version(&scope.version).and_then(|v| v.schema.clone());
        let Some(schema) = schema else {
            return Ok(Vec::new());
        };
        let unknown = schema.prune(obj);
        let mut warnings = Vec::new();
        if !unknown.is_empty() {
            match opts.validation {
                FieldValidation::Strict => {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                        list.join(", "),
                        kind = rt.kind,
                        version = scope.version
                    )));
                }
                FieldValidation::Warn => {
                    warnings.extend(unknown.iter().map(|f| format!("unknown field \"{f}\"")));
                }
                FieldValidation::Ignore => {}
            }
        }
        schema.apply_defaults(obj);
        let causes = schema.validate(obj, old);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&rt.group, &rt.kind, &name, causes));
        }
        Ok(warnings)
    }

    pub fn create(
        &mut self,
        scope: &Scope,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        Self::check_envelope(scope, &obj)?;
        obj["apiVersion"] = Value::String(scope.rt.api_version(&scope.version));
        obj["kind"] = Value::String(scope.rt.kind.clone());
        if scope.rt.behavior == Behavior::EventsV1 {
            obj = crate::events::to_core(obj);
        }
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let generate = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .map(str::to_string);
        if name_of(&obj).is_empty() {
            match generate {
                Some(prefix) if !prefix.is_empty() => {
                    obj["metadata"]["name"] =
                        Value::String(format!("{prefix}{}", generate_suffix()));
                }
                _ => {
                    return Err(ApiError::invalid(
                        &scope.rt.group,
                        &scope.rt.kind,
                        "",
                        vec![Cause::required("metadata.name")],
                    ));
                }
            }
        }
        let name = name_of(&obj).to_string();
        if !is_dns_subdomain(&name) {
            let msg = format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            );
            return Err(ApiError::invalid(
                &scope.rt.group,
                &scope.rt.kind,
                &name,
                vec![Cause::invalid("metadata.name", msg)],
            ));
        }
        self.check_namespace(scope, &mut obj)?;
        self.namespace_accepts_creates(scope)?;
        if scope.rt.has_status(&scope.version)
            && scope.rt.behavior == Behavior::Custom
            && let Some(m) = obj.as_object_mut()
        {
            m.remove("status");
        }
        let warnings = self.admit(scope, &mut obj, None, opts)?;
        if self.store.get(&scope.rt.key(), scope.ns(), &name).is_some() {
            return Err(ApiError::already_exists(
                &scope.rt.group,
                &scope.rt.plural,
                &name,
            ));
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::internal("metadata is not an object"))?;
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now()));
        for k in [
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "resourceVersion",
            "managedFields",
        ] {
            meta.remove(k);
        }
        if scope.rt.has_generation() {
            meta.insert("generation".into(), json!(1));
        }
        let schema = scope
            .rt
            .version(&scope.version)
            .and_then(|v| v.schema.clone());
        record_update(None, &mut obj, &opts.manager, "", schema.as_deref());
        if opts.dry_run {
            return Ok(Written {
                object: obj,
                warnings,
                created: true,
            });
        }
        let stored = self.commit(scope, obj);
        Ok(Written {
            object: scope.present(&stored),
            warnings,
            created: true,
        })
    }

    /// Stores a written object and runs what follows a write (CRD serving, indexes).
    pub(crate) fn commit(&mut self, scope: &Scope, obj: Value) -> Arc<Value> {
        let stored = self.store.put(&scope.rt.key(), obj);
        self.index(&scope.rt.key(), &stored);
        if scope.rt.behavior == Behavior::Crd
            && let Ok(t) = from_crd(&stored)
        {
            self.registry.insert(t);
        }
        stored
    }

    pub fn update(
        &mut self,
        scope: &Scope,
        name: &str,
        sub: &str,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        Self::check_envelope(scope, &obj)?;
        let existing = self
            .store
            .get(&scope.rt.key(), scope.ns(), name)
            .ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))?;
        let given = name_of(&obj);
        if !given.is_empty() && given != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let given_rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let current_rv = existing
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if given_rv.is_empty() && scope.rt.behavior == Behavior::Custom {
            let cause = Cause::invalid(
                "metadata.resourceVersion",
                "Invalid value: 0x0: must be specified for an update",
            );
            return Err(ApiError::invalid(
                &scope.rt.group,
                &scope.rt.kind,
                name,
                vec![cause],
            ));
        }
        if !given_rv.is_empty() && given_rv != current_rv {
            return Err(ApiError::conflict(
                &scope.rt.group,
                &scope.rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        self.finish_update(scope, &existing, obj.take(), sub, opts, "Update")
    }

    pub fn patch(
        &mut self,
        scope: &Scope,
        name: &str,
        sub: &str,
        kind: PatchType,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Written> {
        let existing = self.store.get(&scope.rt.key(), scope.ns(), name);
        if kind == PatchType::Strategic && scope.rt.behavior == Behavior::Custom {
            return Err(ApiError::unsupported_media_type(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
            ));
        }
        if kind == PatchType::Apply {
            return self.apply(scope, name, sub, existing, body, opts);
        }
        let existing =
            existing.ok_or_else(|| ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))?;
        let mut candidate = scope.present(&existing);
        apply_patch(&mut candidate, kind, body)?;
        let want_rv = candidate
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if want_rv
            != existing
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
        {
            return Err(ApiError::conflict(
                &scope.rt.group,
                &scope.rt.plural,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            ));
        }
        self.finish_update(scope, &existing, candidate, sub, opts, "Update")
    }

    fn apply(
        &mut self,
        scope: &Scope,
        name: &str,
        sub: &str,
        existing: Option<Arc<Value>>,
        body: &[u8],
        opts: &WriteOptions,
    ) -> Result<Written> {
        if opts.manager.is_empty() {
            return Err(ApiError::bad_request(
                "PATCH requests with apply content type require a fieldManager",
            ));
        }
        let applied: Value = serde_yaml_ng::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
        Self::check_envelope(scope, &applied)?;
        let mut applied = applied;
        match name_of(&applied) {
            "" => {
                if !applied.get("metadata").is_some_and(Value::is_object) {
                    applied["metadata"] = json!({});
                }
                applied["metadata"]["name"] = Value::String(name.to_string());
            }
            given if given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
        let schema = scope
            .rt
            .version(&scope.version)
            .and_then(|v| v.schema.clone());
        let Some(existing) = existing else {
            if !sub.is_empty() {
                return Err(ApiError::not_found(&scope.rt.group, &scope.rt.plural, name));
            }
            let mut created = self.create(
                scope,
                applied.clone(),
                &WriteOptions {
                    dry_run: true,
                    ..opts.clone()
                },
            )?;
            let base = json!({"metadata": {}});
            let owned =
                server_side_apply(&base, &applied, &opts.manager, true, "", schema.as_deref())?;
            let mut obj = created.object.take();
            obj["metadata"]["managedFields"] = owned["metadata"]["managedFields"].clone();
            if opts.dry_run {
                created.object = obj;
                return Ok(created);
            }
            let stored = self.commit(scope, obj);
            return Ok(Written {
                object: scope.present(&stored),
                warnings: created.warnings,
                created: true,
            });
        };
        let current = scope.present(&existing);
        let merged = server_side_apply(
            &current,
            &applied,
            &opts.manager,
            opts.force,
            sub,
            schema.as_deref(),
        )?;
        self.finish_update(scope, &existing, merged, sub, opts, "Apply")
    }

    /// Shared tail of update and patch: spec/status split, immutable metadata, generation,
    /// admission, ownership, and the no-op and finalizer rules.
    fn finish_update(
        &mut self,
        scope: &Scope,
        existing: &Arc<Value>,
        mut obj: Value,
        sub: &str,
        opts: &WriteOptions,
        operation: &str,
    ) -> Result<Written> {
        let name = name_of(existing).to_string();
        let has_status = scope.rt.has_status(&scope.version);
        if !obj.get("metadata").is_some_and(Value::is_object) {
            obj["metadata"] = json!({});
        }
        let events_v1 = scope.rt.behavior == Behavior::EventsV1;
        if events_v1 {
            obj = crate::events::to_core(obj);
        }
        if sub == "status" {
            let status = obj.get("status").cloned();
            let managed = obj.pointer("/metadata/managedFields").cloned();
            obj = scope.present(existing);
            match status {
                Some(s) => obj["status"] = s,
                None => drop(obj.as_object_mut().map(|m| m.remove("status"))),
            }
            if let Some(m) = managed.filter(|_| operation == "Apply") {
                obj["metadata"]["managedFields"] = m;
            }
        } else if has_status && scope.rt.behavior == Behavior::Custom {
            match existing.get("status") {
                Some(s) => obj["status"] = s.clone(),
                None => drop(obj.as_object_mut().map(|m| m.remove("status"))),
            }
        }
        let meta = obj["metadata"]
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "generation",
        ] {
            match existing["metadata"].get(k) {
                Some(v) => meta.insert(k.into(), v.clone()),
                None => meta.remove(k),
            };
        }
        if existing.pointer("/metadata/deletionTimestamp").is_some() {
            let before: Vec<&Value> = existing
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default();
            let added = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|f| !before.contains(&f));
            if added {
                let cause = Cause {
                    reason: "FieldValueForbidden",
                    field: "metadata.finalizers".into(),
                    message:
                        "Forbidden: no new finalizers can be added if the object is being deleted"
                            .into(),
                };
                return Err(ApiError::invalid(
                    &scope.rt.group,
                    &scope.rt.kind,
                    &name,
                    vec![cause],
                ));
            }
        }
        let old = if events_v1 {
            (**existing).clone()
        } else {
            scope.present(existing)
        };
        let warnings = self.admit(scope, &mut obj, Some(&old), opts)?;
        if scope.rt.has_generation() && spec_changed(&old, &obj) {
            let g = existing
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            obj["metadata"]["generation"] = json!(g + 1);
        }
        if operation != "Apply" {
            let schema = scope
                .rt
                .version(&scope.version)
                .and_then(|v| v.schema.clone());
            record_update(Some(&old), &mut obj, &opts.manager, sub, schema.as_deref());
        }
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if same_ignoring_times(&old, &obj) {
            return Ok(Written {
                object: scope.present(existing),
                warnings,
                created: false,
            });
        }
        if opts.dry_run {
            return Ok(Written {
                object: scope.present(&obj),
                warnings,
                created: false,
            });
        }
        let finalized = obj.pointer("/metadata/deletionTimestamp").is_some()
            && obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(Vec::is_empty);
        if finalized {
            let gone = self.remove_now(scope, &name)?;
            return Ok(Written {
                object: scope.present(&gone),
                warnings,
                created: false,
            });
        }
        let stored = self.commit(scope, obj);
        Ok(Written {
            object: scope.present(&stored),
            warnings,
            created: false,
        })
    }
}

/// True when anything outside metadata and status differs (generation rule).
fn spec_changed(old: &Value, new: &Value) -> bool {
    let body = |v: &Value| -> Map<String, Value> {
        v.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "metadata" | "status"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    body(old) != body(new)
}

/// A write that changes nothing but managed-field timestamps is a no-op and is not stored.
fn same_ignoring_times(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(list) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in list {
                if let Some(m) = e.as_object_mut() {
                    m.remove("time");
                }
            }
        }
        v
    };
    strip(old) == strip(new)
}

fn normalize_secret(obj: &mut Value, name: &str) -> Result<()> {
    let Some(string_data) = obj.as_object_mut().and_then(|m| m.remove("stringData")) else {
        return Ok(());
    };
    let Value::Object(entries) = string_data else {
        return Err(ApiError::invalid(
            "",
            "Secret",
            name,
            vec![Cause::invalid(
                "stringData",
                "Invalid value: must be a map of strings",
            )],
        ));
    };
    for (k, v) in entries {
        let text = v.as_str().ok_or_else(|| {
            ApiError::invalid(
                "",
                "Secret",
                name,
                vec![Cause::invalid(
                    format!("stringData[{k}]"),
                    "Invalid value: must be a string",
                )],
            )
        })?;
        obj["data"][k] = Value::String(base64::engine::general_purpose::STANDARD.encode(text));
    }
    if obj.get("type").is_none() {
        obj["type"] = json!("Opaque");
    }
    Ok(())
}

fn establish_crd(obj: &mut Value) {
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
        .cloned()
        .unwrap_or_else(|| Value::String(now()));
    let cond = |t: &str, reason: &str, msg: &str| json!({"type": t, "status": "True", "reason": reason, "message": msg, "lastTransitionTime": since});
    obj["status"] = json!({
        "acceptedNames": names,
        "storedVersions": storage,
        "conditions": [cond("NamesAccepted", "NoConflicts", "no conflicts found"), cond("Established", "InitialNamesAccepted", "the initial names have been accepted")],
    });
}
