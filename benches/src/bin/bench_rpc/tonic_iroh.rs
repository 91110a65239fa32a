//! (f) tonic over `tonic-iroh-transport` 0.9 and (f0) the raw bi-stream echo on its iroh (0.98),
//! measured by `bench-tonic-iroh` (`benches/tonic-iroh`, its own crate and lockfile: iroh 0.98
//! cannot share this workspace's) in a child process that this one drives a run at a time, so
//! that both take their turns in the interleaved rounds like the other transports.
//!
//! The child is found at `QUIVER_TONIC_IROH_BIN`, which `benches/run.sh` sets after building it;
//! without it, (f) and (f0) are not measured and the report says why.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use quiver_benches::Samples;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Mutex;

use crate::load::LoadResult;

/// Where `benches/run.sh` puts the child's path.
pub const BIN_VAR: &str = "QUIVER_TONIC_IROH_BIN";

/// The running child, shared by (f) and (f0); one run at a time.
pub struct Remote {
    io: Mutex<(ChildStdin, Lines<BufReader<ChildStdout>>)>,
    /// Killed when dropped.
    _child: Child,
}

impl Remote {
    /// Starts the child, if `QUIVER_TONIC_IROH_BIN` names it, and waits until it is ready.
    pub async fn start() -> anyhow::Result<Option<Arc<Self>>> {
        let Some(path) = std::env::var_os(BIN_VAR).map(PathBuf::from) else {
            return Ok(None);
        };
        let mut child = Command::new(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("{BIN_VAR}={}", path.display()))?;
        let stdin = child.stdin.take().context("the child's stdin")?;
        let mut lines = BufReader::new(child.stdout.take().context("the child's stdout")?).lines();
        let ready = lines.next_line().await?;
        anyhow::ensure!(
            ready.as_deref() == Some("ready"),
            "{} said {ready:?} instead of `ready`",
            path.display()
        );
        Ok(Some(Arc::new(Self {
            io: Mutex::new((stdin, lines)),
            _child: child,
        })))
    }

    /// One run of `which` ("f" or "f0") in the child, as [`crate::load::run`] does in-process.
    pub async fn run(
        &self,
        which: &str,
        request_bytes: usize,
        in_flight: usize,
        calls: usize,
        warmup: usize,
    ) -> anyhow::Result<LoadResult> {
        let mut io = self.io.lock().await;
        let (stdin, lines) = &mut *io;
        let order = format!("{which} {in_flight} {calls} {warmup} {request_bytes}\n");
        stdin.write_all(order.as_bytes()).await?;
        stdin.flush().await?;
        let line = lines
            .next_line()
            .await?
            .context("the child ended during a run")?;
        parse_run(&line)
    }
}

/// The child's answer: the elapsed time, then every call's latency, in nanoseconds.
fn parse_run(line: &str) -> anyhow::Result<LoadResult> {
    let mut numbers = line.split_whitespace().map(|n| {
        n.parse::<u64>()
            .map(Duration::from_nanos)
            .with_context(|| format!("not a number of nanoseconds: {n:?}"))
    });
    let elapsed = numbers.next().context("an empty answer")??;
    let mut latencies = Samples::default();
    for latency in numbers {
        latencies.push(latency?);
    }
    anyhow::ensure!(!latencies.is_empty(), "an answer without calls: {line:?}");
    Ok(LoadResult { latencies, elapsed })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_elapsed_time_then_latencies() {
        let run = parse_run("2000000 1500 2500").expect("valid");
        assert_eq!(run.elapsed, Duration::from_millis(2));
        assert_eq!(run.latencies.len(), 2);
        assert!(parse_run("").is_err());
        assert!(parse_run("2000000").is_err(), "no calls");
        assert!(parse_run("2000000 x").is_err());
    }
}
