//! POST: names (given or generated), namespaces, system metadata, admission.

use rand::Rng as _;
use serde_json::{Value, json};

use super::admit::{check_body, schema_of};
use super::{WriteOptions, Written, name_of, now, stored};
use crate::api::{Inner, Scope};
use crate::error::{ApiError, Cause, Result};
use crate::fields::record_update;
use crate::registry::Behavior;
use crate::untrusted;

/// Metadata the server sets on create, whatever the body says.
const SERVER_SET: &[&str] = &[
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
    "managedFields",
];

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
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl Inner {
    pub fn create(&mut self, scope: &Scope, obj: Value, opts: &WriteOptions) -> Result<Written> {
        let (obj, warnings) = self.prepare_create(scope, obj, opts)?;
        Ok(self.store_written(scope, obj, opts, warnings, true))
    }

    /// Everything a create does short of storing: the object in its stored form, and the
    /// warnings. Server-side apply of a new object starts from this too.
    pub(super) fn prepare_create(
        &self,
        scope: &Scope,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>)> {
        check_body(scope, &obj)?;
        untrusted::set(
            &mut obj,
            &["apiVersion"],
            Value::String(scope.rt.api_version(&scope.version)),
        )?;
        untrusted::set(&mut obj, &["kind"], Value::String(scope.rt.kind.clone()))?;
        if scope.rt.behavior == Behavior::EventsV1 {
            obj = crate::events::to_core(obj);
        }
        let name = assign_name(scope, &mut obj)?;
        Self::check_namespace(scope, &mut obj)?;
        self.namespace_accepts_creates(scope)?;
        if scope.rt.status_is_subresource(&scope.version) {
            untrusted::remove(&mut obj, "status");
        }
        let warnings = self.admit(scope, &mut obj, None, opts)?;
        if self.store.get(&scope.rt.key(), scope.ns(), &name).is_some() {
            return Err(ApiError::already_exists(
                &scope.rt.group,
                &scope.rt.plural,
                &name,
            ));
        }
        let meta = untrusted::object_at(&mut obj, &["metadata"])?;
        meta.insert(
            "uid".into(),
            Value::String(uuid::Uuid::new_v4().to_string()),
        );
        meta.insert("creationTimestamp".into(), Value::String(now()));
        for k in SERVER_SET {
            meta.remove(*k);
        }
        if scope.rt.has_generation() {
            meta.insert("generation".into(), json!(1));
        }
        record_update(
            None,
            &mut obj,
            &opts.manager,
            "",
            schema_of(scope).as_deref(),
        );
        // Set after the managers' field sets: no manager owns what the server says.
        if scope.rt.behavior == Behavior::SpecStatus
            && let Some(status) = stored::initial_status(&scope.rt.kind, &now())
        {
            untrusted::set(&mut obj, &["status"], status)?;
        }
        Ok((obj, warnings))
    }
}

/// The object's name: given, or generated from `generateName`; a DNS subdomain either way.
fn assign_name(scope: &Scope, obj: &mut Value) -> Result<String> {
    let invalid = |name: &str, cause: Cause| {
        ApiError::invalid(&scope.rt.group, &scope.rt.kind, name, vec![cause])
    };
    untrusted::object_at(obj, &["metadata"])?;
    if name_of(obj).is_empty() {
        let prefix = obj
            .pointer("/metadata/generateName")
            .and_then(Value::as_str)
            .filter(|p| !p.is_empty())
            .ok_or_else(|| invalid("", Cause::required("metadata.name")))?;
        let generated = format!("{prefix}{}", generate_suffix());
        untrusted::set(obj, &["metadata", "name"], Value::String(generated))?;
    }
    let name = name_of(obj).to_string();
    if !is_dns_subdomain(&name) {
        let msg = format!(
            "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        );
        return Err(invalid(&name, Cause::invalid("metadata.name", msg)));
    }
    Ok(name)
}
