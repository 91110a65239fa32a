//! Agent processes on this machine: how the dev cluster (and the tests) start, register and
//! stop `quiver-agent`s. Every agent serves mutual TLS with its own certificate from the
//! cluster CA ([`crate::pki`]) and Iroh with its own key, trusting the operator's endpoint id;
//! whoever starts it talks to it through the operator's [`AgentAccess`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::{Api, Client};
use quiver_crds::Host;
use quiver_rpc::AgentClient;
use quiver_rpc::identity::{KEY_FILE, load_or_create_key};
use quiver_rpc::pki::TlsFiles;
use tokio::process::{Child, Command};

use crate::agent_client::{AgentAccess, AgentAddress, connect_agent};
use crate::pki::ClusterPki;
use crate::{Error, Result};

/// Finds `quiver-agent`: `explicit` (flag or `QUIVER_AGENT_BIN`), else next to the current
/// executable (also one level up, for test binaries in `target/debug/deps`).
pub fn locate_agent_binary(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let exe =
        std::env::current_exe().map_err(|e| Error::io("locating the current executable", e))?;
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("quiver-agent"))
        .collect::<Vec<_>>();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::Dev(format!(
            "quiver-agent not found next to {} (build it: `cargo build -p quiver-agent`, or pass \
             --agent-bin / QUIVER_AGENT_BIN)",
            exe.display()
        ))
    })
}

/// How to start one agent.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub binary: PathBuf,
    pub name: String,
    pub data_dir: PathBuf,
    /// Loopback port for gRPC; kept across restarts so the Host's address stays valid.
    pub port: u16,
    /// Loopback UDP port for Iroh; kept across restarts likewise.
    pub iroh_port: u16,
    /// The agent's Iroh endpoint id (its key is made in the data dir before it starts).
    pub endpoint_id: String,
    pub accel: String,
    pub capacity_cpus: Option<u32>,
    pub capacity_memory_mib: Option<u64>,
    /// The agent's server certificate (`--tls-ca/--tls-cert/--tls-key`).
    pub tls: TlsFiles,
    /// How this process talks to the agent; the agent serves every service on its
    /// transport and trusts its endpoint id.
    pub access: AgentAccess,
    /// The agent registers its own Host through the API this kubeconfig points at.
    pub kubeconfig: PathBuf,
    /// Run the `simulated` driver (no QEMU): for control-plane benchmarks only.
    pub simulated: bool,
    /// The address the agent listens on (gRPC and Iroh; loopback by default).
    pub listen_ip: std::net::IpAddr,
    /// A command the agent runs under, e.g. `ip netns exec NAME` (tests of partitions).
    pub wrapper: Vec<String>,
    /// `--relay-url` and `--relay-ca` of the agent (relays off when `None`).
    pub relay_url: Option<String>,
    pub relay_ca: Option<PathBuf>,
    /// More flags, appended last (`--host-label pool=a`, `--inject-latency-ms iroh=60`).
    pub extra_args: Vec<String>,
}

impl AgentOptions {
    /// Options for the agent `name` with a fresh server certificate from `pki`, reached
    /// through the operator's `access`; capacities left to the agent.
    pub fn new(
        binary: PathBuf,
        name: &str,
        data_dir: PathBuf,
        accel: &str,
        pki: &ClusterPki,
        access: AgentAccess,
        kubeconfig: PathBuf,
    ) -> Result<Self> {
        let key = load_or_create_key(&data_dir.join(KEY_FILE)).map_err(Error::Pki)?;
        Ok(AgentOptions {
            binary,
            name: name.to_owned(),
            data_dir,
            port: free_port()?,
            iroh_port: free_udp_port()?,
            endpoint_id: key.public().to_string(),
            accel: accel.to_owned(),
            capacity_cpus: None,
            capacity_memory_mib: None,
            tls: pki.agent_server(name)?,
            access,
            kubeconfig,
            simulated: false,
            listen_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            wrapper: Vec::new(),
            relay_url: None,
            relay_ca: None,
            extra_args: Vec::new(),
        })
    }
}

/// A running `quiver-agent` (killed if dropped without [`AgentProcess::stop`]).
pub struct AgentProcess {
    pub options: AgentOptions,
    child: Option<Child>,
}

/// A free loopback TCP port (free when this returns; good enough on a dev machine).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("finding a free port", e))?
        .port();
    Ok(port)
}

/// A free loopback UDP port, likewise.
pub fn free_udp_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free UDP port", e))?;
    let port = socket
        .local_addr()
        .map_err(|e| Error::io("finding a free UDP port", e))?
        .port();
    Ok(port)
}

impl AgentProcess {
    /// The gRPC address.
    pub fn address(&self) -> String {
        std::net::SocketAddr::new(self.options.listen_ip, self.options.port).to_string()
    }

    /// Every address, as its Host registers them.
    pub fn agent_address(&self) -> AgentAddress {
        AgentAddress {
            grpc: self.address(),
            endpoint_id: self.options.endpoint_id.clone(),
            iroh: vec![
                std::net::SocketAddr::new(self.options.listen_ip, self.options.iroh_port)
                    .to_string(),
            ],
            relay: self.options.relay_url.clone(),
        }
    }

    /// Starts the agent and waits until it answers Health.
    pub async fn start(options: AgentOptions) -> Result<Self> {
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|e| Error::io(format!("creating {}", options.data_dir.display()), e))?;
        let log_path = options.data_dir.join("agent.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Error::io(format!("opening {}", log_path.display()), e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Error::io("duplicating the log file", e))?;
        let mut cmd = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(&options.binary);
                cmd
            }
            None => Command::new(&options.binary),
        };
        let listen = |port| std::net::SocketAddr::new(options.listen_ip, port).to_string();
        cmd.arg("--data-dir")
            .arg(&options.data_dir)
            .arg("--grpc-listen")
            .arg(listen(options.port))
            .arg("--iroh-listen")
            .arg(listen(options.iroh_port))
            .arg("--transport")
            .arg(options.access.transport.as_str())
            .arg("--host-name")
            .arg(&options.name)
            .arg("--accel")
            .arg(&options.accel)
            .arg("--tls-ca")
            .arg(&options.tls.ca)
            .arg("--tls-cert")
            .arg(&options.tls.cert)
            .arg("--tls-key")
            .arg(&options.tls.key)
            .arg("--kubeconfig")
            .arg(&options.kubeconfig);
        if let Some(id) = options.access.endpoint_id() {
            cmd.arg("--trust-endpoint-id").arg(id.to_string());
        }
        if let Some(cpus) = options.capacity_cpus {
            cmd.arg("--capacity-cpus").arg(cpus.to_string());
        }
        if options.simulated {
            cmd.arg("--driver").arg("simulated");
        }
        if let Some(mem) = options.capacity_memory_mib {
            cmd.arg("--capacity-memory-mib").arg(mem.to_string());
        }
        if let Some(url) = &options.relay_url {
            cmd.arg("--relay-url").arg(url);
        }
        if let Some(ca) = &options.relay_ca {
            cmd.arg("--relay-ca").arg(ca);
        }
        cmd.args(&options.extra_args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", options.binary.display()), e))?;
        let mut agent = AgentProcess {
            options,
            child: Some(child),
        };
        agent.wait_healthy(Duration::from_secs(30)).await?;
        Ok(agent)
    }

    /// A client connected as the operator connects.
    pub async fn client(&self) -> Result<AgentClient> {
        let address = self.agent_address();
        connect_agent(&self.options.access, &self.options.name, &address).await
    }

    async fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(client) = self.client().await
                && client.health().await.is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(exit)) = child.try_wait()
            {
                return Err(Error::Dev(format!(
                    "agent {} exited with {exit} (log: {})",
                    self.options.name,
                    self.options.data_dir.join("agent.log").display()
                )));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Dev(format!(
                    "agent {} did not answer within {timeout:?}",
                    self.options.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Deletes every VM the agent runs and waits (bounded) until they are gone, so that no
    /// QEMU outlives a dev cluster.
    pub async fn delete_all_vms(&self, timeout: Duration) -> Result<()> {
        let client = self.client().await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let vms = client.list_vms().await?;
            if vms.is_empty() {
                return Ok(());
            }
            for vm in &vms {
                client.delete_vm(&vm.uid).await?;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Dev(format!(
                    "agent {}: {} VMs still present",
                    self.options.name,
                    vms.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the agent process is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL, as a crash would: its VMs keep running, nobody stops them.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then SIGKILL after 10 s. VMs keep running (the agent re-adopts them).
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
    }

    /// Starts the agent again with the same options (data dir, port).
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let again = AgentProcess::start(self.options.clone()).await?;
        *self = again;
        Ok(())
    }
}

/// Waits until the agent has registered its Host (it does so itself, from its kubeconfig).
pub async fn wait_for_host(client: &Client, agent: &AgentProcess, timeout: Duration) -> Result<()> {
    let api: Api<Host> = Api::all(client.clone());
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if api.get_opt(&agent.options.name).await?.is_some() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Dev(format!(
                "agent {} did not register its Host within {timeout:?} (see {})",
                agent.options.name,
                agent.options.data_dir.join("agent.log").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
