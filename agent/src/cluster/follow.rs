//! What this host runs follows the ledger: the VMs assigned to it, under their epochs, and
//! nothing at all while its lease has lapsed. [`plan`] is the pure diff; [`apply`] carries it
//! out on the VM manager.

use std::cmp::Ordering;

use futures::StreamExt as _;
use prost::Message as _;
use quiver_raft::lease::LeaseState;
use quiver_raft::ledger::VmVersion;
use quiver_rpc::proto;

use crate::vm::VmManager;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Apply the ledger's request under this epoch (new VM, newer generation or epoch).
    Put { uid: String, epoch: u64 },
    /// Stop and remove: no longer assigned here, or the lease lapsed.
    Delete { uid: String },
}

/// The steps that make `local` match `assigned`, both in uid order: all of them under a
/// current lease, removals only once it lapsed, none while the ledger is behind the lease.
/// One merge of the two lists: a pass costs this host's VMs and copies only what changes.
#[must_use]
pub fn plan<'a>(
    assigned: impl IntoIterator<Item = (&'a str, VmVersion)>,
    local: &[(String, VmVersion)],
    lease: LeaseState,
) -> Vec<Step> {
    let delete = |uid: &String| Step::Delete { uid: uid.clone() };
    match lease {
        LeaseState::Lapsed => return local.iter().map(|(uid, _)| delete(uid)).collect(),
        LeaseState::Behind => return Vec::new(),
        LeaseState::Current => {}
    }
    let (mut deletes, mut puts) = (Vec::new(), Vec::new());
    let mut local = local.iter().peekable();
    for (uid, want) in assigned {
        // Local VMs before `uid` are not assigned here.
        let have = loop {
            match local.peek().map(|(have, _)| have.as_str().cmp(uid)) {
                Some(Ordering::Less) => deletes.extend(local.next().map(|(u, _)| delete(u))),
                Some(Ordering::Equal) => break local.next().map(|(_, v)| *v),
                Some(Ordering::Greater) | None => break None,
            }
        };
        let behind =
            have.is_none_or(|have| have.epoch < want.epoch || have.generation < want.generation);
        if behind {
            puts.push(Step::Put {
                uid: uid.to_owned(),
                epoch: want.epoch,
            });
        }
    }
    deletes.extend(local.map(|(uid, _)| delete(uid)));
    deletes.append(&mut puts);
    deletes
}

/// The VMs whose new copy waits for this host (`to_release`) and of which it has no copy
/// left, not even one still stopping: to be released.
pub fn released<'a>(
    to_release: &'a [String],
    local: &'a [(String, VmVersion)],
) -> impl Iterator<Item = String> + 'a {
    to_release
        .iter()
        .filter(|uid| local.binary_search_by(|(have, _)| have.cmp(*uid)).is_err())
        .cloned()
}

/// The VM manager's VMs (those being deleted included: deleting again is a no-op), as last
/// accepted, in uid order.
#[must_use]
pub fn local(manager: &VmManager) -> Vec<(String, VmVersion)> {
    let mut local: Vec<(String, VmVersion)> = {
        let vms = manager.shared.vms();
        vms.iter()
            .map(|(uid, entry)| {
                let version = VmVersion {
                    generation: entry.meta.generation,
                    epoch: entry.meta.epoch,
                };
                (uid.clone(), version)
            })
            .collect()
    };
    local.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    local
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
    use std::collections::BTreeMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn v(generation: i64, epoch: u64) -> VmVersion {
        VmVersion { generation, epoch }
    }

    fn list(items: &[(&str, VmVersion)]) -> Vec<(String, VmVersion)> {
        let mut list: Vec<_> = items.iter().map(|(u, v)| ((*u).to_owned(), *v)).collect();
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        list
    }

    fn run(
        assigned: &[(String, VmVersion)],
        local: &[(String, VmVersion)],
        lease: LeaseState,
    ) -> Vec<Step> {
        plan(assigned.iter().map(|(u, v)| (u.as_str(), *v)), local, lease)
    }

    #[test]
    fn new_newer_and_moved_vms_are_put_and_foreign_ones_removed() {
        let assigned = list(&[("new", v(1, 1)), ("newer", v(2, 1)), ("same", v(1, 3))]);
        let local = list(&[("newer", v(1, 1)), ("same", v(1, 3)), ("gone", v(1, 1))]);
        let steps = run(&assigned, &local, LeaseState::Current);
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

    /// The merge against the plain definition, on seeded random lists: every local VM not
    /// assigned is removed, every assigned one missing or behind (epoch or generation) is put.
    #[test]
    fn the_merge_plans_what_the_definition_says() {
        for seed in 0..500 {
            let mut rng = StdRng::seed_from_u64(seed);
            let random = |rng: &mut StdRng| -> BTreeMap<String, VmVersion> {
                (0..rng.random_range(0..40))
                    .map(|_| {
                        let uid = format!("vm-{}", rng.random_range(0..60));
                        (uid, v(rng.random_range(0..3), rng.random_range(0..3)))
                    })
                    .collect()
            };
            let (assigned, local) = (random(&mut rng), random(&mut rng));
            let mut want: Vec<Step> = local
                .keys()
                .filter(|uid| !assigned.contains_key(*uid))
                .map(|uid| Step::Delete { uid: uid.clone() })
                .collect();
            want.extend(assigned.iter().filter_map(|(uid, a)| {
                let behind = local
                    .get(uid)
                    .is_none_or(|l| l.epoch < a.epoch || l.generation < a.generation);
                behind.then(|| Step::Put {
                    uid: uid.clone(),
                    epoch: a.epoch,
                })
            }));
            let (assigned, local): (Vec<_>, Vec<_>) =
                (assigned.into_iter().collect(), local.into_iter().collect());
            assert_eq!(
                run(&assigned, &local, LeaseState::Current),
                want,
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_lapsed_lease_removes_everything_and_starts_nothing() {
        let assigned = list(&[("a", v(1, 1)), ("b", v(1, 1))]);
        let local = list(&[("a", v(1, 1))]);
        assert_eq!(
            run(&assigned, &local, LeaseState::Lapsed),
            [Step::Delete { uid: "a".into() }]
        );
    }

    #[test]
    fn a_ledger_behind_the_lease_changes_nothing() {
        let assigned = list(&[("stale", v(1, 1))]);
        let local = list(&[("other", v(1, 1))]);
        assert!(run(&assigned, &local, LeaseState::Behind).is_empty());
    }

    #[test]
    fn only_vms_with_no_copy_left_are_released() {
        let local = list(&[("a", v(1, 1)), ("stopping", v(1, 1)), ("z", v(1, 1))]);
        let waiting = ["stopping".to_owned(), "gone".to_owned()];
        assert_eq!(released(&waiting, &local).collect::<Vec<_>>(), ["gone"]);
    }

    #[test]
    fn a_vm_back_under_a_higher_epoch_is_put_again() {
        let assigned = list(&[("a", v(1, 4))]);
        let local = list(&[("a", v(1, 2))]);
        assert_eq!(
            run(&assigned, &local, LeaseState::Current),
            [Step::Put {
                uid: "a".into(),
                epoch: 4
            }]
        );
    }
}
