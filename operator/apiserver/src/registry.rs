//! The resource types the server knows: built-in kinds plus those that CRDs register.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ApiError, Cause, Result};
use crate::schema::Schema;

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
        matches!(self.behavior, Behavior::Custom | Behavior::Crd)
    }

    pub fn has_status(&self, version: &str) -> bool {
        match self.behavior {
            Behavior::Custom => self.version(version).is_some_and(|v| v.status_subresource),
            Behavior::Crd | Behavior::Namespace => true,
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
                self.group.is_empty()
                    && matches!(
                        self.plural.as_str(),
                        "serviceaccounts" | "pods" | "services"
                    )
            }
            Behavior::Secret | Behavior::Custom | Behavior::EventsV1 | Behavior::Review => false,
        }
    }

    pub fn scale(&self, version: &str) -> Option<&ScalePaths> {
        match self.behavior {
            Behavior::Custom => self.version(version).and_then(|v| v.scale.as_ref()),
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

    fn short(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|s| (*s).to_string()).collect();
        self
    }

    fn behave(mut self, behavior: Behavior) -> Self {
        self.behavior = behavior;
        self
    }
}

/// The built-in kinds served by the dev control plane.
pub fn builtins() -> Vec<ResourceType> {
    vec![
        ResourceType::builtin("", "v1", "Namespace", "namespaces", false)
            .short(&["ns"])
            .behave(Behavior::Namespace),
        ResourceType::builtin("", "v1", "ConfigMap", "configmaps", true).short(&["cm"]),
        ResourceType::builtin("", "v1", "Secret", "secrets", true).behave(Behavior::Secret),
        ResourceType::builtin("", "v1", "Event", "events", true).short(&["ev"]),
        ResourceType::builtin("", "v1", "ServiceAccount", "serviceaccounts", true).short(&["sa"]),
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
        ResourceType::builtin(crate::rbac::GROUP, "v1", "Role", "roles", true),
        ResourceType::builtin(
            crate::rbac::GROUP,
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        ResourceType::builtin(
            crate::rbac::GROUP,
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        ResourceType::builtin(
            crate::rbac::GROUP,
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
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

/// Builds the resource type that a CustomResourceDefinition object describes, checking the
/// parts of the definition that serving depends on.
pub fn from_crd(crd: &Value) -> Result<ResourceType> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let invalid = |causes: Vec<Cause>| {
        ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        )
    };
    let spec = crd
        .get("spec")
        .ok_or_else(|| invalid(vec![Cause::required("spec")]))?;
    let text = |ptr: &str| {
        spec.pointer(ptr)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let group = text("/group");
    let plural = text("/names/plural");
    let kind = text("/names/kind");
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause::required("spec.group"));
    }
    if plural.is_empty() {
        causes.push(Cause::required("spec.names.plural"));
    }
    if kind.is_empty() {
        causes.push(Cause::required("spec.names.kind"));
    }
    if !group.is_empty() && !plural.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::invalid(
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    let scope = text("/scope");
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::unsupported(
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    let mut versions = Vec::new();
    for (i, v) in spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if !v.get("served").and_then(Value::as_bool).unwrap_or(false) {
            continue;
        }
        versions.push(crd_version(v, &format!("spec.versions[{i}]"), &mut causes));
    }
    let storage_count = versions.iter().filter(|v| v.storage).count();
    if versions.is_empty() {
        causes.push(Cause::required("spec.versions"));
    } else if storage_count != 1 {
        causes.push(Cause::invalid(
            "spec.versions",
            "must have exactly one version marked as storage version",
        ));
    }
    if !causes.is_empty() {
        return Err(invalid(causes));
    }
    let strings = |ptr: &str| -> Vec<String> {
        spec.pointer(ptr)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let singular = match text("/names/singular") {
        s if s.is_empty() => kind.to_lowercase(),
        s => s,
    };
    let list_kind = match text("/names/listKind") {
        s if s.is_empty() => format!("{kind}List"),
        s => s,
    };
    Ok(ResourceType {
        group,
        plural,
        singular,
        kind,
        list_kind,
        namespaced: scope == "Namespaced",
        short_names: strings("/names/shortNames"),
        categories: strings("/names/categories"),
        versions,
        behavior: Behavior::Custom,
    })
}

fn crd_version(v: &Value, path: &str, causes: &mut Vec<Cause>) -> Version {
    let raw_schema = v.pointer("/schema/openAPIV3Schema").cloned();
    let schema = match &raw_schema {
        Some(raw) => match Schema::compile(raw) {
            Ok(s) => Some(Arc::new(s)),
            Err(mut errs) => {
                for c in &mut errs {
                    c.field = format!("{path}.schema.openAPIV3Schema{}", dotted(&c.field));
                }
                causes.extend(errs);
                None
            }
        },
        None => {
            causes.push(Cause::required(format!("{path}.schema.openAPIV3Schema")));
            None
        }
    };
    let columns = v
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| cols.iter().map(column).collect())
        .unwrap_or_default();
    Version {
        name: v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
        schema,
        raw_schema,
        columns,
        status_subresource: v.pointer("/subresources/status").is_some(),
        scale: v.pointer("/subresources/scale").and_then(|s| {
            let text = |k: &str| s.get(k).and_then(Value::as_str).map(str::to_string);
            Some(ScalePaths {
                spec_replicas: text("specReplicasPath")?,
                status_replicas: text("statusReplicasPath")?,
                label_selector: text("labelSelectorPath"),
            })
        }),
    }
}

fn dotted(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!(".{field}")
    }
}

fn column(c: &Value) -> Column {
    let s = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    Column {
        name: s("name"),
        type_: s("type"),
        format: s("format"),
        description: s("description"),
        priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
        json_path: s("jsonPath"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(name: &str) -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": name},
            "spec": {
                "group": "quiver.dev",
                "scope": "Namespaced",
                "names": {"plural": "microvms", "kind": "MicroVM", "shortNames": ["mvm"]},
                "versions": [{
                    "name": "v1alpha1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object"}},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}]
                }]
            }
        })
    }

    #[test]
    fn crd_becomes_a_served_type() {
        let t = from_crd(&crd("microvms.quiver.dev")).expect("valid crd");
        assert_eq!(t.kind, "MicroVM");
        assert_eq!(t.list_kind, "MicroVMList");
        assert_eq!(t.singular, "microvm");
        assert!(t.namespaced);
        assert!(t.has_status("v1alpha1"));
        assert_eq!(t.versions[0].columns[0].json_path, ".status.phase");
    }

    #[test]
    fn crd_name_must_match_plural_and_group() {
        let err = from_crd(&crd("vms.quiver.dev")).expect_err("name mismatch");
        assert_eq!(err.code, 422);
        assert!(err.message.contains("metadata.name"), "{}", err.message);
    }
}
