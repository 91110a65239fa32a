//! A whole Quiver cluster for end-to-end tests: the dev control plane in-process (via
//! [`ControlPlane`]), the CRDs, real `quiver-agent` processes on loopback and the operator
//! in-process (restartable), talking mutual TLS from one cluster CA as in `quiver-operator
//! dev`. Dropping it kills the agents and every QEMU they started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use quiver_operator::agent_client::AgentAccess;
use quiver_operator::agents::{AgentOptions, AgentProcess, locate_agent_binary, wait_for_host};
use quiver_operator::operator::{Operator, OperatorConfig};
use quiver_operator::pki::ClusterPki;
use quiver_rpc::iroh::SecretKey;
use quiver_rpc::pki::TlsFiles;
use quiver_rpc::{AgentClient, TransportMode};

use crate::{ControlPlane, Kubectl};

/// Kernel cmdline for the test guest under TCG. The microvm guest has no timer to calibrate the
/// TSC against and hangs on a busy host unless the TSC frequency is fixed.
pub use quiver_crds::fixtures::TEST_CMDLINE;

/// The guest image directory, or `None` when it is missing and `QUIVER_REQUIRE_GUEST` is unset
/// (the caller skips and says so). Panics when it is missing but required.
pub fn guest_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("QUIVER_GUEST_DIR")
        .map_or_else(|| PathBuf::from("/var/lib/quiver/guest"), PathBuf::from);
    if dir.join("vmlinuz").is_file() && dir.join("initrd.gz").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("QUIVER_REQUIRE_GUEST").is_none(),
        "QUIVER_REQUIRE_GUEST is set but {} has no vmlinuz/initrd.gz (run scripts/guest-image.sh)",
        dir.display()
    );
    eprintln!(
        "SKIPPED: no guest image in {} (run scripts/guest-image.sh as root)",
        dir.display()
    );
    None
}

/// A MicroVM manifest booting the test guest; `extra` is appended to the spec (indented by 2).
pub fn vm_manifest(guest: &Path, name: &str, extra: &str) -> String {
    format!(
        "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  \
         cpus: 1\n  memoryMiB: 256\n  kernel: {k}\n  initrd: {i}\n  cmdline: {TEST_CMDLINE}\n  readiness:\n    \
         serialMarker: QUIVER_GUEST_READY\n{extra}",
        k = guest.join("vmlinuz").display(),
        i = guest.join("initrd.gz").display(),
    )
}

/// `quiver-operator` for tests that run the operator as its own process:
/// `$QUIVER_OPERATOR_BIN`, else the one in the target dir this test runs from (the test command
/// builds it), built first when it is not there yet.
pub fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("QUIVER_OPERATOR_BIN") {
        return Ok(path.into());
    }
    // The test runs from <target>/debug/deps/.
    let exe = std::env::current_exe()?;
    let dir = exe
        .ancestors()
        .nth(2)
        .context("the test executable has no target dir")?;
    let path = dir.join("quiver-operator");
    if !path.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "quiver-operator", "--bin", "quiver-operator"])
            .args(same_profile())
            .current_dir(crate::repo_root())
            .status()
            .context("building quiver-operator")?;
        anyhow::ensure!(status.success(), "cargo build -p quiver-operator failed");
    }
    Ok(path)
}

/// Finds `quiver-agent`, building it first when it is not there yet.
pub fn agent_binary() -> anyhow::Result<PathBuf> {
    let explicit = std::env::var_os("QUIVER_AGENT_BIN").map(PathBuf::from);
    if let Ok(path) = locate_agent_binary(explicit.as_deref()) {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "-p", "quiver-agent", "--bin", "quiver-agent"])
        .args(same_profile())
        .current_dir(crate::repo_root())
        .status()
        .context("building quiver-agent")?;
    anyhow::ensure!(status.success(), "cargo build -p quiver-agent failed");
    Ok(locate_agent_binary(None)?)
}

/// `--release` when this executable is a release build (a benchmark run with `--release`), so
/// that the binary built is the one looked for: next to this executable.
fn same_profile() -> &'static [&'static str] {
    let release = std::env::current_exe().is_ok_and(|exe| {
        exe.ancestors()
            .any(|dir| dir.file_name() == Some("release".as_ref()))
    });
    if release { &["--release"] } else { &[] }
}

/// The transport of test clusters: `QUIVER_TEST_TRANSPORT` (`grpc`, `iroh` or `dual`; default
/// `grpc`). The agents serve every service on it and the operator calls them over it, so
/// the operator's end-to-end tests run unchanged over each transport.
pub fn test_transport() -> anyhow::Result<TransportMode> {
    match std::env::var("QUIVER_TEST_TRANSPORT") {
        Ok(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("QUIVER_TEST_TRANSPORT: {e}")),
        Err(_) => Ok(TransportMode::Grpc),
    }
}

pub struct TestCluster {
    pub control_plane: ControlPlane,
    pub client: kube::Client,
    pub agents: Vec<AgentProcess>,
    operator: Option<Operator>,
    binary: PathBuf,
    pki: ClusterPki,
    /// The operator's client certificate.
    pub operator_tls: TlsFiles,
    /// How the operator (and [`TestCluster::agent_client`]) reaches agents: over the
    /// transport [`test_transport`] names, which the agents serve.
    pub access: AgentAccess,
    pub state: tempfile::TempDir,
    /// Agents run the simulated driver (benchmarks of the control plane alone).
    simulated: bool,
    /// The kubeconfig agents added from now on register with (default: the admin one).
    agent_kubeconfig: Option<PathBuf>,
}

impl TestCluster {
    /// Control plane, CRDs, `agents` agents (`agent-0`...) and one operator.
    pub async fn start(agents: usize) -> anyhow::Result<Self> {
        Self::start_with(agents, false, test_transport()?).await
    }

    /// Like [`TestCluster::start`], on `transport` whatever `QUIVER_TEST_TRANSPORT` says (for
    /// tests of one transport's own properties, such as gRPC's mutual TLS).
    pub async fn start_over(agents: usize, transport: TransportMode) -> anyhow::Result<Self> {
        Self::start_with(agents, false, transport).await
    }

    /// Like [`TestCluster::start`], with agents on the `simulated` driver (no QEMU): only for
    /// measuring the control plane, and labelled so wherever it is reported.
    pub async fn start_simulated(agents: usize) -> anyhow::Result<Self> {
        Self::start_with(agents, true, test_transport()?).await
    }

    /// `agents` agents on the simulated driver or QEMU, serving `transport`, which the operator
    /// uses too.
    pub async fn start_with(
        agents: usize,
        simulated: bool,
        transport: TransportMode,
    ) -> anyhow::Result<Self> {
        // The operator's and control plane's logs, shown with a failing test's output
        // (`RUST_LOG=quiver_operator=debug` for more).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let control_plane = ControlPlane::start().await?;
        let client = control_plane.client().await?;
        quiver_operator::dev::install_crds(&client).await?;
        let state = tempfile::tempdir()?;
        let pki = ClusterPki::ensure(&client, &state.path().join("pki")).await?;
        let operator_tls = pki.operator_client()?;
        let access = AgentAccess::new(
            Some(operator_tls.clone()),
            transport,
            SecretKey::generate(),
            None,
        )
        .await?;
        let mut cluster = TestCluster {
            control_plane,
            client,
            agents: Vec::new(),
            operator: None,
            binary: agent_binary()?,
            operator_tls,
            access,
            pki,
            state,
            simulated,
            agent_kubeconfig: None,
        };
        for i in 0..agents {
            cluster.add_agent(&format!("agent-{i}"), None).await?;
        }
        cluster.start_operator();
        Ok(cluster)
    }

    /// Control plane, CRDs and `agents` agents in one Raft group, with no operator: tests
    /// drive the agents' API themselves (as the operator does).
    pub async fn start_fleet(agents: usize, simulated: bool) -> anyhow::Result<Self> {
        let mut cluster = Self::start_with(0, simulated, test_transport()?).await?;
        cluster.stop_operator().await;
        for i in 0..agents {
            cluster.add_agent(&format!("agent-{i}"), None).await?;
        }
        Ok(cluster)
    }

    /// The kubeconfig agents added from now on register their Host with (a ServiceAccount's
    /// token instead of the admin's).
    pub fn set_agent_kubeconfig(&mut self, path: PathBuf) {
        self.agent_kubeconfig = Some(path);
    }

    pub fn kubectl(&self) -> Kubectl {
        self.control_plane.kubectl()
    }

    /// Starts and registers another agent, optionally with a memory capacity (MiB).
    pub async fn add_agent(&mut self, name: &str, memory_mib: Option<u64>) -> anyhow::Result<()> {
        self.add_agent_with(name, memory_mib, &[]).await
    }

    /// Like [`TestCluster::add_agent`], with more agent flags (`--host-label pool=a`).
    pub async fn add_agent_with(
        &mut self,
        name: &str,
        memory_mib: Option<u64>,
        extra_args: &[&str],
    ) -> anyhow::Result<()> {
        let options = AgentOptions {
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            capacity_cpus: Some(4),
            capacity_memory_mib: Some(memory_mib.unwrap_or(8192)),
            simulated: self.simulated,
            ..AgentOptions::new(
                self.binary.clone(),
                name,
                self.state.path().join(name),
                "tcg",
                &self.pki,
                self.access.clone(),
                self.agent_kubeconfig
                    .clone()
                    .unwrap_or_else(|| self.control_plane.kubeconfig_path()),
            )?
        };
        let agent = AgentProcess::start(options).await?;
        wait_for_host(&self.client, &agent, Duration::from_secs(30)).await?;
        self.agents.push(agent);
        Ok(())
    }

    /// A client of agent `index`, connected as the operator connects.
    pub async fn agent_client(&self, index: usize) -> anyhow::Result<AgentClient> {
        let agent = self.agents.get(index).context("no such agent")?;
        Ok(agent.client().await?)
    }

    /// The cluster CA (to issue more certificates in tests).
    pub fn pki(&self) -> &ClusterPki {
        &self.pki
    }

    pub fn start_operator(&mut self) {
        if self.operator.is_none() {
            let config =
                OperatorConfig::new("test-operator").with_agent_access(self.access.clone());
            self.operator = Some(Operator::spawn(self.client.clone(), config));
        }
    }

    /// Stops the operator the way a crash would (no lease release).
    pub fn kill_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.kill();
        }
    }

    pub async fn stop_operator(&mut self) {
        if let Some(op) = self.operator.take() {
            op.shutdown().await;
        }
    }

    /// Pids of the QEMUs the agents' run dirs name, that are alive.
    pub fn qemu_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for agent in &self.agents {
            let Ok(dirs) = std::fs::read_dir(agent.options.data_dir.join("vms")) else {
                continue;
            };
            for dir in dirs.flatten() {
                let pid = std::fs::read_to_string(dir.path().join("qemu.pid"))
                    .ok()
                    .and_then(|s| s.trim().parse::<i32>().ok());
                if let Some(pid) = pid.filter(|p| Path::new(&format!("/proc/{p}")).exists()) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// The last `lines` lines of every agent's log whose text mentions one of `words`, for
    /// the message of a failed fleet test.
    pub fn agent_log_lines(&self, words: &[&str], lines: usize) -> String {
        let mut out = String::new();
        for agent in &self.agents {
            let log = std::fs::read_to_string(agent.options.data_dir.join("agent.log"))
                .unwrap_or_default();
            let hits: Vec<&str> = log
                .lines()
                .filter(|l| words.iter().any(|w| l.contains(w)))
                .collect();
            let from = hits.len().saturating_sub(lines);
            out.push_str(&format!(
                "
== {} ==
",
                agent.options.name
            ));
            out.push_str(&hits[from..].join("\n"));
        }
        out
    }

    /// What the agents' run dirs say about each VM (state and the console's last lines), for
    /// the message of a test that timed out waiting on one.
    pub fn diagnostics(&self) -> String {
        let mut out = String::new();
        for agent in &self.agents {
            let Ok(dirs) = std::fs::read_dir(agent.options.data_dir.join("vms")) else {
                continue;
            };
            for dir in dirs.flatten() {
                let read =
                    |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
                let console = read("console.log");
                let tail: Vec<&str> = console.lines().rev().take(8).collect();
                out.push_str(&format!(
                    "\n{}: state {}\n  console tail:\n    {}",
                    dir.path().display(),
                    read("state.json").trim(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n    ")
                ));
            }
        }
        out
    }

    /// Stops the operator and the agents, then stops any QEMU left in their run dirs. The
    /// VMs are not deleted through the agents first: deletes would wait for a Raft quorum a
    /// test may have taken away, and the sweep stops their QEMUs all the same.
    pub async fn shutdown(mut self) {
        self.stop_operator().await;
        for agent in &mut self.agents {
            agent.stop().await;
        }
        for agent in &self.agents {
            let options = &agent.options;
            if let Err(e) =
                quiver_operator::leftovers::stop_all(&options.binary, &options.data_dir).await
            {
                eprintln!("sweeping {}: {e}", options.name);
            }
        }
    }

    /// Restarts agent `name` (after a kill or while it runs), same options.
    pub async fn restart_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let agent = self
            .agents
            .iter_mut()
            .find(|a| a.options.name == name)
            .with_context(|| format!("no agent {name}"))?;
        agent.restart().await?;
        Ok(())
    }

    /// Kills agent `name` as a crash would; its VMs keep running.
    pub async fn kill_agent(&mut self, name: &str) -> anyhow::Result<()> {
        let agent = self
            .agents
            .iter_mut()
            .find(|a| a.options.name == name)
            .with_context(|| format!("no agent {name}"))?;
        agent.kill().await;
        Ok(())
    }

    /// Waits until the operator's heartbeat marks Host `name` Ready.
    pub async fn wait_host_ready(&self, name: &str) -> anyhow::Result<()> {
        let k = self.kubectl();
        let ready = r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#;
        crate::eventually(
            Duration::from_secs(20),
            &format!("Host {name} Ready"),
            || async {
                let status = k.run(&["get", "qh", name, "-o", ready]).await?;
                Ok((status == "True").then_some(()))
            },
        )
        .await
    }

    /// Applies a MicroVM booting the test guest from `guest` (see [`vm_manifest`]).
    pub async fn apply_vm(&self, guest: &Path, name: &str, extra: &str) -> anyhow::Result<()> {
        self.kubectl().apply(&vm_manifest(guest, name, extra)).await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let mut pids = self.qemu_pids();
        // Also any QEMU whose command line names this cluster's state dir (its pid file may
        // not be written yet, or already removed).
        pids.extend(qemus_naming(self.state.path()));
        kill_now(&pids);
    }
}

/// Pids of the live QEMU processes whose command line names `dir` (a cluster's state dir).
#[must_use]
pub fn qemus_naming(dir: &Path) -> Vec<i32> {
    qemus_mentioning(&dir.to_string_lossy())
}

/// Pids of the live QEMU processes whose command line contains `marker` (a dir, a VM's uid).
#[must_use]
pub fn qemus_mentioning(marker: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z");
        if !zombie && cmdline.contains("qemu-system") && cmdline.contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

/// SIGKILL, for clean-up after a failed test (never as the behaviour under test).
pub fn kill_now(pids: &[i32]) {
    for pid in pids {
        let _ = std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status();
    }
}
