//! Per-VM run directory: everything the agent needs to re-adopt a VM after a restart.
//!
//! ```text
//! <data-dir>/vms/<uid>/
//!   spec.json     identity + spec (written on put)
//!   state.json    lifecycle state (written on every change)
//!   qemu.pid      written by QEMU (-pidfile)
//!   qmp.sock      QMP for commands (short-lived connections)
//!   events.sock   QMP held by the agent for events (SHUTDOWN …)
//!   serial.sock   the serial port's input (the agent writes what a user types)
//!   console.log   serial console, appended across boots
//!   qemu.log      QEMU's stdout/stderr of the latest launch
//!   disk-<name>.qcow2 overlays over the spec's writable base images
//! ```

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    pub fn new(data_dir: &Path, uid: &str) -> Self {
        RunDir {
            root: data_dir.join("vms").join(uid),
        }
    }

    pub fn at(root: PathBuf) -> Self {
        RunDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn spec_file(&self) -> PathBuf {
        self.root.join("spec.json")
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.root.join("qemu.pid")
    }

    pub fn qmp_socket(&self) -> PathBuf {
        self.root.join("qmp.sock")
    }

    pub fn events_socket(&self) -> PathBuf {
        self.root.join("events.sock")
    }

    pub fn serial_socket(&self) -> PathBuf {
        self.root.join("serial.sock")
    }

    pub fn console_log(&self) -> PathBuf {
        self.root.join("console.log")
    }

    pub fn qemu_log(&self) -> PathBuf {
        self.root.join("qemu.log")
    }

    /// The overlay of the disk `name` (a label: no '/' or '.', see `spec::check_label`).
    pub fn disk(&self, name: &str) -> PathBuf {
        self.root.join(format!("disk-{name}.qcow2"))
    }

    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root).map_err(|e| Error::io(&self.root, e))
    }

    pub fn remove(&self) -> Result<()> {
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&self.root, e)),
            _ => Ok(()),
        }
    }

    /// Writes JSON atomically (temp file + rename), so a crash never leaves half a file.
    pub fn write_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })?;
        std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    pub fn read_json<T: DeserializeOwned>(&self, path: &Path) -> Result<T> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.to_path_buf(),
            source,
        })
    }

    /// QEMU's pid as written by `-pidfile`.
    pub fn read_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Current length of the console log (0 if absent): where the next boot's output starts.
    pub fn console_len(&self) -> u64 {
        std::fs::metadata(self.console_log())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Moves a console log above `max` bytes to `console.log.1` (replacing an older one), so
    /// an often-restarted VM does not fill the disk. Call before a boot, never during one.
    pub fn rotate_console(&self, max: u64) {
        if self.console_len() > max {
            let old = self.root.join("console.log.1");
            if let Err(e) = std::fs::rename(self.console_log(), &old) {
                tracing::warn!(dir = %self.root.display(), error = %e, "cannot rotate console log");
            }
        }
    }

    /// The last `max` bytes of `qemu.log`, lossily decoded; used as the failure message.
    pub fn qemu_log_tail(&self, max: usize) -> String {
        let bytes = std::fs::read(self.qemu_log()).unwrap_or_default();
        let start = bytes.len().saturating_sub(max);
        String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_console_log_is_rotated_before_a_boot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = RunDir::new(tmp.path(), "vm");
        dir.create().expect("create");
        std::fs::write(dir.console_log(), vec![b'x'; 100]).expect("write");
        dir.rotate_console(1000);
        assert_eq!(dir.console_len(), 100, "small logs stay");
        dir.rotate_console(10);
        assert_eq!(dir.console_len(), 0);
        assert!(dir.root().join("console.log.1").exists());
        dir.remove().expect("remove");
        dir.remove().expect("removing twice is fine");
    }
}
