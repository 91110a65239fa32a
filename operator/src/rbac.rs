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
        kind: "Host",
        site: "operator/src/controller/mod.rs",
        why: "the Host reflector behind the Host controller and placement",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "hosts",
        names: &[],
        verbs: &["patch"],
        kind: "Host",
        site: "operator/src/controller/rollout/hosts.rs",
        why: "the Rollout controller moves a host by writing its spec.transport (merge patch)",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "microvms",
        names: &[],
        verbs: &["patch"],
        kind: "MicroVM",
        site: "operator/src/controller/rollout/vms.rs",
        why: "a MicroVM rollout writes each canary's kernel, initrd or cmdline and restarts it \
              (runStrategy and an annotation), by merge patches",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "rollouts",
        names: &[],
        verbs: &["list", "watch"],
        kind: "Rollout",
        site: "operator/src/controller/mod.rs",
        why: "the Rollout controller watches Rollouts in every namespace",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "rollouts",
        names: &[],
        verbs: &["get", "patch"],
        kind: "Rollout",
        site: "operator/src/controller/rollout/mod.rs",
        why: "each reconcile reads the Rollout fresh; a pause step without a duration sets \
              spec.paused, and clears it when the step ends another way",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "rollouts/status",
        names: &[],
        verbs: &["patch"],
        kind: "Rollout",
        site: "operator/src/controller/rollout/mod.rs",
        why: "Rollout status by server-side apply",
    },
    ApiAccess {
        scope: Scope::Cluster,
        group: "quiver.dev",
        resource: "hosts/status",
        names: &[],
        verbs: &["patch"],
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
        kind: "Event",
        site: "operator/src/controller/events.rs",
        why: "Events about the operator's objects: created, and patched into a series when one repeats",
    },
    ApiAccess {
        scope: Scope::Namespace(LEASE_NAMESPACE),
        group: "coordination.k8s.io",
        resource: "leases",
        names: &[],
        verbs: &["create"],
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
