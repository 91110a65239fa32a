//! Harness shared by the integration and end-to-end tests: a dev control plane in-process,
//! the real `kubectl` binary pointed at it, and small waiting helpers.
//!
//! Layout: [`ControlPlane`] starts the embedded Kubernetes-compatible API server on a free
//! loopback port and writes a kubeconfig; [`Kubectl`] runs the real kubectl against it with a
//! private discovery cache; [`eventually`] polls a condition with a deadline.
//! [`cluster::TestCluster`] adds agents (processes) and the operator (in-process);
//! [`dev::DevTestCluster`] is `quiver-operator dev`'s own cluster, stop included;
//! [`vm`] reads MicroVMs as kubectl shows them and waits on them (`wait_ready`,
//! `wait_vm_phase`). [`helm`] runs the real helm against a control plane. [`netns`] makes
//! network namespaces, veth pairs and nftables rules for tests that change addresses or lose
//! packets, [`netns_agent`] runs an agent in one and calls it from another; [`rpc_echo`] is a
//! `quiver/rpc/1` service for transport tests that need no agent.

pub mod cluster;
pub mod dev;
pub mod helm;
pub mod kube_helpers;
pub mod netns;
pub mod netns_agent;
pub mod netns_fleet;
pub mod plugin;
pub mod procs;
pub mod rpc_echo;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quiver_apiserver::{Config, DevApiServer};

/// Repository root (the tests crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The CRD manifests `crdgen` writes.
pub fn crd_dir() -> PathBuf {
    repo_root().join("charts/quiver/crds")
}

/// A dev control plane running in this process, with its kubeconfig on disk.
pub struct ControlPlane {
    pub server: DevApiServer,
    pub dir: tempfile::TempDir,
}

impl ControlPlane {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(Config::default()).await
    }

    pub async fn start_with(config: Config) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let server = DevApiServer::start(config).await?;
        server.write_kubeconfig(&dir.path().join("kubeconfig"))?;
        Ok(Self { server, dir })
    }

    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl {
            kubeconfig: self.kubeconfig_path(),
            cache: self.dir.path().join("kube-cache"),
        }
    }

    /// A kube-rs client for this control plane, built from its kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        kube_client(&self.kubeconfig_path()).await
    }
}

/// A kube-rs client from the kubeconfig at `path`.
pub async fn kube_client(path: &std::path::Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    Ok(kube::Client::try_from(config)?)
}

/// The real kubectl binary (`$QUIVER_KUBECTL`, else `kubectl` on PATH).
pub fn kubectl_binary() -> String {
    std::env::var("QUIVER_KUBECTL").unwrap_or_else(|_| "kubectl".to_string())
}

/// Runs kubectl against one control plane.
#[derive(Clone)]
pub struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    /// kubectl with `kubeconfig`, caching discovery under `cache`.
    #[must_use]
    pub fn new(kubeconfig: PathBuf, cache: PathBuf) -> Self {
        Self { kubeconfig, cache }
    }

    pub async fn output(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Output> {
        use tokio::io::AsyncWriteExt as _;
        let mut cmd = tokio::process::Command::new(kubectl_binary());
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "running {} (set QUIVER_KUBECTL or install kubectl)",
                kubectl_binary()
            )
        })?;
        if let Some(mut pipe) = child.stdin.take()
            && let Some(input) = stdin
        {
            pipe.write_all(input.as_bytes()).await?;
        }
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .context("kubectl timed out")??;
        Ok(out)
    }

    /// Runs kubectl and returns stdout; fails with stderr when kubectl fails.
    pub async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run_with_stdin(args, None).await
    }

    pub async fn run_with_stdin(
        &self,
        args: &[&str],
        stdin: Option<&str>,
    ) -> anyhow::Result<String> {
        let out = self.output(args, stdin).await?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub async fn fail(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
        let out = self.output(args, stdin).await?;
        if out.status.success() {
            bail!(
                "kubectl {} succeeded but should have failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// Spawns a long-running kubectl (e.g. `get -w`), stdout piped.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<tokio::process::Child> {
        Ok(tokio::process::Command::new(kubectl_binary())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", &self.cache)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?)
    }
}

/// Polls `check` until it returns `Some`, or fails after `timeout` with the last error.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => "condition not met".to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
