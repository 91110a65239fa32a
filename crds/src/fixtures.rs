//! Test helpers: builders of valid objects for tests in this crate and in the operator, agent
//! and end-to-end tests. Not meant for production code.
//!
//! ```
//! use quiver_crds::{MicroVM, MicroVMPhase};
//!
//! let vm = MicroVM::test("web").cpus(2).on_host("a").running();
//! assert_eq!(vm.status.unwrap().phase, Some(MicroVMPhase::Running));
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::condition;
use crate::host::{Host, HostResources, HostSpec, HostStatus, RaftRole, RaftStatus};
use crate::microvm::{
    Disk, DiskFormat, MicroVM, MicroVMPhase, MicroVMSpec, NetworkMode, PortForward, Readiness,
    RunStrategy,
};
use crate::rollout::{Rollout, RolloutPhase, RolloutSpec, RolloutStep};
use crate::transport::{Transport, TransportTarget};

/// Namespace of every namespaced fixture.
pub const TEST_NAMESPACE: &str = "default";
/// Kernel path the guest image script installs to.
pub const TEST_KERNEL: &str = "/var/lib/quiver/guest/vmlinuz";
/// Initramfs path the guest image script installs to.
pub const TEST_INITRD: &str = "/var/lib/quiver/guest/initrd.gz";
/// Kernel command line that boots the test guest under QEMU `microvm` with TCG. `microvm` has
/// no HPET or PM timer, so on a busy host the guest's TSC calibration can fail and the boot
/// hang; the TSC frequency is given instead of measured.
pub const TEST_CMDLINE: &str = "console=ttyS0 edd=off quiet panic=-1 reboot=t tsc=reliable tsc_early_khz=2000000 no_timer_check";

/// The fixed time every fixture timestamp uses (2026-01-01T00:00:00Z), so fixtures compare equal.
#[must_use]
pub fn fixture_time() -> Time {
    Time(Timestamp::constant(1_767_225_600, 0))
}

/// A condition with the fixture time, `reason` as given and `observedGeneration` unset.
#[must_use]
pub fn condition(type_: &str, status: bool, reason: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: String::new(),
        last_transition_time: fixture_time(),
        observed_generation: None,
    }
}

fn set_condition(conditions: &mut Vec<Condition>, new: Condition) {
    conditions.retain(|c| c.type_ != new.type_);
    conditions.push(new);
}

impl MicroVM {
    /// A valid VM in [`TEST_NAMESPACE`] booting the test guest, with uid `uid-<name>`,
    /// generation 1, no status, and a readiness check on the default serial marker.
    #[must_use]
    pub fn test(name: &str) -> Self {
        let mut spec = MicroVMSpec::new(TEST_KERNEL);
        spec.initrd = Some(TEST_INITRD.to_owned());
        spec.cmdline = Some(TEST_CMDLINE.to_owned());
        spec.readiness = Some(Readiness::default());
        let mut vm = MicroVM::new(name, spec);
        vm.metadata.namespace = Some(TEST_NAMESPACE.to_owned());
        vm.metadata.uid = Some(format!("uid-{name}"));
        vm.metadata.generation = Some(1);
        vm
    }

    /// Sets `spec.cpus`.
    #[must_use]
    pub fn cpus(mut self, cpus: u32) -> Self {
        self.spec.cpus = cpus;
        self
    }

    /// Sets `spec.memoryMiB`.
    #[must_use]
    pub fn memory_mib(mut self, memory_mib: u32) -> Self {
        self.spec.memory_mib = memory_mib;
        self
    }

    /// Sets `spec.runStrategy`.
    #[must_use]
    pub fn run_strategy(mut self, strategy: RunStrategy) -> Self {
        self.spec.run_strategy = strategy;
        self
    }

    /// Sets `spec.runStrategy: Halted`.
    #[must_use]
    pub fn halted(self) -> Self {
        self.run_strategy(RunStrategy::Halted)
    }

    /// Adds a writable disk; its format is `qcow2` when the image's name ends in `.qcow2`,
    /// else `raw`.
    #[must_use]
    pub fn disk(mut self, name: &str, image: &str) -> Self {
        let format = if image.ends_with(".qcow2") {
            DiskFormat::Qcow2
        } else {
            DiskFormat::Raw
        };
        self.spec.disks.push(Disk {
            name: name.to_owned(),
            image: image.to_owned(),
            format,
            read_only: false,
        });
        self
    }

    /// Adds a read-only raw disk.
    #[must_use]
    pub fn read_only_disk(mut self, name: &str, image: &str) -> Self {
        self.spec.disks.push(Disk {
            name: name.to_owned(),
            image: image.to_owned(),
            format: DiskFormat::Raw,
            read_only: true,
        });
        self
    }

    /// Switches to user networking and forwards `host_port` (0 = picked by the agent) to the
    /// guest's TCP `guest_port`.
    #[must_use]
    pub fn forward(mut self, guest_port: u32, host_port: u32) -> Self {
        self.spec.network.mode = NetworkMode::User;
        self.spec.network.port_forwards.push(PortForward {
            name: None,
            protocol: crate::microvm::Protocol::Tcp,
            guest_port,
            host_port,
        });
        self
    }

    /// Adds a `spec.nodeSelector` entry.
    #[must_use]
    pub fn node_selector(mut self, key: &str, value: &str) -> Self {
        self.spec
            .node_selector
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Removes the readiness check (the guest counts as ready once QEMU runs).
    #[must_use]
    pub fn without_readiness(mut self) -> Self {
        self.spec.readiness = None;
        self
    }

    /// Moves the VM to another namespace.
    #[must_use]
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.metadata.namespace = Some(namespace.to_owned());
        self
    }

    /// Sets `metadata.generation`.
    #[must_use]
    pub fn with_generation(mut self, generation: i64) -> Self {
        self.metadata.generation = Some(generation);
        self
    }

    /// Adds the operator's finalizer.
    #[must_use]
    pub fn with_finalizer(mut self) -> Self {
        let finalizers = self.metadata.finalizers.get_or_insert_with(Vec::new);
        if !finalizers.iter().any(|f| f == crate::VM_FINALIZER) {
            finalizers.push(crate::VM_FINALIZER.to_owned());
        }
        self
    }

    /// Marks the VM as being deleted (deletionTimestamp set, finalizer present).
    #[must_use]
    pub fn deleting(mut self) -> Self {
        self.metadata.deletion_timestamp = Some(fixture_time());
        self.with_finalizer()
    }

    /// Assigns the VM to `host` (phase Starting, Scheduled=True, epoch at least 1).
    #[must_use]
    pub fn on_host(mut self, host: &str) -> Self {
        let generation = self.metadata.generation;
        let status = self.status.get_or_insert_with(Default::default);
        status.host = Some(host.to_owned());
        status.epoch = status.epoch.max(1);
        status.phase = Some(MicroVMPhase::Starting);
        status.observed_generation = generation;
        set_condition(
            &mut status.conditions,
            condition(condition::SCHEDULED, true, "Assigned"),
        );
        self
    }

    /// Sets the epoch of the current assignment.
    #[must_use]
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.status.get_or_insert_with(Default::default).epoch = epoch;
        self
    }

    /// Phase Running with Ready=True and `startedAt` set.
    #[must_use]
    pub fn running(mut self) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.phase = Some(MicroVMPhase::Running);
        status.started_at = Some(fixture_time());
        set_condition(
            &mut status.conditions,
            condition(condition::READY, true, "Running"),
        );
        self
    }

    /// GuestReady=True with `guestReadyAt` set (call after [`MicroVM::running`]).
    #[must_use]
    pub fn guest_ready(mut self) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.guest_ready_at = Some(fixture_time());
        set_condition(
            &mut status.conditions,
            condition(condition::GUEST_READY, true, "MarkerSeen"),
        );
        self
    }

    /// Phase Failed with `message`.
    #[must_use]
    pub fn failed(mut self, message: &str) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.phase = Some(MicroVMPhase::Failed);
        status.message = Some(message.to_owned());
        set_condition(
            &mut status.conditions,
            condition(condition::READY, false, "Failed"),
        );
        self
    }
}

impl Rollout {
    /// A valid rollout in [`TEST_NAMESPACE`] moving every Host to Iroh in steps 25%, pause 30s,
    /// 50%, pause 30s, 100%, with default analysis and no status.
    #[must_use]
    pub fn test(name: &str) -> Self {
        let spec = RolloutSpec {
            host_selector: Default::default(),
            target: Some(TransportTarget::all(Transport::Iroh)),
            micro_vms: None,
            steps: vec![
                RolloutStep::weight(25),
                RolloutStep::pause_for("30s"),
                RolloutStep::weight(50),
                RolloutStep::pause_for("30s"),
                RolloutStep::weight(100),
            ],
            analysis: Default::default(),
            paused: false,
            promote: false,
            abort: false,
            retry: 0,
            promote_step: 0,
        };
        let mut rollout = Rollout::new(name, spec);
        rollout.metadata.namespace = Some(TEST_NAMESPACE.to_owned());
        rollout.metadata.uid = Some(format!("uid-{name}"));
        rollout.metadata.generation = Some(1);
        rollout
    }

    /// Replaces `spec.steps`.
    #[must_use]
    pub fn steps(mut self, steps: Vec<RolloutStep>) -> Self {
        self.spec.steps = steps;
        self
    }

    /// Replaces `spec.target`.
    #[must_use]
    pub fn target(mut self, target: TransportTarget) -> Self {
        self.spec.target = Some(target);
        self
    }

    /// Adds a `spec.hostSelector.matchLabels` entry.
    #[must_use]
    pub fn selecting(mut self, key: &str, value: &str) -> Self {
        self.spec
            .host_selector
            .match_labels
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `spec.paused`.
    #[must_use]
    pub fn paused(mut self) -> Self {
        self.spec.paused = true;
        self
    }

    /// Sets `spec.promote`.
    #[must_use]
    pub fn promoted(mut self) -> Self {
        self.spec.promote = true;
        self
    }

    /// Sets `spec.abort`.
    #[must_use]
    pub fn aborted(mut self) -> Self {
        self.spec.abort = true;
        self
    }

    /// Raises `spec.retry` by one.
    #[must_use]
    pub fn retried(mut self) -> Self {
        self.spec.retry += 1;
        self
    }

    /// Status at step `index` with `weight` percent of hosts moved, in `phase`.
    #[must_use]
    pub fn at_step(mut self, index: u32, weight: u32, phase: RolloutPhase) -> Self {
        let generation = self.metadata.generation;
        let status = self.status.get_or_insert_with(Default::default);
        status.current_step_index = Some(index);
        status.current_weight = weight;
        status.phase = Some(phase);
        status.step_started_at = Some(fixture_time());
        status.observed_generation = generation;
        self
    }

    /// Sets `status.canaries`.
    #[must_use]
    pub fn canaries(mut self, hosts: &[&str]) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.canaries = hosts.iter().map(|h| (*h).to_owned()).collect();
        self
    }
}

impl Host {
    /// A valid Host with a endpoint id derived from `name`, gRPC on `127.0.0.1:7443`, one Iroh
    /// address, capacity 4 CPUs / 8192 MiB, and no status.
    #[must_use]
    pub fn test(name: &str) -> Self {
        let spec = HostSpec {
            endpoint_id: test_endpoint_id(name),
            grpc_address: "127.0.0.1:7443".to_owned(),
            iroh_addresses: vec!["127.0.0.1:7444".to_owned()],
            iroh_relay_url: None,
            capacity: HostResources {
                cpus: 4,
                memory_mib: 8192,
            },
            transport: None,
            unschedulable: false,
            drain: false,
        };
        let mut host = Host::new(name, spec);
        host.metadata.uid = Some(format!("uid-{name}"));
        host.metadata.generation = Some(1);
        host
    }

    /// Adds a `metadata.labels` entry.
    #[must_use]
    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// Sets `spec.capacity` (and `status.capacity` if a status exists).
    #[must_use]
    pub fn capacity(mut self, cpus: u32, memory_mib: u64) -> Self {
        self.spec.capacity = HostResources { cpus, memory_mib };
        if let Some(status) = &mut self.status {
            status.capacity = Some(self.spec.capacity);
        }
        self
    }

    /// A status as a healthy follower reports it: Ready=True, heartbeat, addresses, capacity.
    #[must_use]
    pub fn ready(mut self) -> Self {
        let status = self.status.get_or_insert_with(|| HostStatus {
            endpoint_id: Some(self.spec.endpoint_id.clone()),
            grpc_address: Some(self.spec.grpc_address.clone()),
            iroh_addresses: self.spec.iroh_addresses.clone(),
            capacity: Some(self.spec.capacity),
            allocated: Some(HostResources::default()),
            raft: Some(RaftStatus {
                role: RaftRole::Follower,
                term: 1,
                applied_index: 0,
                leader: None,
                schedulable: Some(true),
            }),
            ..Default::default()
        });
        status.heartbeat_time = Some(fixture_time());
        set_condition(
            &mut status.conditions,
            condition(condition::READY, true, "Heartbeat"),
        );
        self
    }

    /// Ready=False, as after the leader declared the host down.
    #[must_use]
    pub fn not_ready(mut self) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        set_condition(
            &mut status.conditions,
            condition(condition::READY, false, "HostDown"),
        );
        self
    }

    /// Raft role Leader (implies [`Host::ready`]).
    #[must_use]
    pub fn leader(self) -> Self {
        let mut host = self.ready();
        let name = host.metadata.name.clone();
        if let Some(raft) = host.status.as_mut().and_then(|s| s.raft.as_mut()) {
            raft.role = RaftRole::Leader;
            raft.leader = name;
        }
        host
    }

    /// Sets `status.allocated` and `status.vms`.
    #[must_use]
    pub fn allocated(mut self, cpus: u32, memory_mib: u64, vms: u32) -> Self {
        let status = self.status.get_or_insert_with(Default::default);
        status.allocated = Some(HostResources { cpus, memory_mib });
        status.vms = vms;
        self
    }
}

/// A stable, valid-looking 64-hex-character endpoint id for a test host name (not a real key).
#[must_use]
pub fn test_endpoint_id(name: &str) -> String {
    (0u64..4)
        .map(|seed| {
            let hash = name.bytes().fold(
                0xcbf2_9ce4_8422_2325_u64 ^ seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3),
            );
            format!("{hash:016x}")
        })
        .collect()
}
