//! Who may call this agent over Iroh: the endpoint ids of registered `Host`s, the operator's as
//! it publishes it ([`crate::operator_id`]), and the trusted ones from the config. A Host's
//! registration admits its agent; deleting the Host removes its id, which closes its open
//! connections at once (and so does a change of the operator's published id).
//!
//! Without a kubeconfig the agent admits only the trusted ids.
//!
//! The same watch feeds the Raft group (membership follows Host registration): every change
//! publishes the registered Hosts on a `watch` channel, and [`grpc_directory`] gives the Raft
//! network each member's gRPC address.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use quiver_crds::Host;
use quiver_raft::network::{Directory, GrpcAddr};
use quiver_rpc::Allowlist;
use quiver_rpc::iroh::EndpointId;
use tokio::sync::watch;

/// The allowlist for `hosts` (their `spec.endpointId`s) plus `trusted`. Ids that do not parse
/// are skipped: the Host schema already refuses them, and one bad object must not lock out
/// the others.
pub fn admitted<'a>(
    hosts: impl IntoIterator<Item = &'a Host>,
    trusted: &[EndpointId],
) -> BTreeSet<EndpointId> {
    hosts
        .into_iter()
        .filter_map(|host| host.spec.endpoint_id.parse::<EndpointId>().ok())
        .chain(trusted.iter().copied())
        .collect()
}

/// The gRPC listener of each registered Host's agent by Raft node id: the address its Host
/// gives (`spec.grpcAddress`, an `ip:port`) and its name, which its certificate carries.
/// Hosts whose endpoint id or address does not parse are skipped.
pub fn grpc_addresses<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> BTreeMap<u64, GrpcAddr> {
    hosts
        .into_iter()
        .filter_map(|host| {
            let endpoint: EndpointId = host.spec.endpoint_id.parse().ok()?;
            let socket = host.spec.grpc_address.parse().ok()?;
            let name = host.metadata.name.clone()?;
            Some((quiver_raft::node_id(&endpoint), GrpcAddr { name, socket }))
        })
        .collect()
}

/// [`grpc_addresses`] of the registered Hosts, kept current: where the Raft network finds a
/// member's gRPC listener when the member's address in the Raft membership has none.
pub fn grpc_directory(mut hosts: watch::Receiver<Option<Vec<Host>>>) -> Directory {
    let (tx, rx) = watch::channel(BTreeMap::new());
    tokio::spawn(async move {
        loop {
            let known = grpc_addresses(hosts.borrow_and_update().iter().flatten());
            tx.send_replace(known);
            if hosts.changed().await.is_err() {
                return;
            }
        }
    });
    rx
}

/// Follows Hosts through the API at `kubeconfig` and keeps `allowlist` equal to
/// [`admitted`]; retries with backoff while the API is unreachable (the trusted ids stay
/// admitted meanwhile).
pub fn spawn(
    kubeconfig: PathBuf,
    allowlist: Allowlist,
    trusted: Vec<EndpointId>,
    hosts_tx: watch::Sender<Option<Vec<Host>>>,
) -> tokio::task::JoinHandle<()> {
    allowlist.replace(trusted.iter().copied());
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        let client = loop {
            match crate::registration::kube_client(&kubeconfig).await {
                Ok(client) => break client,
                Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "cannot follow Hosts"),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        };
        let operator = crate::operator_id::follow(client.clone());
        let events = watcher(Api::<Host>::all(client), watcher::Config::default());
        publish(
            events.default_backoff(),
            &allowlist,
            &trusted,
            operator,
            &hosts_tx,
        )
        .await;
    })
}

/// Keeps `allowlist` and `hosts_tx` equal to the Hosts that `events` list (and `allowlist`
/// also admitting `trusted` and the `operator`'s id), publishing only complete lists: while a
/// (re)list is under way the reflector's store still holds the last complete one, and at the
/// very first list it holds nothing. Publishing then would tell the Raft leader that every
/// Host was deleted, and it would remove them all from the group.
async fn publish<S>(
    events: S,
    allowlist: &Allowlist,
    trusted: &[EndpointId],
    mut operator: watch::Receiver<Option<EndpointId>>,
    hosts_tx: &watch::Sender<Option<Vec<Host>>>,
) where
    S: futures::Stream<Item = Result<watcher::Event<Host>, watcher::Error>>,
{
    let (store, writer) = reflector::store();
    let mut events = std::pin::pin!(reflector(writer, events));
    let mut listed = false;
    let mut operator_open = true;
    loop {
        let hosts_changed = tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "watching Hosts");
                    continue;
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitApply(_))) => continue,
                Some(Ok(watcher::Event::InitDone)) => {
                    listed = true;
                    true
                }
                Some(Ok(_)) if !listed => continue,
                Some(Ok(_)) => true,
            },
            changed = operator.changed(), if operator_open => {
                operator_open = changed.is_ok();
                false
            }
        };
        let mut trusted_now = trusted.to_vec();
        trusted_now.extend(*operator.borrow_and_update());
        let hosts = store.state();
        if listed {
            allowlist.replace(admitted(hosts.iter().map(AsRef::as_ref), &trusted_now));
        } else {
            allowlist.replace(trusted_now);
        }
        if hosts_changed {
            hosts_tx.send_replace(Some(hosts.iter().map(|h| Host::clone(h)).collect()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_crds::{HostResources, HostSpec};
    use quiver_rpc::iroh::SecretKey;

    fn host(name: &str, endpoint_id: String) -> Host {
        Host::new(
            name,
            HostSpec {
                endpoint_id,
                grpc_address: "127.0.0.1:1".into(),
                iroh_addresses: vec![],
                iroh_relay_url: None,
                capacity: HostResources {
                    cpus: 1,
                    memory_mib: 1,
                },
                transport: None,
                unschedulable: false,
                drain: false,
            },
        )
    }

    #[test]
    fn each_hosts_grpc_address_is_found_by_its_node_id() {
        let a = SecretKey::generate().public();
        let mut named = host("a", a.to_string());
        named.spec.grpc_address = "10.0.0.5:7443".into();
        let mut dns = host("dns", SecretKey::generate().public().to_string());
        dns.spec.grpc_address = "node.example:7443".into();
        let found = grpc_addresses(&[named, dns, host("bad", "zz".repeat(32))]);
        let expected = GrpcAddr {
            name: "a".into(),
            socket: "10.0.0.5:7443".parse().expect("socket"),
        };
        assert_eq!(
            found,
            BTreeMap::from([(quiver_raft::node_id(&a), expected)])
        );
    }

    /// The published list after each of `events` (`None`: nothing published yet).
    async fn published(events: Vec<watcher::Event<Host>>) -> Vec<Option<Vec<String>>> {
        let allowlist = Allowlist::default();
        let (tx, rx) = watch::channel(None);
        let names = move || {
            rx.borrow().as_ref().map(|hosts: &Vec<Host>| {
                let mut names: Vec<String> = hosts
                    .iter()
                    .filter_map(|h| h.metadata.name.clone())
                    .collect();
                names.sort();
                names
            })
        };
        let seen = std::sync::Mutex::new(Vec::new());
        // The publisher handles an event before it polls the next, so reading the channel
        // when the next one is pulled (and at the end) sees what each event published.
        let stream = futures::stream::iter(events.into_iter().enumerate()).map(|(i, e)| {
            if i > 0 {
                seen.lock().expect("lock").push(names());
            }
            Ok(e)
        });
        let (_operator_tx, operator) = watch::channel(None);
        publish(stream, &allowlist, &[], operator, &tx).await;
        let mut seen = seen.into_inner().expect("lock");
        seen.push(names());
        seen
    }

    #[tokio::test]
    async fn only_complete_lists_are_published_never_a_list_under_way() {
        use watcher::Event::{Apply, Init, InitApply, InitDone};
        let [a, b] = ["a", "b"].map(|n| host(n, SecretKey::generate().public().to_string()));
        let lists = published(vec![
            Init,
            InitApply(a.clone()),
            InitApply(b.clone()),
            InitDone,
            // A relist (after a lost watch): the store keeps [a, b] until it is done.
            Init,
            InitApply(a.clone()),
            InitDone,
            Apply(b.clone()),
        ])
        .await;
        let ab = Some(vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(
            lists,
            [
                None,
                None,
                None,
                ab.clone(),
                ab.clone(),
                ab.clone(),
                Some(vec!["a".to_owned()]),
                ab,
            ],
            "nothing before the first list is complete; a relist keeps the last complete one"
        );
    }

    #[test]
    fn registered_hosts_and_trusted_ids_are_admitted_and_bad_ids_skipped() {
        let [a, operator] = [0, 1].map(|_| SecretKey::generate().public());
        let hosts = [host("a", a.to_string()), host("bad", "zz".repeat(32))];
        let ids = admitted(&hosts, &[operator]);
        assert_eq!(ids, BTreeSet::from([a, operator]));
    }
}
