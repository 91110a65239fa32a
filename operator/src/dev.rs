//! `quiver-operator dev`: the whole system on one machine. The dev control plane in-process,
//! the CRDs installed from `quiver_crds`, the operator in-process, N `quiver-agent` processes
//! on loopback talking mutual TLS from a cluster CA under `<state-dir>/pki/` (also stored in
//! the Secret `default/quiver-ca`), and optionally a demo VM.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use quiver_crds::condition::GUEST_READY;
use quiver_crds::{Host, HostStatus, MicroVM};
use quiver_rpc::identity::{KEY_FILE, load_or_create_key};
use quiver_rpc::{Relay, TransportMode};

use crate::agent_client::AgentAccess;
use crate::agents::{AgentOptions, AgentProcess, wait_for_host};
use crate::leftovers::{self, Leftover};
use crate::operator::{Operator, OperatorConfig};
use crate::pki::ClusterPki;
use crate::{Error, Result};

/// The demo VM (`examples/microvm.yaml`), built in so `dev --demo` works from any directory.
pub const DEMO_MANIFEST: &str = include_str!("../../examples/microvm.yaml");

/// Settings of `quiver-operator dev`.
#[derive(Clone, Debug)]
pub struct DevOptions {
    pub control_plane: quiver_apiserver::Config,
    pub kubeconfig: PathBuf,
    pub control_plane_only: bool,
    pub state_dir: PathBuf,
    pub agents: usize,
    pub agent_bin: Option<PathBuf>,
    pub accel: String,
    pub demo: bool,
    pub demo_timeout: Duration,
    /// Transport of the agents' services and of the operator's calls to them.
    pub transport: TransportMode,
    /// Serve the operator's `/metrics` and `/healthz` here.
    pub metrics_address: Option<std::net::SocketAddr>,
    /// The iroh relay the operator and the agents home on (`--relay-url`), and the PEM file of
    /// its CA (`--relay-ca`). Off when `None`.
    pub relay_url: Option<String>,
    pub relay_ca: Option<PathBuf>,
    /// The agents log JSON lines (`--log-json`), as the operator does when so started.
    pub log_json: bool,
}

/// A kube client for the dev control plane, from its kubeconfig.
pub async fn client_for(kubeconfig: &str) -> Result<Client> {
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| Error::Dev(format!("kubeconfig: {e}")))?;
    let config =
        kube::Config::from_custom_kubeconfig(parsed, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Dev(format!("kubeconfig: {e}")))?;
    Client::try_from(config).map_err(Error::Kube)
}

/// Applies every Quiver CRD and waits until MicroVMs and Hosts can be listed.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in quiver_crds::generate::crds() {
        let name = crd.name_any();
        let mut crd = crd;
        crd.metadata.managed_fields = None;
        let params = PatchParams::apply("quiver-dev").force();
        api.patch(&name, &params, &Patch::Apply(&crd)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let vms = Api::<MicroVM>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await;
        let hosts = Api::<Host>::all(client.clone())
            .list(&ListParams::default().limit(1))
            .await;
        match (vms, hosts) {
            (Ok(_), Ok(_)) => return Ok(()),
            (Err(e), _) | (_, Err(e)) if Instant::now() > deadline => return Err(e.into()),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs the dev cluster until Ctrl-C (or the end of the demo).
pub async fn run(opts: DevOptions) -> Result<()> {
    let server = quiver_apiserver::DevApiServer::start(opts.control_plane.clone())
        .await
        .map_err(|e| Error::Dev(format!("starting the dev control plane: {e:#}")))?;
    if let Some(dir) = opts.kubeconfig.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    server
        .write_kubeconfig(&opts.kubeconfig)
        .map_err(|e| Error::io(format!("writing {}", opts.kubeconfig.display()), e))?;
    println!(
        "dev control plane at {}; kubeconfig written to {}",
        server.url(),
        opts.kubeconfig.display()
    );
    let result = if opts.control_plane_only {
        print_next_steps(&opts.kubeconfig, false);
        stop_requested().await
    } else {
        let cluster = DevCluster::start(&opts, &server.kubeconfig()).await;
        match cluster {
            Ok(cluster) => {
                let outcome = cluster.serve(&opts).await;
                println!("stopping: deleting MicroVMs...");
                print!("{}", cluster.stop().await);
                outcome
            }
            Err(e) => Err(e),
        }
    };
    server.shutdown().await;
    result
}

fn print_next_steps(kubeconfig: &Path, cluster: bool) {
    let path = std::fs::canonicalize(kubeconfig).unwrap_or_else(|_| kubeconfig.to_owned());
    println!("\nNext, in another terminal:");
    println!("  export KUBECONFIG={}", path.display());
    if cluster {
        println!("  kubectl get qh                        # the hosts (agents)");
        println!("  kubectl apply -f examples/microvm.yaml");
        println!("  kubectl get mvm -w                    # watch it boot");
        println!("  kubectl describe mvm demo             # the events");
    } else {
        println!("  kubectl api-resources");
    }
    println!("Ctrl-C stops everything.\n");
}

/// Operator and agents of a running dev cluster.
pub struct DevCluster {
    client: Client,
    kubeconfig: PathBuf,
    operator: Option<Operator>,
    pub agents: Vec<AgentProcess>,
    /// How the operator (and this process) reaches the agents.
    access: AgentAccess,
}

/// How long stopping waits for MicroVMs to be deleted through the operator.
const DELETE_TIMEOUT: Duration = Duration::from_secs(30);

impl DevCluster {
    /// Starts the operator and `opts.agents` agents against the control plane of
    /// `kubeconfig` (its text; agents get the file `opts.kubeconfig`), installing the CRDs.
    pub async fn start(opts: &DevOptions, kubeconfig: &str) -> Result<Self> {
        let client = client_for(kubeconfig).await?;
        install_crds(&client).await?;
        let binary = crate::agents::locate_agent_binary(opts.agent_bin.as_deref())?;
        let pki = ClusterPki::ensure(&client, &opts.state_dir.join("pki")).await?;
        let key_file = opts.state_dir.join("operator").join(KEY_FILE);
        let key = load_or_create_key(&key_file).map_err(Error::Pki)?;
        let relay = Relay::from_flags(opts.relay_url.as_deref(), opts.relay_ca.as_deref())
            .map_err(|e| Error::Dev(e.to_string()))?;
        let access = AgentAccess::new(
            Some(pki.operator_client()?),
            opts.transport,
            key,
            relay.as_ref(),
        )
        .await?;
        let config = OperatorConfig::new("quiver-operator-dev").with_agent_access(access.clone());
        if let Some(address) = opts.metrics_address {
            let listener = crate::metrics::bind(address).await?;
            tracing::info!(%address, "operator metrics on /metrics");
            tokio::spawn(crate::metrics::serve(
                config.controllers.metrics.clone(),
                listener,
            ));
        }
        let mut cluster = DevCluster {
            client: client.clone(),
            kubeconfig: opts.kubeconfig.clone(),
            operator: Some(Operator::spawn(client.clone(), config)),
            agents: Vec::new(),
            access: access.clone(),
        };
        for i in 0..opts.agents {
            let name = format!("agent-{i}");
            let data_dir = opts.state_dir.join(&name);
            let mut options = AgentOptions::new(
                binary.clone(),
                &name,
                data_dir,
                &opts.accel,
                &pki,
                access.clone(),
                opts.kubeconfig.clone(),
            )?;
            if opts.log_json {
                options.extra_args.push("--log-json".to_owned());
            }
            options.relay_url = relay.as_ref().map(|r| r.url.to_string());
            options.relay_ca.clone_from(&opts.relay_ca);
            let started = AgentProcess::start(options).await;
            let agent = match started {
                Ok(agent) => agent,
                Err(e) => {
                    print!("{}", cluster.stop().await);
                    return Err(e);
                }
            };
            println!(
                "agent {name} serving {} on gRPC {} and Iroh {} (data in {})",
                opts.transport,
                agent.address(),
                agent.agent_address().iroh.join(","),
                agent.options.data_dir.display()
            );
            wait_for_host(&client, &agent, Duration::from_secs(30)).await?;
            cluster.agents.push(agent);
        }
        Ok(cluster)
    }

    async fn serve(&self, opts: &DevOptions) -> Result<()> {
        print_next_steps(&self.kubeconfig, true);
        if !opts.demo {
            return stop_requested().await;
        }
        tokio::select! {
            r = demo(&self.client, &self.kubeconfig, opts.demo_timeout) => r,
            _ = stop_requested() => Err(Error::Dev("interrupted".into())),
        }
    }

    /// Deletes every MicroVM (the operator stops them), stops the operator, asks each live
    /// agent to stop whatever it still runs and stops the agents; then stops any QEMU left in
    /// an agent's run dir (the VMs of an agent that had died). Says what it did.
    pub async fn stop(mut self) -> StopReport {
        let mut report = StopReport::default();
        let dead: BTreeSet<String> = self
            .agents
            .iter_mut()
            .filter_map(|a| (!a.running()).then(|| a.options.name.clone()))
            .collect();
        self.delete_microvms(&dead, &mut report).await;
        if let Some(operator) = self.operator.take() {
            operator.shutdown().await;
        }
        for agent in &mut self.agents {
            let name = agent.options.name.clone();
            if dead.contains(&name) {
                report.agents_dead.push(name);
                continue;
            }
            if let Err(e) = agent.delete_all_vms(DELETE_TIMEOUT).await {
                report.warnings.push(format!("{name}: {e}"));
            }
            agent.stop().await;
            report.agents_stopped.push(name);
        }
        for agent in &self.agents {
            let name = &agent.options.name;
            match leftovers::stop_all(&agent.options.binary, &agent.options.data_dir).await {
                Ok(stopped) => {
                    let stopped = stopped.into_iter().map(|qemu| (name.clone(), qemu));
                    report.leftovers.extend(stopped);
                }
                Err(e) => report.warnings.push(format!("{name}: {e}")),
            }
        }
        self.access.close().await;
        report
    }

    /// Deletes every MicroVM and waits until they are gone, or until only those on agents
    /// that are not running remain (their deletion cannot finish: nobody can confirm it).
    async fn delete_microvms(&self, dead: &BTreeSet<String>, report: &mut StopReport) {
        let api: Api<MicroVM> = Api::all(self.client.clone());
        let listed = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(e) => {
                report.warnings.push(format!("listing MicroVMs: {e}"));
                return;
            }
        };
        for vm in &listed {
            let ns_api: Api<MicroVM> =
                Api::namespaced(self.client.clone(), &vm.namespace().unwrap_or_default());
            if let Err(e) = ns_api
                .delete(&vm.name_any(), &DeleteParams::default())
                .await
            {
                report
                    .warnings
                    .push(format!("deleting {}: {e}", vm.name_any()));
            }
        }
        let on_dead_host = |vm: &MicroVM| {
            let host = vm.status.as_ref().and_then(|s| s.host.clone());
            host.filter(|h| dead.contains(h))
        };
        let deadline = Instant::now() + DELETE_TIMEOUT;
        let mut left = Vec::new();
        loop {
            left = match api.list(&ListParams::default()).await {
                Ok(list) => list.items,
                Err(e) => {
                    report.warnings.push(format!("listing MicroVMs: {e}"));
                    break;
                }
            };
            if left.iter().all(|vm| on_dead_host(vm).is_some()) || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        report.deleted = listed.len().saturating_sub(left.len());
        for vm in &left {
            let why = match on_dead_host(vm) {
                Some(host) => format!("its host {host} is not running"),
                None => format!("not removed within {}s", DELETE_TIMEOUT.as_secs()),
            };
            let ns = vm.namespace().unwrap_or_default();
            report
                .not_deleted
                .push(format!("{ns}/{} ({why})", vm.name_any()));
        }
    }
}

/// What stopping a dev cluster did; its `Display` is what `dev` prints.
#[derive(Debug, Default)]
pub struct StopReport {
    /// MicroVMs whose deletion finished.
    pub deleted: usize,
    /// MicroVMs still there, each with why (`namespace/name (reason)`).
    pub not_deleted: Vec<String>,
    pub agents_stopped: Vec<String>,
    /// Agents that were no longer running when the cluster stopped.
    pub agents_dead: Vec<String>,
    /// QEMUs found running in an agent's run dir after the agents stopped, and stopped.
    pub leftovers: Vec<(String, Leftover)>,
    pub warnings: Vec<String>,
}

impl std::fmt::Display for StopReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped: {} MicroVMs deleted", self.deleted)?;
        if !self.not_deleted.is_empty() {
            write!(f, "; not deleted: {}", self.not_deleted.join(", "))?;
        }
        writeln!(f)?;
        write!(f, "agents: ")?;
        let mut agents: Vec<String> = self
            .agents_stopped
            .iter()
            .map(|a| format!("{a} stopped"))
            .collect();
        agents.extend(
            self.agents_dead
                .iter()
                .map(|a| format!("{a} was not running")),
        );
        writeln!(f, "{}", agents.join(", "))?;
        if self.leftovers.is_empty() {
            writeln!(f, "no QEMU left running")?;
        } else {
            for (agent, qemu) in &self.leftovers {
                writeln!(
                    f,
                    "stopped QEMU pid {} of VM {} left by {agent}",
                    qemu.pid, qemu.uid
                )?;
            }
        }
        for warning in &self.warnings {
            writeln!(f, "warning: {warning}")?;
        }
        Ok(())
    }
}

/// Applies the demo VM, prints its phases as it boots and `kubectl get mvm` once the guest is
/// ready. Fails when it is not ready within `timeout`.
async fn demo(client: &Client, kubeconfig: &Path, timeout: Duration) -> Result<()> {
    wait_hosts_ready(client, timeout).await?;
    let vm: MicroVM = serde_yaml_ng::from_str(DEMO_MANIFEST)
        .map_err(|e| Error::Dev(format!("demo manifest: {e}")))?;
    let name = vm.name_any();
    let api: Api<MicroVM> = Api::namespaced(client.clone(), "default");
    let patch = serde_json::to_value(&vm).map_err(Error::Serialize)?;
    api.patch(
        &name,
        &PatchParams::apply("quiver-demo").force(),
        &Patch::Apply(&patch),
    )
    .await?;
    println!("applied examples/microvm.yaml (MicroVM default/{name})");
    let start = Instant::now();
    let mut last = String::new();
    loop {
        let current = api.get_opt(&name).await?;
        let status = current.and_then(|vm| vm.status).unwrap_or_default();
        let phase = status
            .phase
            .map_or_else(|| "-".to_owned(), |p| format!("{p:?}"));
        let ready = status
            .condition(GUEST_READY)
            .is_some_and(|c| c.status == "True");
        let line = format!("{phase} {}", status.host.clone().unwrap_or_default());
        if line != last {
            println!(
                "  {:>5.1}s  phase={phase:<10} host={:<8} {}",
                start.elapsed().as_secs_f64(),
                status.host.unwrap_or_else(|| "-".into()),
                status.message.unwrap_or_default()
            );
            last = line;
        }
        if ready {
            println!("  {:>5.1}s  guest ready", start.elapsed().as_secs_f64());
            break;
        }
        if start.elapsed() > timeout {
            return Err(Error::Dev(format!(
                "the demo VM did not become GuestReady within {timeout:?} (last phase {phase}); \
                 check `kubectl describe mvm {name}` and the agent logs"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    print_get_mvm(&api, kubeconfig).await
}

/// Waits until every Host is Ready (its agent heartbeats and holds its Raft lease), as a user
/// would before applying VMs: a VM applied earlier runs all the same, but its status says its
/// host is not Ready until the next heartbeat.
async fn wait_hosts_ready(client: &Client, timeout: Duration) -> Result<()> {
    let api: Api<Host> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let hosts = api.list(&ListParams::default()).await?;
        let waiting: Vec<String> = hosts
            .iter()
            .filter(|h| h.status.as_ref().and_then(HostStatus::readiness) != Some(true))
            .map(ResourceExt::name_any)
            .collect();
        if waiting.is_empty() && !hosts.items.is_empty() {
            println!(
                "hosts Ready after {:.1}s: {}",
                start.elapsed().as_secs_f64(),
                hosts
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(Error::Dev(format!(
                "hosts not Ready within {timeout:?}: {}; check `kubectl get qh` and the agent logs",
                waiting.join(", ")
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `kubectl get mvm` with the real kubectl when it is on PATH, else the same columns.
async fn print_get_mvm(api: &Api<MicroVM>, kubeconfig: &Path) -> Result<()> {
    let out = tokio::process::Command::new("kubectl")
        .args(["get", "mvm"])
        .env("KUBECONFIG", kubeconfig)
        .output()
        .await;
    println!("\n$ kubectl get mvm");
    if let Some(out) = out.as_ref().ok().filter(|o| o.status.success()) {
        print!("{}", String::from_utf8_lossy(&out.stdout));
        return Ok(());
    }
    println!("{:<8} {:<10} {:<8} {:<6}", "NAME", "PHASE", "HOST", "READY");
    for vm in api.list(&ListParams::default()).await? {
        let s = vm.status.clone().unwrap_or_default();
        let ready = s
            .condition(GUEST_READY)
            .map(|c| c.status.clone())
            .unwrap_or_default();
        let phase = s.phase.map(|p| format!("{p:?}")).unwrap_or_default();
        println!(
            "{:<8} {:<10} {:<8} {:<6}",
            vm.name_any(),
            phase,
            s.host.unwrap_or_default(),
            ready
        );
    }
    Ok(())
}

/// Ctrl-C (SIGINT) or SIGTERM: either stops the dev cluster cleanly, VMs included.
pub async fn stop_requested() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| Error::io("listening for SIGTERM", e))?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| Error::io("waiting for Ctrl-C", e)),
        _ = term.recv() => Ok(()),
    }
}
