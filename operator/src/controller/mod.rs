//! The controllers and what they share.
//!
//! [`run`] wires the MicroVM, Host and Rollout controllers to one [`Context`]: the agent
//! cluster client, reflector stores of Hosts and MicroVMs and the event publisher. Agent status
//! streams wake the MicroVM controller per VM; a Host becoming Ready, NotReady or changing
//! labels/capacity, or an agent becoming reachable, wakes every MicroVM (its status, or a put
//! that found no agent, may change).

pub mod events;
pub mod host;
pub mod ledger;
pub mod microvm;
pub mod rollout;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::FutureExt as _;

use futures::StreamExt;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::events::Reporter;
use kube::runtime::reflector;
use kube::runtime::reflector::Store;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use quiver_crds::{Host, MicroVM, Rollout};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;

use kube::runtime::controller::{self, Action};

use crate::agent_client::{AgentAccess, AgentAddress, AgentCluster};
use crate::metrics::OperatorMetrics;
use crate::{Error, Result};

/// MicroVM reconciles run at once, at most. Each holds a task and, while it waits on the API
/// server, an HTTP connection of its own: unbounded, a burst of 10,000 creates made the
/// operator hold thousands of both (most of its peak memory). Waiting reconciles cost only
/// their key in kube's scheduler.
const MICROVM_RECONCILES: u16 = 32;

/// The one field manager every status write of the operator uses.
pub const FIELD_MANAGER: &str = "quiver-operator";

/// Tunables of the controllers.
#[derive(Clone, Debug)]
pub struct ControllerConfig {
    /// How often the Host controller polls each agent; three missed polls mark it NotReady.
    pub heartbeat_interval: Duration,
    /// `reportingInstance` of Events.
    pub instance: String,
    /// How agents are reached: client certificate, Iroh endpoint, transport.
    pub agents: AgentAccess,
    /// Reconcile counts and times, and cache gauges while the controllers run.
    pub metrics: Arc<OperatorMetrics>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            heartbeat_interval: Duration::from_secs(2),
            instance: "quiver-operator".to_owned(),
            agents: AgentAccess::grpc(None),
            metrics: Arc::default(),
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub cluster: AgentCluster,
    /// Kubernetes Events about the objects.
    pub events: events::Events,
    pub hosts: Store<Host>,
    /// Becomes true once the Host store holds its first full list.
    hosts_listed: watch::Receiver<bool>,
    pub vms: Store<MicroVM>,
    pub config: ControllerConfig,
    /// Last seen (ready, labels, capacity) per host; a change wakes every MicroVM.
    host_seen: Mutex<HashMap<String, String>>,
    /// Readiness per host as the Host controller last computed it. The Host store lags
    /// behind the controller's own status write, so woken MicroVMs read this instead.
    host_ready: Mutex<HashMap<String, bool>>,
    hosts_changed: mpsc::UnboundedSender<()>,
    /// Wakes every Rollout: a Host's status (what it serves) changed.
    host_status_changed: mpsc::UnboundedSender<()>,
    /// Start snapshots of each Rollout's analysis interval, by Rollout uid.
    windows: Mutex<HashMap<String, rollout::Window>>,
    /// The last put an agent took, by MicroVM uid (sent once per generation).
    taken_puts: Mutex<ledger::TakenPuts>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections are single map operations; a panic cannot leave them half done.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Context {
    pub(crate) fn windows(&self) -> MutexGuard<'_, HashMap<String, rollout::Window>> {
        lock(&self.windows)
    }

    pub(crate) fn taken_puts(&self) -> MutexGuard<'_, ledger::TakenPuts> {
        lock(&self.taken_puts)
    }

    /// Wakes the Rollout controller: a Host's status changed.
    pub(crate) fn host_status_changed(&self) {
        let _ = self.host_status_changed.send(());
    }

    /// Waits until the Host store holds its first full list ("no Host" means none exists).
    ///
    /// # Errors
    /// The Host watch ended (the controllers are stopping).
    pub(crate) async fn hosts_listed(&self) -> Result<(), watch::error::RecvError> {
        self.hosts_listed
            .clone()
            .wait_for(|listed| *listed)
            .await
            .map(|_| ())
    }

    /// Makes the agent cluster follow exactly the registered Hosts' agents: new ones are
    /// added, moved ones reconnected, and the agents of deleted Hosts dropped.
    pub(crate) fn sync_agents(&self) {
        let hosts = self.hosts.state();
        for host in &hosts {
            self.cluster
                .set_agent(&host.name_any(), &AgentAddress::of(host));
        }
        let names: BTreeSet<String> = hosts.iter().map(|h| h.name_any()).collect();
        for gone in self.cluster.retain(&names) {
            self.host_gone(&gone);
        }
    }

    /// Forgets what the Host controller saw of a deleted Host and wakes every MicroVM.
    pub(crate) fn host_gone(&self, host: &str) {
        lock(&self.host_ready).remove(host);
        lock(&self.host_seen).remove(host);
        let _ = self.hosts_changed.send(());
    }

    /// Readiness of `host` from its latest heartbeat, if it had one.
    pub(crate) fn host_ready(&self, host: &str) -> Option<bool> {
        lock(&self.host_ready).get(host).copied()
    }

    /// Wakes every MicroVM when what their status reads of `host` changed.
    pub(crate) fn host_seen(&self, host: &str, ready: Option<bool>, fingerprint: &str) {
        match ready {
            Some(r) => lock(&self.host_ready).insert(host.to_owned(), r),
            None => lock(&self.host_ready).remove(host),
        };
        let changed = lock(&self.host_seen).insert(host.to_owned(), fingerprint.to_owned());
        if changed.as_deref() != Some(fingerprint) {
            let _ = self.hosts_changed.send(());
        }
    }
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: ControllerConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    // Agents admit the operator over Iroh by the id it publishes; aborted when leading ends.
    let _publish = config.agents.endpoint_id().map(|id| {
        let publish = crate::identity::publish(client.clone(), id);
        crate::operator::AbortOnDrop(tokio::spawn(publish))
    });
    let (cluster, wakeups) = AgentCluster::new(config.agents.clone());
    let (hosts_changed, hosts_rx) = mpsc::unbounded_channel();
    let (host_status_changed, host_status_rx) = mpsc::unbounded_channel();
    // The Host reflector is built here, not by `Controller::new`, to learn when its first list
    // is in: kube's `Store::wait_until_ready` wakes only its last waiter, and the Host
    // controller itself already waits on it, so a reconcile waiting too could sleep forever.
    let (host_store, host_writer) = reflector::store::<Host>();
    let (hosts_listed_tx, hosts_listed) = watch::channel(false);
    let host_events = watcher(Api::<Host>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(host_writer)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                hosts_listed_tx.send_replace(true);
            }
        })
        .applied_objects();
    let host_ctl = Controller::for_stream(host_events, host_store);
    // A VM's status reads its Host, and a put waits for a reachable agent.
    let hosts_or_agents_changed = futures::stream::select(
        UnboundedReceiverStream::new(hosts_rx),
        UnboundedReceiverStream::new(wakeups.agents),
    );
    // MicroVMs are kept without their managedFields and kubectl's last-applied copy of the
    // spec, which nothing here reads: at 10,000 VMs they were most of the store's memory.
    let (vm_store, vm_writer) = reflector::store::<MicroVM>();
    let vm_events = watcher(
        Api::<MicroVM>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(prune)
    .reflect(vm_writer)
    .applied_objects();
    let vm_ctl = Controller::for_stream(vm_events, vm_store)
        .with_config(controller::Config::default().concurrency(MICROVM_RECONCILES))
        .reconcile_on(UnboundedReceiverStream::new(wakeups.vms))
        .reconcile_all_on(hosts_or_agents_changed);
    let rollout_ctl = Controller::new(
        Api::<Rollout>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(UnboundedReceiverStream::new(host_status_rx));
    let metrics = config.metrics.clone();
    metrics.leading(Some((vm_ctl.store(), host_ctl.store())));
    let reporter = Reporter {
        controller: FIELD_MANAGER.to_owned(),
        instance: Some(config.instance.clone()),
    };
    let ctx = Arc::new(Context {
        events: events::Events::new(client.clone(), reporter),
        client,
        cluster,
        hosts: host_ctl.store(),
        hosts_listed,
        vms: vm_ctl.store(),
        config,
        host_seen: Mutex::new(HashMap::new()),
        host_ready: Mutex::new(HashMap::new()),
        hosts_changed,
        host_status_changed,
        windows: Mutex::new(HashMap::new()),
        taken_puts: Mutex::default(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).map(|r| r.is_ok()).await;
        }
    };
    let host_ctx = ctx.clone();
    let rollout_ctx = ctx.clone();
    let hosts = host_ctl
        .graceful_shutdown_on(stopped())
        .run(
            |host, ctx| {
                let object = host.name_any();
                timed("host", object, ctx.clone(), host::reconcile(host, ctx))
            },
            host::error_policy,
            ctx.clone(),
        )
        .for_each(move |result| {
            // A deleted Host is never reconciled; its delete event surfaces here instead.
            if let Err(kube::runtime::controller::Error::ObjectNotFound(_)) = result {
                host_ctx.sync_agents();
            }
            futures::future::ready(())
        });
    let vms = vm_ctl
        .graceful_shutdown_on(stopped())
        .run(
            |vm, ctx| {
                let object = format!("{}/{}", vm.namespace().unwrap_or_default(), vm.name_any());
                timed("microvm", object, ctx.clone(), microvm::reconcile(vm, ctx))
            },
            microvm::error_policy,
            ctx,
        )
        .for_each(|_| futures::future::ready(()));
    let rollouts = rollout_ctl
        .graceful_shutdown_on(stopped())
        .run(
            |r, ctx| {
                let object = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
                timed("rollout", object, ctx.clone(), rollout::reconcile(r, ctx))
            },
            rollout::error_policy,
            rollout_ctx,
        )
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    tokio::join!(hosts, vms, rollouts);
    metrics.leading(None);
}

/// Drops what the operator never reads from a cached object.
fn prune<K: kube::Resource>(object: &mut K) {
    let meta = object.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Publishes one Kubernetes Event per transition about the object `reference` names; a
/// failure to publish is logged, never fatal.
pub(crate) async fn publish(
    ctx: &Context,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    transitions: impl IntoIterator<Item = crate::status::Transition>,
    action: &str,
) {
    for t in transitions {
        if let Err(e) = ctx.events.publish(&t, action, reference).await {
            tracing::warn!(object = ?reference.name, error = %e, "could not publish event");
        }
    }
}

/// Runs one reconcile as an operation of its own, and records its time and result. The
/// reconcile gets a new trace id: its log lines carry it (span `reconcile`), and so do the
/// agent calls it makes, and the agents' log lines about them.
async fn timed(
    controller: &'static str,
    object: String,
    ctx: Arc<Context>,
    reconcile: impl std::future::Future<Output = Result<Action>>,
) -> Result<Action> {
    use tracing::Instrument as _;
    let started = std::time::Instant::now();
    let trace_id = quiver_rpc::trace::random();
    let span = tracing::info_span!("reconcile", controller, %object, %trace_id);
    let result = quiver_rpc::trace::scope(Some(trace_id), reconcile)
        .instrument(span)
        .await;
    let label = result.as_ref().map_or_else(Error::metric_label, |_| "ok");
    ctx.config
        .metrics
        .reconciled(controller, started.elapsed(), label);
    result
}
