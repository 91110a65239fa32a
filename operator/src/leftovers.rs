//! QEMUs left behind in a dead agent's run dirs: what `dev` (and the test harness) stop last,
//! so that stopping a cluster whose agent died does not leak that agent's VMs.
//!
//! VMs outlive their agent on purpose, so when an agent is dead nobody else stops its QEMUs.
//! Which processes belong to a run dir is the agent's knowledge (its run-dir layout and its
//! re-adoption check), so the operator does not read run dirs: it runs
//! `quiver-agent sweep --data-dir DIR`, which stops them, and reads one JSON line per QEMU.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use tokio::process::Command;

use crate::{Error, Result};

/// A QEMU that was still running in a run dir, and was stopped.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Leftover {
    /// The VM's uid (the run dir's name).
    pub uid: String,
    pub run_dir: PathBuf,
    pub pid: u32,
}

/// Runs `agent_binary sweep --data-dir data_dir` and returns what it stopped. Call only when
/// the agent owning `data_dir` no longer runs.
pub async fn stop_all(agent_binary: &Path, data_dir: &Path) -> Result<Vec<Leftover>> {
    let what = format!(
        "{} sweep --data-dir {}",
        agent_binary.display(),
        data_dir.display()
    );
    let out = Command::new(agent_binary)
        .arg("sweep")
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| Error::io(what.clone(), e))?;
    if !out.status.success() {
        return Err(Error::Dev(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

fn parse(stdout: &str) -> Result<Vec<Leftover>> {
    stdout
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).map_err(Error::Serialize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_line_of_the_sweep_is_one_leftover() {
        let out = "{\"uid\":\"u1\",\"runDir\":\"/d/vms/u1\",\"pid\":7}\n\n\
                   {\"uid\":\"u2\",\"runDir\":\"/d/vms/u2\",\"pid\":8}\n";
        let found = parse(out).expect("parse");
        assert_eq!(found.len(), 2);
        assert_eq!((found[1].uid.as_str(), found[1].pid), ("u2", 8));
        assert!(parse("not json").is_err());
    }
}
