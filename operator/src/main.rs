//! `quiver-operator`: flags and wiring only; see the library for the controllers and dev mode.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use quiver_operator::agent_client::AgentAccess;
use quiver_operator::dev::{self, DevOptions};
use quiver_operator::operator::{Operator, OperatorConfig};
use quiver_operator::pki::ClusterPki;
use quiver_rpc::identity::load_or_create_key;
use quiver_rpc::{Relay, TransportMode};

#[derive(Parser)]
#[command(
    name = "quiver-operator",
    version,
    about = "Quiver operator: runs MicroVMs on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log as JSON lines (each reconcile's lines carry its `trace_id`, which the agents' lines
    /// for the calls it makes carry too). `dev` passes it on to its agents.
    #[arg(long, global = true)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local dev cluster: control plane, operator and agents on this machine.
    Dev(DevArgs),
    /// Run the operator against the cluster of the current kubeconfig.
    Run {
        /// Identity in the leader-election Lease (default: the host name and pid).
        #[arg(long, env = "POD_NAME")]
        identity: Option<String>,
        /// Where the cluster CA (Secret `default/quiver-ca`, created when missing) and the
        /// operator's client certificate for agents are written.
        #[arg(long, default_value = "/tmp/quiver-operator/pki")]
        pki_dir: PathBuf,
        /// How the operator reaches agents: grpc, iroh, or dual (Iroh first, gRPC fallback).
        #[arg(long, default_value = "grpc", value_parser = parse_transport)]
        transport: TransportMode,
        /// The operator's Iroh key (64 hex digits; created when missing). Replicas share one
        /// key, mounted from a Secret, so that agents trust one endpoint id.
        #[arg(long, default_value = "/tmp/quiver-operator/iroh.key")]
        iroh_key: PathBuf,
        /// Where to serve `/metrics` (Prometheus) and `/healthz`.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_address: std::net::SocketAddr,
        #[command(flatten)]
        relay: RelayArgs,
    },
}

#[derive(clap::Args)]
struct DevArgs {
    /// Serve only the dev control plane (no operator, no agents).
    #[arg(long)]
    control_plane_only: bool,
    /// Loopback address for the control plane.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: std::net::SocketAddr,
    /// Where to write the kubeconfig for kubectl.
    #[arg(long, default_value = ".quiver/kubeconfig")]
    kubeconfig: PathBuf,
    /// Persist control-plane objects in this file (kept across restarts).
    #[arg(long)]
    data_file: Option<PathBuf>,
    /// Bearer token clients must present (generated when absent).
    #[arg(long, env = "QUIVER_DEV_TOKEN")]
    token: Option<String>,
    /// Number of agents to start. They form one Raft group that places VMs (leases, fencing,
    /// failover): three or more survive losing one.
    #[arg(long, default_value_t = 1)]
    agents: usize,
    /// Directory for the agents' data dirs and logs.
    #[arg(long, default_value = ".quiver")]
    state_dir: PathBuf,
    /// The quiver-agent binary (default: next to this executable).
    #[arg(long, env = "QUIVER_AGENT_BIN")]
    agent_bin: Option<PathBuf>,
    /// QEMU accelerator for the agents (tcg: nested KVM hangs guests on dev machines).
    #[arg(long, default_value = "tcg")]
    accel: String,
    /// Apply examples/microvm.yaml, wait until the guest is ready, show it, then stop.
    #[arg(long)]
    demo: bool,
    /// How long --demo waits for the guest, in seconds.
    #[arg(long, default_value_t = 180)]
    demo_timeout: u64,
    /// Transport of the agents' services and of the operator's calls to them: grpc, iroh,
    /// or dual (agents serve both; the operator prefers Iroh).
    #[arg(long, default_value = "grpc", value_parser = parse_transport)]
    transport: TransportMode,
    /// Serve the operator's `/metrics` (Prometheus) and `/healthz` here (off when absent).
    #[arg(long)]
    metrics_address: Option<std::net::SocketAddr>,
    /// The agents get the same relay flags.
    #[command(flatten)]
    relay: RelayArgs,
}

#[derive(clap::Args)]
struct RelayArgs {
    /// An iroh relay the operator's Iroh endpoint homes on (`https://host:port`), for agents
    /// it has no direct path to. Default: none (direct addresses only).
    #[arg(long)]
    relay_url: Option<String>,
    /// PEM file of the CA certificates that sign the relay's TLS certificate (default: the
    /// web PKI roots).
    #[arg(long, requires = "relay_url")]
    relay_ca: Option<PathBuf>,
}

fn parse_transport(text: &str) -> Result<TransportMode, String> {
    text.parse()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        logs.json().init();
    } else {
        logs.init();
    }
    match cli.command {
        Command::Dev(a) => {
            let control_plane = quiver_apiserver::Config {
                listen: a.listen,
                token: a.token,
                data_file: a.data_file,
                ..Default::default()
            };
            let options = DevOptions {
                control_plane,
                kubeconfig: a.kubeconfig,
                control_plane_only: a.control_plane_only,
                state_dir: a.state_dir,
                agents: a.agents,
                agent_bin: a.agent_bin,
                accel: a.accel,
                demo: a.demo,
                demo_timeout: Duration::from_secs(a.demo_timeout),
                transport: a.transport,
                metrics_address: a.metrics_address,
                relay_url: a.relay.relay_url,
                relay_ca: a.relay.relay_ca,
                log_json: cli.log_json,
            };
            dev::run(options).await?;
        }
        Command::Run {
            identity,
            pki_dir,
            transport,
            iroh_key,
            metrics_address,
            relay,
        } => {
            let identity =
                identity.unwrap_or_else(|| format!("quiver-operator-{}", std::process::id()));
            let client = kube::Client::try_default().await?;
            let pki = ClusterPki::ensure(&client, &pki_dir).await?;
            let key = load_or_create_key(&iroh_key)?;
            let relay = Relay::from_flags(relay.relay_url.as_deref(), relay.relay_ca.as_deref())?;
            let access =
                AgentAccess::new(Some(pki.operator_client()?), transport, key, relay.as_ref())
                    .await?;
            if let Some(id) = access.endpoint_id() {
                tracing::info!(endpoint_id = %id, "the operator's Iroh endpoint id (the leader publishes it for the agents)");
            }
            let config = OperatorConfig::new(&identity).with_agent_access(access.clone());
            let listener = quiver_operator::metrics::bind(metrics_address).await?;
            tokio::spawn(quiver_operator::metrics::serve(
                config.controllers.metrics.clone(),
                listener,
            ));
            let operator = Operator::spawn(client, config);
            quiver_operator::dev::stop_requested().await?;
            operator.shutdown().await;
            access.close().await;
        }
    }
    Ok(())
}
