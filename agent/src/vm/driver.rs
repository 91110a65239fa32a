//! The driver seam: how a VM's process is started, found again, stopped and removed.
//!
//! [`crate::vm::qemu::QemuDriver`] runs real QEMU; [`crate::vm::simulated::SimulatedDriver`]
//! runs nothing and exists only for control-plane scale benchmarks.

use std::time::Duration;

use futures::future::BoxFuture;

use super::network::ActiveForward;
use super::rundir::RunDir;
use super::spec::VmSpec;
use crate::Result;

/// How a VM's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// The guest powered off by itself (QMP `SHUTDOWN` with `guest: true`).
    pub clean: bool,
    pub message: String,
}

/// A VM process that is up.
pub struct Launched {
    pub pid: u32,
    /// When the process was spawned (unix ms): the start of the guest's own boot, as a raw
    /// `qemu-system` run would count it (QEMU's initialization included). 0 for a process
    /// found again after a restart (recovery keeps the time recorded at launch).
    pub spawned_at_ms: i64,
    /// Resolves when the process is gone.
    pub exit: BoxFuture<'static, ExitInfo>,
}

pub trait Driver: Send + Sync + 'static {
    /// "qemu" or "simulated"; reported by the Status service.
    fn name(&self) -> &'static str;
    /// The resolved accelerator ("kvm", "tcg", or "none").
    fn accel(&self) -> &'static str;
    /// Prepares disks and starts the VM with these port forwards (host ports already chosen).
    /// Errors carry the reason (QEMU's stderr).
    fn launch<'a>(
        &'a self,
        dir: &'a RunDir,
        spec: &'a VmSpec,
        forwards: &'a [ActiveForward],
    ) -> BoxFuture<'a, Result<Launched>>;
    /// Finds a VM process left running by an earlier agent; `None` if it is gone.
    fn adopt<'a>(&'a self, dir: &'a RunDir) -> BoxFuture<'a, Option<Launched>>;
    /// Stops the process: graceful first, forced after `grace`. Returns once it is gone or
    /// every means has been tried.
    fn shutdown<'a>(&'a self, dir: &'a RunDir, pid: u32, grace: Duration) -> BoxFuture<'a, ()>;
    /// Kills the process at once (fencing: no grace); returns once it is gone.
    fn kill<'a>(&'a self, dir: &'a RunDir, pid: u32) -> BoxFuture<'a, ()>;
    /// Resolves once the guest shows `marker` on its console after byte `from`.
    fn wait_ready<'a>(&'a self, dir: &'a RunDir, marker: &'a str, from: u64) -> BoxFuture<'a, ()>;
    /// Types `data` into the running VM's serial console.
    fn write_console<'a>(&'a self, dir: &'a RunDir, data: &'a [u8]) -> BoxFuture<'a, Result<()>>;
    /// Deletes the VM's files. Only called when no process exists.
    fn remove<'a>(&'a self, dir: &'a RunDir) -> BoxFuture<'a, Result<()>>;
}
