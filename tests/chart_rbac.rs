//! The Helm chart grants each binary exactly the Kubernetes API access it declares
//! (`quiver_operator::rbac::OPERATOR_API_ACCESS`, `quiver_agent::rbac::AGENT_API_ACCESS`), and
//! those declarations cover the code: every file that builds an `Api<T>` (or an event
//! `Recorder`) is a declared site of that type, and the calls a site makes on its `api` map to
//! the verbs declared for it. The agent's config file and kubeconfig as the chart renders them
//! load with the agent's own parsers.
//!
//! Needs helm ([`quiver_tests::helm::binary`]; scripts/tools.sh installs it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use quiver_agent::config::AgentConfig;
use quiver_crds::access::{ApiAccess, Scope};
use serde_json::Value;

const RELEASE: &str = "quiver";
const NAMESPACE: &str = "quiver-system";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_owned()
}

/// The chart rendered with `sets` (`key=value`), one JSON value per manifest.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = repo().join("charts/quiver");
    let mut cmd = Command::new(quiver_tests::helm::binary());
    cmd.args(["template", RELEASE])
        .arg(&chart)
        .args(["--namespace", NAMESPACE]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot run helm ({}): {e}; `source scripts/tools.sh` installs it",
            quiver_tests::helm::binary().display()
        )
    });
    assert!(
        out.status.success(),
        "helm template failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    text.split("\n---")
        .filter_map(|doc| serde_yaml_ng::from_str::<Value>(doc).ok())
        .filter(|v| v.is_object())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"))
}

/// One verb on one resource (or one named object) in one scope: RBAC rules, flattened.
type Grant = (String, String, String, String, String);

fn scope_label(scope: Option<&str>) -> String {
    scope.map_or_else(|| "cluster".to_owned(), |ns| format!("namespace {ns}"))
}

fn flatten(scope: Option<&str>, rule: &Value) -> BTreeSet<Grant> {
    let list = |key: &str| -> Vec<String> {
        rule[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let names = list("resourceNames");
    let names = if names.is_empty() {
        vec!["*".to_owned()]
    } else {
        names
    };
    let mut out = BTreeSet::new();
    for group in list("apiGroups") {
        for resource in list("resources") {
            for name in &names {
                for verb in list("verbs") {
                    out.insert((
                        scope_label(scope),
                        group.clone(),
                        resource.clone(),
                        name.clone(),
                        verb,
                    ));
                }
            }
        }
    }
    out
}

/// What the chart grants the ServiceAccount `account` of the release.
fn granted(docs: &[Value], account: &str) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
    {
        let bound = binding["subjects"].as_array().is_some_and(|subjects| {
            subjects.iter().any(|s| {
                s["kind"] == "ServiceAccount" && s["name"] == account && s["namespace"] == NAMESPACE
            })
        });
        if !bound {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().expect("roleRef.kind");
        let role_name = binding["roleRef"]["name"].as_str().expect("roleRef.name");
        let namespace = binding["metadata"]["namespace"].as_str();
        let role = find(docs, role_kind, role_name);
        if role_kind == "Role" {
            assert_eq!(role["metadata"]["namespace"].as_str(), namespace);
        }
        let scope = if binding["kind"] == "RoleBinding" {
            namespace
        } else {
            None
        };
        for rule in role["rules"].as_array().expect("rules") {
            for key in ["verbs", "resources", "apiGroups", "resourceNames"] {
                let wildcard = rule[key]
                    .as_array()
                    .is_some_and(|values| values.iter().any(|v| v == "*"));
                assert!(!wildcard, "{role_name}: a wildcard in {key}");
            }
            out.extend(flatten(scope, rule));
        }
    }
    out
}

/// What `declared` needs, given the binary's settings (`setting` answers the names of
/// configured namespaces).
fn needed(declared: &[ApiAccess], setting: &dyn Fn(&str) -> String) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for access in declared {
        let namespace = match access.scope {
            Scope::Cluster => None,
            Scope::Namespace(ns) => Some(ns.to_owned()),
            Scope::Configured(key) => Some(setting(key)),
        };
        let names: Vec<&str> = if access.names.is_empty() {
            vec!["*"]
        } else {
            access.names.to_vec()
        };
        for name in names {
            for verb in access.verbs {
                out.insert((
                    scope_label(namespace.as_deref()),
                    access.group.to_owned(),
                    access.resource.to_owned(),
                    name.to_owned(),
                    (*verb).to_owned(),
                ));
            }
        }
    }
    out
}

fn assert_same(binary: &str, granted: &BTreeSet<Grant>, needed: &BTreeSet<Grant>) {
    let extra: Vec<_> = granted.difference(needed).collect();
    let missing: Vec<_> = needed.difference(granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{binary}: the chart's RBAC differs from what the code declares\n  granted but not \
         declared: {extra:?}\n  declared but not granted: {missing:?}"
    );
}

/// The agent's config file as the chart renders it, through the agent's own loader.
fn agent_config(docs: &[Value]) -> (AgentConfig, Value) {
    let config_map = find(docs, "ConfigMap", "quiver-agent");
    let text = config_map["data"]["agent.yaml"]
        .as_str()
        .expect("agent.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.yaml");
    std::fs::write(&path, text).expect("write");
    let config = AgentConfig::load(Some(&path)).expect("the chart's agent.yaml loads");
    (config, serde_yaml_ng::from_str(text).expect("yaml"))
}

#[test]
fn operator_rbac_is_what_the_operator_declares() {
    let docs = render(&[]);
    let granted = granted(&docs, "quiver-operator");
    let needed = needed(quiver_operator::rbac::OPERATOR_API_ACCESS, &|key| {
        panic!("the operator has no setting {key}")
    });
    assert_same("quiver-operator", &granted, &needed);
}

#[test]
fn agent_rbac_is_what_the_agent_declares() {
    for sets in [&[][..], &["raft.leaseTtlMs=8000"][..]] {
        let docs = render(sets);
        let (config, _) = agent_config(&docs);
        let setting = |key: &str| match key {
            "raft.namespace" => config.raft.namespace.clone(),
            other => panic!("no such agent setting in this test: {other}"),
        };
        let granted = granted(&docs, "quiver-agent");
        let needed = needed(quiver_agent::rbac::AGENT_API_ACCESS, &setting);
        assert_same(&format!("quiver-agent {sets:?}"), &granted, &needed);
    }
}

/// Keys of `rendered` that `known` (the config serialized back) lacks: settings the agent
/// would silently ignore.
fn unknown_keys(rendered: &Value, known: &Value, at: &str, out: &mut Vec<String>) {
    let (Some(rendered), Some(known)) = (rendered.as_object(), known.as_object()) else {
        return;
    };
    for (key, value) in rendered {
        let path = format!("{at}{key}");
        match known.get(key) {
            Some(k) => unknown_keys(value, k, &format!("{path}."), out),
            None => out.push(path),
        }
    }
}

#[test]
fn the_agent_reads_every_setting_the_chart_writes() {
    let docs = render(&["raft.leaseTtlMs=8000", "agent.capacityCpus=4"]);
    let (config, rendered) = agent_config(&docs);
    let known = serde_json::to_value(&config).expect("config serializes");
    let mut unknown = Vec::new();
    unknown_keys(&rendered, &known, "", &mut unknown);
    assert!(
        unknown.is_empty(),
        "agent.yaml keys the agent ignores: {unknown:?}"
    );
    assert_eq!(config.capacity_cpus, 4);
    assert_eq!(config.raft.namespace, NAMESPACE);
    config.check_transport().expect("mTLS is configured");
    config
        .check_vm_settings()
        .expect("image roots and forward address");
    let tls = config.tls.expect("tls");
    let daemon_set = find(&docs, "DaemonSet", "quiver-agent");
    let mounts = daemon_set["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        .as_array()
        .expect("volumeMounts");
    let mounted = |file: &Path| {
        mounts.iter().any(|m| {
            m["mountPath"]
                .as_str()
                .is_some_and(|dir| file.starts_with(dir))
        })
    };
    let kubeconfig = config.kubeconfig.expect("kubeconfig");
    for file in [&tls.ca, &tls.cert, &tls.key, &kubeconfig, &config.data_dir] {
        assert!(
            mounted(file),
            "{} is not mounted in the DaemonSet",
            file.display()
        );
    }
    let text = find(&docs, "ConfigMap", "quiver-agent")["data"]["kubeconfig"]
        .as_str()
        .expect("kubeconfig");
    let parsed = kube::config::Kubeconfig::from_yaml(text).expect("the kubeconfig parses");
    let user = &parsed.auth_infos[0].auth_info.as_ref().expect("user");
    assert_eq!(
        user.token_file.as_deref(),
        Some("/var/run/secrets/kubernetes.io/serviceaccount/token")
    );
}

/// Source files of a binary, without dev-only files and test modules (cut at `#[cfg(test)]`).
fn sources(dir: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path
                .strip_prefix(repo())
                .expect("in repo")
                .to_string_lossy()
                .into_owned();
            if path.extension().is_none_or(|e| e != "rs")
                || rel.ends_with("_tests.rs")
                || skip.contains(&rel.as_str())
            {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            out.insert(rel, code.to_owned());
        }
    }
    out
}

fn ident_at(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The API types a file builds clients for: `Api<T>`, `Api::<T>`, and `Recorder`.
fn kinds_used(code: &str) -> BTreeSet<String> {
    let mut kinds = BTreeSet::new();
    for marker in ["Api<", "Api::<"] {
        for (i, _) in code.match_indices(marker) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            kinds.insert(ident_at(&code[i + marker.len()..]));
        }
    }
    if code.contains("Recorder::new(") {
        kinds.insert("Recorder".to_owned());
    }
    kinds
}

/// `code` with method chains and call arguments split over lines joined up (`api\n  .get(`
/// → `api.get(`, `new(\n  Api::` → `new(Api::`); other whitespace runs become one space.
fn join_chains(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut chars = code.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_whitespace() {
            out.push(c);
            continue;
        }
        while chars.peek().is_some_and(|n| n.is_whitespace()) {
            chars.next();
        }
        if chars.peek() != Some(&'.') && !out.ends_with('(') {
            out.push(' ');
        }
    }
    out
}

/// The verbs a file's calls need: methods called on a variable named `api`, plus the
/// controllers, watchers, finalizers and recorders built from one.
fn verbs_used(code: &str) -> BTreeSet<String> {
    let flat = join_chains(code);
    let mut verbs = BTreeSet::new();
    let mut add = |v: &[&str]| verbs.extend(v.iter().map(|s| (*s).to_owned()));
    for (i, _) in flat.match_indices("api.") {
        let before = flat[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let method = ident_at(&flat[i + 4..]);
        let rest = &flat[i + 4 + method.len()..];
        if !rest.starts_with('(') {
            continue;
        }
        let applies = rest
            .chars()
            .take(300)
            .collect::<String>()
            .contains("Patch::Apply");
        match method.as_str() {
            "get" | "get_opt" | "get_status" | "get_metadata" => add(&["get"]),
            "list" | "list_metadata" => add(&["list"]),
            "watch" | "watch_metadata" => add(&["watch"]),
            "create" => add(&["create"]),
            "replace" | "replace_status" => add(&["update"]),
            // Server-side apply of an object that may not exist creates it.
            "patch" if applies => add(&["create", "patch"]),
            "patch" | "patch_status" => add(&["patch"]),
            "delete" => add(&["delete"]),
            "delete_collection" => add(&["deletecollection"]),
            other => panic!("an Api method this test does not map to RBAC verbs: {other}"),
        }
    }
    if flat.contains("Controller::new(Api::") || flat.contains("watcher(Api::") {
        add(&["list", "watch"]);
    }
    if flat.contains("finalizer(&api") {
        add(&["patch"]);
    }
    if flat.contains("Recorder::new(") {
        add(&["create", "patch"]);
    }
    verbs
}

fn assert_declared_sites(binary: &str, dir: &str, skip: &[&str], declared: &[ApiAccess]) {
    for (file, code) in sources(&repo().join(dir), skip) {
        let here: Vec<&ApiAccess> = declared.iter().filter(|a| a.site == file).collect();
        let used = kinds_used(&code);
        let listed: BTreeSet<String> = here.iter().map(|a| a.kind.to_owned()).collect();
        assert_eq!(
            used, listed,
            "{binary}: {file} builds API clients for {used:?} but declares {listed:?} \
             (update the binary's rbac.rs and the chart's RBAC)"
        );
        let verbs: BTreeSet<String> = here
            .iter()
            .flat_map(|a| a.verbs.iter().map(|v| (*v).to_owned()))
            .collect();
        assert_eq!(
            verbs_used(&code),
            verbs,
            "{binary}: the API calls in {file} need other verbs than declared"
        );
    }
    for access in declared {
        assert!(
            repo().join(access.site).exists(),
            "{binary}: declared site {} does not exist",
            access.site
        );
    }
}

#[test]
fn every_api_client_in_the_operator_is_declared() {
    assert_declared_sites(
        "quiver-operator",
        "operator/src",
        quiver_operator::rbac::DEV_ONLY_SOURCES,
        quiver_operator::rbac::OPERATOR_API_ACCESS,
    );
}

#[test]
fn every_api_client_in_the_agent_is_declared() {
    assert_declared_sites(
        "quiver-agent",
        "agent/src",
        &[],
        quiver_agent::rbac::AGENT_API_ACCESS,
    );
}
