//! Forming the group. Exactly one agent of a fleet may initialize it: the one that creates the
//! ConfigMap `quiver-raft` (the API server's create is the arbiter: a second create gets 409).
//! Every other agent waits: the leader adds it once its Host is registered.
//!
//! The ConfigMap names the bootstrapping host. That host, if it finds itself named and not a
//! member (it died between the create and the initialize), initializes then. An agent whose
//! data dir was wiped must come back under a new Host name: under its old one it would start a
//! second group.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use openraft::BasicNode;
use quiver_raft::RaftNode;

/// The ConfigMap whose creation decides who bootstraps.
pub const CONFIG_MAP: &str = "quiver-raft";
const KEY: &str = "bootstrapHost";

/// Initializes the group here if this host wins (or won) the bootstrap; retries while the
/// API is unreachable; returns once this node is a member or another host bootstrapped.
pub async fn run(
    node: RaftNode,
    kube: kube::Client,
    namespace: String,
    host: String,
    me: BasicNode,
) {
    let api: Api<ConfigMap> = Api::namespaced(kube, &namespace);
    let mut delay = Duration::from_millis(200);
    loop {
        if node.is_member() {
            return;
        }
        match decide(&api, &host).await {
            Ok(true) => {
                tracing::info!(%host, "bootstrapping the Raft group");
                match node.initialize(me.clone()).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "cannot initialize the Raft group"),
                }
            }
            Ok(false) => {
                tracing::info!(%host, "the Raft group exists; waiting for the leader to add this host");
                return;
            }
            Err(e) => tracing::warn!(error = %e, retry_in = ?delay, "Raft bootstrap"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// True when this host is the bootstrapper.
async fn decide(api: &Api<ConfigMap>, host: &str) -> Result<bool, kube::Error> {
    let claim = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_owned(), host.to_owned())])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &claim).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get(CONFIG_MAP).await?;
            let named = existing.data.as_ref().and_then(|d| d.get(KEY));
            Ok(named.is_some_and(|n| n == host))
        }
        Err(e) => Err(e),
    }
}
