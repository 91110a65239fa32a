//! The cluster CA for mutual TLS between the operator and the agents.
//!
//! One CA per cluster, kept in the Secret [`SECRET_NAMESPACE`]/[`SECRET_NAME`] (type
//! `kubernetes.io/tls`: `tls.crt`, `tls.key`) and mirrored to a local directory, because tonic
//! reads PEM files. It issues a server certificate per agent (names: `localhost`, `127.0.0.1`
//! and the host name, which the operator verifies) and one client certificate for the
//! operator. Certificate generation itself lives in [`quiver_rpc::pki::Ca`]; this module adds only what
//! is Kubernetes-specific (the Secret).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use kube::{Api, Client};
use quiver_rpc::pki::{Ca, TlsFiles};

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
    ///
    /// Create-if-absent, so that replicas starting together agree on one CA: the Secret is
    /// only ever created (POST), never replaced; whoever gets `409 AlreadyExists` reads the
    /// winner's CA and uses it.
    pub async fn ensure(client: &Client, dir: &Path) -> Result<Self> {
        let api: Api<Secret> = Api::namespaced(client.clone(), SECRET_NAMESPACE);
        if let Some(stored) = api.get_opt(SECRET_NAME).await? {
            return Self::from_secret(&stored, dir);
        }
        let pki = ClusterPki::load_or_create(dir)?;
        match api.create(&PostParams::default(), &pki.secret()).await {
            Ok(_) => Ok(pki),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let stored = api.get(SECRET_NAME).await?;
                Self::from_secret(&stored, dir)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The CA a Secret holds, written into `dir` (replacing what `dir` held).
    fn from_secret(secret: &Secret, dir: &Path) -> Result<Self> {
        let data = secret.data.clone().unwrap_or_default();
        let (Some(cert), Some(key)) = (data.get(CERT_KEY), data.get(KEY_KEY)) else {
            return Err(Error::CaSecret(format!(
                "Secret {SECRET_NAMESPACE}/{SECRET_NAME} exists but lacks {CERT_KEY} or \
                 {KEY_KEY}; it is never overwritten: fix or delete it"
            )));
        };
        let text = |b: &ByteString| String::from_utf8_lossy(&b.0).into_owned();
        let ca = Ca::from_pem(&text(cert), &text(key)).map_err(Error::Pki)?;
        ca.write(dir).map_err(Error::Pki)?;
        Ok(ClusterPki {
            dir: dir.to_owned(),
            ca,
        })
    }

    /// The Secret holding this CA's certificate and key.
    fn secret(&self) -> Secret {
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
        Secret {
            metadata: kube::api::ObjectMeta {
                name: Some(SECRET_NAME.to_owned()),
                namespace: Some(SECRET_NAMESPACE.to_owned()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".to_owned()),
            data: Some(data),
            ..Default::default()
        }
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
