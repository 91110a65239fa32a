//! What authentication and authorization need from storage: the RBAC index (rebuilt from
//! the stored Roles, ClusterRoles and bindings whenever one of them changes, so a check
//! reads a ready index) and the uid of a ServiceAccount (tokens are bound to it).

use std::sync::Arc;

use serde_json::Value;

use crate::api::{Api, Inner};
use crate::rbac::{self, Objects, Policy};

impl Api {
    /// The RBAC index as of the last RBAC write.
    pub fn policy(&self) -> Arc<Policy> {
        self.lock().policy.clone()
    }

    /// The uid of a stored ServiceAccount.
    pub fn service_account_uid(&self, namespace: &str, name: &str) -> Option<String> {
        self.lock()
            .store
            .get("/serviceaccounts", namespace, name)
            .and_then(|sa| {
                sa.pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
    }
}

impl Inner {
    /// Rebuilds the RBAC index if `resource` (a store key) is an RBAC kind.
    pub(crate) fn rbac_changed(&mut self, resource: &str) {
        if resource
            .strip_prefix(rbac::GROUP)
            .is_some_and(|r| r.starts_with('/'))
        {
            self.rebuild_policy();
        }
    }

    pub(crate) fn rebuild_policy(&mut self) {
        let list = |plural: &str| self.store.list(&format!("{}/{plural}", rbac::GROUP), None);
        let (roles, cluster_roles) = (list("roles"), list("clusterroles"));
        let (role_bindings, cluster_role_bindings) =
            (list("rolebindings"), list("clusterrolebindings"));
        self.policy = Arc::new(Policy::build(&Objects {
            roles: &roles,
            cluster_roles: &cluster_roles,
            role_bindings: &role_bindings,
            cluster_role_bindings: &cluster_role_bindings,
        }));
    }
}
