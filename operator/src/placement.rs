//! Choosing a host for a VM: a pure function of the VM's needs and the hosts' state.
//!
//! Until the agents' Raft group places VMs (DESIGN.md "Create"), the operator places them
//! with this function and sends the VM to the chosen host. Memory is never overcommitted;
//! vCPUs are (a VM may not ask for more vCPUs than its host has, but several VMs may share
//! them), which is what QEMU guests that mostly idle need.
//!
//! A host takes a new VM only when its agent is reachable and has listed its VMs
//! ([`Reach::Listed`]): an agent that has not listed might already run the VM. Such hosts are
//! not candidates; when no candidate is left the VM waits, and the message names each host
//! that could have taken it and why it cannot now.

use std::collections::BTreeMap;

use quiver_crds::{HostResources, MicroVMSpec};

pub use crate::agent_client::Reach;

/// What placement needs to know about one host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostView {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub capacity: HostResources,
    /// Memory (MiB) taken by the VMs already assigned to the host.
    pub allocated_memory_mib: u64,
    pub ready: bool,
    /// False when the Host is cordoned or draining (`spec.unschedulable`, `spec.drain`).
    pub schedulable: bool,
    /// The agent's status stream; `None` when the operator does not follow it (yet).
    pub reach: Option<Reach>,
}

impl HostView {
    fn free_memory_mib(&self) -> u64 {
        self.capacity
            .memory_mib
            .saturating_sub(self.allocated_memory_mib)
    }
}

/// The outcome of placing one VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    Host(String),
    /// No host can run the VM now; `reason` is a CamelCase condition reason, `message` says
    /// what a person can do about it.
    Unschedulable {
        reason: &'static str,
        message: String,
    },
}

/// The reason when the only hosts that fit are ones whose agent the operator is still
/// connecting to for the first time (a connect attempt is bounded): the VM is placed as soon
/// as one has listed, so the controller waits without reporting a failure.
pub const CONNECTING: &str = "HostsConnecting";

/// Picks the ready, reachable host, matching `spec.nodeSelector`, with room for the VM and the
/// most free memory (ties broken by name, so the choice is deterministic).
#[must_use]
pub fn place(spec: &MicroVMSpec, hosts: &[HostView]) -> Placement {
    if hosts.is_empty() {
        return unschedulable(
            "NoHosts",
            "no Host is registered; start an agent (`quiver-operator dev --agents 1`) and check \
             `kubectl get qh`"
                .to_owned(),
        );
    }
    let ready: Vec<&HostView> = hosts.iter().filter(|h| h.ready).collect();
    if ready.is_empty() {
        let names = hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>();
        return unschedulable(
            "NoReadyHosts",
            format!(
                "waiting for a host: no Host is Ready (registered: {}); check the agents and \
                 `kubectl get qh`",
                names.join(", ")
            ),
        );
    }
    let open: Vec<&HostView> = ready.into_iter().filter(|h| h.schedulable).collect();
    if open.is_empty() {
        return unschedulable(
            "HostsCordoned",
            "every Ready host is cordoned or draining (spec.unschedulable or spec.drain); \
             uncordon one (`kubectl patch qh <host> --type merge -p \
             '{\"spec\":{\"unschedulable\":false,\"drain\":false}}'`)"
                .to_owned(),
        );
    }
    let matching: Vec<&HostView> = open
        .into_iter()
        .filter(|h| labels_match(&spec.node_selector, &h.labels))
        .collect();
    if matching.is_empty() {
        let wanted = spec
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        return unschedulable(
            "NoMatchingHost",
            format!(
                "no Ready host has the labels of spec.nodeSelector ({wanted}); label a host \
                 (`kubectl label qh <host> {wanted}`) or change spec.nodeSelector"
            ),
        );
    }
    let big_enough: Vec<&HostView> = matching
        .iter()
        .copied()
        .filter(|h| spec.cpus <= h.capacity.cpus)
        .collect();
    if big_enough.is_empty() {
        let most = matching.iter().map(|h| h.capacity.cpus).max().unwrap_or(0);
        return unschedulable(
            "InsufficientCPU",
            format!(
                "spec.cpus {} is more than any matching host has (largest: {most} CPUs); lower \
                 spec.cpus or add a bigger host",
                spec.cpus
            ),
        );
    }
    let need = u64::from(spec.memory_mib);
    let fitting: Vec<&HostView> = big_enough
        .iter()
        .copied()
        .filter(|h| h.free_memory_mib() >= need)
        .collect();
    let reachable: Vec<&HostView> = fitting
        .iter()
        .copied()
        .filter(|h| h.reach == Some(Reach::Listed))
        .collect();
    let connecting = |h: &&HostView| matches!(h.reach, None | Some(Reach::Connecting));
    if reachable.is_empty() && !fitting.is_empty() && fitting.iter().all(connecting) {
        return unschedulable(
            CONNECTING,
            "waiting for a host: connecting to its agent".to_owned(),
        );
    }
    if reachable.is_empty() && !fitting.is_empty() {
        let why = fitting
            .iter()
            .map(|h| match &h.reach {
                Some(Reach::Unreachable(e)) => format!("{} unreachable ({e})", h.name),
                Some(Reach::Connecting | Reach::Listed) | None => {
                    format!("{} connecting", h.name)
                }
            })
            .collect::<Vec<_>>()
            .join("; ");
        return unschedulable(
            "HostsUnreachable",
            format!(
                "waiting for a host: {why}; the VM is placed as soon as one of these agents \
                 answers (check `kubectl get qh` and the agents' logs)"
            ),
        );
    }
    let best = reachable.iter().max_by(|a, b| {
        a.free_memory_mib()
            .cmp(&b.free_memory_mib())
            .then_with(|| b.name.cmp(&a.name))
    });
    match best {
        Some(host) => Placement::Host(host.name.clone()),
        None => {
            let roomiest = big_enough
                .iter()
                .max_by_key(|h| h.free_memory_mib())
                .map(|h| format!("{} has {} MiB free", h.name, h.free_memory_mib()))
                .unwrap_or_default();
            unschedulable(
                "InsufficientMemory",
                format!(
                    "spec.memoryMiB {need} is more than any matching host has free ({roomiest}); \
                     lower spec.memoryMiB, delete other VMs or add a host with more memory"
                ),
            )
        }
    }
}

fn unschedulable(reason: &'static str, message: String) -> Placement {
    Placement::Unschedulable { reason, message }
}

fn labels_match(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_crds::MicroVM;

    fn host(name: &str, memory_mib: u64, allocated: u64) -> HostView {
        HostView {
            name: name.to_owned(),
            labels: BTreeMap::new(),
            capacity: HostResources {
                cpus: 2,
                memory_mib,
            },
            allocated_memory_mib: allocated,
            ready: true,
            schedulable: true,
            reach: Some(Reach::Listed),
        }
    }

    fn unreachable(mut h: HostView) -> HostView {
        h.reach = Some(Reach::Unreachable("connection refused".into()));
        h
    }

    #[test]
    fn an_unreachable_agent_is_not_a_candidate_and_does_not_block_the_others() {
        let vm = MicroVM::test("a");
        let hosts = [unreachable(host("a", 8192, 0)), host("b", 1024, 0)];
        assert_eq!(place(&vm.spec, &hosts), Placement::Host("b".into()));
    }

    #[test]
    fn with_every_fitting_agent_unreachable_the_vm_waits_and_says_for_whom() {
        let vm = MicroVM::test("a");
        let mut connecting = host("b", 1024, 0);
        connecting.reach = None;
        let hosts = [unreachable(host("a", 8192, 0)), connecting];
        let Placement::Unschedulable { reason, message } = place(&vm.spec, &hosts) else {
            panic!("placed a VM on an agent that has not listed its VMs");
        };
        assert_eq!(reason, "HostsUnreachable");
        assert!(
            message.starts_with(
                "waiting for a host: a unreachable (connection refused); b connecting"
            ),
            "{message}"
        );
    }

    #[test]
    fn hosts_still_connecting_make_the_vm_wait_without_a_failure() {
        let vm = MicroVM::test("a");
        let mut connecting = host("a", 8192, 0);
        connecting.reach = Some(Reach::Connecting);
        assert!(matches!(
            place(&vm.spec, &[connecting]),
            Placement::Unschedulable {
                reason: CONNECTING,
                ..
            }
        ));
    }

    #[test]
    fn a_full_unreachable_host_is_reported_as_full_not_as_unreachable() {
        let vm = MicroVM::test("a").memory_mib(4096);
        let hosts = [unreachable(host("a", 8192, 0)), host("b", 1024, 0)];
        assert!(matches!(
            place(&vm.spec, &hosts),
            Placement::Unschedulable {
                reason: "HostsUnreachable",
                ..
            }
        ));
        let hosts = [unreachable(host("a", 2048, 0)), host("b", 1024, 0)];
        assert!(matches!(
            place(&vm.spec, &hosts),
            Placement::Unschedulable {
                reason: "InsufficientMemory",
                ..
            }
        ));
    }

    #[test]
    fn picks_the_host_with_most_free_memory() {
        let vm = MicroVM::test("a");
        let hosts = [host("a", 4096, 3000), host("b", 2048, 0)];
        assert_eq!(place(&vm.spec, &hosts), Placement::Host("b".into()));
    }

    #[test]
    fn ties_go_to_the_first_name() {
        let vm = MicroVM::test("a");
        let hosts = [host("b", 1024, 0), host("a", 1024, 0)];
        assert_eq!(place(&vm.spec, &hosts), Placement::Host("a".into()));
    }

    #[test]
    fn too_much_memory_is_unschedulable_with_the_field_named() {
        let vm = MicroVM::test("big").memory_mib(100_000);
        let Placement::Unschedulable { reason, message } = place(&vm.spec, &[host("a", 4096, 0)])
        else {
            panic!("placed a VM that fits nowhere");
        };
        assert_eq!(reason, "InsufficientMemory");
        assert!(message.contains("spec.memoryMiB 100000"), "{message}");
        assert!(message.contains("a has 4096 MiB free"), "{message}");
    }

    #[test]
    fn node_selector_without_matching_host_is_unschedulable() {
        let vm = MicroVM::test("gpu").node_selector("gpu", "true");
        let Placement::Unschedulable { reason, message } = place(&vm.spec, &[host("a", 4096, 0)])
        else {
            panic!("placed a VM on a host without its labels");
        };
        assert_eq!(reason, "NoMatchingHost");
        assert!(
            message.contains("kubectl label qh <host> gpu=true"),
            "{message}"
        );
    }

    #[test]
    fn node_selector_matches_host_labels() {
        let vm = MicroVM::test("gpu").node_selector("gpu", "true");
        let mut labelled = host("b", 1024, 0);
        labelled.labels.insert("gpu".into(), "true".into());
        let hosts = [host("a", 8192, 0), labelled];
        assert_eq!(place(&vm.spec, &hosts), Placement::Host("b".into()));
    }

    #[test]
    fn hosts_that_are_not_ready_are_skipped() {
        let vm = MicroVM::test("a");
        let mut down = host("a", 8192, 0);
        down.ready = false;
        assert_eq!(
            place(&vm.spec, &[down.clone(), host("b", 1024, 0)]),
            Placement::Host("b".into())
        );
        assert!(matches!(
            place(&vm.spec, &[down]),
            Placement::Unschedulable {
                reason: "NoReadyHosts",
                ..
            }
        ));
    }

    #[test]
    fn cordoned_and_draining_hosts_take_no_new_vm() {
        let vm = MicroVM::test("a");
        let mut cordoned = host("a", 8192, 0);
        cordoned.schedulable = false;
        assert_eq!(
            place(&vm.spec, &[cordoned.clone(), host("b", 1024, 0)]),
            Placement::Host("b".into())
        );
        assert!(matches!(
            place(&vm.spec, &[cordoned]),
            Placement::Unschedulable {
                reason: "HostsCordoned",
                ..
            }
        ));
    }

    #[test]
    fn no_hosts_at_all_says_how_to_start_one() {
        let vm = MicroVM::test("a");
        assert!(matches!(
            place(&vm.spec, &[]),
            Placement::Unschedulable {
                reason: "NoHosts",
                ..
            }
        ));
    }

    #[test]
    fn more_vcpus_than_the_host_has_is_unschedulable() {
        let vm = MicroVM::test("a").cpus(8);
        assert!(matches!(
            place(&vm.spec, &[host("a", 8192, 0)]),
            Placement::Unschedulable {
                reason: "InsufficientCPU",
                ..
            }
        ));
    }
}
