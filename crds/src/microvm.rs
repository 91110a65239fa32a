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
/// run the VM: a VM is recreated from this spec when it moves to another host. Each must lie,
/// after symlinks are resolved, under one of the agent's image roots (by default the guest
/// image dir `/var/lib/quiver/guest` and `/var/lib/quiver/images`); the agent refuses any other
/// path, naming the field.
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
    /// the VM, under one of the agent's image roots (symlinks resolved; others are refused).
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "spec.kernel must be an absolute path on the host (start with /)"
    }]))]
    pub kernel: String,

    /// Absolute path of an initramfs on the host, passed to QEMU as `-initrd`. Optional. Like
    /// the kernel, it must lie under one of the agent's image roots.
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
    /// names unique. A writable disk writes to the VM's own qcow2 overlay over the image, so the
    /// image itself is never modified and the overlay is discarded when the VM is deleted or
    /// moves host; a `readOnly` disk is the image itself, read-only to the guest.
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

    /// Guest networking. Default: `{mode: none}` (no network device). `{mode: user,
    /// portForwards: [...]}` gives the guest a NIC behind QEMU's NAT with the declared host
    /// ports forwarded to it; the ports in use are reported in `status.portForwards`.
    #[serde(default)]
    pub network: Network,

    /// Only hosts whose Host object carries all of these labels may run the VM (matched against
    /// the Host's `metadata.labels`). Empty: any host.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub node_selector: BTreeMap<String, String>,

    /// How to tell that the guest has finished booting. Unset: the guest counts as ready as soon
    /// as QEMU runs. Set: the agent watches the serial console for a marker line and sets the
    /// GuestReady condition when it appears (or to False with reason ReadinessTimeout once
    /// `timeoutSeconds` pass without it).
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
    /// Name of the disk, unique within the VM: a lowercase letter, then lowercase letters,
    /// digits and `-` (not ending in `-`), at most 63 characters. Used as the QEMU drive id, the
    /// disk's serial in the guest (`/sys/block/vdX/serial`, first 20 characters) and the overlay
    /// file name (`disk-<name>.qcow2` in the VM's run dir).
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: String,

    /// Absolute path of the disk image on the host, under one of the agent's image roots
    /// (symlinks resolved; a qcow2 image's backing files must be there too). Must exist on
    /// every host that may run the VM.
    #[schemars(length(min = 1, max = 4096))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.startsWith('/')",
        "message": "spec.disks[].image must be an absolute path on the host (start with /)"
    }]))]
    pub image: String,

    /// Format of the image: `raw` (default) or `qcow2`. Given to QEMU as is: QEMU never guesses
    /// a format from the image's contents or name.
    #[serde(default)]
    pub format: DiskFormat,

    /// Attach the image itself read-only: the guest sees a read-only block device and no
    /// overlay is created. Default false (writable, on an overlay).
    #[serde(default)]
    pub read_only: bool,
}

/// Format of a disk image; see `spec.disks[].format`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    // Plain bytes.
    #[default]
    Raw,
    // QEMU copy-on-write image; backing files must lie under the image roots too.
    Qcow2,
}

/// Guest networking.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.mode == 'user' || !has(self.portForwards) || size(self.portForwards) == 0",
    "message": "spec.network.portForwards needs spec.network.mode: user"
}]))]
pub struct Network {
    /// `none` (default): no network device. `user`: one virtio-net device on QEMU user-mode
    /// networking: the guest (10.0.2.15/24, gateway and DNS 10.0.2.2) reaches the outside
    /// through NAT on the host, and the host's loopback as 10.0.2.2; nothing reaches the guest
    /// except `portForwards`.
    #[serde(default)]
    pub mode: NetworkMode,

    /// Host ports forwarded to guest ports (`mode: user` only), at most 32. Host ports listen
    /// on the agent's port-forward address, 127.0.0.1 unless the host's administrator set
    /// another (`--port-forward-address`), so by default only the host itself can connect.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[schemars(extend("x-kubernetes-validations" = [
        {
            "rule": "self.all(f, !has(f.hostPort) || f.hostPort == 0 || self.exists_one(g, has(g.hostPort) && g.hostPort == f.hostPort && (has(g.protocol) ? g.protocol : 'TCP') == (has(f.protocol) ? f.protocol : 'TCP')))",
            "message": "spec.network.portForwards must not repeat a protocol and non-zero hostPort"
        },
        {
            "rule": "self.all(f, !has(f.name) || self.exists_one(g, has(g.name) && g.name == f.name))",
            "message": "spec.network.portForwards names must be unique"
        }
    ]))]
    pub port_forwards: Vec<PortForward>,
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

/// A host port forwarded to a port of the guest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortForward {
    /// Optional label, unique within the VM (same rules as a disk name); repeated in
    /// `status.portForwards`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z]([-a-z0-9]*[a-z0-9])?$"))]
    pub name: Option<String>,

    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,

    /// The port the guest listens on, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub guest_port: u32,

    /// The host port, 1 to 65535; 0 or unset: the agent picks a free one at boot (kept across
    /// restarts of the VM while it stays free). See `status.portForwards` for the port in use.
    #[serde(default)]
    #[schemars(range(min = 0, max = 65535))]
    pub host_port: u32,
}

/// Transport protocol of a port forward.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    // TCP.
    #[default]
    Tcp,
    // UDP.
    Udp,
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
    /// GuestReady turns False with reason ReadinessTimeout (and an Event says so); the VM keeps
    /// running, and a marker that comes later still makes it ready.
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

    /// The port forwards of the running QEMU (`spec.network.portForwards` with the host ports
    /// actually bound, including those the agent picked). Empty while no QEMU runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<ForwardedPort>,
}

/// A port forward as bound on the host; see `status.portForwards`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedPort {
    /// The forward's `name` in the spec, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `TCP` or `UDP`.
    pub protocol: Protocol,
    /// The guest's port.
    pub guest_port: u32,
    /// The host address the port listens on, e.g. `127.0.0.1`.
    #[serde(rename = "hostIP")]
    pub host_ip: String,
    /// The host port connected to the guest's port.
    pub host_port: u32,
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
