//! Relays, from the command line to the address a peer dials.
//!
//! Off by default: peers dial the direct addresses their `Host` objects advertise. With
//! `--relay-url` an endpoint homes on that relay (the cluster's own `iroh-relay` server, or any
//! relay its peers can reach), the agent registers the URL in its Host (`spec.irohRelayUrl`),
//! and every peer that dials it adds the URL to the address: where no direct path works (NAT,
//! UDP blocked), the relay carries the connection, and QUIC hole punching moves it to a direct
//! path when one opens. Traffic through a relay stays end-to-end encrypted; the relay sees
//! endpoint ids only. `--relay-ca` names a PEM file of the certificates that sign the relay's
//! TLS certificate (without it, the web PKI roots built into iroh).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use iroh::tls::CaTlsConfig;
use iroh::{EndpointAddr, EndpointId, RelayMap, RelayMode, RelayUrl};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// A relay setting that cannot be used; the message names the flag or field.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("--relay-url {url:?}: {problem}")]
    Url { url: String, problem: String },
    #[error("--relay-ca {}: {problem}", path.display())]
    Ca { path: PathBuf, problem: String },
    #[error("--relay-ca needs --relay-url")]
    CaWithoutUrl,
}

/// The relay an endpoint homes on, as configured.
#[derive(Clone, Debug)]
pub struct Relay {
    pub url: RelayUrl,
    /// Roots for the relay's TLS certificate (`None`: the web PKI roots).
    pub ca: Option<CaTlsConfig>,
}

impl Relay {
    /// The relay of `--relay-url` and `--relay-ca`; `None` when no URL is given.
    ///
    /// # Errors
    /// The URL is not an `http(s)://` URL, the CA file cannot be read or holds no certificate,
    /// or a CA is given without a URL.
    pub fn from_flags(
        url: Option<&str>,
        ca_file: Option<&Path>,
    ) -> Result<Option<Self>, RelayError> {
        let Some(url) = url else {
            return match ca_file {
                Some(_) => Err(RelayError::CaWithoutUrl),
                None => Ok(None),
            };
        };
        let url = parse_url(url).map_err(|problem| RelayError::Url {
            url: url.to_owned(),
            problem,
        })?;
        let ca = ca_file.map(read_roots).transpose()?;
        Ok(Some(Self { url, ca }))
    }

    /// The endpoint's relay mode: this relay only.
    #[must_use]
    pub fn mode(&self) -> RelayMode {
        RelayMode::Custom(RelayMap::from(self.url.clone()))
    }
}

/// A relay URL as a Host carries it: `http(s)://` and a host, none of the characters that
/// separate the parts of a Raft member's address.
///
/// # Errors
/// What is wrong with it.
pub fn parse_url(url: &str) -> Result<RelayUrl, String> {
    if url.contains([';', ',', ' ']) {
        return Err("a relay URL has no ';', ',' or space (they separate addresses)".into());
    }
    let parsed: RelayUrl = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "https" | "http") || parsed.host_str().is_none() {
        return Err("expected http(s)://<host>[:port]".into());
    }
    Ok(parsed)
}

fn read_roots(path: &Path) -> Result<CaTlsConfig, RelayError> {
    let fail = |problem: String| RelayError::Ca {
        path: path.to_owned(),
        problem,
    };
    let roots = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if roots.is_empty() {
        return Err(fail("no certificate in the file".into()));
    }
    Ok(CaTlsConfig::custom_roots(roots))
}

/// The address to dial a peer at: its endpoint id, its direct `ip:port`s and its relay, as its
/// Host advertises them. Direct addresses and a relay URL that do not parse are skipped (the
/// Host schema bounds them but cannot parse them; one bad entry must not hide the others).
///
/// # Errors
/// The endpoint id does not parse.
pub fn peer_addr(
    endpoint_id: &str,
    direct: &[String],
    relay_url: Option<&str>,
) -> Result<EndpointAddr, String> {
    let id: EndpointId = endpoint_id
        .parse()
        .map_err(|e| format!("endpoint id {endpoint_id:?} is not valid: {e}"))?;
    let addr = direct
        .iter()
        .filter_map(|a| a.parse::<SocketAddr>().ok())
        .fold(EndpointAddr::new(id), EndpointAddr::with_ip_addr);
    Ok(match relay_url.map(parse_url) {
        Some(Ok(url)) => addr.with_relay_url(url),
        _ => addr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iroh::SecretKey;

    #[test]
    fn flags_are_checked_and_name_what_is_wrong() {
        assert!(Relay::from_flags(None, None).expect("no relay").is_none());
        let relay = Relay::from_flags(Some("https://relay.example:8443"), None)
            .expect("valid")
            .expect("a relay");
        assert_eq!(relay.url.as_str(), "https://relay.example:8443/");
        assert!(matches!(relay.mode(), RelayMode::Custom(_)));
        for bad in ["relay.example", "ftp://relay.example", "https://"] {
            let error = Relay::from_flags(Some(bad), None)
                .expect_err(bad)
                .to_string();
            assert!(error.starts_with("--relay-url"), "{bad}: {error}");
        }
        let error = Relay::from_flags(None, Some(Path::new("/x.pem"))).expect_err("ca alone");
        assert!(matches!(error, RelayError::CaWithoutUrl));
        let dir = tempfile::tempdir().expect("dir");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let error = Relay::from_flags(Some("https://r.example"), Some(&empty))
            .expect_err("no certificate")
            .to_string();
        assert!(error.contains("no certificate"), "{error}");
        let missing = dir.path().join("missing.pem");
        let error = Relay::from_flags(Some("https://r.example"), Some(&missing))
            .expect_err("missing")
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
    }

    #[test]
    fn a_ca_file_with_a_certificate_is_read() {
        let ca = crate::pki::Ca::generate().expect("ca");
        let dir = tempfile::tempdir().expect("dir");
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, ca.cert_pem()).expect("write");
        let relay = Relay::from_flags(Some("https://10.0.0.1:3340"), Some(&file))
            .expect("valid")
            .expect("a relay");
        assert!(relay.ca.is_some());
    }

    #[test]
    fn a_peer_address_carries_direct_addresses_and_the_relay() {
        let id = SecretKey::generate().public();
        let direct = vec!["10.0.0.5:7444".to_owned(), "garbage".to_owned()];
        let addr = peer_addr(&id.to_string(), &direct, Some("https://relay.example")).expect("ok");
        assert_eq!(addr.id, id);
        assert_eq!(addr.ip_addrs().count(), 1);
        assert_eq!(addr.relay_urls().count(), 1);
        let without = peer_addr(&id.to_string(), &direct, Some("not a url")).expect("ok");
        assert_eq!(without.relay_urls().count(), 0, "a bad URL is skipped");
        assert!(peer_addr("nope", &direct, None).is_err());
    }
}
