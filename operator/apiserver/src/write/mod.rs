//! Writes, one file per verb: `create`, `update` (PUT, and the shared tail of every update),
//! `patch` (merge, JSON and strategic merge patches), `apply` (server-side apply), `status`
//! (the spec/status split of the status subresource), and `admit` (what every write passes:
//! type checks, limits, kind-specific normalization, structural schemas), `scale` (the
//! `/scale` subresource), `workload` (selector checks of Deployments and DaemonSets).
//!
//! Every body is untrusted: it is type-checked ([`crate::shape`]) and size-checked
//! ([`crate::untrusted`]) before the server writes into it, and every write into it is a
//! checked one, so a malformed body is a `4xx`, never a panic.

mod admit;
mod apply;
mod create;
mod patch;
mod scale;
mod status;
pub(crate) mod stored;
mod update;
mod workload;

pub use scale::ScaleBody;

use std::sync::Arc;

use serde_json::Value;

use crate::api::{Api, Inner, Scope};
use crate::error::{ApiError, Result};
use crate::patch::PatchType;
use crate::registry::{Behavior, from_crd};

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

fn rv_text(obj: &Value) -> &str {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn stale(scope: &Scope, name: &str) -> ApiError {
    ApiError::conflict(
        &scope.rt.group,
        &scope.rt.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

fn name_mismatch(given: &str, name: &str) -> ApiError {
    ApiError::bad_request(format!(
        "the name of the object ({given}) does not match the name on the URL ({name})"
    ))
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
    /// Stores a written object and runs what follows a write (CRD serving, indexes).
    pub(crate) fn commit(&mut self, scope: &Scope, obj: Value) -> Arc<Value> {
        let stored = self.store.put(&scope.rt.key(), obj);
        self.index(&scope.rt.key(), &stored);
        self.rbac_changed(&scope.rt.key());
        if scope.rt.behavior == Behavior::Crd
            && let Ok(t) = from_crd(&stored)
        {
            self.registry.insert(t);
        }
        stored
    }

    /// The answer to a write that went through: stored, or only computed for a dry run.
    fn store_written(
        &mut self,
        scope: &Scope,
        obj: Value,
        opts: &WriteOptions,
        warnings: Vec<String>,
        created: bool,
    ) -> Written {
        let object = if opts.dry_run {
            scope.present(&obj)
        } else {
            scope.present(&self.commit(scope, obj))
        };
        Written {
            object,
            warnings,
            created,
        }
    }
}
