//! The operator's Iroh endpoint id, as it publishes it (ConfigMap `default/quiver-operator`,
//! see [`quiver_crds::operator_identity`]), followed through the agent's kubeconfig so that the
//! agent admits the operator over Iroh without being told its id (`--trust-endpoint-id`).
//! A missing or deleted ConfigMap, or an id that does not parse, admits nobody.

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use quiver_crds::operator_identity::{ENDPOINT_ID_KEY, NAME, NAMESPACE};
use quiver_rpc::iroh::EndpointId;
use tokio::sync::watch;

/// The id the ConfigMap holds, kept current.
pub fn follow(client: kube::Client) -> watch::Receiver<Option<EndpointId>> {
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let only_ours = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
        let events = watcher(Api::<ConfigMap>::namespaced(client, NAMESPACE), only_ours);
        let events = events.default_backoff();
        track(events, &tx).await;
    });
    rx
}

/// Publishes the id of each state of the ConfigMap that `events` report.
async fn track<S>(events: S, tx: &watch::Sender<Option<EndpointId>>)
where
    S: futures::Stream<Item = Result<watcher::Event<ConfigMap>, watcher::Error>>,
{
    let mut events = std::pin::pin!(events);
    let mut listing = None;
    while let Some(event) = events.next().await {
        let id = match event {
            Err(e) => {
                tracing::warn!(error = %e, "watching ConfigMap {NAMESPACE}/{NAME}");
                continue;
            }
            Ok(watcher::Event::Init) => {
                listing = Some(None);
                continue;
            }
            Ok(watcher::Event::InitApply(map)) => {
                listing = Some(endpoint_id(&map));
                continue;
            }
            Ok(watcher::Event::InitDone) => listing.take().flatten(),
            Ok(watcher::Event::Apply(map)) => endpoint_id(&map),
            Ok(watcher::Event::Delete(_)) => None,
        };
        let changed = tx.send_if_modified(|current| {
            let changed = *current != id;
            *current = id;
            changed
        });
        if changed {
            match id {
                Some(id) => {
                    tracing::info!(endpoint_id = %id, "admitting the operator's endpoint id from ConfigMap {NAMESPACE}/{NAME}");
                }
                None => {
                    tracing::info!("ConfigMap {NAMESPACE}/{NAME} names no operator endpoint id");
                }
            }
        }
    }
}

fn endpoint_id(map: &ConfigMap) -> Option<EndpointId> {
    let text = map.data.as_ref()?.get(ENDPOINT_ID_KEY)?;
    match text.trim().parse() {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "ConfigMap {NAMESPACE}/{NAME}: {ENDPOINT_ID_KEY} is not an endpoint id");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_rpc::iroh::SecretKey;

    fn map(id: &str) -> ConfigMap {
        ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(NAME.into()),
                ..Default::default()
            },
            data: Some([(ENDPOINT_ID_KEY.to_owned(), id.to_owned())].into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_published_id_follows_the_config_map_and_a_bad_one_admits_nobody() {
        let (a, b) = (
            SecretKey::generate().public(),
            SecretKey::generate().public(),
        );
        let (tx, mut rx) = watch::channel(None);
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let events = tokio_stream::wrappers::UnboundedReceiverStream::new(events_rx).map(Ok);
        let tracker = tokio::spawn(async move { track(events, &tx).await });
        let next = |event| {
            events_tx.send(event).expect("tracker alive");
        };
        next(watcher::Event::Init);
        next(watcher::Event::InitApply(map(&a.to_string())));
        next(watcher::Event::InitDone);
        rx.changed().await.expect("listed");
        assert_eq!(*rx.borrow_and_update(), Some(a));
        next(watcher::Event::Apply(map(&b.to_string())));
        rx.changed().await.expect("updated");
        assert_eq!(*rx.borrow_and_update(), Some(b));
        next(watcher::Event::Apply(map("not-an-id")));
        rx.changed().await.expect("garbled");
        assert_eq!(*rx.borrow_and_update(), None);
        next(watcher::Event::Apply(map(&a.to_string())));
        rx.changed().await.expect("again");
        next(watcher::Event::Delete(map(&a.to_string())));
        rx.changed().await.expect("deleted");
        assert_eq!(*rx.borrow_and_update(), None);
        drop(events_tx);
        tracker.await.expect("tracker ends with the stream");
    }
}
