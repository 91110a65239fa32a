//! A real `quiver-agent` in a network namespace, and runs of calls against it from another
//! namespace over gRPC (mutual TLS) or Iroh, with random packet loss on the link between them.
//! The loss test and `bench-netns` share this, so they make the same calls.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use quiver_rpc::iroh::{EndpointAddr, EndpointId, SecretKey};
use quiver_rpc::pki::{DEV_SERVER_NAME, TlsFiles};
use quiver_rpc::{AgentClient, ClientConfig, EndpointOptions, IrohRoute, RpcClient, Wire};

use crate::cluster::agent_binary;
use crate::netns::{Link, VETH_B};

/// How long one call may take, however many packets are lost.
pub const CALL_DEADLINE: Duration = Duration::from_secs(30);

/// `quiver-agent --transport dual --dev-tls` on the simulated driver, inside a namespace;
/// killed on drop.
#[derive(Debug)]
pub struct NsAgent {
    pub data: tempfile::TempDir,
    child: Child,
    /// `https://ip:port` of its gRPC server.
    pub grpc: String,
    pub iroh: EndpointAddr,
}

impl NsAgent {
    /// Starts the agent in `link.a`, listening on `link.a_ip`, admitting `trusted` over Iroh.
    ///
    /// # Errors
    /// The binary is missing or the agent did not come up.
    pub async fn start(link: &Link, trusted: EndpointId) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let log = std::fs::File::create(data.path().join("agent.log"))?;
        let listen = SocketAddr::from((link.a_ip, 0)).to_string();
        let child = link
            .a
            .command(agent_binary()?)
            .arg("--data-dir")
            .arg(data.path())
            .args(["--grpc-listen", &listen, "--iroh-listen", &listen])
            .args(["--transport", "dual", "--dev-tls", "--driver", "simulated"])
            .args(["--trust-endpoint-id", &trusted.to_string()])
            .args(["--host-name", "netns-agent"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning quiver-agent")?;
        let mut agent = Self {
            data,
            child,
            grpc: String::new(),
            iroh: EndpointAddr::new(SecretKey::generate().public()),
        };
        let (grpc, iroh) = agent.addresses().await?;
        agent.grpc = format!("https://{grpc}");
        agent.iroh = iroh;
        Ok(agent)
    }

    /// The addresses the agent writes once it serves, waiting for them.
    async fn addresses(&mut self) -> anyhow::Result<(String, EndpointAddr)> {
        let give_up = Instant::now() + Duration::from_secs(60);
        let dir = self.data.path().to_owned();
        loop {
            let grpc = std::fs::read_to_string(dir.join("grpc.addr"));
            let iroh = std::fs::read_to_string(dir.join("iroh.addr"));
            if let (Ok(grpc), Ok(iroh)) = (grpc, iroh) {
                return Ok((grpc.trim().to_owned(), parse_iroh_addr(&iroh)?));
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("quiver-agent exited ({status}):\n{}", self.log());
            }
            if Instant::now() > give_up {
                bail!("quiver-agent did not start:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("agent.log")).unwrap_or_default()
    }

    #[must_use]
    pub fn tls_dir(&self) -> std::path::PathBuf {
        self.data.path().join("tls")
    }
}

impl Drop for NsAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `iroh.addr`: the endpoint id, then one bound address per line.
fn parse_iroh_addr(text: &str) -> anyhow::Result<EndpointAddr> {
    let mut lines = text.lines();
    let id: EndpointId = lines.next().context("no endpoint id")?.trim().parse()?;
    Ok(lines
        .filter_map(|l| l.trim().parse::<SocketAddr>().ok())
        .fold(EndpointAddr::new(id), EndpointAddr::with_ip_addr))
}

/// The outcome of one run of calls.
#[derive(Clone, Debug)]
pub struct Run {
    pub wire: Wire,
    pub loss_percent: u32,
    pub calls: usize,
    /// Latency of every call that succeeded, in call order.
    pub latencies: Vec<Duration>,
    /// The first few failures.
    pub errors: Vec<String>,
}

impl Run {
    #[must_use]
    pub fn succeeded(&self) -> usize {
        self.latencies.len()
    }

    /// The `p`th percentile (0–100, nearest rank) of the successful calls' latencies.
    #[must_use]
    pub fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted
            .get(rank.clamp(1, sorted.len().max(1)) - 1)
            .copied()
            .unwrap_or_default()
    }
}

/// Connects from `link.b` to `agent` over `wire` with `loss_percent` % of packets dropped each
/// way on the link, and makes `calls` calls one after the other, cycling through Health,
/// Status, ListVms and GetResourceSummary. The connection is opened (with a first, untimed
/// call) under the same loss; a failed connect counts every call as failed.
///
/// # Errors
/// The loss rules or the namespace thread could not be set up.
pub async fn run_calls(
    link: &Link,
    agent: &NsAgent,
    key: &SecretKey,
    wire: Wire,
    loss_percent: u32,
    calls: usize,
) -> anyhow::Result<Run> {
    let _loss = if loss_percent > 0 {
        Some(link.b.random_loss(VETH_B, loss_percent)?)
    } else {
        None
    };
    let (grpc, iroh, tls, key) = (
        agent.grpc.clone(),
        agent.iroh.clone(),
        agent.tls_dir(),
        key.clone(),
    );
    let (latencies, errors) = link
        .b
        .spawn(move || async move {
            let client = match connect(wire, &grpc, iroh, &tls, key).await {
                Ok(client) => client,
                Err(error) => return Ok((Vec::new(), vec![format!("connect: {error:#}")])),
            };
            Ok(calls_on(&client, calls).await)
        })
        .join()
        .await?;
    Ok(Run {
        wire,
        loss_percent,
        calls,
        latencies,
        errors,
    })
}

async fn connect(
    wire: Wire,
    grpc: &str,
    iroh: EndpointAddr,
    tls: &Path,
    key: SecretKey,
) -> anyhow::Result<AgentClient> {
    let client = match wire {
        Wire::Grpc => {
            let files = TlsFiles::dev_client(tls);
            tokio::time::timeout(
                CALL_DEADLINE,
                AgentClient::connect_tls(grpc, &files, DEV_SERVER_NAME),
            )
            .await
            .context("gRPC connect timed out")??
        }
        Wire::Iroh => {
            let endpoint = EndpointOptions::new(key)
                .bind_addr(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
                .bind()
                .await?;
            let client = RpcClient::new(endpoint, ClientConfig::default());
            AgentClient::iroh(IrohRoute::new(client, iroh))
        }
    }
    .with_deadline(CALL_DEADLINE);
    // Iroh dials on the first call: make it here, so that every timed call, on either
    // transport, runs on an established connection.
    client.health().await.context("first call")?;
    Ok(client)
}

/// Makes the calls; returns the latencies of those that succeeded and the first failures.
async fn calls_on(client: &AgentClient, calls: usize) -> (Vec<Duration>, Vec<String>) {
    let (mut latencies, mut errors) = (Vec::with_capacity(calls), Vec::new());
    for i in 0..calls {
        let start = Instant::now();
        let result = match i % 4 {
            0 => client.health().await.map(drop),
            1 => client.status().await.map(drop),
            2 => client.list_vms().await.map(drop),
            _ => client.resource_summary().await.map(drop),
        };
        match result {
            Ok(()) => latencies.push(start.elapsed()),
            Err(error) if errors.len() < 5 => errors.push(format!("call {i}: {error}")),
            Err(_) => {}
        }
    }
    (latencies, errors)
}
