//! Every Kubernetes API call `quiver-operator run` makes, as RBAC rules. The Helm chart's
//! operator ClusterRole and Role (`charts/quiver/templates/rbac-operator.yaml`) must grant
//! exactly these; `tests/chart_rbac.rs` renders the chart and compares. `dev` mode (CRD
//! install, demo VMs, agent processes) talks to its own control plane and is not listed.

use quiver_crds::access::{ApiAccess, Scope};

use crate::operator::{LEASE_NAME, LEASE_NAMESPACE};
use crate::pki::{SECRET_NAME, SECRET_NAMESPACE};

pub const OPERATOR_API_ACCESS: &[ApiAccess] = &[
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "microvms",
        names: &[],
        verbs: &["list", "watch"],
        only_with: None,
        kind: "MicroVM",
        site: "operator/src/controller/mod.rs",
        why: "the MicroVM controller watches MicroVMs in every namespace",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "microvms",
        names: &[],
        verbs: &["patch"],
        only_with: None,
        kind: "MicroVM",
        site: "operator/src/controller/microvm.rs",
        why: "kube's finalizer helper adds and removes quiver.dev/vm with a JSON patch",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "microvms/status",
        names: &[],
        verbs: &["patch"],
        only_with: None,
        kind: "MicroVM",
        site: "operator/src/controller/microvm.rs",
        why: "MicroVM status by server-side apply",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "hosts",
        names: &[],
        verbs: &["list", "watch"],
        only_with: None,
        kind: "Host",
        site: "operator/src/controller/mod.rs",
        why: "the Host reflector behind the Host controller and placement",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "hosts/status",
        names: &[],
        verbs: &["patch"],
        only_with: None,
        kind: "Host",
        site: "operator/src/controller/host.rs",
        why: "Host status from heartbeats by server-side apply",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "events.k8s.io",
        resource: "events",
        names: &[],
        verbs: &["create", "patch"],
        only_with: None,
        kind: "Recorder",
        site: "operator/src/controller/mod.rs",
        why: "kube's Recorder creates Events and patches them when one repeats",
    },
    ApiAccess {
        scope: Scope::Namespace(LEASE_NAMESPACE),
        group: "coordination.k8s.io",
        resource: "leases",
        names: &[],
        verbs: &["create"],
        only_with: None,
        kind: "Lease",
        site: "operator/src/leader.rs",
        why: "the first replica creates the leader-election Lease",
    },
    ApiAccess {
        scope: Scope::Namespace(LEASE_NAMESPACE),
        group: "coordination.k8s.io",
        resource: "leases",
        names: &[LEASE_NAME],
        verbs: &["get", "update"],
        only_with: None,
        kind: "Lease",
        site: "operator/src/leader.rs",
        why: "read, renew and release the Lease (replace is an update)",
    },
    ApiAccess {
        scope: Scope::Namespace(SECRET_NAMESPACE),
        group: "",
        resource: "secrets",
        names: &[],
        verbs: &["create"],
        only_with: None,
        kind: "Secret",
        site: "operator/src/pki.rs",
        why: "the cluster CA Secret, created once when missing",
    },
    ApiAccess {
        scope: Scope::Namespace(SECRET_NAMESPACE),
        group: "",
        resource: "secrets",
        names: &[SECRET_NAME],
        verbs: &["get"],
        only_with: None,
        kind: "Secret",
        site: "operator/src/pki.rs",
        why: "every replica reads the cluster CA at start",
    },
];

/// Source files of the operator that only `dev` mode runs: their API calls go to the dev
/// control plane with its admin token, never through the chart's ServiceAccount.
pub const DEV_ONLY_SOURCES: &[&str] = &[
    "operator/src/dev.rs",
    "operator/src/agents.rs",
    "operator/src/leftovers.rs",
];
