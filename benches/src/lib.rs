//! Benchmark harnesses. Each binary measures one part of Quiver together with a baseline
//! taken in the same run, and rewrites its own section of `docs/benchmarks.md`.
//!
//! Goals: numbers anyone can reproduce with one command, reported as ratios to a baseline.
//! Non-goals: assertions on speed (tests never assert on wall-clock time).

use std::path::{Path, PathBuf};
use std::time::Duration;

pub mod tables;

/// Latency samples with percentiles.
#[derive(Debug, Default, Clone)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn extend(&mut self, other: &Samples) {
        self.0.extend_from_slice(&other.0);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `p`th percentile (0–100), nearest rank.
    pub fn percentile(&mut self, p: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        self.0.sort_unstable();
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }
}

/// Formats a duration in the unit that reads best.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

pub fn docs_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/benchmarks.md")
}

/// Where a bench binary writes its results as JSON: `docs/benchmarks/<name>.json`, beside the
/// markdown, for tools that compare runs.
pub fn json_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/benchmarks")
        .join(format!("{name}.json"))
}

/// Writes `value` as pretty JSON with a trailing newline, creating the directory.
pub fn write_json(path: &Path, value: &serde_json::Value) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    std::fs::write(path, text)
}

/// Replaces (or appends) the section between `<!-- BEGIN name -->` and `<!-- END name -->`.
pub fn write_section(path: &Path, name: &str, body: &str) -> std::io::Result<()> {
    let (begin, end) = (
        format!("<!-- BEGIN {name} -->"),
        format!("<!-- END {name} -->"),
    );
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".to_string());
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &current[..b], &current[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", current.trim_end()),
    };
    std::fs::write(path, updated)
}

/// `n` raw QEMUs at once with the test guest's command line: spawn → marker on the serial
/// console, the baseline of every benchmark that boots a guest.
pub async fn raw_boots(
    guest: &std::path::Path,
    n: usize,
    timeout: std::time::Duration,
) -> anyhow::Result<Samples> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let guest = guest.to_path_buf();
            tokio::spawn(async move {
                use tokio::io::AsyncBufReadExt as _;
                let start = std::time::Instant::now();
                let mut child = tokio::process::Command::new("qemu-system-x86_64")
                    .args([
                        "-M",
                        "microvm,x-option-roms=off,rtc=on",
                        "-accel",
                        "tcg",
                        "-m",
                        "256",
                        "-smp",
                        "1",
                    ])
                    .args([
                        "-nodefaults",
                        "-no-user-config",
                        "-nographic",
                        "-no-reboot",
                        "-serial",
                        "stdio",
                    ])
                    .arg("-kernel")
                    .arg(guest.join("vmlinuz"))
                    .arg("-initrd")
                    .arg(guest.join("initrd.gz"))
                    .args(["-append", quiver_crds::fixtures::TEST_CMDLINE])
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::null())
                    .kill_on_drop(true)
                    .spawn()?;
                let stdout = child
                    .stdout
                    .take()
                    .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
                let mut lines = tokio::io::BufReader::new(stdout).lines();
                while let Some(line) = tokio::time::timeout(timeout, lines.next_line()).await?? {
                    if line.contains(quiver_crds::microvm::DEFAULT_SERIAL_MARKER) {
                        let took = start.elapsed();
                        child.kill().await?;
                        return anyhow::Ok(took);
                    }
                }
                anyhow::bail!("the guest never printed its marker")
            })
        })
        .collect();
    let mut samples = Samples::default();
    for t in tasks {
        samples.push(t.await??);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        assert_eq!(s.percentile(50.0), Duration::from_millis(50));
        assert_eq!(s.percentile(99.0), Duration::from_millis(99));
        assert_eq!(s.percentile(100.0), Duration::from_millis(100));
    }

    #[test]
    fn json_is_written_beside_the_docs_creating_its_directory() -> std::io::Result<()> {
        assert!(json_path("rpc").ends_with("docs/benchmarks/rpc.json"));
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("benchmarks/x.json");
        write_json(&path, &serde_json::json!({"p50_us": 12.5}))?;
        let back: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        assert_eq!(back["p50_us"], 12.5);
        Ok(())
    }

    #[test]
    fn sections_are_replaced_in_place() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("b.md");
        write_section(&path, "x", "one")?;
        write_section(&path, "y", "two")?;
        write_section(&path, "x", "three")?;
        let text = std::fs::read_to_string(&path)?;
        assert!(
            text.contains("three") && text.contains("two") && !text.contains("one"),
            "{text}"
        );
        assert!(text.find("three") < text.find("two"), "order kept: {text}");
        Ok(())
    }
}
