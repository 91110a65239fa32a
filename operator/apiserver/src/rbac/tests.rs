// Fixture builders take their JSON by value so that call sites read as literals.
#![allow(clippy::needless_pass_by_value)]

use std::sync::Arc;

use http::Method;
use serde_json::{Value, json};

use super::*;

fn role(ns: &str, name: &str, rules: Value) -> Arc<Value> {
    Arc::new(json!({"kind": "Role", "metadata": {"namespace": ns, "name": name}, "rules": rules}))
}

fn cluster_role(name: &str, rules: Value) -> Arc<Value> {
    Arc::new(json!({"kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}))
}

fn binding(ns: &str, name: &str, kind: &str, role: &str, subjects: Value) -> Arc<Value> {
    Arc::new(json!({"metadata": {"namespace": ns, "name": name},
        "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role}, "subjects": subjects}))
}

fn sa(ns: &str, name: &str) -> Value {
    json!([{"kind": "ServiceAccount", "name": name, "namespace": ns}])
}

fn request(method: Method, path: &str) -> Attributes {
    attributes::of_request(&method, path, false)
}

fn allowed(policy: &Policy, user: &User, method: Method, path: &str) -> bool {
    authorize(policy, user, &request(method, path)).allowed
}

const VMS: &str = "/apis/quiver.dev/v1alpha1/namespaces/default/microvms";

#[test]
fn role_binding_grants_only_its_verbs_in_its_namespace() {
    let roles = [role(
        "default",
        "vm-reader",
        json!([{"apiGroups": ["quiver.dev"], "resources": ["microvms"], "verbs": ["get", "list"]}]),
    )];
    let bindings = [binding(
        "default",
        "read",
        "Role",
        "vm-reader",
        sa("default", "op"),
    )];
    let policy = Policy::build(&Objects {
        roles: &roles,
        role_bindings: &bindings,
        ..Objects::default()
    });
    let op = User::service_account("default", "op", "u");
    assert!(allowed(&policy, &op, Method::GET, VMS));
    assert!(allowed(&policy, &op, Method::GET, &format!("{VMS}/vm")));
    assert!(!allowed(&policy, &op, Method::DELETE, &format!("{VMS}/vm")));
    assert!(
        !authorize(
            &policy,
            &op,
            &attributes::of_request(&Method::GET, VMS, true)
        )
        .allowed
    );
    assert!(!allowed(
        &policy,
        &op,
        Method::GET,
        "/apis/quiver.dev/v1alpha1/namespaces/other/microvms"
    ));
    assert!(!allowed(
        &policy,
        &op,
        Method::GET,
        "/apis/quiver.dev/v1alpha1/microvms"
    ));
    let other = User::service_account("default", "other", "u2");
    assert!(!allowed(&policy, &other, Method::GET, VMS));
}

#[test]
fn subresources_names_wildcards_and_groups() {
    let roles = [cluster_role(
        "status-writer",
        json!([
            {"apiGroups": ["quiver.dev"], "resources": ["microvms/status"], "verbs": ["patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["only"], "verbs": ["*"]},
            {"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["get"]},
        ]),
    )];
    let bindings = [binding(
        "",
        "w",
        "ClusterRole",
        "status-writer",
        sa("ops", "op"),
    )];
    let policy = Policy::build(&Objects {
        cluster_roles: &roles,
        cluster_role_bindings: &bindings,
        ..Objects::default()
    });
    let op = User::service_account("ops", "op", "u");
    assert!(allowed(
        &policy,
        &op,
        Method::PATCH,
        &format!("{VMS}/vm/status")
    ));
    assert!(!allowed(&policy, &op, Method::PATCH, &format!("{VMS}/vm")));
    assert!(allowed(
        &policy,
        &op,
        Method::DELETE,
        "/api/v1/namespaces/a/configmaps/only"
    ));
    assert!(!allowed(
        &policy,
        &op,
        Method::DELETE,
        "/api/v1/namespaces/a/configmaps/other"
    ));
    assert!(!allowed(
        &policy,
        &op,
        Method::GET,
        "/api/v1/namespaces/a/configmaps"
    ));
    assert!(allowed(
        &policy,
        &op,
        Method::GET,
        "/apis/example.dev/v1/namespaces/a/widgets/w/scale"
    ));
    assert!(!allowed(
        &policy,
        &op,
        Method::GET,
        "/apis/example.dev/v1/namespaces/a/widgets/w"
    ));
}

#[test]
fn authenticated_users_get_discovery_and_self_reviews_by_default() {
    let policy = Policy::build(&Objects::default());
    let op = User::service_account("ops", "op", "u");
    for path in [
        "/api",
        "/apis",
        "/apis/quiver.dev/v1alpha1",
        "/version",
        "/healthz",
        "/openapi/v3",
    ] {
        assert!(allowed(&policy, &op, Method::GET, path), "{path}");
    }
    assert!(!allowed(&policy, &op, Method::POST, "/apis"));
    assert!(!allowed(&policy, &op, Method::GET, "/metrics"));
    assert!(allowed(
        &policy,
        &op,
        Method::POST,
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
    ));
    assert!(!allowed(&policy, &op, Method::GET, "/api/v1/namespaces"));
}

#[test]
fn non_resource_urls_need_a_cluster_role_binding() {
    let roles = [cluster_role(
        "metrics",
        json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
    )];
    let crb = [binding(
        "",
        "m",
        "ClusterRole",
        "metrics",
        json!([{"kind": "Group", "name": "system:serviceaccounts:ops"}]),
    )];
    let rb = [binding(
        "ops",
        "m",
        "ClusterRole",
        "metrics",
        sa("other", "x"),
    )];
    let policy = Policy::build(&Objects {
        cluster_roles: &roles,
        cluster_role_bindings: &crb,
        role_bindings: &rb,
        ..Objects::default()
    });
    assert!(allowed(
        &policy,
        &User::service_account("ops", "any", "u"),
        Method::GET,
        "/metrics"
    ));
    assert!(!allowed(
        &policy,
        &User::service_account("other", "x", "u"),
        Method::GET,
        "/metrics"
    ));
}

#[test]
fn the_admin_passes_and_a_missing_role_is_the_reason() {
    let bindings = [binding("default", "b", "Role", "gone", sa("default", "op"))];
    let policy = Policy::build(&Objects {
        role_bindings: &bindings,
        ..Objects::default()
    });
    assert!(allowed(&policy, &User::admin(), Method::DELETE, VMS));
    let decision = authorize(
        &policy,
        &User::service_account("default", "op", "u"),
        &request(Method::GET, VMS),
    );
    assert!(!decision.allowed);
    assert_eq!(
        decision.reason,
        "RBAC: [role.rbac.authorization.k8s.io \"gone\" not found]"
    );
}

#[test]
fn forbidden_messages_are_worded_as_kubernetes_words_them() {
    let op = User::service_account("ns", "sa", "u");
    assert_eq!(
        forbidden_message(&op, &request(Method::GET, &format!("{VMS}/vm"))),
        "User \"system:serviceaccount:ns:sa\" cannot get resource \"microvms\" in API group \"quiver.dev\" in the namespace \"default\""
    );
    assert_eq!(
        forbidden_message(
            &op,
            &request(Method::PATCH, "/apis/quiver.dev/v1alpha1/hosts/h/status")
        ),
        "User \"system:serviceaccount:ns:sa\" cannot patch resource \"hosts/status\" in API group \"quiver.dev\" at the cluster scope"
    );
    assert_eq!(
        forbidden_message(&op, &request(Method::GET, "/metrics")),
        "User \"system:serviceaccount:ns:sa\" cannot get path \"/metrics\""
    );
}

#[test]
fn rules_review_lists_cluster_and_namespace_rules() {
    let roles = [role(
        "a",
        "r",
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]),
    )];
    let bindings = [binding("a", "b", "Role", "r", sa("a", "op"))];
    let policy = Policy::build(&Objects {
        roles: &roles,
        role_bindings: &bindings,
        ..Objects::default()
    });
    let op = User::service_account("a", "op", "u");
    let (in_a, incomplete) = rules_in(&policy, &op, "a");
    assert!(!incomplete);
    assert!(in_a.iter().any(|r| r.resources == ["configmaps"]));
    let (in_b, _) = rules_in(&policy, &op, "b");
    assert!(!in_b.iter().any(|r| r.resources == ["configmaps"]));
    assert!(
        in_b.iter()
            .any(|r| r.non_resource_urls.contains(&"/apis".to_string()))
    );
}

#[test]
fn aggregated_cluster_roles_take_the_rules_of_matching_roles() {
    let labelled = |name: &str, labels: Value, rules: Value| {
        Arc::new(json!({"metadata": {"name": name, "labels": labels}, "rules": rules}))
    };
    let roles = [
        Arc::new(json!({"metadata": {"name": "monitoring"}, "rules": [],
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"example.dev/aggregate-to-monitoring": "true"}},
                {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["metrics"]}]}]}})),
        labelled(
            "vms",
            json!({"example.dev/aggregate-to-monitoring": "true"}),
            json!([{"apiGroups": ["quiver.dev"], "resources": ["microvms"], "verbs": ["list"]}]),
        ),
        labelled(
            "urls",
            json!({"tier": "metrics"}),
            json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
        ),
        labelled(
            "other",
            json!({"tier": "web"}),
            json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]),
        ),
    ];
    let bindings = [binding(
        "",
        "m",
        "ClusterRole",
        "monitoring",
        sa("ops", "op"),
    )];
    let policy = Policy::build(&Objects {
        cluster_roles: &roles,
        cluster_role_bindings: &bindings,
        ..Objects::default()
    });
    let op = User::service_account("ops", "op", "u");
    assert!(allowed(&policy, &op, Method::GET, VMS));
    assert!(allowed(&policy, &op, Method::GET, "/metrics"));
    assert!(!allowed(
        &policy,
        &op,
        Method::GET,
        "/api/v1/namespaces/a/secrets/s"
    ));
}

#[test]
fn bindings_may_name_cluster_admin() {
    let bindings = [binding(
        "a",
        "all",
        "ClusterRole",
        "cluster-admin",
        sa("a", "op"),
    )];
    let policy = Policy::build(&Objects {
        role_bindings: &bindings,
        ..Objects::default()
    });
    let op = User::service_account("a", "op", "u");
    assert!(allowed(
        &policy,
        &op,
        Method::DELETE,
        "/api/v1/namespaces/a/secrets/s"
    ));
    assert!(!allowed(
        &policy,
        &op,
        Method::DELETE,
        "/api/v1/namespaces/b/secrets/s"
    ));
}
