//! Wires the agent together: driver → VM manager (with recovery) → services → transports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use tokio::net::TcpListener;

use crate::config::{AgentConfig, DriverKind};
use crate::metrics::{Metrics, Scrape, render_prometheus};
use crate::services::{AgentInfo, IrohHealth, Services, ServingModes};
use crate::transport::faults::{Faults, InjectedFaults};
use crate::transport::{grpc, iroh::IrohAdapter};
use crate::vm::driver::Driver;
use crate::vm::qemu::QemuDriver;
use crate::vm::simulated::SimulatedDriver;
use crate::vm::spec::Limits;
use crate::vm::{ImageRoots, ManagerConfig, VmManager, now_ms};
use crate::{Error, Result};
use quiver_raft::network::{GrpcAddr, Network, NodeAddr};
use quiver_raft::service::RaftService;
use quiver_rpc::identity::{KEY_FILE, load_or_create_key};
use quiver_rpc::iroh::protocol::Router;
use quiver_rpc::pki::{TlsFiles, ensure_dev_pki};
use quiver_rpc::{
    ALPN, Allowlist, ClientConfig, EndpointOptions, PeerTable, Relay, RpcClient, RpcServer,
    ServerConfig, ServiceName, TransportMode, Wire, proto,
};

/// The file in the data dir holding the bound gRPC address (useful with port 0).
pub const GRPC_ADDR_FILE: &str = "grpc.addr";
/// The file in the data dir holding the Iroh endpoint id, then one bound address per line.
pub const IROH_ADDR_FILE: &str = "iroh.addr";

/// After the shutdown signal, how long open streams (watches, consoles) may delay the exit.
const STREAM_GRACE: Duration = Duration::from_secs(2);

/// Runs the agent until `shutdown` resolves. VMs keep running after it returns.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.check_transport()?;
    config.check_vm_settings()?;
    let modes = config.transport_modes()?;
    let trusted = config.trusted_ids()?;
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let _ = std::fs::remove_file(data_dir.join(GRPC_ADDR_FILE));
    let _ = std::fs::remove_file(data_dir.join(IROH_ADDR_FILE));
    let driver: Arc<dyn Driver> = match config.driver {
        DriverKind::Qemu => Arc::new(QemuDriver::new(config.accel)),
        DriverKind::Simulated => {
            tracing::warn!("driver=simulated: no VMs are run; for control-plane benchmarks only");
            Arc::new(SimulatedDriver::new(config.simulated.clone()))
        }
    };
    let manager = VmManager::new(
        driver,
        ManagerConfig {
            data_dir: data_dir.clone(),
            host: config.host_name.clone(),
            limits: Limits {
                max_cpus: config.capacity_cpus,
                max_memory_mib: config.capacity_memory_mib,
            },
            stop_grace: config.stop_grace(),
            image_roots: ImageRoots::new(config.image_roots.clone()),
            forward_address: config.port_forward_address,
        },
    );
    let recovered = manager.recover().await?;
    let listener = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|e| Error::Config(format!("cannot bind {}: {e}", config.grpc_listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Transport(e.to_string()))?;
    let advertised = crate::advertise::advertised_address(
        config.advertise_address,
        addr,
        crate::advertise::primary_address,
    )?;
    let key = load_or_create_key(&data_dir.join(KEY_FILE))?;
    let allowlist = Allowlist::new(trusted.iter().copied());
    let relay = Relay::from_flags(config.relay_url.as_deref(), config.relay_ca.as_deref())
        .map_err(|e| Error::Config(e.to_string()))?;
    let endpoint = EndpointOptions::new(key)
        .bind_addr(config.iroh_listen)
        .relay(relay.as_ref())
        .allowlist(allowlist.clone())
        .bind()
        .await
        .map_err(|e| Error::Config(format!("iroh endpoint: {e}")))?;
    let iroh_addresses = endpoint
        .bound_sockets()
        .into_iter()
        .map(|socket| {
            crate::advertise::advertised_address(
                config.advertise_address,
                socket,
                crate::advertise::primary_address,
            )
            .map(|a| a.to_string())
        })
        .collect::<Result<Vec<_>>>()?;
    let info = AgentInfo {
        host_name: config.host_name.clone(),
        grpc_endpoint: advertised.to_string(),
        endpoint_id: endpoint.id().to_string(),
        iroh_addresses: iroh_addresses.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: now_ms(),
    };
    let (hosts_tx, hosts_rx) = tokio::sync::watch::channel(None);
    if let Some(kubeconfig) = &config.kubeconfig {
        crate::peers::spawn(
            kubeconfig.clone(),
            allowlist.clone(),
            trusted.clone(),
            hosts_tx,
        );
    }
    let tls = match (&config.tls, config.dev_tls) {
        (Some(files), _) => Some(files.clone()),
        (None, true) => {
            let dir = data_dir.join("tls");
            ensure_dev_pki(&dir, std::slice::from_ref(&config.host_name))?;
            Some(TlsFiles::dev_server(&dir))
        }
        (None, false) => {
            tracing::warn!(grpc = %addr, "serving plain gRPC (--insecure-plaintext)");
            None
        }
    };
    // What each service is served on now: the flag's modes, then, in a Raft group, what the
    // ledger holds for this host.
    let serving = ServingModes::new(modes.clone());
    let cluster = match &config.kubeconfig {
        Some(kubeconfig) => {
            let me = NodeAddr {
                iroh: quiver_rpc::peer_addr(
                    &endpoint.id().to_string(),
                    &iroh_addresses,
                    relay.as_ref().map(|r| r.url.as_str()),
                )
                .map_err(Error::Config)?,
                grpc: Some(GrpcAddr {
                    name: config.host_name.clone(),
                    socket: advertised,
                }),
            }
            .to_node();
            let node = quiver_raft::RaftNode::start(
                data_dir,
                quiver_raft::node_id(&endpoint.id()),
                raft_network(&config, &endpoint, tls.as_ref(), &modes, hosts_rx.clone()),
                config.raft.cluster_config().timing,
            )
            .await
            .map_err(Error::Config)?;
            let wiring = crate::cluster::Wiring {
                data_dir: data_dir.clone(),
                host: config.host_name.clone(),
                me,
                kube: crate::registration::kube_client(kubeconfig).await?,
                hosts: hosts_rx,
                manager: manager.clone(),
                modes: serving.clone(),
                own_modes: modes.clone(),
            };
            Some(crate::cluster::Cluster::start(config.raft.cluster_config(), node, wiring).await?)
        }
        None => None,
    };
    // The server reads its dispatcher's services and Monitoring reads the server's peers:
    // the peer table is made first and shared.
    let peers = PeerTable::default();
    let services = Services::new(
        manager.clone(),
        info,
        Arc::new(Metrics::new()),
        serving,
        IrohHealth {
            peers: peers.clone(),
            access: allowlist.clone(),
        },
        cluster.clone(),
        cluster
            .as_ref()
            .map(|c| RaftService::new(c.node.proposer.clone())),
    );
    let services = Services {
        faults: Faults::new(config.inject),
        ..services
    };
    if config.inject != InjectedFaults::default() {
        tracing::warn!(faults = ?config.inject, "injecting faults into served calls");
    }
    let iroh_server = RpcServer::with_peers(
        IrohAdapter::new(services.clone()),
        ServerConfig {
            shutdown_grace: STREAM_GRACE,
            ..ServerConfig::default()
        },
        peers,
    );
    let router = Router::builder(endpoint.clone())
        .accept(ALPN, iroh_server)
        .spawn();
    let tls_config = tls.as_ref().map(TlsFiles::server_config).transpose()?;
    if let Some(metrics_addr) = config.metrics_listen {
        let listener = TcpListener::bind(metrics_addr)
            .await
            .map_err(|e| Error::Config(format!("cannot bind {metrics_addr}: {e}")))?;
        tokio::spawn(serve_metrics(services.clone(), listener));
    }
    if let Some(kubeconfig) = &config.kubeconfig {
        crate::registration::Registration {
            kubeconfig: kubeconfig.clone(),
            host_name: config.host_name.clone(),
            grpc_address: advertised.to_string(),
            endpoint_id: endpoint.id().to_string(),
            iroh_addresses: iroh_addresses.clone(),
            iroh_relay_url: relay.as_ref().map(|r| r.url.to_string()),
            cpus: config.capacity_cpus,
            memory_mib: config.capacity_memory_mib,
            labels: config.host_labels.clone(),
        }
        .spawn();
    }
    let iroh_file = data_dir.join(IROH_ADDR_FILE);
    let bound: Vec<String> = endpoint
        .bound_sockets()
        .iter()
        .map(ToString::to_string)
        .collect();
    let iroh_text = format!("{}\n{}\n", endpoint.id(), bound.join("\n"));
    std::fs::write(&iroh_file, iroh_text).map_err(|e| Error::io(&iroh_file, e))?;
    // Written last: once it exists, the agent (and its TLS material) is ready for clients.
    let addr_file = data_dir.join(GRPC_ADDR_FILE);
    std::fs::write(&addr_file, addr.to_string()).map_err(|e| Error::io(&addr_file, e))?;
    tracing::info!(
        grpc = %addr,
        iroh = ?iroh_addresses,
        relay = ?relay.as_ref().map(|r| r.url.as_str()),
        endpoint_id = %endpoint.id(),
        transport = %modes,
        driver = manager.driver_name(),
        accel = manager.accel(),
        recovered,
        mtls = tls_config.is_some(),
        image_roots = ?config.image_roots,
        "quiver-agent ready"
    );
    // Graceful shutdown waits for open server streams, which a watching operator never closes:
    // stop accepting at once, then give streams a short grace before returning anyway.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let serve = grpc::serve(
        services,
        listener,
        config.max_message_bytes,
        tls_config,
        stopped(stop_rx.clone()),
    );
    let grace = async {
        stopped(stop_rx).await;
        tokio::time::sleep(STREAM_GRACE).await;
    };
    tokio::select! {
        served = serve => served?,
        () = grace => tracing::info!("streams still open after the grace period; exiting"),
    }
    // The Iroh server's own shutdown gives running calls the same grace.
    if let Err(e) = router.shutdown().await {
        tracing::warn!(error = %e, "iroh server shutdown");
    }
    tracing::info!("quiver-agent stopped; VMs keep running");
    Ok(())
}

/// How this agent calls the other members' Raft service: over both transports, preferring the
/// one its own `raft` transport names (Iroh when dual, for its priorities), falling back to the
/// other. Over gRPC it presents its own certificate, which the cluster CA issued for serving
/// and calling alike; with `--dev-tls` that is the dev client certificate, which only this
/// agent's own dev CA trusts, so peers are then reached over Iroh.
fn raft_network(
    config: &AgentConfig,
    endpoint: &quiver_rpc::iroh::Endpoint,
    tls: Option<&TlsFiles>,
    modes: &quiver_rpc::TransportModes,
    hosts: tokio::sync::watch::Receiver<Option<Vec<quiver_crds::Host>>>,
) -> Network {
    let prefer = match modes.get(ServiceName::Raft) {
        TransportMode::Grpc => Wire::Grpc,
        TransportMode::Iroh | TransportMode::Dual => Wire::Iroh,
    };
    let client_tls = match (&config.tls, tls) {
        (Some(files), _) => Some(files.clone()),
        (None, Some(dev)) => {
            if modes.get(ServiceName::Raft) == TransportMode::Grpc {
                tracing::warn!(
                    "--dev-tls gives this agent a CA of its own: other agents cannot call its \
                     Raft service over gRPC; serve raft over iroh or dual (--transport grpc,raft=dual)"
                );
            }
            Some(TlsFiles::dev_client(
                dev.ca.parent().unwrap_or(&config.data_dir),
            ))
        }
        (None, None) => None,
    };
    let client = RpcClient::new(endpoint.clone(), ClientConfig::default());
    Network::dual(client, client_tls, prefer).with_directory(crate::peers::grpc_directory(hosts))
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /metrics` in the OpenMetrics text format.
async fn serve_metrics(services: Services, listener: TcpListener) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = services.monitoring.clone();
            let status = services.status.clone();
            async move {
                let snap = m
                    .get_metrics(&proto::GetMetricsRequest {})
                    .unwrap_or_default();
                let summary = m
                    .get_resource_summary(&proto::GetResourceSummaryRequest {})
                    .unwrap_or_default();
                let raft = status
                    .get_status(&proto::GetStatusRequest {})
                    .ok()
                    .and_then(|s| s.raft);
                let body = render_prometheus(Scrape {
                    snapshot: snap,
                    summary,
                    raft,
                });
                ([(CONTENT_TYPE, OPENMETRICS)], body)
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
