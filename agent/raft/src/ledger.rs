//! The placement ledger: the replicated state every agent holds, and the one function that
//! changes it, [`Ledger::apply`].
//!
//! Pure and deterministic: the same commands in the same order give the same ledger on every
//! node. Time enters only inside commands (`now_ms` is the proposing leader's clock, carried in
//! the log), and placement ([`place`]) depends on nothing but the ledger, so a follower
//! replaying the log computes the leader's assignments exactly.
//!
//! Fencing: every assignment carries an epoch, bumped whenever a VM moves to another host; an
//! agent refuses puts with a lower epoch than it applied (the agent's per-VM check), so a VM
//! taken from a host declared down can never be restarted there by a stale command.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A host in the ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub cpus: u32,
    pub memory_mib: u64,
    pub labels: BTreeMap<String, String>,
    /// The lease runs until this time (the renewing leader's wall clock, ms): for people
    /// reading the ledger. Fencing never compares clocks: see [`Command::HostDown`].
    pub lease_until_ms: u64,
    /// Committed renewals so far. A `HostDown` names the count its leader saw, so a renewal
    /// committed after that decision cancels it (checked at apply time, in log order).
    pub renewals: u64,
    /// Declared down by the leader ([`Command::HostDown`]); no new VMs, its VMs moved away.
    pub down: bool,
    /// Cordoned: no new VMs; those already here stay.
    pub unschedulable: bool,
    /// Draining: no new VMs, and those here move away, each stopped here before it starts
    /// elsewhere ([`Ledger::releases`]).
    pub draining: bool,
    /// The transport of each service this host is to serve (`vm` → `iroh`), from its Host's
    /// `spec.transport`; empty: the agent's own setting. Opaque to the ledger: the agent
    /// checks the names when it applies them.
    #[serde(default)]
    pub transports: BTreeMap<String, String>,
}

/// A VM the operator wants running, with what placement needs to know of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVm {
    pub uid: String,
    pub generation: i64,
    pub cpus: u32,
    pub memory_mib: u64,
    pub node_selector: BTreeMap<String, String>,
    /// The agent's `PutVmRequest`, encoded; opaque to the ledger. One byte string to serde
    /// (postcard writes the same bytes as for a sequence of `u8`, JSON the same array), read
    /// and written in one piece rather than a byte at a time.
    #[serde(with = "serde_bytes")]
    pub request: Vec<u8>,
}

/// Where a VM runs, under which fencing epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub host: String,
    pub epoch: u64,
    /// The host it last failed on, avoided by the next placement.
    pub avoid: Option<String>,
}

/// Which version of a VM a host is to run: the generation asked for, under which epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmVersion {
    pub generation: i64,
    pub epoch: u64,
}

/// A replicated command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Adds or updates a host (capacity, labels). A host that is down stays down until it
    /// renews its lease.
    RegisterHost {
        name: String,
        cpus: u32,
        memory_mib: u64,
        labels: BTreeMap<String, String>,
    },
    /// Removes a host; its VMs move away.
    RemoveHost {
        name: String,
    },
    /// The host is alive at `now_ms` (leader clock): its lease runs `ttl_ms` longer. A host
    /// that was down is up again (its VMs went elsewhere; new ones may come).
    RenewLease {
        host: String,
        now_ms: u64,
        ttl_ms: u64,
    },
    /// The leader saw the host's lease lapse (plus the drift margin) at `now_ms`, when the
    /// ledger held `renewals` renewals of it. Refused if another renewal committed since: the
    /// host may hold a fresh lease.
    HostDown {
        host: String,
        now_ms: u64,
        renewals: u64,
    },
    /// Cordons (`unschedulable`) or drains a host, or returns it to service (both false).
    /// Draining moves its VMs away with a handoff: each new copy waits for this host's
    /// [`Command::Released`].
    Schedule {
        host: String,
        unschedulable: bool,
        drain: bool,
    },
    /// The transports `host` is to serve, per service (empty: its own setting). Changes no
    /// placement.
    SetTransports {
        host: String,
        services: BTreeMap<String, String>,
    },
    /// `host` no longer runs any copy of `uid` (its QEMU has exited): a copy placed elsewhere
    /// during a drain may start.
    Released {
        uid: String,
        host: String,
    },
    /// Adds or updates a desired VM and places it if it is not placed. Idempotent per uid +
    /// generation: an older or equal generation changes nothing.
    PutVm(DesiredVm),
    DeleteVm {
        uid: String,
    },
    /// Places every VM that has no host (e.g. after a host came back). Applied on any node, it
    /// computes the same result.
    Rebalance,
}

/// Commands committed in one log entry, applied in order: the proposer puts what callers
/// propose while earlier entries are in flight into one entry, so one disk flush carries them
/// all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch(pub Vec<Command>);

/// What applying a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// VMs whose assignment changed: (uid, new assignment or `None` when unplaced/removed).
    pub moved: Vec<(String, Option<Assignment>)>,
    /// Why the command was a no-op or partly refused (stale generation, unknown host, ...).
    pub note: Option<String>,
    /// The log index the command was applied at (set by the state machine).
    #[serde(default)]
    pub index: u64,
}

/// The replicated state.
///
/// Change it only through [`Ledger::apply`]: besides the replicated fields it keeps an index
/// derived from them (what each host runs), which `apply` maintains and a ledger read back
/// from a snapshot rebuilds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Replicated")]
pub struct Ledger {
    pub hosts: BTreeMap<String, HostEntry>,
    pub vms: BTreeMap<String, DesiredVm>,
    pub assignments: BTreeMap<String, Assignment>,
    /// The highest epoch given to each VM, kept while it waits unplaced so that no epoch is
    /// ever given twice.
    pub epochs: BTreeMap<String, u64>,
    /// Hosts that still run (or stop) a copy of a VM that was moved away from them while they
    /// were alive (a drain): the VM starts nowhere else until each has sent
    /// [`Command::Released`], or was declared down (then its lease lapsed: it is fenced).
    pub releases: BTreeMap<String, BTreeSet<String>>,
    /// Per host with VMs assigned: which, in which version, and the memory they take.
    /// Derived from `assignments` and `vms`, so that placing a VM and following a host's VMs
    /// cost the host's VMs, not the fleet's.
    #[serde(skip_serializing)]
    load: BTreeMap<String, HostLoad>,
}

/// The VMs assigned to one host, by uid, and their memory (in `u128`: no sum of `u64`s
/// overflows it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct HostLoad {
    vms: BTreeMap<String, VmVersion>,
    memory_mib: u128,
}

/// The ledger's stored form: its replicated fields, without the derived index.
#[derive(Deserialize)]
struct Replicated {
    hosts: BTreeMap<String, HostEntry>,
    vms: BTreeMap<String, DesiredVm>,
    assignments: BTreeMap<String, Assignment>,
    epochs: BTreeMap<String, u64>,
    releases: BTreeMap<String, BTreeSet<String>>,
}

impl From<Replicated> for Ledger {
    fn from(r: Replicated) -> Self {
        let mut ledger = Ledger {
            hosts: r.hosts,
            vms: r.vms,
            assignments: BTreeMap::new(),
            epochs: r.epochs,
            releases: r.releases,
            load: BTreeMap::new(),
        };
        for (uid, assignment) in r.assignments {
            ledger.set_assignment(&uid, assignment);
        }
        ledger
    }
}

impl Ledger {
    /// Applies one command. Never fails: a command that makes no sense (an unknown host) is a
    /// no-op that says so in [`Outcome::note`], the same on every node.
    pub fn apply(&mut self, command: &Command) -> Outcome {
        let mut out = Outcome::default();
        match command {
            Command::RegisterHost {
                name,
                cpus,
                memory_mib,
                labels,
            } => {
                let host = self.hosts.entry(name.clone()).or_default();
                host.cpus = *cpus;
                host.memory_mib = *memory_mib;
                host.labels.clone_from(labels);
                self.place_unassigned(&mut out);
            }
            Command::RemoveHost { name } => {
                if self.hosts.remove(name).is_none() {
                    out.note = Some(format!("no host {name}"));
                }
                self.forget_releases(name);
                self.evacuate(name, false, &mut out);
            }
            Command::RenewLease {
                host,
                now_ms,
                ttl_ms,
            } => match self.hosts.get_mut(host) {
                Some(entry) => {
                    entry.lease_until_ms = entry.lease_until_ms.max(now_ms.saturating_add(*ttl_ms));
                    entry.renewals += 1;
                    if entry.down {
                        entry.down = false;
                        self.place_unassigned(&mut out);
                    }
                }
                None => out.note = Some(format!("no host {host}")),
            },
            Command::HostDown {
                host,
                now_ms: _,
                renewals,
            } => match self.hosts.get_mut(host) {
                Some(entry) if entry.renewals != *renewals => {
                    out.note = Some(format!("host {host} renewed its lease meanwhile"));
                }
                Some(entry) if entry.down => {
                    out.note = Some(format!("host {host} is down already"));
                }
                Some(entry) => {
                    entry.down = true;
                    self.forget_releases(host);
                    self.evacuate(host, false, &mut out);
                }
                None => out.note = Some(format!("no host {host}")),
            },
            Command::Schedule {
                host,
                unschedulable,
                drain,
            } => match self.hosts.get_mut(host) {
                Some(entry) => {
                    entry.unschedulable = *unschedulable;
                    entry.draining = *drain;
                    if *drain {
                        self.evacuate(host, true, &mut out);
                    } else {
                        self.place_unassigned(&mut out);
                    }
                }
                None => out.note = Some(format!("no host {host}")),
            },
            Command::SetTransports { host, services } => match self.hosts.get_mut(host) {
                Some(entry) => entry.transports.clone_from(services),
                None => out.note = Some(format!("no host {host}")),
            },
            Command::Released { uid, host } => {
                let waiting = self.releases.get_mut(uid);
                if waiting.is_some_and(|hosts| hosts.remove(host)) {
                    self.releases.retain(|_, hosts| !hosts.is_empty());
                } else {
                    out.note = Some(format!("{uid} was not waiting for {host}"));
                }
            }
            Command::PutVm(vm) => {
                if let Some(known) = self.vms.get(&vm.uid)
                    && known.generation >= vm.generation
                {
                    out.note = Some(format!(
                        "generation {} already applied for {}",
                        known.generation, vm.uid
                    ));
                    return out;
                }
                self.set_desired(vm.clone());
                let fits = self
                    .assignments
                    .get(&vm.uid)
                    .is_some_and(|a| self.fits_where_it_is(vm, &a.host));
                if !fits {
                    self.assign(&vm.uid, None, &mut out);
                }
            }
            Command::DeleteVm { uid } => {
                if self.take_assignment(uid).is_some() {
                    out.moved.push((uid.clone(), None));
                }
                self.vms.remove(uid);
                self.epochs.remove(uid);
                self.releases.remove(uid);
            }
            Command::Rebalance => self.place_unassigned(&mut out),
        }
        out
    }

    /// The VMs `host` may run now, in uid order: assigned to it, and no other host still has
    /// to release them.
    pub fn runnable_on<'a>(&'a self, host: &str) -> impl Iterator<Item = (&'a str, VmVersion)> {
        let assigned = self.load.get(host).map(|load| &load.vms);
        assigned
            .into_iter()
            .flatten()
            .filter(|(uid, _)| !self.releases.contains_key(*uid))
            .map(|(uid, version)| (uid.as_str(), *version))
    }

    /// The VMs whose new copy waits for `host` to release its old one.
    pub fn to_release<'a>(&'a self, host: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.releases
            .iter()
            .filter(move |(_, hosts)| hosts.contains(host))
            .map(|(uid, _)| uid.as_str())
    }

    /// Hosts that are not down (the leader watches their leases).
    pub fn live_hosts(&self) -> impl Iterator<Item = &str> {
        self.hosts
            .iter()
            .filter(|(_, h)| !h.down)
            .map(|(name, _)| name.as_str())
    }

    /// Memory assigned on `host`, not counting `except`.
    fn memory_used(&self, host: &str, except: Option<&str>) -> u64 {
        let Some(load) = self.load.get(host) else {
            return 0;
        };
        let mut used = load.memory_mib;
        if let Some(uid) = except
            && load.vms.contains_key(uid)
        {
            used -= self.memory_of(uid);
        }
        u64::try_from(used).unwrap_or(u64::MAX)
    }

    fn memory_of(&self, uid: &str) -> u128 {
        self.vms.get(uid).map_or(0, |vm| u128::from(vm.memory_mib))
    }

    /// Places `uid` on `assignment.host` (moving it from any host it had), keeping the index.
    fn set_assignment(&mut self, uid: &str, assignment: Assignment) {
        self.take_assignment(uid);
        let memory = self.memory_of(uid);
        let version = VmVersion {
            generation: self.vms.get(uid).map_or(0, |vm| vm.generation),
            epoch: assignment.epoch,
        };
        let load = self.load.entry(assignment.host.clone()).or_default();
        load.vms.insert(uid.to_owned(), version);
        load.memory_mib += memory;
        self.assignments.insert(uid.to_owned(), assignment);
    }

    /// Unplaces `uid`, keeping the index.
    fn take_assignment(&mut self, uid: &str) -> Option<Assignment> {
        let taken = self.assignments.remove(uid)?;
        let memory = self.memory_of(uid);
        if let Some(load) = self.load.get_mut(&taken.host) {
            load.vms.remove(uid);
            load.memory_mib -= memory;
            if load.vms.is_empty() {
                self.load.remove(&taken.host);
            }
        }
        Some(taken)
    }

    /// Stores `vm`; if it is placed, its host's index follows its new generation and size.
    fn set_desired(&mut self, vm: DesiredVm) {
        let old_memory = self.memory_of(&vm.uid);
        if let Some(assignment) = self.assignments.get(&vm.uid)
            && let Some(load) = self.load.get_mut(&assignment.host)
        {
            load.memory_mib = load.memory_mib - old_memory + u128::from(vm.memory_mib);
            if let Some(version) = load.vms.get_mut(&vm.uid) {
                version.generation = vm.generation;
            }
        }
        self.vms.insert(vm.uid.clone(), vm);
    }

    fn fits_where_it_is(&self, vm: &DesiredVm, host: &str) -> bool {
        self.hosts
            .get(host)
            .is_some_and(|h| usable(h) && fits(h, self.memory_used(host, Some(&vm.uid)), vm))
    }

    /// Moves every VM of `host` elsewhere (or leaves it unplaced), avoiding `host`. With
    /// `handoff` (the host is alive) no new copy starts before `host` released its own.
    fn evacuate(&mut self, host: &str, handoff: bool, out: &mut Outcome) {
        let leaving: Vec<String> = self
            .load
            .get(host)
            .map(|load| load.vms.keys().cloned().collect())
            .unwrap_or_default();
        for uid in leaving {
            if handoff {
                let hosts = self.releases.entry(uid.clone()).or_default();
                hosts.insert(host.to_owned());
            }
            self.assign(&uid, Some(host.to_owned()), out);
        }
    }

    /// `host` is fenced or gone: nothing waits for it any more.
    fn forget_releases(&mut self, host: &str) {
        for hosts in self.releases.values_mut() {
            hosts.remove(host);
        }
        self.releases.retain(|_, hosts| !hosts.is_empty());
    }

    fn place_unassigned(&mut self, out: &mut Outcome) {
        let waiting: Vec<String> = self
            .vms
            .keys()
            .filter(|uid| !self.assignments.contains_key(*uid))
            .cloned()
            .collect();
        for uid in waiting {
            self.assign(&uid, None, out);
        }
    }

    /// (Re)places `uid`: every placement gets the next epoch. Without a fitting host the VM
    /// waits unassigned.
    fn assign(&mut self, uid: &str, avoid: Option<String>, out: &mut Outcome) {
        if !self.vms.contains_key(uid) {
            return;
        }
        let previous = self.take_assignment(uid);
        let avoid = avoid.or_else(|| previous.as_ref().and_then(|p| p.avoid.clone()));
        let placed = self
            .vms
            .get(uid)
            .and_then(|vm| place(self, vm, avoid.as_deref()));
        match placed {
            Some(host) => {
                // A host's own copy is no second copy: its agent replaces it in place.
                if let Some(hosts) = self.releases.get_mut(uid)
                    && hosts.remove(&host)
                    && hosts.is_empty()
                {
                    self.releases.remove(uid);
                }
                let epoch = self.epochs.get(uid).map_or(1, |e| e + 1);
                self.epochs.insert(uid.to_owned(), epoch);
                let assignment = Assignment { host, epoch, avoid };
                self.set_assignment(uid, assignment.clone());
                out.moved.push((uid.to_owned(), Some(assignment)));
            }
            None if previous.is_some() => out.moved.push((uid.to_owned(), None)),
            None => {}
        }
    }
}

fn usable(host: &HostEntry) -> bool {
    host.takes_new_vms()
}

impl HostEntry {
    /// Placement may put new VMs here: not down, cordoned or draining.
    #[must_use]
    pub fn takes_new_vms(&self) -> bool {
        !self.down && !self.unschedulable && !self.draining
    }
}

/// Memory is never overcommitted; vCPUs are (as the operator's placement does): a VM may not
/// ask for more vCPUs than its host has, but VMs that mostly idle share them.
fn fits(host: &HostEntry, memory_used: u64, vm: &DesiredVm) -> bool {
    vm.cpus <= host.cpus
        && memory_used
            .checked_add(vm.memory_mib)
            .is_some_and(|total| total <= host.memory_mib)
}

/// Why [`place`] found no host for a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplaced {
    /// A condition reason: `NoHosts`, `NoUsableHosts`, `NoMatchingHost`, `InsufficientCPU`
    /// or `InsufficientMemory`.
    pub reason: &'static str,
    /// In words that name what to change.
    pub message: String,
}

impl Unplaced {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Unplaced {
            reason,
            message: message.into(),
        }
    }
}

/// Why [`place`] finds no host for `vm`: the first of its filters no host passes.
#[must_use]
pub fn unplaced(ledger: &Ledger, vm: &DesiredVm) -> Unplaced {
    if ledger.hosts.is_empty() {
        return Unplaced::new("NoHosts", "no host is registered yet");
    }
    let usable: Vec<(&String, &HostEntry)> =
        ledger.hosts.iter().filter(|(_, h)| usable(h)).collect();
    if usable.is_empty() {
        return Unplaced::new("NoUsableHosts", "every host is down, cordoned or draining");
    }
    let matching: Vec<(&String, &HostEntry)> = usable
        .into_iter()
        .filter(|(_, h)| {
            vm.node_selector
                .iter()
                .all(|(k, v)| h.labels.get(k) == Some(v))
        })
        .collect();
    if matching.is_empty() {
        let wanted: Vec<String> = vm
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Unplaced::new(
            "NoMatchingHost",
            format!(
                "no usable host has the labels of spec.nodeSelector ({})",
                wanted.join(",")
            ),
        );
    }
    let most_cpus = matching.iter().map(|(_, h)| h.cpus).max().unwrap_or(0);
    if vm.cpus > most_cpus {
        return Unplaced::new(
            "InsufficientCPU",
            format!(
                "spec.cpus {} is more than any matching host has (largest: {most_cpus})",
                vm.cpus
            ),
        );
    }
    let roomiest = matching
        .iter()
        .map(|(name, h)| {
            let free = h
                .memory_mib
                .saturating_sub(ledger.memory_used(name, Some(&vm.uid)));
            (free, name.as_str())
        })
        .max();
    let (free, name) = roomiest.unwrap_or((0, ""));
    Unplaced::new(
        "InsufficientMemory",
        format!(
            "spec.memoryMiB {} is more than any matching host has free ({name} has {free} MiB)",
            vm.memory_mib
        ),
    )
}

/// The host for `vm`: usable, matching its node selector, with room for it, not `avoid` when
/// another fits; among those, the most free memory (spreading VMs), then the name.
#[must_use]
pub fn place(ledger: &Ledger, vm: &DesiredVm, avoid: Option<&str>) -> Option<String> {
    let candidates: Vec<(&String, u64)> = ledger
        .hosts
        .iter()
        .filter(|(_, h)| usable(h))
        .filter(|(_, h)| {
            vm.node_selector
                .iter()
                .all(|(k, v)| h.labels.get(k) == Some(v))
        })
        .filter_map(|(name, h)| {
            let used = ledger.memory_used(name, Some(&vm.uid));
            fits(h, used, vm).then(|| (name, h.memory_mib - used))
        })
        .collect();
    let preferred = candidates
        .iter()
        .filter(|(name, _)| Some(name.as_str()) != avoid)
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)));
    preferred
        .or_else(|| {
            candidates
                .iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))
        })
        .map(|(name, _)| (*name).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_s_request_bytes_encode_as_a_sequence_of_u8_did() {
        /// [`DesiredVm`] as it was, its request a plain `Vec<u8>` (serde: one `u8` at a time).
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Before {
            uid: String,
            generation: i64,
            cpus: u32,
            memory_mib: u64,
            node_selector: BTreeMap<String, String>,
            request: Vec<u8>,
        }
        let vm = DesiredVm {
            uid: "vm-1".into(),
            generation: 2,
            cpus: 1,
            memory_mib: 256,
            node_selector: BTreeMap::from([("zone".into(), "a".into())]),
            request: (0..=255).collect(),
        };
        let before = Before {
            uid: vm.uid.clone(),
            generation: vm.generation,
            cpus: vm.cpus,
            memory_mib: vm.memory_mib,
            node_selector: vm.node_selector.clone(),
            request: vm.request.clone(),
        };
        // The Raft messages (postcard) and the database (JSON) read what the other wrote.
        let wire = postcard::to_stdvec(&vm).expect("encode");
        assert_eq!(wire, postcard::to_stdvec(&before).expect("encode"));
        assert_eq!(
            postcard::from_bytes::<DesiredVm>(&wire).expect("decode"),
            vm
        );
        let json = serde_json::to_vec(&vm).expect("encode");
        assert_eq!(json, serde_json::to_vec(&before).expect("encode"));
        assert_eq!(
            serde_json::from_slice::<DesiredVm>(&json).expect("decode"),
            vm
        );
        assert_eq!(
            serde_json::from_slice::<Before>(&json).expect("decode"),
            before
        );
    }

    fn host(name: &str, memory_mib: u64) -> Command {
        Command::RegisterHost {
            name: name.into(),
            cpus: 8,
            memory_mib,
            labels: BTreeMap::new(),
        }
    }

    fn vm(uid: &str, generation: i64, memory_mib: u64) -> Command {
        Command::PutVm(DesiredVm {
            uid: uid.into(),
            generation,
            cpus: 1,
            memory_mib,
            ..DesiredVm::default()
        })
    }

    fn at(ledger: &Ledger, uid: &str) -> Option<(String, u64)> {
        ledger
            .assignments
            .get(uid)
            .map(|a| (a.host.clone(), a.epoch))
    }

    #[test]
    fn vms_spread_by_free_memory_and_puts_are_idempotent_per_generation() {
        let mut l = Ledger::default();
        l.apply(&host("a", 4096));
        l.apply(&host("b", 4096));
        l.apply(&vm("v1", 1, 1024));
        l.apply(&vm("v2", 1, 1024));
        assert_eq!(at(&l, "v1"), Some(("a".into(), 1)));
        assert_eq!(
            at(&l, "v2"),
            Some(("b".into(), 1)),
            "spread to the emptier host"
        );
        let again = l.apply(&vm("v1", 1, 1024));
        assert!(again.moved.is_empty() && again.note.is_some());
        let newer = l.apply(&vm("v1", 2, 512));
        assert!(
            newer.moved.is_empty(),
            "a VM that still fits stays: {newer:?}"
        );
    }

    #[test]
    fn a_host_declared_down_loses_its_vms_with_a_higher_epoch_unless_it_renewed() {
        let mut l = Ledger::default();
        l.apply(&host("a", 4096));
        l.apply(&vm("v1", 1, 1024));
        l.apply(&host("b", 4096));
        assert_eq!(at(&l, "v1"), Some(("a".into(), 1)));
        l.apply(&Command::RenewLease {
            host: "a".into(),
            now_ms: 1_000,
            ttl_ms: 5_000,
        });
        // Decided before the renewal committed: the renewal wins.
        let early = l.apply(&Command::HostDown {
            host: "a".into(),
            now_ms: 5_999,
            renewals: 0,
        });
        assert!(early.note.is_some(), "a renewed lease wins: {early:?}");
        assert_eq!(at(&l, "v1"), Some(("a".into(), 1)));
        l.apply(&Command::HostDown {
            host: "a".into(),
            now_ms: 6_000,
            renewals: 1,
        });
        assert_eq!(at(&l, "v1"), Some(("b".into(), 2)), "moved, epoch bumped");
        // Back up (it renews again): it takes new VMs, but v1 stays where it is now.
        l.apply(&Command::RenewLease {
            host: "a".into(),
            now_ms: 9_000,
            ttl_ms: 5_000,
        });
        assert!(!l.hosts["a"].down);
        assert_eq!(at(&l, "v1"), Some(("b".into(), 2)));
    }

    #[test]
    fn a_vm_with_nowhere_to_go_waits_and_never_reuses_an_epoch() {
        let mut l = Ledger::default();
        l.apply(&host("a", 2048));
        l.apply(&vm("v1", 1, 1024));
        let down = l.apply(&Command::HostDown {
            host: "a".into(),
            now_ms: 1,
            renewals: 0,
        });
        assert_eq!(down.moved, [("v1".to_owned(), None)]);
        assert_eq!(at(&l, "v1"), None);
        l.apply(&host("c", 2048));
        assert_eq!(at(&l, "v1"), Some(("c".into(), 2)));
    }

    #[test]
    fn node_selectors_capacity_and_cordons_are_respected() {
        let mut l = Ledger::default();
        l.apply(&Command::RegisterHost {
            name: "gpu".into(),
            cpus: 2,
            memory_mib: 1024,
            labels: [("gpu".to_owned(), "true".to_owned())].into(),
        });
        l.apply(&host("plain", 8192));
        let mut wants_gpu = DesiredVm {
            uid: "g".into(),
            generation: 1,
            cpus: 1,
            memory_mib: 512,
            ..DesiredVm::default()
        };
        wants_gpu.node_selector.insert("gpu".into(), "true".into());
        l.apply(&Command::PutVm(wants_gpu.clone()));
        assert_eq!(at(&l, "g").map(|(h, _)| h), Some("gpu".into()));
        let mut too_big = wants_gpu.clone();
        too_big.uid = "big".into();
        too_big.memory_mib = 4096;
        l.apply(&Command::PutVm(too_big));
        assert_eq!(at(&l, "big"), None, "does not fit the only matching host");
        l.apply(&Command::Schedule {
            host: "gpu".into(),
            unschedulable: false,
            drain: true,
        });
        assert_eq!(at(&l, "g"), None, "drained, and nowhere else matches");
    }

    #[test]
    fn a_hosts_transports_are_kept_until_changed_and_go_with_the_host() {
        let mut l = Ledger::default();
        let iroh = BTreeMap::from([("vm".to_owned(), "iroh".to_owned())]);
        let set = |host: &str, services: &BTreeMap<String, String>| Command::SetTransports {
            host: host.into(),
            services: services.clone(),
        };
        let unknown = l.apply(&set("a", &iroh));
        assert_eq!(unknown.note.as_deref(), Some("no host a"));
        l.apply(&host("a", 1024));
        let set_outcome = l.apply(&set("a", &iroh));
        assert_eq!(set_outcome, Outcome::default(), "no note and nothing moved");
        l.apply(&host("a", 2048));
        assert_eq!(l.hosts["a"].transports, iroh, "re-registering keeps them");
        let stored: Ledger =
            serde_json::from_str(&serde_json::to_string(&l).expect("json")).expect("read back");
        assert_eq!(
            stored.hosts["a"].transports, iroh,
            "they are replicated state"
        );
        l.apply(&set("a", &BTreeMap::new()));
        assert!(l.hosts["a"].transports.is_empty(), "empty: the agent's own");
        l.apply(&set("a", &iroh));
        l.apply(&Command::RemoveHost { name: "a".into() });
        l.apply(&host("a", 1024));
        assert!(
            l.hosts["a"].transports.is_empty(),
            "a removed host's go with it"
        );
    }

    fn schedule(host: &str, unschedulable: bool, drain: bool) -> Command {
        Command::Schedule {
            host: host.into(),
            unschedulable,
            drain,
        }
    }

    fn runnable(ledger: &Ledger, host: &str) -> Vec<String> {
        ledger
            .runnable_on(host)
            .map(|(uid, _)| uid.to_owned())
            .collect()
    }

    #[test]
    fn a_cordon_keeps_vms_and_takes_no_new_ones() {
        let mut l = Ledger::default();
        l.apply(&host("a", 4096));
        l.apply(&vm("v1", 1, 1024));
        l.apply(&host("b", 1024));
        let cordon = l.apply(&schedule("a", true, false));
        assert!(cordon.moved.is_empty(), "{cordon:?}");
        l.apply(&vm("v2", 1, 512));
        assert_eq!(at(&l, "v2").map(|(h, _)| h), Some("b".into()));
        l.apply(&vm("v3", 1, 1024));
        assert_eq!(at(&l, "v3"), None, "b is full and a cordoned");
        l.apply(&schedule("a", false, false));
        assert_eq!(at(&l, "v3").map(|(h, _)| h), Some("a".into()), "uncordoned");
    }

    #[test]
    fn a_drained_vm_starts_elsewhere_only_after_the_old_host_released_it() {
        let mut l = Ledger::default();
        l.apply(&host("a", 4096));
        l.apply(&vm("v1", 1, 1024));
        l.apply(&host("b", 4096));
        l.apply(&schedule("a", true, true));
        assert_eq!(at(&l, "v1"), Some(("b".into(), 2)));
        assert!(runnable(&l, "b").is_empty(), "a still runs its copy");
        assert_eq!(l.to_release("a").collect::<Vec<_>>(), ["v1"]);
        let wrong = l.apply(&Command::Released {
            uid: "v1".into(),
            host: "b".into(),
        });
        assert!(wrong.note.is_some() && runnable(&l, "b").is_empty());
        l.apply(&Command::Released {
            uid: "v1".into(),
            host: "a".into(),
        });
        assert_eq!(runnable(&l, "b"), ["v1"]);
        assert!(l.releases.is_empty());
    }

    #[test]
    fn a_drain_wait_ends_when_the_old_host_is_declared_down_or_gets_the_vm_back() {
        let mut l = Ledger::default();
        l.apply(&host("a", 4096));
        l.apply(&vm("v1", 1, 1024));
        l.apply(&vm("v2", 1, 1024));
        l.apply(&host("b", 4096));
        l.apply(&schedule("a", false, true));
        assert!(runnable(&l, "b").is_empty());
        // Down means fenced: its copies are dead once the lease lapsed.
        l.apply(&Command::HostDown {
            host: "a".into(),
            now_ms: 1,
            renewals: 0,
        });
        assert_eq!(runnable(&l, "b"), ["v1", "v2"]);

        let mut l = Ledger::default();
        l.apply(&host("a", 4096));
        l.apply(&vm("v1", 1, 1024));
        l.apply(&schedule("a", false, true));
        assert_eq!(at(&l, "v1"), None, "nowhere to go: it waits, unplaced");
        l.apply(&schedule("a", false, false));
        assert_eq!(at(&l, "v1"), Some(("a".into(), 2)));
        assert_eq!(runnable(&l, "a"), ["v1"], "its own copy is no second one");
    }

    #[test]
    fn an_unplaced_vm_is_told_which_filter_stopped_it() {
        let mut l = Ledger::default();
        let mut v = DesiredVm {
            uid: "v".into(),
            generation: 1,
            cpus: 1,
            memory_mib: 4096,
            ..DesiredVm::default()
        };
        let says = |l: &Ledger, v: &DesiredVm, reason: &str, words: &str| {
            let u = unplaced(l, v);
            assert_eq!(u.reason, reason, "{u:?}");
            assert!(u.message.contains(words), "{u:?}");
        };
        says(&l, &v, "NoHosts", "no host");
        l.apply(&host("a", 2048));
        says(&l, &v, "InsufficientMemory", "a has 2048 MiB");
        v.cpus = 16;
        says(&l, &v, "InsufficientCPU", "spec.cpus 16");
        v.node_selector.insert("zone".into(), "b".into());
        says(&l, &v, "NoMatchingHost", "zone=b");
        l.apply(&schedule("a", true, false));
        says(&l, &v, "NoUsableHosts", "cordoned");
    }

    #[test]
    fn vcpus_are_shared_but_never_more_than_the_host_has_per_vm() {
        let mut l = Ledger::default();
        l.apply(&Command::RegisterHost {
            name: "small".into(),
            cpus: 2,
            memory_mib: 4096,
            labels: BTreeMap::new(),
        });
        for uid in ["a", "b", "c"] {
            l.apply(&vm(uid, 1, 512));
            assert_eq!(at(&l, uid).map(|(h, _)| h), Some("small".into()), "{uid}");
        }
        l.apply(&Command::PutVm(DesiredVm {
            uid: "wide".into(),
            generation: 1,
            cpus: 4,
            memory_mib: 512,
            ..DesiredVm::default()
        }));
        assert_eq!(at(&l, "wide"), None, "more vCPUs than the host has");
    }

    #[test]
    fn replaying_the_same_commands_gives_the_same_ledger() {
        let commands = [
            host("a", 4096),
            host("b", 2048),
            vm("v1", 1, 1024),
            vm("v2", 1, 1024),
            Command::HostDown {
                host: "a".into(),
                now_ms: 10,
                renewals: 0,
            },
            vm("v3", 1, 512),
            Command::DeleteVm { uid: "v2".into() },
            Command::Rebalance,
        ];
        let run = || {
            let mut l = Ledger::default();
            for c in &commands {
                l.apply(c);
            }
            l
        };
        assert_eq!(run(), run());
    }
}
