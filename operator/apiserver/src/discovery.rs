//! Discovery documents: `/version`, `/api`, `/apis`, and per group/version resource lists.

use serde_json::{Value, json};

use crate::registry::{Behavior, Registry, ResourceType};

pub const KUBE_MINOR: &str = "33";

pub fn version() -> Value {
    json!({
        "major": "1", "minor": KUBE_MINOR,
        "gitVersion": format!("v1.{KUBE_MINOR}.0-quiver.{}", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
        "goVersion": "", "compiler": "rustc", "platform": format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
    })
}

pub fn api_versions(address: &str) -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]})
}

fn group_entry(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// Kubernetes' version priority: GA before beta before alpha, higher numbers first, then
/// names that do not look like versions, alphabetically. The first is the preferred one.
fn version_rank(v: &str) -> (u8, std::cmp::Reverse<u64>, std::cmp::Reverse<u64>, String) {
    let parsed = v.strip_prefix('v').and_then(|rest| {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let major: u64 = rest[..digits].parse().ok()?;
        let (stage, minor) = match &rest[digits..] {
            "" => (0, "0"),
            tail => {
                let (stage, minor) = tail
                    .strip_prefix("beta")
                    .map(|m| (1, m))
                    .or_else(|| tail.strip_prefix("alpha").map(|m| (2, m)))?;
                (stage, minor)
            }
        };
        let minor: u64 = if minor.is_empty() {
            0
        } else {
            minor.parse().ok()?
        };
        Some((stage, major, minor))
    });
    match parsed {
        Some((stage, major, minor)) => (
            stage,
            std::cmp::Reverse(major),
            std::cmp::Reverse(minor),
            String::new(),
        ),
        None => (3, std::cmp::Reverse(0), std::cmp::Reverse(0), v.to_string()),
    }
}

fn groups(registry: &Registry) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (group, version) in registry.group_versions().into_keys() {
        if group.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(g, _)| *g == group) {
            Some((_, vs)) => vs.push(version),
            None => out.push((group, vec![version])),
        }
    }
    for (_, versions) in &mut out {
        versions.sort_by_key(|v| version_rank(v));
    }
    out
}

pub fn api_group_list(registry: &Registry) -> Value {
    let list: Vec<Value> = groups(registry)
        .iter()
        .map(|(g, vs)| group_entry(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": list})
}

pub fn api_group(registry: &Registry, group: &str) -> Option<Value> {
    let (g, vs) = groups(registry).into_iter().find(|(g, _)| g == group)?;
    let mut entry = group_entry(&g, &vs);
    if let Some(m) = entry.as_object_mut() {
        m.insert("kind".into(), json!("APIGroup"));
        m.insert("apiVersion".into(), json!("v1"));
    }
    Some(entry)
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_entries(t: &ResourceType, version: &str) -> Vec<Value> {
    let mut main = serde_json::Map::new();
    main.insert("name".into(), json!(t.plural));
    main.insert("singularName".into(), json!(t.singular));
    main.insert("namespaced".into(), json!(t.namespaced));
    main.insert("kind".into(), json!(t.kind));
    main.insert("verbs".into(), json!(verbs_of(t)));
    main.insert("storageVersionHash".into(), json!(""));
    if !t.short_names.is_empty() {
        main.insert("shortNames".into(), json!(t.short_names));
    }
    let mut categories = t.categories.clone();
    if t.behavior == Behavior::Crd {
        categories.push("api-extensions".into());
    }
    if !categories.is_empty() {
        main.insert("categories".into(), json!(categories));
    }
    let main = Value::Object(main);
    let mut out = vec![main];
    for (sub, verbs) in t.subresources(version) {
        out.push(json!({"name": format!("{}/{sub}", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": sub_kind(t, sub), "verbs": verbs}));
    }
    out
}

/// The kind a subresource answers with: `Scale` for `/scale`, `TokenRequest` for `/token`.
fn sub_kind(t: &ResourceType, sub: &str) -> String {
    match sub {
        "scale" => "Scale".into(),
        "token" => "TokenRequest".into(),
        _ => t.kind.clone(),
    }
}

fn sub_group_version(t: &ResourceType, sub: &str, version: &str) -> (String, String) {
    match sub {
        "scale" => ("autoscaling".into(), "v1".into()),
        "token" => ("authentication.k8s.io".into(), "v1".into()),
        _ => (t.group.clone(), version.to_string()),
    }
}

fn verbs_of(t: &ResourceType) -> Vec<&'static str> {
    if t.behavior == Behavior::Review {
        vec!["create"]
    } else {
        VERBS.to_vec()
    }
}

pub fn resource_list(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let types = registry
        .group_versions()
        .remove(&(group.to_string(), version.to_string()))?;
    let resources: Vec<Value> = types
        .iter()
        .flat_map(|t| resource_entries(t, version))
        .collect();
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

/// The media type of aggregated discovery (`apidiscovery.k8s.io/v2`), which clients ask for
/// in `Accept` and which the answer must carry as its `Content-Type`.
pub const AGGREGATED_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an `Accept` header asks for aggregated discovery before the plain documents.
pub fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .find_map(|m| {
            let m = m.replace(' ', "");
            if m.contains("g=apidiscovery.k8s.io") && m.contains("as=APIGroupDiscoveryList") {
                Some(m.split(';').any(|p| p == "v=v2"))
            } else if m.starts_with("application/json") || m.starts_with("*/*") {
                Some(false)
            } else {
                None
            }
        })
        .unwrap_or(false)
}

/// `APIGroupDiscoveryList` for `/api` (`core` true: the core group only) or `/apis`.
pub fn aggregated(registry: &Registry, core: bool) -> Value {
    let mut items: Vec<(String, Vec<Value>)> = Vec::new();
    for ((group, version), types) in registry.group_versions() {
        if group.is_empty() != core {
            continue;
        }
        let resources: Vec<Value> = types
            .iter()
            .map(|t| aggregated_resource(t, &version))
            .collect();
        let entry = json!({"version": version, "resources": resources, "freshness": "Current"});
        match items.iter_mut().find(|(g, _)| *g == group) {
            Some((_, vs)) => vs.push(entry),
            None => items.push((group, vec![entry])),
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|(group, mut versions)| {
            versions.sort_by_key(|v| version_rank(v["version"].as_str().unwrap_or_default()));
            let mut metadata = json!({"creationTimestamp": null});
            if !group.is_empty() {
                metadata["name"] = json!(group);
            }
            json!({"metadata": metadata, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn aggregated_resource(t: &ResourceType, version: &str) -> Value {
    let subresources: Vec<Value> = t
        .subresources(version)
        .into_iter()
        .map(|(sub, verbs)| {
            let (g, v) = sub_group_version(t, sub, version);
            json!({"subresource": sub, "responseKind": {"group": g, "version": v, "kind": sub_kind(t, sub)}, "verbs": verbs})
        })
        .collect();
    let mut categories = t.categories.clone();
    if t.behavior == Behavior::Crd {
        categories.push("api-extensions".into());
    }
    let mut out = json!({
        "resource": t.plural,
        "responseKind": {"group": t.group, "version": version, "kind": t.kind},
        "scope": if t.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": t.singular,
        "verbs": verbs_of(t),
    });
    if !t.short_names.is_empty() {
        out["shortNames"] = json!(t.short_names);
    }
    if !categories.is_empty() {
        out["categories"] = json!(categories);
    }
    if !subresources.is_empty() {
        out["subresources"] = Value::Array(subresources);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_by_kubernetes_priority() {
        let mut vs = vec!["v1alpha1", "foo", "v1", "v2beta1", "v2", "v1beta2", "v10"];
        vs.sort_by_key(|v| version_rank(v));
        assert_eq!(
            vs,
            ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]
        );
    }

    #[test]
    fn aggregated_discovery_is_chosen_only_when_asked_first() {
        let kube = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert!(wants_aggregated(kube));
        assert!(!wants_aggregated("application/json, */*"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }

    #[test]
    fn aggregated_core_group_lists_configmaps_with_their_kind() {
        let doc = aggregated(&Registry::with_builtins(), true);
        assert_eq!(doc["items"].as_array().map(Vec::len), Some(1));
        let resources = &doc["items"][0]["versions"][0]["resources"];
        let cm = resources
            .as_array()
            .and_then(|r| r.iter().find(|r| r["resource"] == "configmaps"))
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            cm["responseKind"],
            json!({"group": "", "version": "v1", "kind": "ConfigMap"})
        );
        assert_eq!(cm["scope"], "Namespaced");
    }
}
