//! Every Kubernetes API call the agent makes through its `--kubeconfig`, as RBAC rules. The
//! Helm chart's agent ClusterRole and Raft Role (`charts/quiver/templates/rbac-agent.yaml`)
//! must grant exactly these; `tests/chart_rbac.rs` renders the chart and compares.

use quiver_crds::access::{ApiAccess, Scope};

use crate::cluster::bootstrap::CONFIG_MAP;
use quiver_crds::operator_identity;

pub const AGENT_API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "hosts",
        names: &[],
        // Server-side apply is a patch; applying a Host that does not exist yet creates it,
        // which RBAC checks as create.
        verbs: &["create", "patch"],
        kind: "Host",
        site: "agent/src/registration.rs",
        why: "each agent registers its own Host by server-side apply",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "hosts",
        names: &[],
        verbs: &["list", "watch"],
        kind: "Host",
        site: "agent/src/peers.rs",
        why: "the Iroh allowlist and Raft membership follow the registered Hosts",
    },
    ApiAccess {
        scope: Scope::Configured("raft.namespace"),
        group: "",
        resource: "configmaps",
        names: &[],
        verbs: &["create"],
        kind: "ConfigMap",
        site: "agent/src/cluster/bootstrap.rs",
        why: "the agent whose create of quiver-raft succeeds bootstraps the group",
    },
    ApiAccess {
        scope: Scope::Configured("raft.namespace"),
        group: "",
        resource: "configmaps",
        names: &[CONFIG_MAP],
        verbs: &["get"],
        kind: "ConfigMap",
        site: "agent/src/cluster/bootstrap.rs",
        why: "the others read quiver-raft to learn whether they were named",
    },
    ApiAccess {
        scope: Scope::Namespace(operator_identity::NAMESPACE),
        group: "",
        resource: "configmaps",
        names: &[operator_identity::NAME],
        verbs: &["list", "watch"],
        kind: "ConfigMap",
        site: "agent/src/operator_id.rs",
        why: "the Iroh allowlist admits the endpoint id the operator publishes (a watch of that one ConfigMap, by field selector)",
    },
];
