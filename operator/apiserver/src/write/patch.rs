//! PATCH with a merge, JSON or strategic merge patch: the patch is applied to the stored
//! object, and the result is checked as a PUT body would be. Apply patches go to `apply`.

use super::admit::check_body;
use super::{WriteOptions, Written, rv_text, stale};
use crate::api::{Inner, Scope};
use crate::error::{ApiError, Result};
use crate::patch::{PatchType, apply_patch};
use crate::registry::Behavior;

impl Inner {
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
        check_body(scope, &candidate)?;
        if rv_text(&candidate) != rv_text(&existing) {
            return Err(stale(scope, name));
        }
        self.finish_update(scope, &existing, candidate, sub, opts, "Update")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patched_object_is_checked_like_a_body() {
        let rt = crate::registry::Registry::with_builtins()
            .get("", "namespaces")
            .expect("namespaces");
        let scope = Scope {
            version: "v1".into(),
            rt,
            namespace: None,
        };
        let mut candidate =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}});
        apply_patch(&mut candidate, PatchType::Merge, br#"{"spec": "x"}"#).expect("merges");
        assert_eq!(
            check_body(&scope, &candidate)
                .expect_err("spec is a string")
                .code,
            400
        );
    }
}
