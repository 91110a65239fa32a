//! Wires the agent together: driver → VM manager (with recovery) → services → transports.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::{AgentConfig, DriverKind};
use crate::metrics::{Metrics, render_prometheus};
use crate::services::{AgentInfo, Services};
use crate::vm::driver::Driver;
use crate::vm::qemu::QemuDriver;
use crate::vm::simulated::SimulatedDriver;
use crate::vm::spec::Limits;
use crate::vm::{ImageRoots, ManagerConfig, VmManager, now_ms};
use crate::{Error, Result, grpc};
use quiver_rpc::pki::{TlsFiles, ensure_dev_pki};
use quiver_rpc::proto;

/// The file in the data dir holding the bound gRPC address (useful with port 0).
pub const GRPC_ADDR_FILE: &str = "grpc.addr";

/// After the shutdown signal, how long open streams (watches, consoles) may delay the exit.
const STREAM_GRACE: Duration = Duration::from_secs(2);

/// Runs the agent until `shutdown` resolves. VMs keep running after it returns.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    config.check_transport()?;
    config.check_vm_settings()?;
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|e| Error::io(data_dir, e))?;
    let _ = std::fs::remove_file(data_dir.join(GRPC_ADDR_FILE));
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
    let info = AgentInfo {
        host_name: config.host_name.clone(),
        grpc_endpoint: advertised.to_string(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at_ms: now_ms(),
    };
    let services = Services::new(manager.clone(), info, Arc::new(Metrics::new()));
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
            cpus: config.capacity_cpus,
            memory_mib: config.capacity_memory_mib,
            labels: config.host_labels.clone(),
        }
        .spawn();
    }
    // Written last: once it exists, the agent (and its TLS material) is ready for clients.
    let addr_file = data_dir.join(GRPC_ADDR_FILE);
    std::fs::write(&addr_file, addr.to_string()).map_err(|e| Error::io(&addr_file, e))?;
    tracing::info!(
        grpc = %addr,
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
    tracing::info!("quiver-agent stopped; VMs keep running");
    Ok(())
}

/// `GET /metrics` in the Prometheus text format.
async fn serve_metrics(services: Services, listener: TcpListener) {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = services.monitoring.clone();
            async move {
                let snap = m
                    .get_metrics(&proto::GetMetricsRequest {})
                    .unwrap_or_default();
                let summary = m
                    .get_resource_summary(&proto::GetResourceSummaryRequest {})
                    .unwrap_or_default();
                render_prometheus(&snap, &summary)
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}
