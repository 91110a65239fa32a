//! The operator process: leader election around the controllers.

use std::time::Duration;

use futures::FutureExt as _;

use kube::Client;
use quiver_rpc::pki::TlsFiles;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::agent_client::AgentAccess;
use crate::controller::{self, ControllerConfig};
use crate::leader::{ElectionConfig, Elector};

/// Namespace of the leader-election Lease (fixed; the chart's operator Role lives there).
pub const LEASE_NAMESPACE: &str = "default";
/// Name of the leader-election Lease.
pub const LEASE_NAME: &str = "quiver-operator";

/// Everything the operator can be tuned with.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub controllers: ControllerConfig,
    pub election: ElectionConfig,
}

impl OperatorConfig {
    /// Defaults for a replica called `identity`, electing on Lease `default/quiver-operator`.
    #[must_use]
    pub fn new(identity: &str) -> Self {
        OperatorConfig {
            controllers: ControllerConfig {
                instance: identity.to_owned(),
                ..ControllerConfig::default()
            },
            election: ElectionConfig {
                namespace: LEASE_NAMESPACE.to_owned(),
                name: LEASE_NAME.to_owned(),
                identity: identity.to_owned(),
                lease_duration: Duration::from_secs(15),
            },
        }
    }

    /// Reach agents with this client certificate (see [`crate::pki::ClusterPki`]), over gRPC.
    #[must_use]
    pub fn with_agent_tls(mut self, files: TlsFiles) -> Self {
        self.controllers.agents = AgentAccess::grpc(Some(files));
        self
    }

    /// Reach agents through `access` (gRPC, Iroh or both).
    #[must_use]
    pub fn with_agent_access(mut self, access: AgentAccess) -> Self {
        self.controllers.agents = access;
        self
    }
}

/// A running operator; [`Operator::shutdown`] stops it and releases its lease.
pub struct Operator {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    leading: watch::Receiver<bool>,
}

impl Operator {
    /// Starts campaigning; the controllers run only while this replica holds the lease.
    #[must_use]
    pub fn spawn(client: Client, config: OperatorConfig) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (leading_tx, leading) = watch::channel(false);
        let elector = Elector::new(client.clone(), config.election.clone());
        let task = tokio::spawn(run(
            client,
            config.controllers,
            elector,
            leading_tx,
            stop_rx,
        ));
        Operator {
            stop,
            task,
            leading,
        }
    }

    /// Whether this replica leads (and so reconciles) right now.
    #[must_use]
    pub fn is_leading(&self) -> bool {
        *self.leading.borrow()
    }

    /// Stops the controllers, then releases the lease.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would: the lease is left to expire.
    pub fn kill(self) {
        self.task.abort();
    }
}

async fn run(
    client: Client,
    config: ControllerConfig,
    elector: Elector,
    leading_tx: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
) {
    let mut leading = leading_tx.subscribe();
    // Aborted with this task (a crash, see `Operator::kill`): a dead replica renews nothing.
    let election = AbortOnDrop(tokio::spawn(elector.run(leading_tx, stop.clone())));
    loop {
        let mut stop_wait = stop.clone();
        tokio::select! {
            ok = leading.wait_for(|l| *l).map(|r| r.is_ok()) => if !ok { break },
            _ = stop_wait.wait_for(|s| *s).map(|r| r.is_ok()) => break,
        }
        tracing::info!("leading: starting controllers");
        let (ctl_stop_tx, mut ctl_stop_rx) = watch::channel(false);
        let controllers = tokio::spawn(controller::run(
            client.clone(),
            config.clone(),
            async move {
                let _ = ctl_stop_rx.wait_for(|s| *s).map(|r| r.is_ok()).await;
            },
        ));
        let controllers = AbortOnDrop(controllers);
        let mut stop_wait = stop.clone();
        tokio::select! {
            // On shutdown the elector releases the lease too: that is not a lost lease.
            biased;
            _ = stop_wait.wait_for(|s| *s).map(|r| r.is_ok()) => {
                let _ = ctl_stop_tx.send(true);
                let _ = tokio::time::timeout(Duration::from_secs(5), wait(controllers)).await;
                break;
            }
            _ = leading.wait_for(|l| !*l).map(|r| r.is_ok()) => {
                tracing::warn!("lost the lease: stopping controllers");
                drop(controllers);
            }
        }
    }
    // The elector sees `stop` too and releases the lease before it returns.
    let _ = tokio::time::timeout(Duration::from_secs(5), wait(election)).await;
}

/// A task that ends with its handle.
pub(crate) struct AbortOnDrop(pub(crate) JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn wait(mut handle: AbortOnDrop) {
    let _ = (&mut handle.0).await;
}
