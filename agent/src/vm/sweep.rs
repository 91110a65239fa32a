//! QEMUs left behind in a dead agent's run dirs: `quiver-agent sweep --data-dir DIR` stops
//! them, and `quiver-operator dev` (and the test harness) run it last, so that stopping a
//! cluster whose agent died does not leak that agent's VMs. The run-dir layout stays the
//! agent's knowledge; the sweep prints one JSON [`Leftover`] per line for its caller.
//!
//! VMs outlive their agent on purpose (an agent restart disturbs no guest), so when an agent
//! is dead nobody else stops its QEMUs. The sweep reads each run dir's pid file
//! (`<data-dir>/vms/<uid>/qemu.pid`) and signals the process only if it is alive and its
//! command line names that run dir's QMP socket: the check the agent makes before re-adopting
//! a VM, so a reused pid is never killed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::process;
use super::rundir::RunDir;

/// How long a QEMU gets to exit after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A QEMU that was still running in a run dir (one JSON line of `quiver-agent sweep`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Leftover {
    /// The VM's uid (the run dir's name).
    pub uid: String,
    pub run_dir: PathBuf,
    pub pid: u32,
}

/// The live QEMUs of the run dirs under `data_dir` that really are those VMs' QEMUs.
#[must_use]
pub fn find(data_dir: &Path) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("vms")) else {
        return Vec::new();
    };
    let mut found: Vec<Leftover> = entries
        .flatten()
        .filter_map(|entry| {
            let dir = RunDir::at(entry.path());
            let pid = dir.read_pid()?;
            let marker = dir.qmp_socket().display().to_string();
            (process::alive(pid) && process::cmdline_contains(pid, &marker)).then(|| Leftover {
                uid: entry.file_name().to_string_lossy().into_owned(),
                run_dir: dir.root().to_owned(),
                pid,
            })
        })
        .collect();
    found.sort_by(|a, b| a.run_dir.cmp(&b.run_dir));
    found
}

/// Stops every QEMU [`find`] reports under `data_dir` (SIGTERM, then SIGKILL), removes its run
/// dir so no later agent re-adopts or restarts it, and returns what it stopped. Call only
/// when the agent owning `data_dir` no longer runs.
pub async fn stop_all(data_dir: &Path) -> Vec<Leftover> {
    let found = find(data_dir);
    for qemu in &found {
        process::sigterm(qemu.pid);
    }
    for qemu in &found {
        if !process::wait_gone(qemu.pid, TERM_GRACE).await {
            process::sigkill(qemu.pid);
            if !process::wait_gone(qemu.pid, KILL_GRACE).await {
                tracing::warn!(pid = qemu.pid, "QEMU survived SIGKILL");
                continue;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&qemu.run_dir) {
            tracing::warn!(dir = %qemu.run_dir.display(), error = %e, "cannot remove run dir");
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt as _;

    use super::*;

    #[tokio::test]
    async fn a_pid_file_naming_another_process_is_left_alone() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = RunDir::new(data.path(), "uid-1");
        std::fs::create_dir_all(dir.root()).expect("run dir");
        // A live process that is not this run dir's QEMU (pid reuse): our own.
        std::fs::write(dir.pid_file(), std::process::id().to_string()).expect("pid");
        assert!(find(data.path()).is_empty());
        assert!(stop_all(data.path()).await.is_empty());
        assert!(
            dir.root().exists(),
            "a run dir without a leftover QEMU is kept"
        );
    }

    #[tokio::test]
    async fn a_process_naming_the_run_dir_is_stopped_and_its_run_dir_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = RunDir::new(data.path(), "uid-2");
        std::fs::create_dir_all(dir.root()).expect("run dir");
        // Stands in for QEMU: a process whose command line names the QMP socket.
        let marker = dir.qmp_socket().display().to_string();
        let mut child = std::process::Command::new("sleep")
            .arg0(&marker)
            .arg("600")
            .spawn()
            .expect("spawn");
        std::fs::write(dir.pid_file(), child.id().to_string()).expect("pid");
        // `spawn` may return while the child is still inside exec, with an empty command line.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !process::cmdline_contains(child.id(), &marker) {
            assert!(std::time::Instant::now() < deadline, "stand-in never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let found = find(data.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].uid, "uid-2");
        let stopped = stop_all(data.path()).await;
        assert_eq!(stopped, found);
        let status = child.wait().expect("wait");
        assert!(!status.success(), "the stand-in was signalled");
        assert!(!dir.root().exists());
    }
}
