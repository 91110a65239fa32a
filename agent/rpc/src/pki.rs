//! Mutual TLS for gRPC: PEM file sets, and the one place certificates are generated.
//! Nothing here knows Kubernetes: the operator stores the CA in a Secret (`operator/src/pki.rs`).
//!
//! [`Ca`] creates a cluster CA and issues server certificates (one per agent) and client
//! certificates (the operator's). The operator keeps its CA in a Secret and hands each agent
//! its files; for local development `--dev-tls` makes a CA under `<data-dir>/tls/` (CA, server
//! and client certs), so the agent and a local client can talk mTLS with no setup.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// What making, loading or using TLS material can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PkiError {
    #[error("io error on {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// rcgen refused to make or parse a certificate or key.
    #[error("certificate: {0}")]
    Certificate(#[source] rcgen::Error),
}

impl PkiError {
    /// A short, stable label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            PkiError::Io { .. } => "io",
            PkiError::Certificate(_) => "certificate",
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        PkiError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

type Result<T, E = PkiError> = std::result::Result<T, E>;

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
        TlsFiles::named(dir, "server")
    }

    /// The client side of a dev PKI in `dir`.
    pub fn dev_client(dir: &Path) -> Self {
        TlsFiles::named(dir, "client")
    }

    /// `<dir>/ca.pem`, `<dir>/<stem>.pem` and `<dir>/<stem>-key.pem`.
    pub fn named(dir: &Path, stem: &str) -> Self {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{stem}.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        }
    }

    fn read(path: &Path) -> Result<Vec<u8>> {
        std::fs::read(path).map_err(|e| PkiError::io(path, e))
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

/// The subject of every Quiver CA. Fixed, because [`Ca::from_pem`] rebuilds the issuer from
/// it and the key (rcgen parses no certificates without the `x509-parser` feature).
const CA_NAME: &str = "quiver cluster CA";

fn ca_params() -> Result<CertificateParams> {
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(PkiError::Certificate)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, CA_NAME);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(ca)
}

/// A certificate authority: its certificate (PEM) and the issuer that signs with its key.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// An issued certificate and its private key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A new CA with a fresh key.
    pub fn generate() -> Result<Ca> {
        let key = KeyPair::generate().map_err(PkiError::Certificate)?;
        let params = ca_params()?;
        let cert = params.self_signed(&key).map_err(PkiError::Certificate)?;
        Ok(Ca {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA made by [`Ca::generate`] (here or elsewhere), from its certificate and key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::Certificate)?;
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            issuer: Issuer::new(ca_params()?, key),
        })
    }

    /// Loads `<dir>/ca.pem` + `<dir>/ca-key.pem`, or generates and writes them.
    pub fn load_or_create(dir: &Path) -> Result<Ca> {
        let (cert, key) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
        if cert.exists() {
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| PkiError::io(p, e));
            return Ca::from_pem(&read(&cert)?, &read(&key)?);
        }
        let ca = Ca::generate()?;
        ca.write(dir)?;
        Ok(ca)
    }

    /// Writes `ca.pem` and `ca-key.pem` (0600) into `dir`; the certificate last, as its
    /// presence marks the pair complete.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
        write_private(&dir.join("ca-key.pem"), &self.key_pem())?;
        write_private(&dir.join("ca.pem"), &self.cert_pem)
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// An agent's certificate for `localhost`, `127.0.0.1` and `names`. It is also the
    /// agent's client certificate when it calls other agents (the Raft service over gRPC).
    pub fn issue_server(&self, names: &[String]) -> Result<Leaf> {
        let mut all = vec![DEV_SERVER_NAME.to_owned(), "127.0.0.1".to_owned()];
        all.extend(
            names
                .iter()
                .filter(|n| !all.contains(n))
                .cloned()
                .collect::<Vec<_>>(),
        );
        let usages = [
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        self.issue(all, "quiver-agent", &usages)
    }

    /// A client certificate named `name`.
    pub fn issue_client(&self, name: &str) -> Result<Leaf> {
        let names = vec![name.to_owned()];
        self.issue(names, name, &[ExtendedKeyUsagePurpose::ClientAuth])
    }

    fn issue(
        &self,
        names: Vec<String>,
        cn: &str,
        usages: &[ExtendedKeyUsagePurpose],
    ) -> Result<Leaf> {
        let key = KeyPair::generate().map_err(PkiError::Certificate)?;
        let mut p = CertificateParams::new(names).map_err(PkiError::Certificate)?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = usages.to_vec();
        let cert = p
            .signed_by(&key, &self.issuer)
            .map_err(PkiError::Certificate)?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl Leaf {
    /// Writes this leaf as `<dir>/<stem>.pem` + `<dir>/<stem>-key.pem` (0600) next to the CA's
    /// certificate (`<dir>/ca.pem`, written when missing) and returns the set.
    pub fn write(&self, ca: &Ca, dir: &Path, stem: &str) -> Result<TlsFiles> {
        std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
        let files = TlsFiles::named(dir, stem);
        write_private(&files.key, &self.key_pem)?;
        write_private(&files.cert, &self.cert_pem)?;
        if !files.ca.exists() {
            write_private(&files.ca, ca.cert_pem())?;
        }
        Ok(files)
    }
}

/// Replaces `path` with `contents`, readable by the owner only.
pub(crate) fn write_private(path: &Path, contents: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PkiError::io(&tmp, e))?;
    file.write_all(contents.as_bytes())
        .map_err(|e| PkiError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| PkiError::io(path, e))
}

/// Makes a CA and a server + client certificate in `dir`, unless `ca.pem` already exists.
/// `server_names` are added to the server certificate next to `localhost` and `127.0.0.1`.
pub fn ensure_dev_pki(dir: &Path, server_names: &[String]) -> Result<()> {
    if dir.join("ca.pem").exists() {
        return Ok(());
    }
    let ca = Ca::generate()?;
    ca.issue_server(server_names)?.write(&ca, dir, "server")?;
    ca.issue_client("quiver-client")?
        .write(&ca, dir, "client")?;
    // Last: `ca.pem` marks the set complete.
    ca.write(dir)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

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
        for key in ["ca-key.pem", "server-key.pem", "client-key.pem"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key} must be private");
        }
    }

    #[test]
    fn a_reloaded_ca_keeps_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = Ca::load_or_create(dir.path()).expect("create");
        let again = Ca::load_or_create(dir.path()).expect("load");
        assert_eq!(ca.cert_pem(), again.cert_pem());
        assert_eq!(ca.key_pem(), again.key_pem());
    }
}
