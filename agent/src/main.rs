//! `quiver-agent`: parses flags, loads the config file, starts the agent.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use quiver_agent::config::{Accel, AgentConfig, DriverKind};

#[derive(Parser, Debug)]
#[command(name = "quiver-agent", version, about = "Quiver node agent")]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// YAML (or JSON) config file; flags override it.
    #[arg(long, env = "QUIVER_AGENT_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[arg(long)]
    grpc_listen: Option<SocketAddr>,
    /// UDP address of the Iroh endpoint (default 127.0.0.1:7444).
    #[arg(long)]
    iroh_listen: Option<SocketAddr>,
    /// Transport of each service: grpc, iroh or dual, then optional overrides
    /// (`grpc,vm=dual`). Default grpc.
    #[arg(long)]
    transport: Option<String>,
    /// An endpoint id admitted over Iroh besides registered Hosts' (the operator's; repeatable).
    #[arg(long = "trust-endpoint-id")]
    trusted_endpoint_ids: Vec<String>,
    /// An iroh relay to home on (`https://host:port`), for peers with no direct path to this
    /// host (NAT, UDP blocked). Default: none.
    #[arg(long)]
    relay_url: Option<String>,
    /// PEM file of the CA certificates that sign the relay's TLS certificate (default: the web
    /// PKI roots).
    #[arg(long, requires = "relay_url")]
    relay_ca: Option<PathBuf>,
    /// The IP others dial (default: the --grpc-listen address, or the host's primary
    /// address when that is 0.0.0.0 / ::).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    #[arg(long)]
    host_name: Option<String>,
    #[arg(long, value_enum)]
    accel: Option<Accel>,
    #[arg(long)]
    capacity_cpus: Option<u32>,
    #[arg(long)]
    capacity_memory_mib: Option<u64>,
    /// `simulated` runs no VMs: for control-plane benchmarks only.
    #[arg(long, value_enum)]
    driver: Option<DriverKind>,
    /// mTLS: CA that signs clients, server certificate and key (PEM).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    #[arg(long, requires = "tls_ca")]
    tls_cert: Option<PathBuf>,
    #[arg(long, requires = "tls_ca")]
    tls_key: Option<PathBuf>,
    /// mTLS with a dev CA generated under <data-dir>/tls/ (for local use only).
    #[arg(long, conflicts_with = "tls_ca")]
    dev_tls: bool,
    /// Plain gRPC without TLS; refused unless --grpc-listen is a loopback address.
    #[arg(long, conflicts_with_all = ["tls_ca", "dev_tls"])]
    insecure_plaintext: bool,
    /// Register this agent's Host through the Kubernetes API this kubeconfig points at.
    #[arg(long, env = "QUIVER_AGENT_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// A label for the registered Host (`key=value`; repeatable).
    #[arg(long = "host-label", value_parser = quiver_agent::registration::parse_label)]
    host_labels: Vec<(String, String)>,
    /// A directory VM images may come from (repeatable; replaces the configured list).
    #[arg(long = "image-root")]
    image_roots: Vec<PathBuf>,
    /// Host address user-network port forwards listen on (default 127.0.0.1).
    #[arg(long)]
    port_forward_address: Option<std::net::IpAddr>,
    /// Log as JSON lines.
    #[arg(long)]
    log_json: bool,
    /// Delay every served call on a transport by N ms (`iroh=40`; repeatable), to rehearse a
    /// rollout's health gate. Admin calls are exempt.
    #[arg(long = "inject-latency-ms", value_parser = quiver_agent::transport::faults::parse_wire_value)]
    inject_latency_ms: Vec<(quiver_rpc::Wire, u64)>,
    /// Fail N in every thousand served calls on a transport with Unavailable (`iroh=200`;
    /// repeatable), to rehearse a rollout's rollback. Admin calls are exempt.
    #[arg(long = "inject-errors-per-mille", value_parser = quiver_agent::transport::faults::parse_wire_value)]
    inject_errors_per_mille: Vec<(quiver_rpc::Wire, u64)>,
}

#[derive(clap::Subcommand, Debug)]
enum Cmd {
    /// Stops the QEMUs still running in the run dirs of a data dir whose agent is dead, removes
    /// those run dirs and prints each as a JSON line. Run it only when no agent uses the dir.
    Sweep {
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Holds this host's lease deadline (`<data-dir>/lease`) and kills its QEMUs once it
    /// passes. Started by the agent in Raft mode; outlives it on purpose.
    Watchdog {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_json {
        logs.json().init();
    } else {
        logs.init();
    }

    match args.command {
        Some(Cmd::Sweep { data_dir }) => {
            let rt = tokio::runtime::Runtime::new()?;
            for leftover in rt.block_on(quiver_agent::vm::sweep::stop_all(&data_dir)) {
                println!("{}", serde_json::to_string(&leftover)?);
            }
            return Ok(());
        }
        Some(Cmd::Watchdog { data_dir }) => {
            quiver_agent::cluster::watchdog::run(&data_dir);
            return Ok(());
        }
        None => {}
    }

    let mut c = AgentConfig::load(args.config.as_deref())?;
    c.data_dir = args.data_dir.unwrap_or(c.data_dir);
    c.grpc_listen = args.grpc_listen.unwrap_or(c.grpc_listen);
    c.iroh_listen = args.iroh_listen.unwrap_or(c.iroh_listen);
    c.transport = args.transport.unwrap_or(c.transport);
    c.trusted_endpoint_ids.extend(args.trusted_endpoint_ids);
    c.relay_url = args.relay_url.or(c.relay_url);
    c.relay_ca = args.relay_ca.or(c.relay_ca);
    c.advertise_address = args.advertise_address.or(c.advertise_address);
    c.metrics_listen = args.metrics_listen.or(c.metrics_listen);
    c.host_name = args.host_name.unwrap_or(c.host_name);
    c.accel = args.accel.unwrap_or(c.accel);
    c.capacity_cpus = args.capacity_cpus.unwrap_or(c.capacity_cpus);
    c.capacity_memory_mib = args.capacity_memory_mib.unwrap_or(c.capacity_memory_mib);
    c.driver = args.driver.unwrap_or(c.driver);
    c.dev_tls |= args.dev_tls;
    c.insecure_plaintext |= args.insecure_plaintext;
    c.kubeconfig = args.kubeconfig.or(c.kubeconfig);
    c.host_labels.extend(args.host_labels);
    if !args.image_roots.is_empty() {
        c.image_roots = args.image_roots;
    }
    c.port_forward_address = args.port_forward_address.unwrap_or(c.port_forward_address);
    for (wire, ms) in args.inject_latency_ms {
        c.inject.wire_mut(wire).latency_ms = ms;
    }
    for (wire, n) in args.inject_errors_per_mille {
        c.inject.wire_mut(wire).errors_per_mille = u32::try_from(n).unwrap_or(u32::MAX);
    }
    if let (Some(ca), Some(cert), Some(key)) = (args.tls_ca, args.tls_cert, args.tls_key) {
        c.tls = Some(quiver_rpc::pki::TlsFiles { ca, cert, key });
    }

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(quiver_agent::runtime::run(c, shutdown_signal()))?;
    Ok(())
}

/// SIGINT or SIGTERM. VMs are left running either way.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
