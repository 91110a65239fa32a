//! The RBAC decision: `(policy, user, attributes) → allowed or denied, with a reason`, the
//! rule matching of Kubernetes' `rbac/validation` (verbs, API groups, resources and
//! `resource/subresource`, `*/subresource`, resourceNames, nonResourceURLs with a trailing
//! `*`), and the forbidden message worded as the Kubernetes API server words it.

use super::attributes::{Attributes, ResourceAttributes, User};
use super::policy::{Binding, Policy, Rule};

/// The outcome of an authorization check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `RBAC: allowed by ...` when allowed; when denied, the missing roles met on the way
    /// (`RBAC: role.rbac.authorization.k8s.io "x" not found`) or empty.
    pub reason: String,
}

fn has(list: &[String], want: &str) -> bool {
    list.iter().any(|v| v == "*" || v == want)
}

fn resource_matches(rule: &Rule, r: &ResourceAttributes) -> bool {
    let combined = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    rule.resources.iter().any(|res| {
        res == "*"
            || *res == combined
            || (!r.subresource.is_empty() && res.strip_prefix("*/") == Some(r.subresource.as_str()))
    })
}

fn url_matches(rule: &Rule, path: &str) -> bool {
    rule.non_resource_urls.iter().any(|url| {
        url == "*"
            || url == path
            || url
                .strip_suffix('*')
                .is_some_and(|prefix| path.starts_with(prefix))
    })
}

/// Whether one rule allows the request.
pub fn rule_allows(rule: &Rule, attrs: &Attributes) -> bool {
    if !has(&rule.verbs, attrs.verb()) {
        return false;
    }
    match attrs {
        Attributes::Resource(r) => {
            has(&rule.api_groups, &r.group)
                && resource_matches(rule, r)
                && (rule.resource_names.is_empty()
                    || (!r.name.is_empty() && rule.resource_names.contains(&r.name)))
        }
        Attributes::NonResource { path, .. } => url_matches(rule, path),
    }
}

/// A binding applies cluster-wide (ClusterRoleBinding) or to resource requests in its
/// namespace (RoleBinding).
fn applies(binding: &Binding, attrs: &Attributes) -> bool {
    binding.namespace.is_empty()
        || matches!(attrs, Attributes::Resource(r) if r.namespace == binding.namespace)
}

pub fn authorize(policy: &Policy, user: &User, attrs: &Attributes) -> Decision {
    if user.is_admin() {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let mut errors = Vec::new();
    for binding in policy.bindings(&user.name, &user.groups) {
        if !applies(binding, attrs) {
            continue;
        }
        match policy.rules(binding) {
            Ok(rules) if rules.iter().any(|r| rule_allows(r, attrs)) => {
                return Decision {
                    allowed: true,
                    reason: format!("RBAC: allowed by {}", binding.describe()),
                };
            }
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    Decision {
        allowed: false,
        reason: if errors.is_empty() {
            String::new()
        } else {
            format!("RBAC: [{}]", errors.join(", "))
        },
    }
}

/// Every rule that applies to `user` in `namespace` (the cluster-wide ones included), for
/// `SelfSubjectRulesReview`; `incomplete` when a binding names a missing role.
pub fn rules_in(policy: &Policy, user: &User, namespace: &str) -> (Vec<Rule>, bool) {
    if user.is_admin() {
        let all = Rule {
            verbs: vec!["*".into()],
            api_groups: vec!["*".into()],
            resources: vec!["*".into()],
            ..Rule::default()
        };
        let urls = Rule {
            verbs: vec!["*".into()],
            non_resource_urls: vec!["*".into()],
            ..Rule::default()
        };
        return (vec![all, urls], false);
    }
    let mut out = Vec::new();
    let mut incomplete = false;
    for binding in policy.bindings(&user.name, &user.groups) {
        if !binding.namespace.is_empty() && binding.namespace != namespace {
            continue;
        }
        match policy.rules(binding) {
            Ok(rules) => out.extend(rules.iter().cloned()),
            Err(_) => incomplete = true,
        }
    }
    (out, incomplete)
}

/// `User "u" cannot get resource "microvms" in API group "quiver.dev" in the namespace "d"`.
pub fn forbidden_message(user: &User, attrs: &Attributes) -> String {
    match attrs {
        Attributes::NonResource { verb, path } => {
            format!("User {:?} cannot {verb} path {path:?}", user.name)
        }
        Attributes::Resource(r) => {
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace {:?}", r.namespace)
            };
            format!(
                "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
                user.name, r.verb, r.group
            )
        }
    }
}
