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
    main.insert("verbs".into(), json!(VERBS));
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
    if t.has_status(version) {
        out.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
    }
    out
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
