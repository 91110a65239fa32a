//! The resource types the server knows: built-in kinds plus those that CRDs register.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;

use crate::schema::Schema;

mod crd;
mod openapi_types;

pub use crd::from_crd;

/// How a resource type behaves beyond plain storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    Plain,
    Namespace,
    Secret,
    Crd,
    Custom,
    /// events.k8s.io/v1 Event, stored as core/v1 Event.
    EventsV1,
    /// A create-only review (TokenReview, SelfSubjectAccessReview...): answered, never stored.
    Review,
    /// A built-in kind with a spec and a `/status` subresource (Deployments, DaemonSets,
    /// Services) that is only stored: no controller acts on it, so its status stays what
    /// was last written to `/status`.
    SpecStatus,
}

/// A printer column (`additionalPrinterColumns`).
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug, Clone)]
pub struct Version {
    pub name: String,
    pub storage: bool,
    pub schema: Option<Arc<Schema>>,
    pub raw_schema: Option<Value>,
    pub columns: Vec<Column>,
    pub status_subresource: bool,
    /// `subresources.scale`, when the version declares it.
    pub scale: Option<ScalePaths>,
}

/// Where a custom resource keeps what its `/scale` subresource shows (`.spec.replicas` style
/// JSON paths from `subresources.scale`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

/// A resource type such as `microvms.quiver.dev` or `configmaps`.
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub versions: Vec<Version>,
    pub behavior: Behavior,
}

impl ResourceType {
    /// Store key: `group/plural` (`/configmaps` for the core group).
    pub fn key(&self) -> String {
        if self.behavior == Behavior::EventsV1 {
            return "/events".into();
        }
        format!("{}/{}", self.group, self.plural)
    }

    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    pub fn storage_version(&self) -> &Version {
        self.versions
            .iter()
            .find(|v| v.storage)
            .unwrap_or(&self.versions[0])
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{version}", self.group)
        }
    }

    /// Objects with a spec get `metadata.generation`, bumped on spec change.
    pub fn has_generation(&self) -> bool {
        match self.behavior {
            Behavior::Custom | Behavior::Crd => true,
            // Workloads (apps/v1) count generations for their controllers; Services do not.
            Behavior::SpecStatus => self.group == "apps",
            _ => false,
        }
    }

    /// Whether `status` is written only through the `/status` subresource: the main
    /// resource keeps the stored status whatever a create, update or patch sends.
    pub fn status_is_subresource(&self, version: &str) -> bool {
        matches!(self.behavior, Behavior::Custom | Behavior::SpecStatus) && self.has_status(version)
    }

    pub fn has_status(&self, version: &str) -> bool {
        match self.behavior {
            Behavior::Custom => self.version(version).is_some_and(|v| v.status_subresource),
            Behavior::Crd | Behavior::Namespace | Behavior::SpecStatus => true,
            _ => false,
        }
    }

    /// Kinds whose Kubernetes registry sets `ReturnDeletedObject` answer a DELETE with the
    /// object; the others with a `Success` Status. Namespaces and CRDs always pass through
    /// a finalizer, so Kubernetes answers with the object for them too.
    pub fn returns_deleted_object(&self) -> bool {
        match self.behavior {
            Behavior::Namespace | Behavior::Crd => true,
            Behavior::Plain => {
                self.group.is_empty() && matches!(self.plural.as_str(), "serviceaccounts" | "pods")
            }
            Behavior::SpecStatus => self.group.is_empty() && self.plural == "services",
            Behavior::Secret | Behavior::Custom | Behavior::EventsV1 | Behavior::Review => false,
        }
    }

    pub fn scale(&self, version: &str) -> Option<&ScalePaths> {
        match self.behavior {
            Behavior::Custom | Behavior::SpecStatus => {
                self.version(version).and_then(|v| v.scale.as_ref())
            }
            _ => None,
        }
    }

    /// Subresources served at `version`, with their verbs, as discovery lists them.
    pub fn subresources(&self, version: &str) -> Vec<(&'static str, &'static [&'static str])> {
        const GET_UPDATE: &[&str] = &["get", "patch", "update"];
        let mut out = Vec::new();
        if self.has_status(version) {
            out.push(("status", GET_UPDATE));
        }
        if self.scale(version).is_some() {
            out.push(("scale", GET_UPDATE));
        }
        if self.group.is_empty() && self.plural == "serviceaccounts" {
            out.push(("token", &["create"][..]));
        }
        out
    }

    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    fn builtin(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        Self {
            group: group.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            kind: kind.into(),
            list_kind: format!("{kind}List"),
            namespaced,
            short_names: Vec::new(),
            categories: Vec::new(),
            versions: vec![Version {
                name: version.into(),
                storage: true,
                schema: None,
                raw_schema: None,
                columns: Vec::new(),
                status_subresource: false,
                scale: None,
            }],
            behavior: Behavior::Plain,
        }
    }

    /// A built-in kind described by its `k8s-openapi` type, checked against the schema
    /// generated from that type.
    fn typed<T: k8s_openapi::Resource + schemars::JsonSchema>(namespaced: bool) -> Self {
        let (schema, raw) = openapi_types::schema_of::<T>();
        let mut t = Self::builtin(
            T::GROUP,
            T::VERSION,
            T::KIND,
            T::URL_PATH_SEGMENT,
            namespaced,
        );
        t.versions[0].schema = Some(schema);
        t.versions[0].raw_schema = Some(raw);
        t
    }

    /// A `/scale` subresource over `spec.replicas` and `status.replicas`, whose selector is
    /// `spec.selector` written out as text, as Kubernetes does for Deployments.
    fn scaled(mut self) -> Self {
        self.versions[0].scale = Some(ScalePaths {
            spec_replicas: ".spec.replicas".into(),
            status_replicas: ".status.replicas".into(),
            label_selector: Some(".spec.selector".into()),
        });
        self
    }

    fn in_categories(mut self, categories: &[&str]) -> Self {
        self.categories = categories.iter().map(|s| (*s).to_string()).collect();
        self
    }

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_string()).collect();
        self
    }

    fn behave(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }
}

/// The built-in kinds served by the dev control plane. Their schemas are generated once.
pub fn builtins() -> Vec<ResourceType> {
    static BUILTINS: LazyLock<Vec<ResourceType>> = LazyLock::new(builtin_kinds);
    BUILTINS.clone()
}

fn builtin_kinds() -> Vec<ResourceType> {
    vec![
        ResourceType::builtin("", "v1", "Namespace", "namespaces", false)
            .short(&["ns"])
            .behave(Behavior::Namespace),
        ResourceType::typed::<ConfigMap>(true).short(&["cm"]),
        ResourceType::typed::<Secret>(true).behave(Behavior::Secret),
        ResourceType::builtin("", "v1", "Event", "events", true).short(&["ev"]),
        ResourceType::typed::<ServiceAccount>(true).short(&["sa"]),
        ResourceType::typed::<Service>(true)
            .short(&["svc"])
            .in_categories(&["all"])
            .behave(Behavior::SpecStatus),
        ResourceType::typed::<Deployment>(true)
            .short(&["deploy"])
            .in_categories(&["all"])
            .behave(Behavior::SpecStatus)
            .scaled(),
        ResourceType::typed::<DaemonSet>(true)
            .short(&["ds"])
            .in_categories(&["all"])
            .behave(Behavior::SpecStatus),
        ResourceType::builtin("events.k8s.io", "v1", "Event", "events", true)
            .short(&["ev"])
            .behave(Behavior::EventsV1),
        ResourceType::builtin("coordination.k8s.io", "v1", "Lease", "leases", true),
        ResourceType::builtin(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
        )
        .short(&["crd", "crds"])
        .behave(Behavior::Crd),
        ResourceType::typed::<Role>(true),
        ResourceType::typed::<ClusterRole>(false),
        ResourceType::typed::<RoleBinding>(true),
        ResourceType::typed::<ClusterRoleBinding>(false),
        review("authentication.k8s.io", "TokenReview", "tokenreviews"),
        review(
            "authentication.k8s.io",
            "SelfSubjectReview",
            "selfsubjectreviews",
        ),
        review(
            "authorization.k8s.io",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
        ),
        review(
            "authorization.k8s.io",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
        ),
        review(
            "authorization.k8s.io",
            "SubjectAccessReview",
            "subjectaccessreviews",
        ),
    ]
}

/// A cluster-scoped, create-only review kind.
fn review(group: &str, kind: &str, plural: &str) -> ResourceType {
    ResourceType::builtin(group, "v1", kind, plural, false).behave(Behavior::Review)
}

/// All known resource types, indexed for request routing.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_key: BTreeMap<String, Arc<ResourceType>>,
}

impl Registry {
    pub fn with_builtins() -> Self {
        let mut r = Self::default();
        for t in builtins() {
            r.insert(t);
        }
        r
    }

    pub fn insert(&mut self, t: ResourceType) {
        self.by_key
            .insert(format!("{}/{}", t.group, t.plural), Arc::new(t));
    }

    pub fn remove(&mut self, group: &str, plural: &str) {
        self.by_key.remove(&format!("{group}/{plural}"));
    }

    pub fn get(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.by_key.get(&format!("{group}/{plural}")).cloned()
    }

    /// The resource type serving `group/version` under the given plural name.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.get(group, plural)
            .filter(|t| t.version(version).is_some())
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.by_key.values()
    }

    /// Served group/versions, each with its resource types; core group first.
    pub fn group_versions(&self) -> BTreeMap<(String, String), Vec<Arc<ResourceType>>> {
        let mut out: BTreeMap<(String, String), Vec<Arc<ResourceType>>> = BTreeMap::new();
        for t in self.by_key.values() {
            for v in &t.versions {
                out.entry((t.group.clone(), v.name.clone()))
                    .or_default()
                    .push(t.clone());
            }
        }
        out
    }
}
