//! Every resource the server serves, with a valid object of each to mutate.

use serde_json::{Value, json};

/// Namespace of the objects the run writes to.
pub const TARGETS: &str = "fuzz";
/// Namespace of the objects the run must leave alone.
pub const BYSTANDERS: &str = "bystanders";
/// Name of the one object per resource that the run updates, patches and deletes.
pub const TARGET: &str = "fuzz-target";

/// A served resource.
pub struct Resource {
    /// `/api/v1` or `/apis/{group}/{version}`.
    pub prefix: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    pub status: bool,
    /// Has a `/scale` subresource (an `autoscaling/v1 Scale`).
    pub scale: bool,
    /// Has a protobuf form (built-in kinds).
    pub builtin: bool,
    /// A valid object named `name`.
    pub fixture: fn(&str) -> Value,
}

impl Resource {
    pub fn collection(&self, ns: &str) -> String {
        if self.namespaced {
            format!("{}/namespaces/{ns}/{}", self.prefix, self.plural)
        } else {
            format!("{}/{}", self.prefix, self.plural)
        }
    }

    /// The path of an object; cluster-scoped bystanders are told apart by name.
    pub fn object(&self, ns: &str, name: &str) -> String {
        format!("{}/{name}", self.collection(ns))
    }

    /// The name of this resource's bystander.
    pub fn bystander_name(&self) -> String {
        match self.plural {
            "customresourcedefinitions" => "bystanders.fuzz.example".into(),
            _ => format!("bystander{}", self.suffix()),
        }
    }

    /// The name of this resource's target.
    pub fn target_name(&self) -> String {
        match self.plural {
            "customresourcedefinitions" => "targets.fuzz.example".into(),
            _ => format!("{TARGET}{}", self.suffix()),
        }
    }

    /// Both Event APIs store into one place: their objects need distinct names.
    fn suffix(&self) -> &'static str {
        if self.prefix.contains("events.k8s.io") {
            "-v1"
        } else {
            ""
        }
    }
}

/// Objects the run itself creates or writes to (so they may change).
pub fn run_owned(name: &str) -> bool {
    name.starts_with("fuzz-") || name == "targets.fuzz.example"
}

const REFERENCE: fn() -> Value =
    || json!({"kind": "ConfigMap", "name": "x", "namespace": TARGETS, "apiVersion": "v1"});

pub fn resources() -> Vec<Resource> {
    let r = |prefix, plural, namespaced, status, builtin, fixture| Resource {
        prefix,
        plural,
        namespaced,
        status,
        scale: false,
        builtin,
        fixture,
    };
    vec![
        r(
            "/api/v1",
            "namespaces",
            false,
            true,
            true,
            |n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "labels": {"a": "b"}}}),
        ),
        r("/api/v1", "configmaps", true, false, true, |n| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": n, "labels": {"a": "b"}, "annotations": {"c": "d"}},
                "data": {"k": "v"}, "binaryData": {"b": "AAEC"}})
        }),
        r("/api/v1", "secrets", true, false, true, |n| {
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": n}, "type": "Opaque",
                "data": {"k": "dg=="}, "stringData": {"s": "t"}})
        }),
        r("/api/v1", "serviceaccounts", true, false, true, |n| {
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": n},
                "automountServiceAccountToken": false, "secrets": [{"name": "s"}], "imagePullSecrets": [{"name": "p"}]})
        }),
        r("/api/v1", "events", true, false, true, |n| {
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": n}, "involvedObject": REFERENCE(),
                "reason": "Tested", "message": "m", "type": "Normal", "count": 1,
                "source": {"component": "fuzz"}, "firstTimestamp": "2026-01-01T00:00:00Z"})
        }),
        r("/apis/events.k8s.io/v1", "events", true, false, true, |n| {
            json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": n},
                "eventTime": "2026-01-01T00:00:00.000000Z", "regarding": REFERENCE(), "note": "n",
                "reason": "Tested", "type": "Normal", "action": "Test", "reportingController": "fuzz",
                "reportingInstance": "fuzz-1"})
        }),
        r(
            "/apis/coordination.k8s.io/v1",
            "leases",
            true,
            false,
            true,
            |n| {
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": n},
                "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00.000000Z"}})
            },
        ),
        r(
            "/apis/apiextensions.k8s.io/v1",
            "customresourcedefinitions",
            false,
            true,
            true,
            crd,
        ),
        r(
            "/apis/quiver.dev/v1alpha1",
            "microvms",
            true,
            true,
            false,
            |n| {
                json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "MicroVM", "metadata": {"name": n, "finalizers": ["quiver.dev/test"]},
                "spec": {"runStrategy": "Always", "cpus": 1, "memoryMiB": 256, "kernel": "/k", "cmdline": "console=ttyS0",
                    "disks": [{"name": "root", "image": "/i", "readOnly": true}], "nodeSelector": {"a": "b"},
                    "readiness": {"serialMarker": "READY", "timeoutSeconds": 60}},
                "status": {"phase": "Running", "host": "h", "epoch": 1, "observedGeneration": 1,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "R", "message": "m", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
            },
        ),
        r(
            "/apis/quiver.dev/v1alpha1",
            "rollouts",
            true,
            true,
            false,
            |n| {
                json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "Rollout", "metadata": {"name": n},
                "spec": {"hostSelector": {"matchLabels": {}}, "target": {"default": "iroh"},
                    "steps": [{"setWeight": 5}, {"pause": {"duration": "1m"}}, {"setWeight": 100}],
                    "analysis": {"interval": "30s", "failureLimit": 3}},
                "status": {"phase": "Progressing"}})
            },
        ),
        r(
            "/apis/quiver.dev/v1alpha1",
            "hosts",
            false,
            true,
            false,
            |n| {
                json!({"apiVersion": "quiver.dev/v1alpha1", "kind": "Host", "metadata": {"name": n},
                "spec": {"endpointId": "ab".repeat(32), "grpcAddress": "127.0.0.1:1", "capacity": {"cpus": 1, "memoryMiB": 1}},
                "status": {"capacity": {"cpus": 1, "memoryMiB": 1}, "raft": {"role": "Leader"}}})
            },
        ),
        r(
            "/apis/rbac.authorization.k8s.io/v1",
            "roles",
            true,
            false,
            true,
            |n| {
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": n},
                "rules": [{"apiGroups": [""], "resources": ["configmaps", "pods/status"], "verbs": ["get", "list"], "resourceNames": ["a"]}]})
            },
        ),
        r(
            "/apis/rbac.authorization.k8s.io/v1",
            "clusterroles",
            false,
            false,
            true,
            |n| {
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": n},
                "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}, {"nonResourceURLs": ["/metrics", "/apis/*"], "verbs": ["get"]}]})
            },
        ),
        r(
            "/apis/rbac.authorization.k8s.io/v1",
            "rolebindings",
            true,
            false,
            true,
            |n| {
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": n},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                "subjects": [{"kind": "ServiceAccount", "name": "s", "namespace": TARGETS}, {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "g"}]})
            },
        ),
        r(
            "/apis/rbac.authorization.k8s.io/v1",
            "clusterrolebindings",
            false,
            false,
            true,
            |n| {
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": n},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "c"},
                "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "u"}]})
            },
        ),
        Resource {
            scale: true,
            ..r("/apis/apps/v1", "deployments", true, true, true, |n| {
                json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": n},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "a"}},
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
                        "template": pod_template()},
                    "status": {"replicas": 2, "availableReplicas": 1,
                        "conditions": [{"type": "Available", "status": "True", "reason": "R"}]}})
            })
        },
        r("/apis/apps/v1", "daemonsets", true, true, true, |n| {
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": n},
                "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": pod_template(),
                    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}},
                "status": {"currentNumberScheduled": 1, "desiredNumberScheduled": 1, "numberMisscheduled": 0, "numberReady": 1}})
        }),
        r("/api/v1", "services", true, true, true, |n| {
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": n},
                "spec": {"type": "ClusterIP", "clusterIP": "None", "selector": {"app": "a"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                        {"name": "metrics", "port": 9090, "targetPort": 9090}]},
                "status": {"loadBalancer": {}}})
        }),
        Resource {
            scale: true,
            ..r("/apis/fuzz.example/v1", "scalers", true, true, false, |n| {
                json!({"apiVersion": "fuzz.example/v1", "kind": "Scaler", "metadata": {"name": n},
                    "spec": {"replicas": 2}, "status": {"replicas": 1, "selector": "a=b"}})
            })
        },
    ]
}

/// A pod template with the lists Kubernetes merges by key (containers, ports, env, volumes).
fn pod_template() -> Value {
    json!({"metadata": {"labels": {"app": "a"}},
        "spec": {"containers": [{"name": "c", "image": "i:1", "args": ["run"],
                "ports": [{"containerPort": 80, "name": "http"}],
                "env": [{"name": "E", "value": "v"}, {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}},
                "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10}}],
            "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Mi"}}],
            "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"n": "1"}}})
}

/// The CRD of `scalers.fuzz.example`, which declares `/status` and `/scale`; installed once,
/// never named by a request of the run.
pub fn scaler_crd() -> Value {
    let int = json!({"type": "integer", "minimum": 0, "maximum": 100});
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "scalers.fuzz.example"},
        "spec": {"group": "fuzz.example", "scope": "Namespaced",
            "names": {"plural": "scalers", "kind": "Scaler", "singular": "scaler"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                    "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}},
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"replicas": int}},
                    "status": {"type": "object", "properties": {"replicas": int, "selector": {"type": "string"}}}}}}}]}})
}

/// A Scale body for `name`.
pub fn scale_fixture(name: &str) -> Value {
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": name, "namespace": TARGETS},
        "spec": {"replicas": 3}})
}

/// A CustomResourceDefinition named `{plural}.fuzz.example` (or as given, when it already
/// has that form), with a small structural schema.
fn crd(name: &str) -> Value {
    let plural = name.strip_suffix(".fuzz.example").unwrap_or(name);
    json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.fuzz.example")},
        "spec": {"group": "fuzz.example", "scope": "Namespaced",
            "names": {"plural": plural, "kind": "Fuzz", "singular": "fuzz", "shortNames": ["fz"]},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [{"name": "N", "type": "integer", "jsonPath": ".spec.n"}],
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {
                        "n": {"type": "integer", "minimum": 0, "default": 1},
                        "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
                        "any": {"x-kubernetes-preserve-unknown-fields": true, "type": "object"}},
                        "x-kubernetes-validations": [{"rule": "self.n < 1000", "message": "n too big"}]},
                    "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}})
}

/// An endpoint that only answers POSTs and stores nothing: TokenRequest and the reviews.
pub struct Endpoint {
    pub path: String,
    /// A valid body.
    pub body: Value,
}

/// TokenRequest (for the bystander ServiceAccount) and every review kind.
pub fn create_only() -> Vec<Endpoint> {
    let authn = "/apis/authentication.k8s.io/v1";
    let authz = "/apis/authorization.k8s.io/v1";
    let attrs = json!({"namespace": TARGETS, "verb": "get", "group": "quiver.dev", "resource": "microvms",
        "subresource": "status", "name": "x"});
    vec![
        Endpoint {
            path: format!("/api/v1/namespaces/{BYSTANDERS}/serviceaccounts/bystander/token"),
            body: json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"audiences": ["a"], "expirationSeconds": 3600,
                    "boundObjectRef": {"kind": "Secret", "apiVersion": "v1", "name": "s", "uid": "u"}}}),
        },
        Endpoint {
            path: format!("{authn}/tokenreviews"),
            body: json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": "a.b.c", "audiences": ["a"]}}),
        },
        Endpoint {
            path: format!("{authn}/selfsubjectreviews"),
            body: json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
        },
        Endpoint {
            path: format!("{authz}/selfsubjectaccessreviews"),
            body: json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs}}),
        },
        Endpoint {
            path: format!("{authz}/subjectaccessreviews"),
            body: json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "system:serviceaccount:fuzz:s", "groups": ["g"], "uid": "u",
                    "nonResourceAttributes": {"path": "/apis", "verb": "get"}}}),
        },
        Endpoint {
            path: format!("{authz}/selfsubjectrulesreviews"),
            body: json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                "spec": {"namespace": TARGETS}}),
        },
    ]
}
