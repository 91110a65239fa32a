//! What this host runs follows the ledger: the VMs assigned to it, under their epochs, and
//! nothing at all while its lease has lapsed. [`plan`] is the pure diff; [`apply`] carries it
//! out on the VM manager.

use std::collections::BTreeMap;

use futures::StreamExt as _;
use prost::Message as _;
use quiver_raft::Ledger;
use quiver_raft::lease::LeaseState;
use quiver_rpc::proto;

use crate::vm::VmManager;

/// A VM as the ledger or the VM manager has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    pub generation: i64,
    pub epoch: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Apply the ledger's request under this epoch (new VM, newer generation or epoch).
    Put { uid: String, epoch: u64 },
    /// Stop and remove: no longer assigned here, or the lease lapsed.
    Delete { uid: String },
}

/// The steps that make `local` match `assigned` (both keyed by uid): all of them under a
/// current lease, removals only once it lapsed, none while the ledger is behind the lease.
#[must_use]
pub fn plan(
    assigned: &BTreeMap<String, Version>,
    local: &BTreeMap<String, Version>,
    lease: LeaseState,
) -> Vec<Step> {
    let delete = |uid: &String| Step::Delete { uid: uid.clone() };
    match lease {
        LeaseState::Lapsed => return local.keys().map(delete).collect(),
        LeaseState::Behind => return Vec::new(),
        LeaseState::Current => {}
    }
    let stale = local.keys().filter(|uid| !assigned.contains_key(*uid));
    let mut steps: Vec<Step> = stale.map(delete).collect();
    for (uid, want) in assigned {
        let behind = local
            .get(uid)
            .is_none_or(|have| have.epoch < want.epoch || have.generation < want.generation);
        if behind {
            steps.push(Step::Put {
                uid: uid.clone(),
                epoch: want.epoch,
            });
        }
    }
    steps
}

/// The VMs whose new copy waits for this host (`to_release`) and of which it has no copy
/// left, not even one still stopping: to be released.
pub fn released<'a>(
    to_release: &'a [String],
    local: &'a BTreeMap<String, Version>,
) -> impl Iterator<Item = String> + 'a {
    to_release
        .iter()
        .filter(|uid| !local.contains_key(*uid))
        .cloned()
}

/// The ledger's VMs that `host` may run now (a drained VM waits for its old host's release).
#[must_use]
pub fn assigned(ledger: &Ledger, host: &str) -> BTreeMap<String, Version> {
    ledger
        .runnable_on(host)
        .map(|(uid, vm, epoch)| {
            let version = Version {
                generation: vm.generation,
                epoch,
            };
            (uid.to_owned(), version)
        })
        .collect()
}

/// The VM manager's VMs (those being deleted included: deleting again is a no-op), as last
/// accepted.
#[must_use]
pub fn local(manager: &VmManager) -> BTreeMap<String, Version> {
    let vms = manager.shared.vms();
    vms.iter()
        .map(|(uid, entry)| {
            let version = Version {
                generation: entry.meta.generation,
                epoch: entry.meta.epoch,
            };
            (uid.clone(), version)
        })
        .collect()
}

/// Puts carried out at once: each waits for its VM's actor to take it (files written, QEMU
/// spawned), so a host given thousands of VMs starts them side by side.
const CONCURRENT_PUTS: usize = 32;

/// Carries out `steps`; `request` gives a VM's put from the ledger. A put the manager refuses
/// (an image missing on this host, say) is logged: the entry agent already validated it.
pub async fn apply(
    manager: &VmManager,
    steps: Vec<Step>,
    request: impl Fn(&str) -> Option<Vec<u8>>,
) {
    let mut puts = Vec::new();
    for step in steps {
        match step {
            Step::Delete { uid } => {
                if let Err(e) = manager.delete(&uid) {
                    tracing::warn!(%uid, error = %e, "cannot remove a VM no longer ours");
                }
            }
            Step::Put { uid, epoch } => {
                let Some(bytes) = request(&uid) else { continue };
                match proto::PutVmRequest::decode(bytes.as_slice()) {
                    Ok(put) => puts.push(proto::PutVmRequest { epoch, ..put }),
                    Err(e) => tracing::error!(%uid, error = %e, "the ledger holds a malformed put"),
                }
            }
        }
    }
    futures::stream::iter(puts)
        .for_each_concurrent(CONCURRENT_PUTS, |put| async move {
            let (uid, epoch) = (&put.uid, put.epoch);
            match manager.put(&put).await {
                Ok(_) => tracing::info!(%uid, epoch, "running the VM the ledger assigned"),
                Err(e) => tracing::warn!(%uid, epoch, error = %e, "cannot run an assigned VM"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(generation: i64, epoch: u64) -> Version {
        Version { generation, epoch }
    }

    fn map(items: &[(&str, Version)]) -> BTreeMap<String, Version> {
        items.iter().map(|(u, v)| ((*u).to_owned(), *v)).collect()
    }

    #[test]
    fn new_newer_and_moved_vms_are_put_and_foreign_ones_removed() {
        let assigned = map(&[("new", v(1, 1)), ("newer", v(2, 1)), ("same", v(1, 3))]);
        let local = map(&[("newer", v(1, 1)), ("same", v(1, 3)), ("gone", v(1, 1))]);
        let steps = plan(&assigned, &local, LeaseState::Current);
        assert_eq!(
            steps,
            [
                Step::Delete { uid: "gone".into() },
                Step::Put {
                    uid: "new".into(),
                    epoch: 1
                },
                Step::Put {
                    uid: "newer".into(),
                    epoch: 1
                },
            ]
        );
    }

    #[test]
    fn a_lapsed_lease_removes_everything_and_starts_nothing() {
        let assigned = map(&[("a", v(1, 1)), ("b", v(1, 1))]);
        let local = map(&[("a", v(1, 1))]);
        assert_eq!(
            plan(&assigned, &local, LeaseState::Lapsed),
            [Step::Delete { uid: "a".into() }]
        );
    }

    #[test]
    fn a_ledger_behind_the_lease_changes_nothing() {
        let assigned = map(&[("stale", v(1, 1))]);
        let local = map(&[("other", v(1, 1))]);
        assert!(plan(&assigned, &local, LeaseState::Behind).is_empty());
    }

    #[test]
    fn only_vms_with_no_copy_left_are_released() {
        let local = map(&[("stopping", v(1, 1))]);
        let waiting = ["stopping".to_owned(), "gone".to_owned()];
        assert_eq!(released(&waiting, &local).collect::<Vec<_>>(), ["gone"]);
    }

    #[test]
    fn a_vm_back_under_a_higher_epoch_is_put_again() {
        let assigned = map(&[("a", v(1, 4))]);
        let local = map(&[("a", v(1, 2))]);
        assert_eq!(
            plan(&assigned, &local, LeaseState::Current),
            [Step::Put {
                uid: "a".into(),
                epoch: 4
            }]
        );
    }
}
