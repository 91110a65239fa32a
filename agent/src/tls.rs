//! Mutual TLS for gRPC: PEM file sets and a generated development CA.
//!
//! In a cluster the operator owns the CA (a Secret) and hands each agent its files; for local
//! development `--dev-tls` makes one under `<data-dir>/tls/` (CA, server and client certs), so
//! the agent and a local client can talk mTLS with no setup.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::{Error, Result};

/// A trust root plus this side's certificate and key, all PEM.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The DNS name in dev server certificates (clients verify against it).
pub const DEV_SERVER_NAME: &str = "localhost";

impl TlsFiles {
    /// The server side of a dev PKI in `dir`.
    pub fn dev_server(dir: &Path) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server-key.pem"),
        }
    }

    /// The client side of a dev PKI in `dir`.
    pub fn dev_client(dir: &Path) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("client.pem"),
            key: dir.join("client-key.pem"),
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| Error::io(path, e))
    }

    /// Server config that requires a client certificate signed by `ca`.
    pub fn server_config(&self) -> Result<ServerTlsConfig> {
        let identity = Identity::from_pem(Self::read(&self.cert)?, Self::read(&self.key)?);
        Ok(ServerTlsConfig::new()
            .identity(identity)
            .client_ca_root(Certificate::from_pem(Self::read(&self.ca)?)))
    }

    /// Client config presenting this certificate and trusting only `ca`.
    pub fn client_config(&self, server_name: &str) -> Result<ClientTlsConfig> {
        let identity = Identity::from_pem(Self::read(&self.cert)?, Self::read(&self.key)?);
        Ok(ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(Self::read(&self.ca)?))
            .identity(identity)
            .domain_name(server_name))
    }
}

fn pki_err(e: &rcgen::Error) -> Error {
    Error::Config(format!("dev PKI: {e}"))
}

/// Makes a CA and a server + client certificate in `dir`, unless `ca.pem` already exists.
/// `server_names` are added to the server certificate next to `localhost` and `127.0.0.1`.
pub fn ensure_dev_pki(dir: &Path, server_names: &[String]) -> Result<()> {
    if dir.join("ca.pem").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let ca_key = KeyPair::generate().map_err(|e| pki_err(&e))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| pki_err(&e))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "quiver dev CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| pki_err(&e))?;
    let issuer = Issuer::new(ca, &ca_key);

    let mut names = vec![DEV_SERVER_NAME.to_owned(), "127.0.0.1".to_owned()];
    names.extend(server_names.iter().cloned());
    let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().map_err(|e| pki_err(&e))?;
        let mut p = CertificateParams::new(names).map_err(|e| pki_err(&e))?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        let cert = p.signed_by(&key, &issuer).map_err(|e| pki_err(&e))?;
        Ok::<_, Error>((cert.pem(), key.serialize_pem()))
    };
    let (server, server_key) = leaf(names, "quiver-agent", ExtendedKeyUsagePurpose::ServerAuth)?;
    let client_names = vec!["quiver-client".to_owned()];
    let (client, client_key) = leaf(
        client_names,
        "quiver-client",
        ExtendedKeyUsagePurpose::ClientAuth,
    )?;
    let files = [
        ("ca-key.pem", ca_key.serialize_pem()),
        ("server.pem", server),
        ("server-key.pem", server_key),
        ("client.pem", client),
        ("client-key.pem", client_key),
        // Last: its presence marks the set complete.
        ("ca.pem", ca_cert.pem()),
    ];
    for (name, pem) in files {
        let path = dir.join(name);
        std::fs::write(&path, pem).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_pki_is_generated_once_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        ensure_dev_pki(dir.path(), &["node-a".into()]).expect("generate");
        let before = std::fs::read(dir.path().join("ca.pem")).expect("ca");
        ensure_dev_pki(dir.path(), &[]).expect("second call");
        assert_eq!(
            before,
            std::fs::read(dir.path().join("ca.pem")).expect("ca")
        );
        TlsFiles::dev_server(dir.path())
            .server_config()
            .expect("server config");
        TlsFiles::dev_client(dir.path())
            .client_config("localhost")
            .expect("client config");
    }
}
