//! How a binary declares the Kubernetes API calls it makes, as RBAC rules: the operator's
//! and the agent's lists (`quiver_operator::rbac`, `quiver_agent::rbac`) are compared with the
//! Helm chart's rendered Roles by `tests/chart_rbac.rs`, so that the chart grants what the
//! code calls and nothing else.

/// Where a rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace, or a cluster-scoped resource: a ClusterRole.
    Cluster,
    /// One namespace the binary fixes: a Role there.
    Namespace(&'static str),
    /// One namespace the binary takes from its configuration (the named setting): a Role in
    /// the namespace the chart configures.
    Configured(&'static str),
}

/// One RBAC rule a binary needs.
#[derive(Clone, Copy, Debug)]
pub struct ApiAccess {
    pub scope: Scope,
    /// API group; `""` is the core group.
    pub group: &'static str,
    /// Resource, with `/subresource` where the call targets one.
    pub resource: &'static str,
    /// The object names the rule is limited to; empty: any (required for `create`, `list`
    /// and `watch`, which RBAC cannot limit by name).
    pub names: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// The Rust type the calls go through (`Api<Lease>`), or `Recorder` for Events: the test
    /// checks that `site` uses it, and that no other type is used outside these sites.
    pub kind: &'static str,
    /// The source file (from the repository root) that makes the calls.
    pub site: &'static str,
    /// Why the binary needs it.
    pub why: &'static str,
}
