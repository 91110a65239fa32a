//! `quiver-operator dev`'s own cluster in a test: its start and stop code
//! ([`quiver_operator::dev::DevCluster`]) with real agent processes, against a test control
//! plane and a private state dir. Dropping it kills any QEMU naming that state dir.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use quiver_operator::dev::{DevCluster, DevOptions, StopReport};

use crate::cluster::{agent_binary, kill_now, qemus_naming};
use crate::{ControlPlane, Kubectl};

pub struct DevTestCluster {
    pub control_plane: ControlPlane,
    state: tempfile::TempDir,
    dev: Option<DevCluster>,
}

impl DevTestCluster {
    /// Control plane, then `dev`'s operator and `agents` agents (`agent-0`...) on TCG.
    pub async fn start(agents: usize) -> anyhow::Result<Self> {
        Self::start_with(agents, |_| {}).await
    }

    /// [`DevTestCluster::start`] with `dev`'s options changed by `adjust` first.
    pub async fn start_with(
        agents: usize,
        adjust: impl FnOnce(&mut DevOptions),
    ) -> anyhow::Result<Self> {
        let control_plane = ControlPlane::start().await?;
        let state = tempfile::tempdir()?;
        let options = DevOptions {
            control_plane: quiver_apiserver::Config::default(),
            kubeconfig: control_plane.kubeconfig_path(),
            control_plane_only: false,
            state_dir: state.path().to_owned(),
            agents,
            agent_bin: Some(agent_binary()?),
            accel: "tcg".into(),
            demo: false,
            demo_timeout: Duration::from_secs(1),
            transport: crate::cluster::test_transport()?,
            metrics_address: None,
            relay_url: None,
            relay_ca: None,
            log_json: false,
        };
        let mut options = options;
        adjust(&mut options);
        let kubeconfig = std::fs::read_to_string(control_plane.kubeconfig_path())?;
        let dev = DevCluster::start(&options, &kubeconfig).await?;
        Ok(DevTestCluster {
            control_plane,
            state,
            dev: Some(dev),
        })
    }

    pub fn kubectl(&self) -> Kubectl {
        self.control_plane.kubectl()
    }

    /// Where the agents' data dirs (and so their VMs' run dirs) live.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Kills agent `name` as a crash would; its QEMUs keep running.
    pub async fn kill_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let agent = self
            .dev
            .as_mut()
            .and_then(|d| d.agents.iter_mut().find(|a| a.options.name == name))
            .with_context(|| format!("no agent {name}"))?;
        agent.kill().await;
        Ok(())
    }

    /// Stops the cluster as `quiver-operator dev` does on Ctrl-C, and returns what it did.
    pub async fn stop(&mut self) -> anyhow::Result<StopReport> {
        let dev = self.dev.take().context("already stopped")?;
        Ok(dev.stop().await)
    }
}

impl Drop for DevTestCluster {
    fn drop(&mut self) {
        kill_now(&qemus_naming(self.state.path()));
    }
}
