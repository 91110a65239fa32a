//! "The agent cluster" as the operator sees it: one client per agent (gRPC, Iroh or both, as
//! [`AgentAccess::transport`] says), plus a cache of VM status fed by each agent's
//! `WatchVmStatus` stream.
//!
//! The agents form a Raft group that places VMs: a put goes to the first agent that takes it
//! (any member commits it to the placement ledger through the leader), trying agents that
//! have listed their VMs first; deletes ask every agent.
//!
//! Every gRPC connection is mutual TLS ([`connect_agent`]): the operator presents its client
//! certificate from the cluster CA ([`crate::pki`]) and accepts only an agent certificate from
//! the same CA naming the Host. Without a client certificate no agent is reachable over gRPC.
//! Over Iroh the operator dials the endpoint id the Host registered, at its direct addresses;
//! QUIC's handshake proves the agent holds that id's key, and the agent admits the operator
//! only if it trusts the operator's endpoint id.
//!
//! Every status an agent reports wakes the MicroVM controller for that VM (see
//! [`AgentCluster::new`]), so status shows up within milliseconds instead of at the next requeue.
//! Each agent's [`Reach`] (connecting, listed, unreachable) orders the agents a put tries, so
//! an unreachable agent costs a put no timeout while another answers. A change of reach wakes
//! every MicroVM (a put that found no agent is retried).
//! Agents whose Host is gone are dropped ([`AgentCluster::retain`]): stream ended, connection
//! closed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::reflector::ObjectRef;
use quiver_crds::{Host, MicroVM};
use quiver_rpc::Relay;
use quiver_rpc::iroh::{EndpointAddr, EndpointId, SecretKey};
use quiver_rpc::pki::TlsFiles;
use quiver_rpc::{
    AgentClient, ClientConfig, EndpointOptions, GrpcRoute, IrohRoute, RpcClient, TransportMode,
    Wire, proto,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::{Error, Result};

/// How long one call to an agent may take before it counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// How the operator reaches agents.
#[derive(Clone, Debug)]
pub struct AgentAccess {
    /// The client certificate for gRPC (mutual TLS); without it no agent answers over gRPC.
    pub tls: Option<TlsFiles>,
    /// The operator's Iroh client (its endpoint and identity), when it uses Iroh.
    pub iroh: Option<RpcClient>,
    /// `grpc` or `iroh`: that transport only; `dual`: Iroh first, gRPC when Iroh cannot take
    /// the call.
    pub transport: TransportMode,
}

impl AgentAccess {
    /// gRPC only, with `tls`.
    #[must_use]
    pub fn grpc(tls: Option<TlsFiles>) -> Self {
        AgentAccess {
            tls,
            iroh: None,
            transport: TransportMode::Grpc,
        }
    }

    /// Access over `transport`; binds an Iroh endpoint with `key` (on an ephemeral UDP port
    /// of every interface, homed on `relay` if given) when the transport includes Iroh.
    pub async fn new(
        tls: Option<TlsFiles>,
        transport: TransportMode,
        key: SecretKey,
        relay: Option<&Relay>,
    ) -> Result<Self> {
        let iroh = if transport.serves(Wire::Iroh) {
            let endpoint = EndpointOptions::new(key)
                .relay(relay)
                .bind()
                .await
                .map_err(|e| Error::Dev(format!("binding the operator's Iroh endpoint: {e}")))?;
            Some(RpcClient::new(endpoint, ClientConfig::default()))
        } else {
            None
        };
        Ok(AgentAccess {
            tls,
            iroh,
            transport,
        })
    }

    /// Closes the Iroh endpoint (telling connected agents), if there is one. Calls made
    /// afterwards fail.
    pub async fn close(&self) {
        if let Some(client) = &self.iroh {
            client.endpoint().close().await;
        }
    }

    /// The operator's Iroh endpoint id, when it uses Iroh (agents must trust it).
    #[must_use]
    pub fn endpoint_id(&self) -> Option<EndpointId> {
        self.iroh.as_ref().map(|c| c.endpoint().id())
    }
}

/// Where an agent listens, as its Host registered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentAddress {
    /// `ip:port` of gRPC.
    pub grpc: String,
    pub endpoint_id: String,
    /// `ip:port`s of the Iroh endpoint.
    pub iroh: Vec<String>,
    /// The relay the agent's endpoint homes on.
    pub relay: Option<String>,
}

impl AgentAddress {
    #[must_use]
    pub fn of(host: &Host) -> Self {
        AgentAddress {
            grpc: host.spec.grpc_address.clone(),
            endpoint_id: host.spec.endpoint_id.clone(),
            iroh: host.spec.iroh_addresses.clone(),
            relay: host.spec.iroh_relay_url.clone(),
        }
    }

    /// The Iroh address to dial; malformed direct addresses are skipped (the Host schema
    /// bounds them but cannot parse them).
    fn iroh_addr(&self, host: &str) -> Result<EndpointAddr> {
        quiver_rpc::peer_addr(&self.endpoint_id, &self.iroh, self.relay.as_deref())
            .map_err(|e| Error::Unreachable(format!("{host}: {e}")))
    }
}

/// A VM that changed on some agent: reconcile it.
pub type VmTrigger = ObjectRef<MicroVM>;

/// Whether an agent can take new VMs, as far as its status stream tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reach {
    /// Added (or moved) and the first attempt to connect and list has not finished yet.
    Connecting,
    /// Connected, and its full VM list is in the cache: "not in the cache" means "not there".
    Listed,
    /// The last attempt failed (or the stream broke) with this error; retried with backoff.
    Unreachable(String),
}

/// Channels the controllers read: VMs to reconcile, and "some agent's reach changed".
pub struct Wakeups {
    pub vms: mpsc::UnboundedReceiver<VmTrigger>,
    pub agents: mpsc::UnboundedReceiver<()>,
}

#[derive(Clone)]
pub struct AgentCluster {
    inner: Arc<Inner>,
}

struct Inner {
    agents: Mutex<BTreeMap<String, Agent>>,
    vms: Mutex<HashMap<String, proto::VmStatus>>,
    triggers: mpsc::UnboundedSender<VmTrigger>,
    reach_changed: mpsc::UnboundedSender<()>,
    access: AgentAccess,
}

struct Agent {
    address: AgentAddress,
    client: Option<AgentClient>,
    reach: Reach,
    watch: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for agent in lock(&self.agents).values() {
            agent.watch.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections are single map operations; a panic cannot leave them half done.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a cluster-wide delete found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    /// Some agent still knew the VM (it is being stopped and removed).
    pub existed: bool,
    /// Hosts that could not be asked.
    pub unreachable: Vec<String>,
}

impl AgentCluster {
    /// An empty cluster that reaches agents through `access`, and the wake-ups it sends: VMs
    /// an agent reported, and agents whose [`Reach`] changed.
    #[must_use]
    pub fn new(access: AgentAccess) -> (Self, Wakeups) {
        let (triggers, vms) = mpsc::unbounded_channel();
        let (reach_changed, agents) = mpsc::unbounded_channel();
        let inner = Inner {
            agents: Mutex::new(BTreeMap::new()),
            vms: Mutex::new(HashMap::new()),
            triggers,
            reach_changed,
            access,
        };
        (
            AgentCluster {
                inner: Arc::new(inner),
            },
            Wakeups { vms, agents },
        )
    }

    /// Adds the agent of `host` at `address`, or moves it; a no-op when known.
    pub fn set_agent(&self, host: &str, address: &AgentAddress) {
        let mut agents = lock(&self.inner.agents);
        if agents.get(host).is_some_and(|a| a.address == *address) {
            return;
        }
        if let Some(old) = agents.remove(host) {
            old.watch.abort();
        }
        let watch = tokio::spawn(watch_agent(
            Arc::downgrade(&self.inner),
            host.to_owned(),
            address.clone(),
        ));
        let agent = Agent {
            address: address.clone(),
            client: None,
            reach: Reach::Connecting,
            watch,
        };
        agents.insert(host.to_owned(), agent);
    }

    /// Drops every agent whose host is not in `hosts` (its Host was deleted): its status
    /// stream task ends and its connection closes once in-flight calls finish. The VMs it
    /// last reported stay cached: they may still run there. Returns the dropped hosts.
    pub fn retain(&self, hosts: &BTreeSet<String>) -> Vec<String> {
        let dropped: Vec<(String, Agent)> = {
            let mut agents = lock(&self.inner.agents);
            let gone: Vec<String> = agents
                .keys()
                .filter(|h| !hosts.contains(*h))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|h| agents.remove(&h).map(|a| (h, a)))
                .collect()
        };
        if !dropped.is_empty() {
            let _ = self.inner.reach_changed.send(());
        }
        dropped
            .into_iter()
            .map(|(host, agent)| {
                agent.watch.abort();
                tracing::info!(%host, "Host deleted: stopped following its agent");
                host
            })
            .collect()
    }

    /// The reach of `host`'s agent; `None` when the operator does not follow it.
    #[must_use]
    pub fn reach(&self, host: &str) -> Option<Reach> {
        lock(&self.inner.agents).get(host).map(|a| a.reach.clone())
    }

    /// Every agent the operator follows.
    #[must_use]
    pub fn hosts(&self) -> Vec<String> {
        lock(&self.inner.agents).keys().cloned().collect()
    }

    /// Every agent the operator follows, in the order a put tries them ([`by_reach`]).
    fn hosts_by_reach(&self) -> Vec<String> {
        let agents = lock(&self.inner.agents);
        by_reach(agents.iter().map(|(host, a)| (host.as_str(), &a.reach)))
    }

    /// The host of the latest status any agent reported for `uid` (without copying the rest).
    #[must_use]
    pub fn vm_host(&self, uid: &str) -> Option<String> {
        lock(&self.inner.vms).get(uid).map(|s| s.host.clone())
    }

    /// The latest status any agent reported for `uid`.
    #[must_use]
    pub fn vm(&self, uid: &str) -> Option<proto::VmStatus> {
        lock(&self.inner.vms).get(uid).cloned()
    }

    async fn client(&self, host: &str) -> Result<AgentClient> {
        let address = {
            let agents = lock(&self.inner.agents);
            let agent = agents.get(host).ok_or_else(|| {
                Error::Unreachable(format!("no agent registered for host {host}"))
            })?;
            if let Some(client) = &agent.client {
                return Ok(client.clone());
            }
            agent.address.clone()
        };
        let connect = connect_agent(&self.inner.access, host, &address);
        let client = tokio::time::timeout(CALL_TIMEOUT, connect)
            .await
            .map_err(|_| Error::Unreachable(format!("{host}: connect timed out")))??;
        if let Some(agent) = lock(&self.inner.agents).get_mut(host) {
            agent.client = Some(client.clone());
        }
        Ok(client)
    }

    /// Sends the VM to `host`'s agent and returns the newest status known for it: the one it
    /// answers with, unless the status stream has meanwhile delivered a newer one (the reply
    /// was taken before; recording it would hide a change no later update repeats).
    async fn put_vm(&self, host: &str, req: proto::PutVmRequest) -> Result<proto::VmStatus> {
        let client = self.client(host).await?;
        let reply = tokio::time::timeout(CALL_TIMEOUT, client.put_vm(req))
            .await
            .map_err(|_| Error::Unreachable(format!("{host}: PutVm timed out")))??;
        let status = reply.status.unwrap_or_default();
        let streamed = self.vm(&status.uid);
        match newest(status, streamed) {
            Newest::Reply(status) => {
                record(&self.inner, status.clone());
                Ok(status)
            }
            Newest::Streamed(status) => Ok(status),
        }
    }

    /// Sends the VM to the first agent that takes it (agents commit it to the placement
    /// ledger, whichever of them is asked), listed agents first, unreachable ones last. A
    /// refusal of the VM itself is final: [`Error::Rejected`].
    pub async fn put_vm_anywhere(&self, req: proto::PutVmRequest) -> Result<proto::VmStatus> {
        let mut last = Error::Unreachable("no agent is registered".into());
        for host in self.hosts_by_reach() {
            match self.put_vm(&host, req.clone()).await {
                Ok(status) => {
                    let (uid, generation) = (&req.uid, req.generation);
                    tracing::info!(%host, %uid, generation, "PutVm taken");
                    return Ok(status);
                }
                Err(Error::Agent(source)) if !is_unavailable(&source) => {
                    return Err(Error::Rejected { host, source });
                }
                Err(e) => {
                    tracing::debug!(%host, error = %e, "PutVm not taken; trying the next agent");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Asks every agent, in order, to delete `uid`.
    pub async fn delete_vm(&self, uid: &str) -> DeleteOutcome {
        let mut outcome = DeleteOutcome::default();
        for host in self.hosts() {
            let asked = match self.client(&host).await {
                Ok(client) => tokio::time::timeout(CALL_TIMEOUT, client.delete_vm(uid))
                    .await
                    .map_err(|_| Error::Unreachable(format!("{host}: DeleteVm timed out")))
                    .and_then(|r| r.map_err(Error::from)),
                Err(e) => Err(e),
            };
            match asked {
                Ok(existed) => outcome.existed |= existed,
                Err(e) => {
                    tracing::debug!(%host, error = %e, "DeleteVm failed");
                    outcome.unreachable.push(host);
                }
            }
        }
        if !outcome.existed && outcome.unreachable.is_empty() {
            lock(&self.inner.vms).remove(uid);
        }
        outcome
    }

    /// `host`'s agent's RPC counters and histograms (the Monitoring service).
    pub async fn metrics(&self, host: &str, timeout: Duration) -> Result<proto::MetricsSnapshot> {
        let client = self.client(host).await?;
        tokio::time::timeout(timeout, client.metrics())
            .await
            .map_err(|_| Error::Unreachable(format!("{host}: GetMetrics timed out")))?
            .map_err(Error::from)
    }

    /// Asks `host`'s agent for its own status (the Status service).
    pub async fn agent_status(&self, host: &str, timeout: Duration) -> Result<proto::AgentStatus> {
        let client = self.client(host).await?;
        tokio::time::timeout(timeout, client.status())
            .await
            .map_err(|_| Error::Unreachable(format!("{host}: GetStatus timed out")))?
            .map_err(Error::from)
    }
}

/// A client of the agent of `host` at `address`, over the transports `access` allows. gRPC is
/// mutual TLS: `access.tls` is the operator's client certificate and the cluster CA, and the
/// agent's certificate must name `host`. With both transports the gRPC channel connects on
/// first use, so an agent serving only Iroh costs nothing.
pub async fn connect_agent(
    access: &AgentAccess,
    host: &str,
    address: &AgentAddress,
) -> Result<AgentClient> {
    let grpc = if access.transport.serves(Wire::Grpc) {
        let tls = access.tls.as_ref().ok_or_else(|| {
            Error::Unreachable(format!(
                "{host}: the operator has no client certificate for agents (mTLS is required)"
            ))
        })?;
        let lazy = access.transport == TransportMode::Dual;
        let endpoint = format!("https://{}", address.grpc);
        Some(GrpcRoute::connect(endpoint, Some((tls, host)), lazy).await?)
    } else {
        None
    };
    let iroh = match (&access.iroh, access.transport.serves(Wire::Iroh)) {
        (Some(client), true) => Some(IrohRoute::new(client.clone(), address.iroh_addr(host)?)),
        (None, true) => {
            return Err(Error::Unreachable(format!(
                "{host}: the operator has no Iroh endpoint"
            )));
        }
        (_, false) => None,
    };
    Ok(match (grpc, iroh) {
        (Some(grpc), Some(iroh)) => AgentClient::dual(grpc, iroh, Wire::Iroh),
        (Some(grpc), None) => AgentClient::grpc(grpc),
        (None, Some(iroh)) => AgentClient::iroh(iroh),
        (None, None) => {
            return Err(Error::Unreachable(format!(
                "{host}: no transport configured"
            )));
        }
    })
}

/// Listed agents first, then connecting ones, then unreachable ones; by name within each.
fn by_reach<'a>(agents: impl Iterator<Item = (&'a str, &'a Reach)>) -> Vec<String> {
    let rank = |reach: &Reach| match reach {
        Reach::Listed => 0,
        Reach::Connecting => 1,
        Reach::Unreachable(_) => 2,
    };
    let mut hosts: Vec<(u8, &str)> = agents.map(|(host, r)| (rank(r), host)).collect();
    hosts.sort_unstable();
    hosts.into_iter().map(|(_, host)| host.to_owned()).collect()
}

/// Which of a PutVm reply and the last streamed status of the same VM is newer.
#[derive(Debug, PartialEq)]
enum Newest {
    Reply(proto::VmStatus),
    Streamed(proto::VmStatus),
}

/// Agents stamp each VM's reports with a strictly increasing `updated_at_ms`.
fn newest(reply: proto::VmStatus, streamed: Option<proto::VmStatus>) -> Newest {
    match streamed {
        Some(streamed) if streamed.updated_at_ms > reply.updated_at_ms => {
            Newest::Streamed(streamed)
        }
        _ => Newest::Reply(reply),
    }
}

/// A placement-ledger refusal for lack of a leader (retry elsewhere, later).
fn is_unavailable(e: &quiver_rpc::ClientError) -> bool {
    matches!(
        e,
        quiver_rpc::ClientError::Remote {
            code: quiver_rpc::Code::Unavailable,
            ..
        }
    )
}

/// Keeps the newest report of each VM. A report under a lower epoch than the one held comes
/// from a host the VM has left (its last words, or its removal): it changes nothing.
fn record(inner: &Inner, status: proto::VmStatus) {
    if status.uid.is_empty() {
        return;
    }
    let trigger = ObjectRef::new(&status.name).within(&status.namespace);
    {
        let mut vms = lock(&inner.vms);
        if vms
            .get(&status.uid)
            .is_some_and(|held| held.epoch > status.epoch)
        {
            return;
        }
        if status.deleted {
            vms.remove(&status.uid);
        } else {
            vms.insert(status.uid.clone(), status);
        }
    }
    let _ = inner.triggers.send(trigger);
}

fn set_reach(inner: &Inner, host: &str, reach: Reach) {
    let changed = match lock(&inner.agents).get_mut(host) {
        Some(agent) if agent.reach != reach => {
            agent.reach = reach;
            true
        }
        _ => false,
    };
    if changed {
        let _ = inner.reach_changed.send(());
    }
}

/// Follows one agent's status stream for as long as the cluster exists, reconnecting with
/// backoff. Each (re)connect starts with a full list that replaces what the cache held for
/// that host, so VMs removed while the stream was down do not linger.
async fn watch_agent(inner: std::sync::Weak<Inner>, host: String, address: AgentAddress) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let why = match follow(&strong, &host, &address).await {
            Ok(()) => {
                tracing::info!(%host, "agent status stream ended; reconnecting");
                "its status stream ended".to_owned()
            }
            Err(e) => {
                tracing::debug!(%host, error = %e, "agent status stream failed");
                match e {
                    Error::Unreachable(why) => why,
                    other => other.to_string(),
                }
            }
        };
        set_reach(&strong, &host, Reach::Unreachable(why));
        drop(strong);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RECONNECT_MAX);
    }
}

async fn follow(inner: &Inner, host: &str, address: &AgentAddress) -> Result<()> {
    let open = async {
        let client = connect_agent(&inner.access, host, address).await?;
        let listed = client.list_vms().await?;
        let stream = client.watch().await?;
        Ok::<_, Error>((listed, stream))
    };
    let (listed, mut stream) = tokio::time::timeout(CALL_TIMEOUT, open)
        .await
        .map_err(|_| Error::Unreachable(format!("{host}: no answer within {CALL_TIMEOUT:?}")))??;
    let stale: Vec<proto::VmStatus> = {
        let vms = lock(&inner.vms);
        vms.values()
            .filter(|s| s.host == host && !listed.iter().any(|l| l.uid == s.uid))
            .cloned()
            .collect()
    };
    for mut gone in stale {
        gone.deleted = true;
        record(inner, gone);
    }
    for status in listed {
        record(inner, status);
    }
    set_reach(inner, host, Reach::Listed);
    tracing::info!(%host, ?address, "following agent status stream");
    while let Some(item) = stream.next().await {
        record(inner, item?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reported(updated_at_ms: i64, guest_ready: bool) -> proto::VmStatus {
        proto::VmStatus {
            uid: "u".into(),
            updated_at_ms,
            guest_ready,
            ..Default::default()
        }
    }

    #[test]
    fn a_put_reply_overtaken_by_the_status_stream_does_not_hide_the_newer_status() {
        let ready = reported(20, true);
        let booting = reported(10, false);
        assert_eq!(
            newest(booting, Some(ready.clone())),
            Newest::Streamed(ready)
        );
    }

    #[test]
    fn a_put_reply_newer_than_the_stream_is_kept() {
        let changed = reported(30, false);
        assert_eq!(
            newest(changed.clone(), Some(reported(20, true))),
            Newest::Reply(changed.clone())
        );
        assert_eq!(newest(changed.clone(), None), Newest::Reply(changed));
    }

    #[test]
    fn a_put_tries_listed_agents_first_and_unreachable_ones_last() {
        let down = Reach::Unreachable("connection refused".into());
        let agents = [
            ("a", &down),
            ("b", &Reach::Connecting),
            ("c", &Reach::Listed),
            ("d", &Reach::Listed),
        ];
        assert_eq!(by_reach(agents.into_iter()), ["c", "d", "b", "a"]);
    }

    #[tokio::test]
    async fn the_agent_of_a_deleted_host_is_dropped_and_every_vm_is_woken() {
        let (cluster, mut wakeups) = AgentCluster::new(AgentAccess::grpc(None));
        let at = |port: u16| AgentAddress {
            grpc: format!("127.0.0.1:{port}"),
            endpoint_id: "ab".repeat(32),
            iroh: vec![],
            relay: None,
        };
        cluster.set_agent("a", &at(1));
        cluster.set_agent("b", &at(2));
        // Without a client certificate no agent is reachable: both end up Unreachable.
        for host in ["a", "b"] {
            while !matches!(cluster.reach(host), Some(Reach::Unreachable(_))) {
                wakeups
                    .agents
                    .recv()
                    .await
                    .expect("reach changes are reported");
            }
        }
        while wakeups.agents.try_recv().is_ok() {}
        let kept = BTreeSet::from(["b".to_owned()]);
        assert_eq!(cluster.retain(&kept), ["a"]);
        assert_eq!(cluster.hosts(), ["b"]);
        assert_eq!(cluster.reach("a"), None);
        assert!(
            wakeups.agents.try_recv().is_ok(),
            "dropping an agent wakes every VM"
        );
        assert!(cluster.retain(&kept).is_empty(), "dropping is idempotent");
    }
}
