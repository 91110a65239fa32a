//! TLS for the dev control plane. Kubernetes clients send bearer tokens only over TLS, so
//! the server always speaks HTTPS: a private CA and a loopback server certificate are created
//! on first start (and kept beside the journal when persistence is on).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// PEM material for serving and for kubeconfigs.
#[derive(Clone)]
pub struct TlsMaterial {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl TlsMaterial {
    pub fn generate() -> anyhow::Result<Self> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "quiver-dev-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(vec!["localhost".to_string()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "quiver-dev-apiserver");
        leaf.subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        leaf.subject_alt_names
            .push(SanType::IpAddress(std::net::Ipv6Addr::LOCALHOST.into()));
        let issuer = Issuer::new(ca, ca_key);
        let cert = leaf.signed_by(&key, &issuer)?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            cert_pem: format!("{}{}", cert.pem(), ca_cert.pem()),
            key_pem: key.serialize_pem(),
        })
    }

    /// Loads material saved in `dir`, or generates and saves it.
    pub fn load_or_generate(dir: &Path) -> anyhow::Result<Self> {
        let (ca, cert, key) = (
            dir.join("ca.crt"),
            dir.join("apiserver.crt"),
            dir.join("apiserver.key"),
        );
        if ca.exists() && cert.exists() && key.exists() {
            return Ok(Self {
                ca_pem: std::fs::read_to_string(ca)?,
                cert_pem: std::fs::read_to_string(cert)?,
                key_pem: std::fs::read_to_string(&key)?,
            });
        }
        let m = Self::generate()?;
        std::fs::create_dir_all(dir)?;
        std::fs::write(ca, &m.ca_pem)?;
        std::fs::write(cert, &m.cert_pem)?;
        std::fs::write(&key, &m.key_pem)?;
        crate::set_private(&key)?;
        Ok(m)
    }

    pub fn server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(self.cert_pem.as_bytes()).collect::<Result<_, _>>()?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}
