//! The lease outlives the agent: a small detached process, `quiver-agent watchdog`, holds the
//! lease deadline and kills this host's QEMUs when it passes, so that fencing holds even when
//! the agent process is dead (its VMs run detached so that an agent restart disturbs no guest).
//!
//! The deadline lives in `<data-dir>/lease` as milliseconds of `CLOCK_BOOTTIME` (monotonic,
//! shared by every process on the host, counting suspend). The agent rewrites it (write, then
//! rename) after every committed renewal; the watchdog reads it every [`POLL`]. An agent
//! restarted within its lease reads the same file and re-adopts its VMs without a stop.
//!
//! The watchdog kills only what `quiver-agent sweep` would (live processes whose command line
//! names their run dir's QMP socket), and exits once nothing is left to guard: its data dir is
//! gone, or no agent runs on it (`<data-dir>/agent.pid`), the lease has lapsed and no QEMU
//! runs (the next agent starts a new watchdog).

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::vm::{process, sweep};
use crate::{Error, Result};

/// The lease deadline file in the data dir.
pub const LEASE_FILE: &str = "lease";
const PID_FILE: &str = "watchdog.pid";
/// The running agent's pid, written by the agent at start.
pub const AGENT_PID_FILE: &str = "agent.pid";
const LOG_FILE: &str = "watchdog.log";
/// How often the watchdog looks at the deadline: part of the fencing margin.
pub const POLL: Duration = Duration::from_millis(100);

/// Milliseconds of `CLOCK_BOOTTIME`.
#[must_use]
pub fn boottime_ms() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let secs = u64::try_from(t.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(t.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// The deadline in `data_dir`'s lease file; 0 (lapsed) when there is none or it is unreadable.
#[must_use]
pub fn read_deadline(data_dir: &Path) -> u64 {
    std::fs::read_to_string(data_dir.join(LEASE_FILE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// Replaces the deadline atomically.
///
/// # Errors
/// The file cannot be written.
pub fn write_deadline(data_dir: &Path, deadline_ms: u64) -> Result<()> {
    let path = data_dir.join(LEASE_FILE);
    let tmp = data_dir.join(format!("{LEASE_FILE}.tmp"));
    std::fs::write(&tmp, deadline_ms.to_string()).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

/// Records this agent's pid and starts the watchdog of `data_dir` unless one already runs.
///
/// # Errors
/// The agent's own executable cannot be found or started.
pub fn ensure_running(data_dir: &Path) -> Result<()> {
    let agent_pid = data_dir.join(AGENT_PID_FILE);
    std::fs::write(&agent_pid, std::process::id().to_string())
        .map_err(|e| Error::io(&agent_pid, e))?;
    if let Some(pid) = running(data_dir) {
        tracing::debug!(pid, "lease watchdog already running");
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| Error::io("locating quiver-agent", e))?;
    let log_path = data_dir.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::io(&log_path, e))?;
    let child = std::process::Command::new(exe)
        .arg("watchdog")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        // Its own process group: a signal to the agent's group does not reach it.
        .process_group(0)
        .spawn()
        .map_err(|e| Error::io("starting the lease watchdog", e))?;
    let pid_path = data_dir.join(PID_FILE);
    std::fs::write(&pid_path, child.id().to_string()).map_err(|e| Error::io(&pid_path, e))?;
    tracing::info!(pid = child.id(), "lease watchdog started");
    // Not waited for: it outlives the agent by design (init reaps it).
    drop(child);
    Ok(())
}

/// The pid of `data_dir`'s live watchdog, if any.
fn running(data_dir: &Path) -> Option<u32> {
    live_pid(data_dir, PID_FILE, "watchdog")
}

/// Whether an agent runs on `data_dir`.
fn agent_alive(data_dir: &Path) -> bool {
    live_pid(data_dir, AGENT_PID_FILE, "quiver-agent").is_some()
}

/// The pid in `data_dir/file` if that process lives and its command line names `needle`
/// (a pid file may outlive its process, and the pid be reused).
fn live_pid(data_dir: &Path, file: &str, needle: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(data_dir.join(file))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (process::alive(pid) && process::cmdline_contains(pid, needle)).then_some(pid)
}

/// What one look at the deadline decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The lease holds (or nothing runs): nothing to do.
    Hold,
    /// Lapsed: kill these pids.
    Kill(Vec<u32>),
    /// Nothing left to guard.
    Exit,
}

/// What the watchdog sees at one look.
#[derive(Debug)]
pub struct Sight {
    pub dir_exists: bool,
    pub agent_alive: bool,
    pub deadline_ms: u64,
    pub now_ms: u64,
    /// Live QEMUs (looked for only once the lease has lapsed).
    pub qemus: Vec<u32>,
}

/// Decides from what the watchdog sees.
#[must_use]
pub fn judge(sight: Sight) -> Verdict {
    if !sight.dir_exists {
        return Verdict::Exit;
    }
    if sight.now_ms < sight.deadline_ms {
        return Verdict::Hold;
    }
    match (sight.qemus.is_empty(), sight.agent_alive) {
        (false, _) => Verdict::Kill(sight.qemus),
        (true, true) => Verdict::Hold,
        (true, false) => Verdict::Exit,
    }
}

/// The watchdog's loop (`quiver-agent watchdog --data-dir DIR`).
pub fn run(data_dir: &Path) {
    let data_dir: PathBuf = data_dir.to_owned();
    loop {
        let qemus = || sweep::find(&data_dir).into_iter().map(|q| q.pid).collect();
        let deadline = read_deadline(&data_dir);
        let now = boottime_ms();
        // Looking for QEMUs costs a directory walk: only once the lease has lapsed.
        let found = if now >= deadline { qemus() } else { Vec::new() };
        let sight = Sight {
            dir_exists: data_dir.is_dir(),
            agent_alive: agent_alive(&data_dir),
            deadline_ms: deadline,
            now_ms: now,
            qemus: found,
        };
        match judge(sight) {
            Verdict::Hold => {}
            Verdict::Kill(pids) => {
                for pid in pids {
                    process::sigkill(pid);
                    eprintln!("{{\"fenced\":{pid},\"deadlineMs\":{deadline},\"nowMs\":{now}}}");
                }
            }
            Verdict::Exit => return,
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sight(agent_alive: bool, deadline_ms: u64, now_ms: u64, qemus: &[u32]) -> Sight {
        Sight {
            dir_exists: true,
            agent_alive,
            deadline_ms,
            now_ms,
            qemus: qemus.to_vec(),
        }
    }

    #[test]
    fn the_watchdog_kills_only_after_the_deadline_and_exits_when_nothing_is_left() {
        assert_eq!(judge(sight(false, 1_000, 999, &[7])), Verdict::Hold);
        assert_eq!(
            judge(sight(false, 1_000, 1_000, &[7])),
            Verdict::Kill(vec![7])
        );
        assert_eq!(
            judge(sight(true, 1_000, 1_000, &[7])),
            Verdict::Kill(vec![7])
        );
        assert_eq!(judge(sight(false, 1_000, 5_000, &[])), Verdict::Exit);
        let gone = Sight {
            dir_exists: false,
            ..sight(true, 9_000, 1_000, &[7])
        };
        assert_eq!(judge(gone), Verdict::Exit);
    }

    #[test]
    fn a_watchdog_started_before_the_first_lease_waits_for_its_agent() {
        // No lease file yet (deadline 0), no QEMU, the agent alive: keep guarding.
        assert_eq!(judge(sight(true, 0, 5_000, &[])), Verdict::Hold);
    }

    #[test]
    fn the_deadline_file_round_trips_and_a_missing_one_is_lapsed() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_deadline(dir.path()), 0);
        write_deadline(dir.path(), 123_456).expect("write");
        assert_eq!(read_deadline(dir.path()), 123_456);
        assert!(boottime_ms() > 0);
    }
}
