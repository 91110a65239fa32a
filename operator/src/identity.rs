//! Publishes the operator's Iroh endpoint id for the agents (see
//! [`quiver_crds::operator_identity`]): the leader writes it by server-side apply when it starts
//! leading, retrying until the API takes it. The replicas share one Iroh key (a Secret in a
//! cluster), so a new leader writes the same id.

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use quiver_crds::operator_identity::{ENDPOINT_ID_KEY, NAME, NAMESPACE};
use quiver_rpc::iroh::EndpointId;

use crate::controller::FIELD_MANAGER;

/// Writes `id` into the ConfigMap until the API takes it.
pub async fn publish(client: kube::Client, id: EndpointId) {
    let api: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    let object = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": NAME },
        "data": { ENDPOINT_ID_KEY: id.to_string() },
    });
    let mut delay = Duration::from_millis(200);
    loop {
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch(NAME, &params, &Patch::Apply(&object)).await {
            Ok(_) => {
                tracing::info!(endpoint_id = %id, "published the operator's endpoint id in ConfigMap {NAMESPACE}/{NAME}");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "cannot publish the operator's endpoint id");
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}
