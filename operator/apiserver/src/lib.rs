//! A Kubernetes-API-compatible control plane that runs in-process, for development, demos and
//! tests, so that the real `kubectl` and the real kube-rs client work with no cluster.
//!
//! Layout: `store` (versions, history, journal in `persist`), `registry` (built-in kinds and
//! CRDs), `schema` + `cel` (structural schemas), `api` / `write` (one file per verb) /
//! `delete` / `watch` (semantics), `fields` (managedFields and server-side apply), `patch`,
//! `shape` + `untrusted` (type checks, checked writes and limits for request bodies),
//! `protobuf` (k8s-pb decoding), `rbac` (identities, ServiceAccount tokens, the RBAC
//! decision; `access` keeps its index), `table`, `discovery`, `openapi`, `server` (HTTP).
//!
//! Goals: faithful semantics for what kubectl and controllers use (resourceVersions, 409s,
//! 410 Gone, finalizers, status and scale subresources, server-side apply, Table output,
//! aggregated discovery, ServiceAccount tokens and RBAC), clear `Status` errors for any body
//! (never a panic), bounded memory. Non-goals: production use (that is a real cluster via
//! Helm), protobuf responses, admission webhooks, CRD conversion webhooks,
//! consistent-snapshot pagination (pages read the current state).

mod access;
mod api;
mod cel;
mod delete;
mod discovery;
mod encoded;
pub mod error;
mod events;
mod fields;
mod jsonpath;
mod openapi;
mod patch;
mod persist;
mod protobuf;
mod rbac;
mod registry;
mod schema;
mod selector;
mod server;
mod shape;
mod store;
mod table;
mod tls;
mod untrusted;
mod watch;
mod write;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use api::{Api, resource_version};
pub use error::ApiError;
pub use tls::TlsMaterial;

/// How to run the dev control plane.
#[derive(Debug, Clone)]
pub struct Config {
    /// Loopback address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Bearer token clients must send; generated when `None`.
    pub token: Option<String>,
    /// Journal file for persistence across restarts; in-memory only when `None`.
    pub data_file: Option<PathBuf>,
    /// Changes kept for watch resumption; older versions get `410 Gone`.
    pub history_limit: usize,
    /// Request bodies above this size are refused with 413.
    pub max_body_bytes: usize,
    pub bookmark_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            data_file: None,
            history_limit: 100_000,
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(10),
        }
    }
}

/// A running dev control plane.
pub struct DevApiServer {
    addr: SocketAddr,
    token: String,
    api: Arc<Api>,
    tls: TlsMaterial,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl DevApiServer {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        if !config.listen.ip().is_loopback() {
            anyhow::bail!(
                "the dev control plane binds to loopback only, not {}",
                config.listen
            );
        }
        let api = Arc::new(match &config.data_file {
            Some(path) => Api::open(path, config.history_limit)?,
            None => Api::new(config.history_limit, None)?,
        });
        let token = config
            .token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let listener = tokio::net::TcpListener::bind(config.listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(server::AppState {
            api: api.clone(),
            token: token.clone(),
            signer: rbac::token::Signer::new(token.as_bytes()),
            address: addr.to_string(),
            max_body_bytes: config.max_body_bytes,
            bookmark_interval: config.bookmark_interval,
        });
        let tls = match &config.data_file {
            Some(path) => TlsMaterial::load_or_generate(path.parent().unwrap_or(Path::new(".")))?,
            None => TlsMaterial::generate()?,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config()?);
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(state)
            .layer(server::catch_panics());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, acceptor, app, rx));
        tracing::info!(%addr, "dev control plane listening");
        Ok(Self {
            addr,
            token,
            api,
            tls,
            shutdown: Some(tx),
            task,
        })
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn api(&self) -> &Arc<Api> {
        &self.api
    }

    /// A kubeconfig that points kubectl (and kube-rs) at this server.
    pub fn kubeconfig(&self) -> String {
        kubeconfig_yaml(&self.url(), &self.token, &self.tls.ca_pem)
    }

    /// The CA certificate (PEM) that signed the server certificate.
    pub fn ca_pem(&self) -> &str {
        &self.tls.ca_pem
    }

    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.kubeconfig())?;
        set_private(path)
    }

    /// Stops serving; open watches end. Persistence is flushed.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
        self.api.flush();
    }
}

#[cfg(unix)]
fn set_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

#[cfg(not(unix))]
fn set_private(_: &Path) -> std::io::Result<()> {
    Ok(())
}

pub fn kubeconfig_yaml(server: &str, token: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: quiver-dev\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: quiver-dev\n  user:\n    token: {token}\ncontexts:\n- name: quiver-dev\n  context:\n    cluster: quiver-dev\n    user: quiver-dev\n    namespace: default\ncurrent-context: quiver-dev\n"
    )
}

/// Accepts TLS connections until shutdown; dropping the connection set on shutdown ends
/// every open connection, watches included.
async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    mut shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((tcp, _)) = accepted else { continue };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
                });
            }
        }
    }
}
