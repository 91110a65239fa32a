//! Authentication results and RBAC authorization.
//!
//! Layout: `attributes` (the user, and a request's attributes read from its path),
//! `policy` (Roles, ClusterRoles and their bindings indexed by subject, plus the defaults
//! every authenticated user gets), `authorize` (the pure decision and the forbidden
//! message), `token` (ServiceAccount tokens: signed, expiring, bound to the account's uid).
//!
//! Goals: the decisions and 403 wording of Kubernetes' RBAC authorizer for ServiceAccount
//! tokens, cheap enough for every request (watches and discovery included), aggregated
//! ClusterRoles. Non-goals: impersonation, escalation checks on RBAC writes, user and group
//! credentials other than the admin token.

pub mod attributes;
pub mod authorize;
pub mod policy;
pub mod token;

#[cfg(test)]
mod tests;

pub use attributes::{Attributes, ResourceAttributes, User};
pub use authorize::{authorize, forbidden_message, rules_in};
pub use policy::{Objects, Policy};

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";
