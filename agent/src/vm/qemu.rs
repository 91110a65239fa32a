//! The QEMU driver: `qemu-system-x86_64 -M microvm` per VM, detached from the agent.
//!
//! QEMU is spawned in its own process group (`process_group(0)`), with stdin closed and
//! stdout/stderr in `qemu.log`, so neither a terminal's signals nor the agent's death reach it.
//! Two QMP sockets: `qmp.sock` for short command connections and `events.sock`, held open to
//! learn whether an exit was a guest poweroff (`SHUTDOWN`, `guest: true`) or a crash/kill.
//! The serial port is a socket too (`serial.sock`, console input, see [`super::serial`]) that
//! logs the guest's output to `console.log`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::process::{Child, Command};

use super::driver::{Driver, ExitInfo, Launched};
use super::images::qcow2_backing_file;
use super::network::{ActiveForward, Network};
use super::qmp::QmpClient;
use super::record::now_ms;
use super::rundir::RunDir;
use super::serial::SerialInputs;
use super::spec::VmSpec;
use super::{console, process};
use crate::config::Accel;
use crate::{Error, Result};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const QUIT_GRACE: Duration = Duration::from_secs(3);
const KILL_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL: usize = 4096;
/// `sun_path` holds 108 bytes including the NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Clone, Debug)]
pub struct QemuDriver {
    pub qemu_binary: PathBuf,
    pub qemu_img: PathBuf,
    pub accel: Accel,
    serial: Arc<SerialInputs>,
}

impl QemuDriver {
    /// `accel` must already be resolved (`kvm` or `tcg`).
    pub fn new(accel: Accel) -> Self {
        QemuDriver {
            qemu_binary: "qemu-system-x86_64".into(),
            qemu_img: "qemu-img".into(),
            accel: accel.resolve(),
            serial: Arc::default(),
        }
    }

    /// The full QEMU argument list for a VM (without the binary). Every disk names its format,
    /// so QEMU never probes an image's contents.
    pub fn args(&self, dir: &RunDir, spec: &VmSpec, forwards: &[ActiveForward]) -> Vec<String> {
        let p = |path: PathBuf| path.display().to_string();
        let mut a: Vec<String> = vec![
            "-M".into(),
            "microvm,x-option-roms=off,rtc=on".into(),
            "-accel".into(),
            self.accel.as_str().into(),
        ];
        if self.accel == Accel::Kvm {
            a.extend(["-cpu".into(), "host".into()]);
        }
        a.extend([
            "-m".into(),
            spec.memory_mib.to_string(),
            "-smp".into(),
            spec.cpus.to_string(),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-nographic".into(),
            "-no-reboot".into(),
            "-chardev".into(),
            format!(
                "socket,id=console,path={},server=on,wait=off,logfile={},logappend=on",
                p(dir.serial_socket()),
                p(dir.console_log())
            ),
            "-serial".into(),
            "chardev:console".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p(dir.qmp_socket())),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", p(dir.events_socket())),
            "-pidfile".into(),
            p(dir.pid_file()),
            "-kernel".into(),
            p(spec.kernel.clone()),
        ]);
        if let Some(initrd) = &spec.initrd {
            a.extend(["-initrd".into(), p(initrd.clone())]);
        }
        a.extend(["-append".into(), spec.cmdline.clone()]);
        for disk in &spec.disks {
            let name = &disk.name;
            // A read-only disk is the base image itself, opened read-only: virtio-blk then
            // tells the guest the device is read-only.
            let drive = if disk.read_only {
                let (file, format) = (p(disk.image.clone()), disk.format.as_str());
                format!("id={name},file={file},format={format},if=none,read-only=on")
            } else {
                format!("id={name},file={},format=qcow2,if=none", p(dir.disk(name)))
            };
            // The name is also the disk's serial, so the guest can tell its disks apart
            // (`/sys/block/vdX/serial`; virtio keeps the first 20 bytes).
            a.extend([
                "-drive".into(),
                drive,
                "-device".into(),
                format!("virtio-blk-device,drive={name},serial={name}"),
            ]);
        }
        if let Network::User { .. } = spec.network {
            let mut netdev = "user,id=net0".to_owned();
            for f in forwards {
                netdev.push_str(",hostfwd=");
                netdev.push_str(&f.hostfwd());
            }
            a.extend([
                "-netdev".into(),
                netdev,
                "-device".into(),
                "virtio-net-device,netdev=net0".into(),
            ]);
        }
        a
    }

    async fn make_overlays(&self, dir: &RunDir, spec: &VmSpec) -> Result<()> {
        for disk in spec.disks.iter().filter(|d| !d.read_only) {
            let overlay = dir.disk(&disk.name);
            // An overlay survives restarts (the guest's writes), but only over the same image:
            // a spec that put another image under this disk's name gets a fresh one.
            let base = disk.image.to_str();
            if overlay.exists() && qcow2_backing_file(&overlay).as_deref() == base {
                continue;
            }
            let _ = std::fs::remove_file(&overlay);
            let out = Command::new(&self.qemu_img)
                .args(["create", "-f", "qcow2", "-F", disk.format.as_str(), "-b"])
                .arg(&disk.image)
                .arg(&overlay)
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|e| Error::Launch {
                    message: format!("qemu-img: {e}"),
                })?;
            if !out.status.success() {
                let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
                return Err(Error::Launch {
                    message: format!("qemu-img create: {stderr}"),
                });
            }
        }
        Ok(())
    }

    async fn spawn(
        &self,
        dir: &RunDir,
        spec: &VmSpec,
        forwards: &[ActiveForward],
    ) -> Result<Launched> {
        for socket in [dir.qmp_socket(), dir.events_socket(), dir.serial_socket()] {
            if socket.as_os_str().len() > MAX_SOCKET_PATH {
                let message = format!("socket path too long: {}", socket.display());
                return Err(Error::Launch { message });
            }
            let _ = std::fs::remove_file(&socket);
        }
        let _ = std::fs::remove_file(dir.pid_file());
        self.make_overlays(dir, spec).await?;
        let log =
            std::fs::File::create(dir.qemu_log()).map_err(|e| Error::io(dir.qemu_log(), e))?;
        let log2 = log.try_clone().map_err(|e| Error::io(dir.qemu_log(), e))?;
        let spawned_at_ms = now_ms();
        let mut child = Command::new(&self.qemu_binary)
            .args(self.args(dir, spec, forwards))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| Error::Launch {
                message: format!("{}: {e}", self.qemu_binary.display()),
            })?;
        let pid = child.id().unwrap_or(0);
        match tokio::time::timeout(START_TIMEOUT, wait_until_up(dir, &mut child)).await {
            Ok(Ok(events)) => Ok(Launched {
                pid,
                spawned_at_ms,
                exit: exit_of_child(dir.clone(), child, events),
            }),
            Ok(Err(message)) => Err(Error::Launch { message }),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                let tail = dir.qemu_log_tail(LOG_TAIL);
                Err(Error::Launch {
                    message: format!("QEMU did not answer QMP in time. {tail}"),
                })
            }
        }
    }
}

/// Waits until QMP answers `query-status`; returns the held events connection. Fails with
/// QEMU's output if the process exits first. Polls every 2 ms at first (QEMU is often up within
/// tens of milliseconds), backing off to 20 ms.
async fn wait_until_up(dir: &RunDir, child: &mut Child) -> Result<QmpClient, String> {
    let mut pause = Duration::from_millis(2);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let tail = dir.qemu_log_tail(LOG_TAIL);
            return Err(format!("QEMU exited during start ({status}): {tail}"));
        }
        if let Ok(mut qmp) = QmpClient::connect(&dir.qmp_socket()).await
            && qmp.query_status().await.is_ok()
            && let Ok(events) = QmpClient::connect(&dir.events_socket()).await
        {
            return Ok(events);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Reads events until the socket closes, remembering a guest-initiated shutdown.
async fn drain_events(mut events: QmpClient) -> bool {
    let mut guest_shutdown = false;
    while let Ok(Some(ev)) = events.next_event().await {
        guest_shutdown |= ev.is_guest_shutdown();
    }
    guest_shutdown
}

fn exit_of_child(dir: RunDir, mut child: Child, events: QmpClient) -> BoxFuture<'static, ExitInfo> {
    async move {
        let (clean, status) = tokio::join!(drain_events(events), child.wait());
        let status = status
            .map(|s| s.to_string())
            .unwrap_or_else(|e| e.to_string());
        let tail = dir.qemu_log_tail(LOG_TAIL);
        ExitInfo {
            clean,
            message: format!("QEMU exited ({status}). {tail}").trim().to_owned(),
        }
    }
    .boxed()
}

fn exit_of_adopted(dir: RunDir, pid: u32, events: QmpClient) -> BoxFuture<'static, ExitInfo> {
    async move {
        let clean = drain_events(events).await;
        while process::alive(pid) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let tail = dir.qemu_log_tail(LOG_TAIL);
        ExitInfo {
            clean,
            message: format!("QEMU exited. {tail}").trim().to_owned(),
        }
    }
    .boxed()
}

/// Finds the VM's QEMU by pid file; it must be alive, be ours (its command line names this run
/// dir) and answer QMP.
async fn adopt(dir: &RunDir) -> Option<Launched> {
    let pid = dir.read_pid()?;
    let marker = dir.qmp_socket().display().to_string();
    if !process::alive(pid) || !process::cmdline_contains(pid, &marker) {
        return None;
    }
    let answer = async {
        let mut qmp = QmpClient::connect(&dir.qmp_socket()).await.ok()?;
        qmp.query_status().await.ok()?;
        QmpClient::connect(&dir.events_socket()).await.ok()
    };
    let Some(events) = tokio::time::timeout(Duration::from_secs(5), answer)
        .await
        .ok()
        .flatten()
    else {
        // Ours but unresponsive (e.g. the agent died mid-launch): kill it, so a restart never
        // runs two QEMUs for one VM.
        tracing::warn!(pid, "QEMU does not answer QMP; killing it before recovery");
        process::sigkill(pid);
        process::wait_gone(pid, KILL_GRACE).await;
        return None;
    };
    Some(Launched {
        pid,
        // Recovery keeps the start time the agent recorded at launch.
        spawned_at_ms: 0,
        exit: exit_of_adopted(dir.clone(), pid, events),
    })
}

async fn shutdown(dir: &RunDir, pid: u32, grace: Duration) {
    let qmp = async {
        let mut c = QmpClient::connect(&dir.qmp_socket()).await.ok()?;
        c.system_powerdown().await.ok()?;
        Some(c)
    };
    let conn = tokio::time::timeout(Duration::from_secs(2), qmp)
        .await
        .ok()
        .flatten();
    if process::wait_gone(pid, grace).await {
        return;
    }
    tracing::info!(pid, "guest ignored ACPI powerdown; sending quit");
    if let Some(mut c) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(2), c.quit()).await;
    } else {
        process::sigterm(pid);
    }
    if process::wait_gone(pid, QUIT_GRACE).await {
        return;
    }
    tracing::warn!(pid, "QEMU ignored quit; killing");
    process::sigkill(pid);
    process::wait_gone(pid, KILL_GRACE).await;
}

impl Driver for QemuDriver {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn accel(&self) -> &'static str {
        self.accel.as_str()
    }

    fn launch<'a>(
        &'a self,
        dir: &'a RunDir,
        spec: &'a VmSpec,
        forwards: &'a [ActiveForward],
    ) -> BoxFuture<'a, Result<Launched>> {
        self.spawn(dir, spec, forwards).boxed()
    }

    fn adopt<'a>(&'a self, dir: &'a RunDir) -> BoxFuture<'a, Option<Launched>> {
        adopt(dir).boxed()
    }

    fn shutdown<'a>(&'a self, dir: &'a RunDir, pid: u32, grace: Duration) -> BoxFuture<'a, ()> {
        shutdown(dir, pid, grace).boxed()
    }

    fn kill<'a>(&'a self, _dir: &'a RunDir, pid: u32) -> BoxFuture<'a, ()> {
        async move {
            if pid > 0 {
                process::sigkill(pid);
                process::wait_gone(pid, KILL_GRACE).await;
            }
        }
        .boxed()
    }

    fn wait_ready<'a>(&'a self, dir: &'a RunDir, marker: &'a str, from: u64) -> BoxFuture<'a, ()> {
        async move { console::wait_for_marker(&dir.console_log(), marker, from).await }.boxed()
    }

    fn write_console<'a>(&'a self, dir: &'a RunDir, data: &'a [u8]) -> BoxFuture<'a, Result<()>> {
        async move { self.serial.write(&dir.serial_socket(), data).await }.boxed()
    }

    fn remove<'a>(&'a self, dir: &'a RunDir) -> BoxFuture<'a, Result<()>> {
        self.serial.forget(&dir.serial_socket());
        async move { dir.remove() }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::network::Network;
    use crate::vm::spec::{DiskFormat, DiskSpec, RunStrategy};

    fn spec_with_disk(image: PathBuf) -> VmSpec {
        VmSpec {
            run_strategy: RunStrategy::Always,
            cpus: 1,
            memory_mib: 64,
            kernel: "/k".into(),
            initrd: None,
            cmdline: String::new(),
            disks: vec![DiskSpec {
                name: "data".into(),
                image,
                format: DiskFormat::Raw,
                read_only: false,
            }],
            network: Network::None,
            readiness: None,
        }
    }

    #[tokio::test]
    async fn an_overlay_is_kept_over_the_same_image_and_remade_over_another() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = RunDir::new(tmp.path(), "vm");
        dir.create().expect("run dir");
        let (a, b) = (tmp.path().join("a.raw"), tmp.path().join("b.raw"));
        std::fs::write(&a, [0; 4096]).expect("a");
        std::fs::write(&b, [0; 4096]).expect("b");
        let driver = QemuDriver::new(Accel::Tcg);
        let overlay = dir.disk("data");
        let backing = || qcow2_backing_file(&overlay).map(PathBuf::from);

        driver
            .make_overlays(&dir, &spec_with_disk(a.clone()))
            .await
            .expect("overlay");
        assert_eq!(backing(), Some(a.clone()));
        let before = std::fs::metadata(&overlay)
            .and_then(|m| m.modified())
            .expect("mtime");
        driver
            .make_overlays(&dir, &spec_with_disk(a))
            .await
            .expect("overlay");
        let after = std::fs::metadata(&overlay)
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(before, after, "same image: the guest's writes are kept");
        driver
            .make_overlays(&dir, &spec_with_disk(b.clone()))
            .await
            .expect("overlay");
        assert_eq!(backing(), Some(b), "another image: a fresh overlay");
    }
}
