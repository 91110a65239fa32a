//! Host self-registration: given a kubeconfig, the agent creates or updates its own `Host`
//! (`spec`: Iroh endpoint id and addresses, gRPC address, capacity; `metadata.labels` from `--host-label`) by
//! server-side apply with the field manager [`FIELD_MANAGER`]. The operator's Host controller
//! writes the `status` from heartbeats; labels others add (`kubectl label qh`) are kept.
//!
//! Registration retries in the background until it succeeds: the agent serves and keeps its
//! VMs whether or not the Kubernetes API is reachable.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use quiver_crds::{API_VERSION, Host};
use serde_json::{Value, json};

use crate::{Error, Result};

/// The field manager of the agent's writes to its Host.
pub const FIELD_MANAGER: &str = "quiver-agent";

/// What the agent registers.
#[derive(Clone, Debug)]
pub struct Registration {
    pub kubeconfig: PathBuf,
    pub host_name: String,
    pub grpc_address: String,
    /// The Iroh endpoint id (64 hex digits) and the `ip:port` addresses peers dial.
    pub endpoint_id: String,
    pub iroh_addresses: Vec<String>,
    /// The relay the endpoint homes on, if any.
    pub iroh_relay_url: Option<String>,
    pub cpus: u32,
    pub memory_mib: u64,
    pub labels: BTreeMap<String, String>,
}

impl Registration {
    /// The server-side apply body for this agent's Host.
    #[must_use]
    pub fn host_object(&self) -> Value {
        let mut metadata = json!({"name": self.host_name});
        if !self.labels.is_empty() {
            metadata["labels"] = json!(self.labels);
        }
        let mut object = json!({
            "apiVersion": API_VERSION,
            "kind": "Host",
            "metadata": metadata,
            "spec": {
                "endpointId": self.endpoint_id,
                "grpcAddress": self.grpc_address,
                "irohAddresses": self.iroh_addresses,
                "capacity": {"cpus": self.cpus, "memoryMiB": self.memory_mib},
            },
        });
        // Left out when unset, so that this field manager gives it up (and the field goes)
        // when the agent restarts without a relay.
        if let Some(url) = &self.iroh_relay_url {
            object["spec"]["irohRelayUrl"] = json!(url);
        }
        object
    }

    async fn apply(&self) -> Result<()> {
        let unreachable = |e: &dyn std::fmt::Display| {
            Error::Transport(format!("registering Host {}: {e}", self.host_name))
        };
        let api: Api<Host> = Api::all(kube_client(&self.kubeconfig).await?);
        api.patch(
            &self.host_name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&self.host_object()),
        )
        .await
        .map_err(|e| unreachable(&e))?;
        Ok(())
    }

    /// Registers in the background, retrying with backoff (0.2 s doubling to 10 s) until the
    /// API accepts it.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            loop {
                match self.apply().await {
                    Ok(()) => {
                        tracing::info!(host = %self.host_name, address = %self.grpc_address, "registered Host");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?delay, "Host registration failed");
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        })
    }
}

/// A client of the API that `kubeconfig` points at.
pub(crate) async fn kube_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .map_err(|e| Error::Config(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
    let options = kube::config::KubeConfigOptions::default();
    let config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .map_err(|e| Error::Transport(format!("kubeconfig {}: {e}", kubeconfig.display())))?;
    kube::Client::try_from(config).map_err(|e| Error::Transport(e.to_string()))
}

/// Parses `key=value` host labels.
pub fn parse_label(text: &str) -> Result<(String, String)> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| Error::Config(format!("host label {text:?}: expected key=value")))?;
    if k.is_empty() {
        return Err(Error::Config(format!("host label {text:?}: empty key")));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_object_carries_spec_and_labels() {
        let reg = Registration {
            kubeconfig: PathBuf::from("/k"),
            host_name: "node-a".into(),
            grpc_address: "127.0.0.1:7443".into(),
            endpoint_id: "ab".repeat(32),
            iroh_addresses: vec!["127.0.0.1:7444".into()],
            iroh_relay_url: None,
            cpus: 4,
            memory_mib: 8192,
            labels: [("gpu".to_owned(), "true".to_owned())].into(),
        };
        let obj = reg.host_object();
        assert_eq!(obj["kind"], "Host");
        assert_eq!(obj["spec"]["grpcAddress"], "127.0.0.1:7443");
        assert_eq!(obj["spec"]["capacity"]["memoryMiB"], 8192);
        assert_eq!(obj["metadata"]["labels"]["gpu"], "true");
        assert_eq!(obj["spec"]["endpointId"], "ab".repeat(32));
        assert_eq!(obj["spec"]["irohAddresses"][0], "127.0.0.1:7444");
        assert!(
            obj["spec"].get("irohRelayUrl").is_none(),
            "no relay, no field"
        );
        let relayed = Registration {
            iroh_relay_url: Some("https://relay.example/".into()),
            ..reg
        };
        assert_eq!(
            relayed.host_object()["spec"]["irohRelayUrl"],
            "https://relay.example/"
        );
    }

    #[test]
    fn labels_need_a_key_and_an_equals_sign() {
        assert_eq!(
            parse_label("zone=a").ok(),
            Some(("zone".into(), "a".into()))
        );
        assert!(parse_label("zone").is_err());
        assert!(parse_label("=a").is_err());
    }
}
