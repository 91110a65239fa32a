//! Looking at and signalling processes by pid (QEMU is often not the agent's child).

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Alive = exists and is not a zombie (a dead QEMU reparented to a non-reaping init stays a
/// zombie).
pub fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name, which may itself contain ')'.
    match stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
    {
        Some(state) => state != "Z" && state != "X",
        None => false,
    }
}

/// Whether the process's command line mentions `needle` (guards adoption against pid reuse).
pub fn cmdline_contains(pid: u32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| String::from_utf8_lossy(&raw).contains(needle))
        .unwrap_or(false)
}

pub fn sigkill(pid: u32) {
    signal(pid, Signal::SIGKILL);
}

pub fn sigterm(pid: u32) {
    signal(pid, Signal::SIGTERM);
}

fn signal(pid: u32, sig: Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 0 {
        return;
    }
    if let Err(e) = kill(Pid::from_raw(raw), sig) {
        tracing::debug!(pid, ?sig, error = %e, "signal failed");
    }
}

/// Polls until `pid` is gone or `timeout` passes; true if gone.
pub async fn wait_gone(pid: u32, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_bogus_pid_is_not() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
        assert!(!cmdline_contains(u32::MAX - 1, "x"));
    }
}
