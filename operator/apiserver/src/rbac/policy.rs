//! The RBAC objects (Roles, ClusterRoles, RoleBindings, ClusterRoleBindings) as one index
//! built when any of them changes: roles by name, and bindings by subject, so that deciding
//! a request looks only at the bindings of its user and groups.
//!
//! The defaults Kubernetes grants every authenticated user (`system:discovery`,
//! `system:basic-user`, `system:public-info-viewer`, bound to `system:authenticated`) are
//! part of every index; stored ClusterRoles of the same names replace their rules.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::attributes::AUTHENTICATED;

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

impl Rule {
    fn parse(v: &Value) -> Self {
        let strings = |k: &str| -> Vec<String> {
            v.get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        Self {
            verbs: strings("verbs"),
            api_groups: strings("apiGroups"),
            resources: strings("resources"),
            resource_names: strings("resourceNames"),
            non_resource_urls: strings("nonResourceURLs"),
        }
    }

    fn non_resource(verbs: &[&str], urls: &[&str]) -> Self {
        Self {
            verbs: verbs.iter().map(|s| (*s).to_string()).collect(),
            non_resource_urls: urls.iter().map(|s| (*s).to_string()).collect(),
            ..Self::default()
        }
    }

    fn resource(verbs: &[&str], group: &str, resources: &[&str]) -> Self {
        Self {
            verbs: verbs.iter().map(|s| (*s).to_string()).collect(),
            api_groups: vec![group.to_string()],
            resources: resources.iter().map(|s| (*s).to_string()).collect(),
            ..Self::default()
        }
    }
}

/// What a binding refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRef {
    /// `Role` or `ClusterRole`.
    pub kind: String,
    pub name: String,
}

/// One subject of one binding, as the index keeps it.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Empty for a ClusterRoleBinding.
    pub namespace: String,
    pub name: String,
    pub role: RoleRef,
    /// `User "x"`, `Group "x"` or `ServiceAccount "name/ns"`, for reasons.
    pub subject: String,
}

impl Binding {
    /// `RoleBinding "name/ns" of Role "r" to ServiceAccount "sa/ns"`, as Kubernetes words it.
    pub fn describe(&self) -> String {
        if self.namespace.is_empty() {
            format!(
                "ClusterRoleBinding {:?} of {} {:?} to {}",
                self.name, self.role.kind, self.role.name, self.subject
            )
        } else {
            format!(
                "RoleBinding {:?} of {} {:?} to {}",
                format!("{}/{}", self.name, self.namespace),
                self.role.kind,
                self.role.name,
                self.subject
            )
        }
    }
}

/// The RBAC index.
#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<(String, String), Arc<Vec<Rule>>>,
    cluster_roles: HashMap<String, Arc<Vec<Rule>>>,
    /// User name (ServiceAccounts as `system:serviceaccount:ns:name`) → bindings.
    by_user: HashMap<String, Vec<Binding>>,
    by_group: HashMap<String, Vec<Binding>>,
}

/// The RBAC objects a policy is built from, as stored.
#[derive(Default)]
pub struct Objects<'a> {
    pub roles: &'a [Arc<Value>],
    pub cluster_roles: &'a [Arc<Value>],
    pub role_bindings: &'a [Arc<Value>],
    pub cluster_role_bindings: &'a [Arc<Value>],
}

fn text<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_default()
}

fn rules_of(role: &Value) -> Arc<Vec<Rule>> {
    Arc::new(
        role.get("rules")
            .and_then(Value::as_array)
            .map(|rules| rules.iter().map(Rule::parse).collect())
            .unwrap_or_default(),
    )
}

impl Policy {
    pub fn build(objects: &Objects<'_>) -> Self {
        let mut policy = Self::default();
        policy.add_defaults();
        for role in objects.roles {
            let key = (
                text(role, "/metadata/namespace").to_string(),
                text(role, "/metadata/name").to_string(),
            );
            policy.roles.insert(key, rules_of(role));
        }
        for role in objects.cluster_roles {
            policy
                .cluster_roles
                .insert(text(role, "/metadata/name").to_string(), rules_of(role));
        }
        for role in objects.cluster_roles {
            if let Some(selectors) = role
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
            {
                let name = text(role, "/metadata/name");
                let rules = aggregate(name, selectors, objects.cluster_roles);
                policy
                    .cluster_roles
                    .insert(name.to_string(), Arc::new(rules));
            }
        }
        for binding in objects
            .role_bindings
            .iter()
            .chain(objects.cluster_role_bindings)
        {
            policy.add_binding(binding);
        }
        policy
    }

    fn add_defaults(&mut self) {
        // Bound to nobody by default (the admin token passes every check anyway), but
        // bindings may name it, as charts and users do.
        let everything = vec![
            Rule {
                verbs: vec!["*".into()],
                api_groups: vec!["*".into()],
                resources: vec!["*".into()],
                ..Rule::default()
            },
            Rule::non_resource(&["*"], &["*"]),
        ];
        self.cluster_roles
            .insert("cluster-admin".into(), Arc::new(everything));
        let defaults = [
            (
                "system:discovery",
                vec![Rule::non_resource(
                    &["get"],
                    &[
                        "/api",
                        "/api/*",
                        "/apis",
                        "/apis/*",
                        "/healthz",
                        "/livez",
                        "/readyz",
                        "/openapi",
                        "/openapi/*",
                        "/version",
                        "/version/",
                    ],
                )],
            ),
            (
                "system:basic-user",
                vec![
                    Rule::resource(
                        &["create"],
                        "authorization.k8s.io",
                        &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    ),
                    Rule::resource(
                        &["create"],
                        "authentication.k8s.io",
                        &["selfsubjectreviews"],
                    ),
                ],
            ),
            (
                "system:public-info-viewer",
                vec![Rule::non_resource(
                    &["get"],
                    &["/healthz", "/livez", "/readyz", "/version", "/version/"],
                )],
            ),
        ];
        for (name, rules) in defaults {
            self.cluster_roles.insert(name.into(), Arc::new(rules));
            self.by_group
                .entry(AUTHENTICATED.into())
                .or_default()
                .push(Binding {
                    namespace: String::new(),
                    name: name.into(),
                    role: RoleRef {
                        kind: "ClusterRole".into(),
                        name: name.into(),
                    },
                    subject: format!("Group {AUTHENTICATED:?}"),
                });
        }
    }

    fn add_binding(&mut self, binding: &Value) {
        let namespace = text(binding, "/metadata/namespace").to_string();
        let role = RoleRef {
            kind: text(binding, "/roleRef/kind").to_string(),
            name: text(binding, "/roleRef/name").to_string(),
        };
        let name = text(binding, "/metadata/name").to_string();
        for subject in binding
            .get("subjects")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let subject_name = text(subject, "/name");
            let (map, key, described) = match text(subject, "/kind") {
                "User" => (
                    &mut self.by_user,
                    subject_name.to_string(),
                    format!("User {subject_name:?}"),
                ),
                "Group" => (
                    &mut self.by_group,
                    subject_name.to_string(),
                    format!("Group {subject_name:?}"),
                ),
                "ServiceAccount" => {
                    // In a RoleBinding a ServiceAccount without a namespace is the binding's.
                    let ns = match text(subject, "/namespace") {
                        "" => namespace.as_str(),
                        ns => ns,
                    };
                    (
                        &mut self.by_user,
                        format!("system:serviceaccount:{ns}:{subject_name}"),
                        format!("ServiceAccount {:?}", format!("{subject_name}/{ns}")),
                    )
                }
                _ => continue,
            };
            map.entry(key).or_default().push(Binding {
                namespace: namespace.clone(),
                name: name.clone(),
                role: role.clone(),
                subject: described,
            });
        }
    }

    /// The bindings that name `user` or one of `groups`.
    pub fn bindings<'a>(
        &'a self,
        user: &str,
        groups: &'a [String],
    ) -> impl Iterator<Item = &'a Binding> + 'a {
        self.by_user
            .get(user)
            .into_iter()
            .chain(groups.iter().filter_map(|g| self.by_group.get(g)))
            .flatten()
    }

    /// The rules a binding grants, or the error Kubernetes reports for a missing role.
    pub fn rules(&self, binding: &Binding) -> Result<Arc<Vec<Rule>>, String> {
        let found = match binding.role.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&binding.role.name),
            "Role" => self
                .roles
                .get(&(binding.namespace.clone(), binding.role.name.clone())),
            _ => None,
        };
        found.cloned().ok_or_else(|| {
            format!(
                "{}.rbac.authorization.k8s.io {:?} not found",
                binding.role.kind.to_ascii_lowercase(),
                binding.role.name
            )
        })
    }
}

/// The rules of an aggregated ClusterRole: those of every other ClusterRole whose labels
/// match one of its `clusterRoleSelectors`, in name order without repeats, as Kubernetes'
/// aggregation controller computes them (here in the index; the stored object keeps its own
/// `rules`).
fn aggregate(name: &str, selectors: &[Value], cluster_roles: &[Arc<Value>]) -> Vec<Rule> {
    let mut sources: Vec<&Arc<Value>> = cluster_roles
        .iter()
        .filter(|r| text(r, "/metadata/name") != name)
        .filter(|r| {
            let labels = r.pointer("/metadata/labels");
            selectors.iter().any(|s| selector_matches(s, labels))
        })
        .collect();
    sources.sort_by_key(|r| text(r, "/metadata/name"));
    let mut rules: Vec<Rule> = Vec::new();
    for source in sources {
        for rule in rules_of(source).iter() {
            if !rules.contains(rule) {
                rules.push(rule.clone());
            }
        }
    }
    rules
}

/// A `LabelSelector` (`matchLabels`, `matchExpressions` with In, NotIn, Exists,
/// DoesNotExist) against an object's labels. An empty selector matches everything; an
/// unknown operator matches nothing.
fn selector_matches(selector: &Value, labels: Option<&Value>) -> bool {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    let match_labels = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| label(k) == v.as_str());
    let expressions = selector
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .all(|e| {
            let key = text(e, "/key");
            let values: Vec<&str> = e
                .get("values")
                .and_then(Value::as_array)
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            match text(e, "/operator") {
                "In" => label(key).is_some_and(|v| values.contains(&v)),
                "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                "Exists" => label(key).is_some(),
                "DoesNotExist" => label(key).is_none(),
                _ => false,
            }
        });
    match_labels && expressions
}
