//! What `/proc` says about processes, for tests that order events across processes: when a
//! process started and whether it still runs, on the boot clock (`CLOCK_BOOTTIME`, which is
//! what `/proc/uptime` and `/proc/<pid>/stat` count in).

/// The process's start, in ms since boot (clock ticks of 10 ms).
#[must_use]
pub fn started_ms(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    Some(ticks * 10)
}

/// Now, in ms since boot.
#[must_use]
pub fn uptime_ms() -> u64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap_or_default();
    let secs: f64 = text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    // Whole milliseconds of uptime; finer precision is not needed.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ms = (secs * 1000.0) as u64;
    ms
}

/// Alive: exists and is not a zombie.
#[must_use]
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Watches `pid` from a thread, every 2 ms, until it dies or `limit` passes; the thread
/// returns the last uptime (ms) at which it saw the process alive. Finer than a poll of the
/// VM's status: it orders a process's end against another's start to within a few ms.
#[must_use]
pub fn watch_last_alive(pid: u32, limit: std::time::Duration) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let end = std::time::Instant::now() + limit;
        let mut last = uptime_ms();
        while alive(pid) && std::time::Instant::now() < end {
            last = uptime_ms();
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        last
    })
}
