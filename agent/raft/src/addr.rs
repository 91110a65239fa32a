//! A member's address, as openraft keeps it in the membership (`BasicNode::addr`):
//!
//! ```text
//! <endpoint id>@<ip:port>[,<ip:port>…][;relay=<url>][;grpc=<tls name>@<ip:port>]
//! ```
//!
//! The first part is the node's Iroh endpoint (id and direct addresses); the optional `relay=`
//! part the iroh relay it homes on. The optional `grpc=`
//! part is its gRPC listener and the name its TLS certificate carries (the host name). An
//! address written before nodes served Raft over gRPC has no such part and still parses: the
//! node is then reached over Iroh, or over gRPC at an address learned elsewhere
//! ([`crate::network::Network::with_directory`]).

use std::net::SocketAddr;

use openraft::BasicNode;
use quiver_rpc::iroh::{EndpointAddr, EndpointId};

/// A node address that does not parse; the message names the part that is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("node address {addr:?}: {problem}")]
pub struct AddrError {
    pub addr: String,
    pub problem: String,
}

/// Where a node serves gRPC: the socket to dial and the name to verify in its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GrpcAddr {
    pub name: String,
    pub socket: SocketAddr,
}

impl GrpcAddr {
    /// The URL tonic dials: `https://` with TLS, `http://` without.
    #[must_use]
    pub fn url(&self, tls: bool) -> String {
        let scheme = if tls { "https" } else { "http" };
        format!("{scheme}://{}", self.socket)
    }
}

/// A parsed node address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddr {
    pub iroh: EndpointAddr,
    pub grpc: Option<GrpcAddr>,
}

impl NodeAddr {
    /// The membership entry of this address.
    #[must_use]
    pub fn to_node(&self) -> BasicNode {
        let sockets: Vec<String> = self.iroh.ip_addrs().map(ToString::to_string).collect();
        let mut text = format!("{}@{}", self.iroh.id, sockets.join(","));
        for relay in self.iroh.relay_urls() {
            text.push_str(&format!(";relay={relay}"));
        }
        if let Some(grpc) = &self.grpc {
            text.push_str(&format!(";grpc={}@{}", grpc.name, grpc.socket));
        }
        BasicNode::new(text)
    }

    /// Parses a membership entry.
    ///
    /// # Errors
    /// The part that is not `<endpoint id>@<ip:port>[,…]`, `relay=<url>` or
    /// `grpc=<tls name>@<ip:port>`.
    pub fn parse(node: &BasicNode) -> Result<Self, AddrError> {
        let text = node.addr.as_str();
        let fail = |problem: String| AddrError {
            addr: text.to_owned(),
            problem,
        };
        let mut parts = text.split(';');
        let iroh = parts.next().unwrap_or_default();
        let (id, sockets) = iroh.split_once('@').ok_or_else(|| {
            fail(
                "expected <endpoint id>@<ip:port>[,<ip:port>…][;relay=<url>][;grpc=<tls name>@<ip:port>]"
                    .into(),
            )
        })?;
        let id: EndpointId = id
            .parse()
            .map_err(|e| fail(format!("endpoint id {id:?}: {e}")))?;
        let mut iroh = sockets.split(',').filter(|s| !s.is_empty()).try_fold(
            EndpointAddr::new(id),
            |addr, socket| {
                let socket: SocketAddr = socket
                    .parse()
                    .map_err(|e| fail(format!("Iroh address {socket:?}: {e}")))?;
                Ok(addr.with_ip_addr(socket))
            },
        )?;
        let mut grpc = None;
        for part in parts {
            if let Some(url) = part.strip_prefix("relay=") {
                let url = quiver_rpc::relay::parse_url(url)
                    .map_err(|e| fail(format!("relay {url:?}: {e}")))?;
                iroh = iroh.with_relay_url(url);
                continue;
            }
            let Some(value) = part.strip_prefix("grpc=") else {
                return Err(fail(format!(
                    "unknown part {part:?} (expected relay=… or grpc=…)"
                )));
            };
            if grpc.is_some() {
                return Err(fail("grpc= given twice".into()));
            }
            let (name, socket) = value
                .rsplit_once('@')
                .ok_or_else(|| fail(format!("grpc={value:?}: expected <tls name>@<ip:port>")))?;
            if name.is_empty() || name.contains([',', '@', ' ']) {
                return Err(fail(format!(
                    "grpc: TLS name {name:?} is empty or malformed"
                )));
            }
            let socket: SocketAddr = socket
                .parse()
                .map_err(|e| fail(format!("grpc: address {socket:?}: {e}")))?;
            grpc = Some(GrpcAddr {
                name: name.to_owned(),
                socket,
            });
        }
        Ok(Self { iroh, grpc })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_rpc::iroh::SecretKey;

    fn iroh() -> EndpointAddr {
        let id = SecretKey::generate().public();
        EndpointAddr::new(id)
            .with_ip_addr("127.0.0.1:7444".parse().expect("socket"))
            .with_ip_addr("[::1]:7444".parse().expect("socket"))
    }

    #[test]
    fn addresses_round_trip_with_and_without_grpc() {
        let plain = NodeAddr {
            iroh: iroh(),
            grpc: None,
        };
        assert_eq!(NodeAddr::parse(&plain.to_node()), Ok(plain.clone()));
        let both = NodeAddr {
            grpc: Some(GrpcAddr {
                name: "agent-0".into(),
                socket: "10.0.0.5:7443".parse().expect("socket"),
            }),
            ..plain
        };
        let node = both.to_node();
        assert!(node.addr.ends_with(";grpc=agent-0@10.0.0.5:7443"), "{node}");
        assert_eq!(NodeAddr::parse(&node), Ok(both.clone()));
        let relayed = NodeAddr {
            iroh: both
                .iroh
                .with_relay_url("https://relay.example:3340".parse().expect("url")),
            ..both
        };
        let node = relayed.to_node();
        assert!(
            node.addr
                .contains(";relay=https://relay.example:3340/;grpc="),
            "{node}"
        );
        assert_eq!(NodeAddr::parse(&node), Ok(relayed));
    }

    #[test]
    fn an_address_in_the_old_format_still_parses() {
        let id = SecretKey::generate().public();
        let old = BasicNode::new(format!("{id}@127.0.0.1:7444"));
        let parsed = NodeAddr::parse(&old).expect("old format");
        assert_eq!(parsed.iroh.id, id);
        assert_eq!(parsed.grpc, None);
    }

    #[test]
    fn bad_addresses_name_the_part_that_is_wrong() {
        let id = SecretKey::generate().public();
        let problem = |text: String| {
            NodeAddr::parse(&BasicNode::new(text))
                .expect_err("malformed")
                .to_string()
        };
        assert!(problem("nobody".into()).contains("expected <endpoint id>@"));
        assert!(problem("zz@127.0.0.1:1".into()).contains("endpoint id \"zz\""));
        assert!(problem(format!("{id}@localhost")).contains("Iroh address \"localhost\""));
        let grpc = problem(format!("{id}@127.0.0.1:1;grpc=10.0.0.5:7443"));
        assert!(grpc.contains("expected <tls name>@<ip:port>"), "{grpc}");
        let port = problem(format!("{id}@127.0.0.1:1;grpc=a@10.0.0.5"));
        assert!(port.contains("grpc: address \"10.0.0.5\""), "{port}");
        let name = problem(format!("{id}@127.0.0.1:1;grpc=@10.0.0.5:1"));
        assert!(name.contains("TLS name \"\""), "{name}");
        let twice = problem(format!("{id}@;grpc=a@10.0.0.5:1;grpc=b@10.0.0.6:1"));
        assert!(twice.contains("twice"), "{twice}");
        let relay = problem(format!("{id}@;relay=ftp://x"));
        assert!(relay.contains("relay \"ftp://x\""), "{relay}");
        let unknown = problem(format!("{id}@;quic=x"));
        assert!(unknown.contains("unknown part \"quic=x\""), "{unknown}");
    }
}
