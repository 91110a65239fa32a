//! A fleet of agents, each in its own network namespace on one bridge, for partition tests.
//!
//! A hub namespace holds the bridge (agents are `10.79.0.10+i`/24) and runs the test's body: the
//! operator, its Iroh endpoint, the agent clients and kubectl live there. The dev control plane
//! stays in this process's namespace, on loopback; each namespace reaches it through a forwarder
//! (a listener made inside the namespace, served from this namespace), so the Kubernetes API is
//! never part of a partition. [`NetFleet::partition`] takes a host's bridge port down: the host
//! is cut from every other agent and from the operator, as a pulled cable would.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use quiver_operator::agent_client::AgentAccess;
use quiver_operator::agents::{AgentOptions, AgentProcess, wait_for_host};
use quiver_operator::operator::{Operator, OperatorConfig};
use quiver_operator::pki::ClusterPki;
use quiver_rpc::TransportMode;
use quiver_rpc::iroh::SecretKey;
use tokio::task::JoinHandle;

use crate::cluster::agent_binary;
use crate::netns::Netns;
use crate::{ControlPlane, Kubectl};

const BRIDGE: &str = "qvbr";
/// The agent's end of its link, inside its namespace.
const HOST_DEV: &str = "qva";

fn run(command: &mut Command) -> anyhow::Result<()> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The namespaces, links and API forwarders of a fleet; removed on drop.
pub struct NetFleet {
    pub hub: Netns,
    pub hosts: Vec<Netns>,
    forwarders: Vec<JoinHandle<()>>,
    /// What the hub's body needs (owned, `Send`).
    pub plan: FleetPlan,
}

/// Everything the body running in the hub needs to start the fleet.
#[derive(Clone, Debug)]
pub struct FleetPlan {
    pub dir: PathBuf,
    pub hub: String,
    pub hub_kubeconfig: PathBuf,
    /// Per host: namespace name, address, kubeconfig (its forwarder).
    pub hosts: Vec<(String, Ipv4Addr, PathBuf)>,
}

impl NetFleet {
    /// The hub, `hosts` agent namespaces bridged in it, and API forwarders into each.
    ///
    /// # Errors
    /// A namespace, link or forwarder could not be made (not root?).
    pub async fn new(
        control_plane: &ControlPlane,
        hosts: usize,
        dir: PathBuf,
    ) -> anyhow::Result<Self> {
        let hub = Netns::new("hub")?;
        hub.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        hub.ip(&["link", "set", BRIDGE, "up"])?;
        let api = control_plane.server.addr();
        let text = std::fs::read_to_string(control_plane.kubeconfig_path())?;
        let mut forwarders = Vec::new();
        let mut kubeconfig_in = |ns: &Netns, name: &str| -> anyhow::Result<PathBuf> {
            let (port, task) = forward_into(ns, api)?;
            forwarders.push(task);
            let path = dir.join(format!("{name}.kubeconfig"));
            let from = format!("127.0.0.1:{}", api.port());
            std::fs::write(&path, text.replace(&from, &format!("127.0.0.1:{port}")))?;
            Ok(path)
        };
        let hub_kubeconfig = kubeconfig_in(&hub, "hub")?;
        let mut namespaces = Vec::new();
        let mut planned = Vec::new();
        for i in 0..hosts {
            let ns = Netns::new(&format!("host{i}"))?;
            let port = format!("qvh{i}");
            hub.ip(&[
                "link",
                "add",
                &port,
                "type",
                "veth",
                "peer",
                "name",
                HOST_DEV,
                "netns",
                ns.name(),
            ])?;
            hub.ip(&["link", "set", &port, "master", BRIDGE])?;
            hub.ip(&["link", "set", &port, "up"])?;
            let ip = Ipv4Addr::new(10, 79, 0, 10 + u8::try_from(i)?);
            ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", HOST_DEV])?;
            ns.ip(&["link", "set", HOST_DEV, "up"])?;
            let kubeconfig = kubeconfig_in(&ns, &format!("agent-{i}"))?;
            planned.push((ns.name().to_owned(), ip, kubeconfig));
            namespaces.push(ns);
        }
        // The hub's own address on the bridge: the operator and the test dial agents from it.
        hub.ip(&["addr", "add", "10.79.0.1/24", "dev", BRIDGE])?;
        let plan = FleetPlan {
            dir,
            hub: hub.name().to_owned(),
            hub_kubeconfig,
            hosts: planned,
        };
        Ok(Self {
            hub,
            hosts: namespaces,
            forwarders,
            plan,
        })
    }
}

impl Drop for NetFleet {
    fn drop(&mut self) {
        for task in &self.forwarders {
            task.abort();
        }
    }
}

impl FleetPlan {
    /// Cuts host `i` off the bridge (every agent and the operator lose it; the API stays).
    ///
    /// # Errors
    /// `ip` failed.
    pub fn partition(&self, i: usize) -> anyhow::Result<()> {
        let port = format!("qvh{i}");
        run(Command::new("ip").args([
            "-n",
            self.hub.as_str(),
            "link",
            "set",
            port.as_str(),
            "down",
        ]))
    }

    /// Puts host `i` back on the bridge.
    ///
    /// # Errors
    /// `ip` failed.
    pub fn heal(&self, i: usize) -> anyhow::Result<()> {
        let port = format!("qvh{i}");
        run(Command::new("ip").args(["-n", self.hub.as_str(), "link", "set", port.as_str(), "up"]))
    }

    pub fn kubectl(&self) -> Kubectl {
        Kubectl::new(self.hub_kubeconfig.clone(), self.dir.join("kube-cache"))
    }
}

/// Serves `127.0.0.1:<port>` inside `ns` by forwarding each connection to `target` from this
/// process's namespace; returns the port.
fn forward_into(ns: &Netns, target: SocketAddr) -> anyhow::Result<(u16, JoinHandle<()>)> {
    let listener = ns.tcp_listener("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    Ok((port, task))
}

/// The fleet as the hub's body runs it: agents (Raft, QEMU) in their namespaces and the
/// operator in the hub. Call from inside the hub namespace.
pub struct HubCluster {
    pub agents: Vec<AgentProcess>,
    operator: Option<Operator>,
    access: AgentAccess,
}

impl HubCluster {
    /// # Errors
    /// An agent did not come up or register.
    pub async fn start(plan: &FleetPlan) -> anyhow::Result<Self> {
        let client = crate::kube_client(&plan.hub_kubeconfig).await?;
        let pki = ClusterPki::ensure(&client, &plan.dir.join("pki")).await?;
        let access = AgentAccess::new(
            Some(pki.operator_client()?),
            TransportMode::Grpc,
            SecretKey::generate(),
            None,
        )
        .await?;
        let binary = agent_binary()?;
        let mut agents = Vec::new();
        for (i, (ns, ip, kubeconfig)) in plan.hosts.iter().enumerate() {
            let name = format!("agent-{i}");
            let options = AgentOptions {
                capacity_cpus: Some(4),
                capacity_memory_mib: Some(8192),
                listen_ip: (*ip).into(),
                wrapper: vec!["ip".into(), "netns".into(), "exec".into(), ns.clone()],
                ..AgentOptions::new(
                    binary.clone(),
                    &name,
                    plan.dir.join(&name),
                    "tcg",
                    &pki,
                    access.clone(),
                    kubeconfig.clone(),
                )?
            };
            let agent = AgentProcess::start(options).await?;
            wait_for_host(&client, &agent, Duration::from_secs(30)).await?;
            agents.push(agent);
        }
        let config = OperatorConfig::new("netns-operator").with_agent_access(access.clone());
        let operator = Some(Operator::spawn(client, config));
        Ok(Self {
            agents,
            operator,
            access,
        })
    }

    /// Stops the operator and the agents (VMs were deleted by the test) and sweeps leftovers.
    pub async fn shutdown(mut self) {
        if let Some(op) = self.operator.take() {
            op.shutdown().await;
        }
        for agent in &mut self.agents {
            agent.stop().await;
        }
        for agent in &self.agents {
            let o = &agent.options;
            let _ = quiver_operator::leftovers::stop_all(&o.binary, &o.data_dir).await;
        }
        self.access.close().await;
    }
}
