//! Runs the built `kubectl-quiver` binary against a test cluster, as a user would.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use anyhow::{Context as _, bail};

/// `kubectl-quiver`, built once per test process (a no-op when it is up to date) so tests
/// never run a stale binary. `QUIVER_PLUGIN_BIN` names a binary to use instead.
pub fn plugin_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let path = build()?;
    *built = Some(path.clone());
    Ok(path)
}

fn build() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("QUIVER_PLUGIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = std::process::Command::new(cargo);
    build
        .args(["build", "-p", "kubectl-quiver", "--bin", "kubectl-quiver"])
        .current_dir(crate::repo_root());
    // What cargo set for this test crate would reach build scripts that watch it (ring's
    // does) and rebuild them each time.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_crate = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| name.starts_with(p));
        if per_crate || name == "CARGO_PRIMARY_PACKAGE" || name == "CARGO_TARGET_TMPDIR" {
            build.env_remove(name.as_ref());
        }
    }
    let status = build.status().context("building kubectl-quiver")?;
    anyhow::ensure!(status.success(), "cargo build -p kubectl-quiver failed");
    // This test runs from <target>/debug/deps/; the binary is in <target>/debug/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target dir")?;
    let path = dir.join("kubectl-quiver");
    anyhow::ensure!(path.is_file(), "{} not built", path.display());
    Ok(path)
}

/// `kubectl-quiver` with one cluster's kubeconfig.
#[derive(Clone)]
pub struct Plugin {
    pub binary: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Plugin {
    pub fn new(kubeconfig: PathBuf) -> anyhow::Result<Self> {
        Ok(Plugin {
            binary: plugin_binary()?,
            kubeconfig,
        })
    }

    /// The command, with `--kubeconfig` and no `KUBECONFIG` from the environment.
    #[must_use]
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    pub async fn output(&self, args: &[&str]) -> anyhow::Result<Output> {
        Ok(self.command(args).output().await?)
    }

    /// Runs it expecting success; returns stdout.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args).await?;
        if !out.status.success() {
            bail!(
                "kubectl-quiver {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs it expecting exit code 1; returns stderr.
    pub async fn fail(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(args).await?;
        if out.status.code() != Some(1) {
            bail!(
                "kubectl-quiver {} exited with {:?}, not 1: {}{}",
                args.join(" "),
                out.status.code(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
