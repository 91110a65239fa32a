//! The cluster CA for mutual TLS between the operator and the agents.
//!
//! One CA per cluster, kept in the Secret [`SECRET_NAMESPACE`]/[`SECRET_NAME`] (type
//! `kubernetes.io/tls`: `tls.crt`, `tls.key`) and mirrored to a local directory, because tonic
//! reads PEM files. It issues a server certificate per agent (names: `localhost`, `127.0.0.1`
//! and the host name, which the operator verifies) and one client certificate for the
//! operator. Certificate generation itself lives in [`quiver_agent::tls::Ca`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use quiver_agent::tls::{Ca, TlsFiles};

use crate::{Error, Result};

pub const SECRET_NAMESPACE: &str = "default";
pub const SECRET_NAME: &str = "quiver-ca";
const CERT_KEY: &str = "tls.crt";
const KEY_KEY: &str = "tls.key";
/// Common name of the operator's client certificate.
pub const OPERATOR_CLIENT_NAME: &str = "quiver-operator";

/// The cluster CA and the directory its files and issued certificates live in.
pub struct ClusterPki {
    dir: PathBuf,
    ca: Ca,
}

impl ClusterPki {
    /// The CA in `dir` (`ca.pem`, `ca-key.pem`), created when missing.
    pub fn load_or_create(dir: &Path) -> Result<Self> {
        let ca = Ca::load_or_create(dir).map_err(Error::Pki)?;
        Ok(ClusterPki {
            dir: dir.to_owned(),
            ca,
        })
    }

    /// The cluster's CA: the one in the Secret when it exists (mirrored into `dir`), else the
    /// one in `dir` (created when missing), which is then stored in the Secret.
    pub async fn ensure(client: &Client, dir: &Path) -> Result<Self> {
        let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
        let stored = api.get_opt(SECRET_NAME).await?;
        let data = stored.and_then(|s| s.data).unwrap_or_default();
        if let (Some(cert), Some(key)) = (data.get(CERT_KEY), data.get(KEY_KEY)) {
            let text = |b: &ByteString| String::from_utf8_lossy(&b.0).into_owned();
            let ca = Ca::from_pem(&text(cert), &text(key)).map_err(Error::Pki)?;
            ca.write(dir).map_err(Error::Pki)?;
            return Ok(ClusterPki {
                dir: dir.to_owned(),
                ca,
            });
        }
        let pki = ClusterPki::load_or_create(dir)?;
        pki.store_secret(client).await?;
        Ok(pki)
    }

    /// Writes the CA certificate and key into the Secret.
    pub async fn store_secret(&self, client: &Client) -> Result<()> {
        let data = BTreeMap::from([
            (
                CERT_KEY.to_owned(),
                ByteString(self.ca.cert_pem().as_bytes().to_vec()),
            ),
            (
                KEY_KEY.to_owned(),
                ByteString(self.ca.key_pem().into_bytes()),
            ),
        ]);
        let secret = Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SECRET_NAME.to_owned()),
                namespace: Some(SECRET_NAMESPACE.to_owned()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Default::default()
        };
        let mut value = serde_json::to_value(&secret).map_err(Error::Serialize)?;
        value["apiVersion"] = "v1".into();
        value["kind"] = "Secret".into();
        let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
        let params = PatchParams::apply(crate::controller::FIELD_MANAGER).force();
        api.patch(SECRET_NAME, &params, &Patch::Apply(&value))
            .await?;
        Ok(())
    }

    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// Issues the operator's client certificate into `<dir>/operator/`.
    pub fn operator_client(&self) -> Result<TlsFiles> {
        let leaf = self
            .ca
            .issue_client(OPERATOR_CLIENT_NAME)
            .map_err(Error::Pki)?;
        leaf.write(&self.ca, &self.dir.join("operator"), "client")
            .map_err(Error::Pki)
    }

    /// Issues the server certificate of the agent of `host` into `<dir>/agents/<host>/`.
    pub fn agent_server(&self, host: &str) -> Result<TlsFiles> {
        let leaf = self
            .ca
            .issue_server(&[host.to_owned()])
            .map_err(Error::Pki)?;
        leaf.write(&self.ca, &self.dir.join("agents").join(host), "server")
            .map_err(Error::Pki)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("file").permissions().mode() & 0o777
    }

    #[test]
    fn issued_keys_are_private_and_share_the_ca() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = ClusterPki::load_or_create(dir.path()).expect("pki");
        let client = pki.operator_client().expect("client");
        let server = pki.agent_server("agent-0").expect("server");
        assert_eq!(mode(&dir.path().join("ca-key.pem")), 0o600);
        assert_eq!(mode(&client.key), 0o600);
        assert_eq!(mode(&server.key), 0o600);
        let ca = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        assert_eq!(std::fs::read(&client.ca).expect("client ca"), ca);
        assert_eq!(std::fs::read(&server.ca).expect("server ca"), ca);
        client.client_config("agent-0").expect("client config");
        server.server_config().expect("server config");
    }
}
