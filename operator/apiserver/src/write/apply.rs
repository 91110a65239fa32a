//! Server-side apply (`application/apply-patch+yaml`): creates the object when it is absent,
//! otherwise merges the applied configuration with field ownership and conflicts.

use std::sync::Arc;

use serde_json::{Value, json};

use super::admit::{check_body, schema_of};
use super::{WriteOptions, Written, name_mismatch, name_of};
use crate::api::{Inner, Scope};
use crate::error::{ApiError, Result};
use crate::fields::server_side_apply;
use crate::untrusted;

impl Inner {
    pub(super) fn apply(
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
        let applied = applied_configuration(scope, name, body)?;
        match existing {
            None if !sub.is_empty() => {
                Err(ApiError::not_found(&scope.rt.group, &scope.rt.plural, name))
            }
            None => self.apply_create(scope, &applied, opts),
            Some(existing) => {
                let merged = server_side_apply(
                    &scope.present(&existing),
                    &applied,
                    &opts.manager,
                    opts.force,
                    sub,
                    schema_of(scope).as_deref(),
                )?;
                self.finish_update(scope, &existing, merged, sub, opts, "Apply")
            }
        }
    }

    /// Apply to an absent object: a create, owned by the applier.
    fn apply_create(
        &mut self,
        scope: &Scope,
        applied: &Value,
        opts: &WriteOptions,
    ) -> Result<Written> {
        let (mut obj, warnings) = self.prepare_create(scope, applied.clone(), opts)?;
        let base = json!({"metadata": {}});
        let owned = server_side_apply(
            &base,
            applied,
            &opts.manager,
            true,
            "",
            schema_of(scope).as_deref(),
        )?;
        let managed = owned
            .pointer("/metadata/managedFields")
            .cloned()
            .unwrap_or(Value::Null);
        untrusted::set(&mut obj, &["metadata", "managedFields"], managed)?;
        Ok(self.store_written(scope, obj, opts, warnings, true))
    }
}

/// The applied configuration: a checked body, named after the URL.
fn applied_configuration(scope: &Scope, name: &str, body: &[u8]) -> Result<Value> {
    let mut applied: Value = crate::server::body::yaml(body)?;
    check_body(scope, &applied)?;
    match name_of(&applied) {
        "" => untrusted::set(
            &mut applied,
            &["metadata", "name"],
            Value::String(name.to_string()),
        )?,
        given if given != name => return Err(name_mismatch(given, name)),
        _ => {}
    }
    Ok(applied)
}
