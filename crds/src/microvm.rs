//! `MicroVM`: one virtual machine, run by QEMU on whichever host the placement ledger picks.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::{condition_list, kubernetes_compat};

/// Serial-console line that marks a guest as ready unless `spec.readiness.serialMarker` says
/// otherwise. The test guest's `/init` prints it.
pub const DEFAULT_SERIAL_MARKER: &str = "QUIVER_GUEST_READY";
/// Seconds to wait for the readiness marker unless `spec.readiness.timeoutSeconds` says otherwise.
pub const DEFAULT_READINESS_TIMEOUT_SECONDS: u32 = 120;

/// Desired state of a MicroVM: what to boot and how to keep it running.
///
/// The kernel, initrd and disk images are paths on the host, present on every host that may
/// run the VM: a VM is recreated from this spec when it moves to another host.
// Each printcolumn(...) repeats the same keys, which clippy mistakes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "quiver.dev",
    version = "v1alpha1",
    kind = "MicroVM",
    plural = "microvms",
    shortname = "mvm",
    category = "quiver",
    namespaced,
    status = "MicroVMStatus",
    derive = "PartialEq",
    doc = "A microVM: a QEMU `microvm` guest booted from a kernel (and optional initrd and disks), \
           placed on a Quiver host and kept running according to `spec.runStrategy`.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Host", type_ = "string", json_path = ".status.host"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"GuestReady\")].status",
        description = "Whether the guest reported readiness (GuestReady condition)"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    printcolumn(
        name = "CPUs",
        type_ = "integer",
        json_path = ".spec.cpus",
        priority = 1
    ),
    printcolumn(
        name = "Memory",
        type_ = "integer",
        json_path = ".spec.memoryMiB",
        priority = 1
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_compat)]
pub struct MicroVMSpec {
    /// When the VM should run. `Always` (default): keep it running, restart it whenever it
    /// stops and recreate it on another host if its host is lost. `Halted`: keep it stopped
    /// (stops it if running; switch back to `Always` to start it). `RerunOnFailure`: restart it
    /// only after a failure (QEMU crash, non-zero exit, lost host); a clean guest poweroff leaves
    /// it Stopped. `Once`: boot it once and never restart it, whatever the outcome.
    #[serde(default)]
    pub run_strategy: RunStrategy,

    /// Number of virtual CPUs, 1 to 64. Default 1. Changing it on a running VM takes effect at
    /// the next restart (the RestartRequired condition says so).
    #[serde(default = "default_cpus")]
    #[schemars(range(min = 1, max = 64))]
    pub cpus: u32,

    /// Guest memory in MiB (1 MiB = 1048576 bytes), 64 to 262144. Default 256. Counted against
    /// the host's capacity when placing the VM. Changing it takes effect at the next restart.
    #[serde(rename = "memoryMiB", default = "default_memory_mib")]
    #[schemars(range(min = 64, max = 262_144))]
    pub memory_mib: u32,

    /// Absolute path of the guest kernel (bzImage/vmlinuz) on the host, for example
    /// `/var/lib/quiver/guest/vmlinuz`. Required. The file must exist on every host that may run
    /// the VM.
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "spec.kernel must be an absolute path on the host (start with /)"
    }]))]
    pub kernel: String,

    /// Absolute path of an initramfs on the host, passed to QEMU as `-initrd`. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "spec.initrd must be an absolute path on the host (start with /)"
    }]))]
    pub initrd: Option<String>,

    /// Kernel command line, for example `console=ttyS0 edd=off quiet panic=-1 reboot=t`. At
    /// most 4096 characters. Keep `console=ttyS0` if you use a readiness marker: the agent reads
    /// the first serial port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub cmdline: Option<String>,

    /// Disks attached in order as virtio block devices (`/dev/vda`, `/dev/vdb`, ...). At most 16,
    /// names unique. Each VM writes to its own qcow2 overlay over the image, so the image itself
    /// is never modified and the overlay is discarded when the VM is deleted or moves host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend(
        "x-kubernetes-list-type" = "map",
        "x-kubernetes-list-map-keys" = ["name"],
        "x-kubernetes-validations" = [{
            "rule": "self.all(d, self.exists_one(e, e.name == d.name))",
            "message": "spec.disks names must be unique"
        }]
    ))]
    pub disks: Vec<Disk>,

    /// Guest networking. Default: `{mode: none}` (no network device).
    #[serde(default)]
    pub network: Network,

    /// Only hosts whose Host object carries all of these labels may run the VM (matched against
    /// the Host's `metadata.labels`). Empty: any host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,

    /// How to tell that the guest has finished booting. Unset: the guest counts as ready as soon
    /// as QEMU runs. Set: the agent watches the serial console for a marker line and sets the
    /// GuestReady condition when it appears.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Readiness>,
}

fn default_cpus() -> u32 {
    1
}

fn default_memory_mib() -> u32 {
    256
}

/// When a MicroVM should run; see `spec.runStrategy`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RunStrategy {
    // Keep running; restart on any stop; recreate after host loss.
    #[default]
    Always,
    // Keep stopped.
    Halted,
    // Restart only after a failure.
    RerunOnFailure,
    // Run once, never restart.
    Once,
}

/// A disk image attached to the VM as a virtio block device.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Name of the disk, unique within the VM: lowercase letters, digits and `-`, at most 63
    /// characters. Used as the QEMU drive id and the overlay file name.
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Absolute path of the disk image (raw or qcow2) on the host. Must exist on every host that
    /// may run the VM.
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "spec.disks[].image must be an absolute path on the host (start with /)"
    }]))]
    pub image: String,

    /// Attach the disk read-only (no overlay is created). Default false.
    #[serde(default)]
    pub read_only: bool,
}

/// Guest networking.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Network {
    /// `none` (default): no network device. `user`: one virtio-net device on QEMU user-mode
    /// networking (outbound connections through NAT on the host, nothing inbound).
    #[serde(default)]
    pub mode: NetworkMode,
}

/// Kind of guest network; see `spec.network.mode`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    // No network device.
    #[default]
    None,
    // QEMU user-mode networking.
    User,
}

/// A readiness check on the guest's serial console.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Readiness {
    /// Text the guest prints on its first serial port (ttyS0) when it is ready. The GuestReady
    /// condition turns True when a console line contains it. Default `QUIVER_GUEST_READY`.
    #[serde(default = "default_serial_marker")]
    #[schemars(length(min = 1, max = 256))]
    pub serial_marker: String,

    /// Seconds from QEMU start to wait for the marker, 1 to 3600. Default 120. When it passes,
    /// GuestReady turns False with reason ReadinessTimeout; the VM keeps running.
    #[serde(default = "default_readiness_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: u32,
}

fn default_serial_marker() -> String {
    DEFAULT_SERIAL_MARKER.to_owned()
}

fn default_readiness_timeout() -> u32 {
    DEFAULT_READINESS_TIMEOUT_SECONDS
}

impl Default for Readiness {
    fn default() -> Self {
        Self {
            serial_marker: default_serial_marker(),
            timeout_seconds: default_readiness_timeout(),
        }
    }
}

impl MicroVMSpec {
    /// A spec with every default applied that boots `kernel`.
    #[must_use]
    pub fn new(kernel: impl Into<String>) -> Self {
        Self {
            run_strategy: RunStrategy::default(),
            cpus: default_cpus(),
            memory_mib: default_memory_mib(),
            kernel: kernel.into(),
            initrd: None,
            cmdline: None,
            disks: Vec::new(),
            network: Network::default(),
            node_selector: BTreeMap::new(),
            readiness: None,
        }
    }
}

/// Observed state of a MicroVM, written by the operator from what the agents report.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = kubernetes_compat)]
pub struct MicroVMStatus {
    /// Lifecycle phase: Pending (accepted, not yet in the placement ledger), Scheduling
    /// (waiting for a host), Starting (QEMU booting on its host), Running, Stopping, Stopped
    /// (halted or exited cleanly), Failed (crashed or could not start; see message).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<MicroVMPhase>,

    /// Name of the Host object running (or assigned to run) the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,

    /// Placement epoch: raised each time the VM is assigned to a host, so that a stale host can
    /// never run an older copy. 0 until the first assignment.
    #[serde(default)]
    pub epoch: u64,

    /// Scheduled, Ready (QEMU running), GuestReady (readiness marker seen) and RestartRequired
    /// (the spec changed in a way that needs a restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = condition_list)]
    pub conditions: Vec<Condition>,

    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Human-readable detail about the phase, for example why the VM failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// How many times the VM has been restarted (by its run strategy or after a host loss).
    #[serde(default)]
    pub restart_count: u32,

    /// When QEMU last started the guest (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the guest last reported readiness (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_ready_at: Option<Time>,
}

/// Lifecycle phase of a MicroVM; see `status.phase`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum MicroVMPhase {
    // Accepted by the operator, not yet committed to the placement ledger.
    Pending,
    // Committed; waiting for a host with room.
    Scheduling,
    // Assigned; QEMU is booting.
    Starting,
    // QEMU runs the guest.
    Running,
    // Being stopped.
    Stopping,
    // Stopped on purpose or after a clean exit.
    Stopped,
    // Crashed or could not start.
    Failed,
}

impl MicroVMStatus {
    /// The condition of type `type_`, if present.
    #[must_use]
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
