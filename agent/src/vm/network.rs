//! Guest networking: QEMU user networking with declared port forwards.
//!
//! `user` mode gives the guest one virtio-net device behind QEMU's built-in NAT (guest
//! 10.0.2.15, gateway 10.0.2.2, which is also how the guest reaches the host's loopback).
//! Nothing reaches the guest from outside except the declared forwards, each a host port on the
//! agent's port-forward address (127.0.0.1 unless configured). A host port of 0 is picked by the
//! agent at launch; the chosen ports are reported in the VM's status.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use super::spec::check_label;
use crate::{Error, Result};
use quiver_rpc::proto;

/// More forwards than this is a mistake, not a use case (each is a listening host socket).
pub const MAX_PORT_FORWARDS: usize = 32;

/// The address forwards bind to unless the agent is configured otherwise.
pub const DEFAULT_FORWARD_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// The name QEMU's `hostfwd` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn to_proto(self) -> proto::Protocol {
        match self {
            Protocol::Tcp => proto::Protocol::Tcp,
            Protocol::Udp => proto::Protocol::Udp,
        }
    }
}

/// A forward as the spec declares it; `host_port` 0 = pick one at launch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    pub name: String,
    pub protocol: Protocol,
    pub guest_port: u16,
    pub host_port: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Network {
    #[default]
    None,
    User {
        forwards: Vec<PortForward>,
    },
}

impl Network {
    pub fn forwards(&self) -> &[PortForward] {
        match self {
            Network::None => &[],
            Network::User { forwards } => forwards,
        }
    }
}

/// A forward as QEMU was started with it: the host side is concrete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveForward {
    pub name: String,
    pub protocol: Protocol,
    pub guest_port: u16,
    pub host_ip: IpAddr,
    pub host_port: u16,
}

impl ActiveForward {
    /// QEMU's `hostfwd=` value: `tcp:127.0.0.1:8080-:80`.
    pub fn hostfwd(&self) -> String {
        let ip = match self.host_ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        format!(
            "{}:{ip}:{}-:{}",
            self.protocol.as_str(),
            self.host_port,
            self.guest_port
        )
    }

    pub fn to_proto(&self) -> proto::ForwardedPort {
        proto::ForwardedPort {
            name: self.name.clone(),
            protocol: self.protocol.to_proto() as i32,
            guest_port: u32::from(self.guest_port),
            host_ip: self.host_ip.to_string(),
            host_port: u32::from(self.host_port),
        }
    }
}

/// Checks `spec.network`; errors name the field (`spec.network.portForwards[2].guestPort`).
pub fn validate(network: Option<&proto::Network>) -> Result<Network> {
    let Some(network) = network else {
        return Ok(Network::None);
    };
    match network.mode.as_str() {
        "" | "none" if network.port_forwards.is_empty() => Ok(Network::None),
        "" | "none" => Err(Error::invalid(
            "spec.network.portForwards",
            "needs mode \"user\"",
        )),
        "user" => {
            if network.port_forwards.len() > MAX_PORT_FORWARDS {
                let reason = format!("more than {MAX_PORT_FORWARDS} forwards");
                return Err(Error::invalid("spec.network.portForwards", reason));
            }
            let mut forwards: Vec<PortForward> = Vec::new();
            for (i, f) in network.port_forwards.iter().enumerate() {
                let forward = validate_forward(i, f)?;
                let clash = forwards.iter().any(|o| {
                    (forward.host_port != 0
                        && o.protocol == forward.protocol
                        && o.host_port == forward.host_port)
                        || (!forward.name.is_empty() && o.name == forward.name)
                });
                if clash {
                    let field = format!("spec.network.portForwards[{i}]");
                    return Err(Error::invalid(
                        &field,
                        "repeats the name or the protocol and hostPort of an earlier forward",
                    ));
                }
                forwards.push(forward);
            }
            Ok(Network::User { forwards })
        }
        _ => Err(Error::invalid(
            "spec.network.mode",
            "must be \"none\" or \"user\"",
        )),
    }
}

fn validate_forward(index: usize, f: &proto::PortForward) -> Result<PortForward> {
    let field = |name: &str| format!("spec.network.portForwards[{index}].{name}");
    if !f.name.is_empty() {
        check_label(&field("name"), &f.name)?;
    }
    let protocol = match proto::Protocol::try_from(f.protocol) {
        Ok(proto::Protocol::Unspecified | proto::Protocol::Tcp) => Protocol::Tcp,
        Ok(proto::Protocol::Udp) => Protocol::Udp,
        Err(_) => return Err(Error::invalid(&field("protocol"), "must be TCP or UDP")),
    };
    let guest_port = match u16::try_from(f.guest_port) {
        Ok(p) if p > 0 => p,
        _ => return Err(Error::invalid(&field("guestPort"), "must be in 1..=65535")),
    };
    let Ok(host_port) = u16::try_from(f.host_port) else {
        let reason = "must be in 0..=65535 (0 = picked by the agent)";
        return Err(Error::invalid(&field("hostPort"), reason));
    };
    Ok(PortForward {
        name: f.name.clone(),
        protocol,
        guest_port,
        host_port,
    })
}

/// Gives every forward a concrete host port on `address`. A declared port is kept as is (QEMU
/// reports it if it is taken); a port of 0 reuses the one `previous` launch picked when that is
/// still free, so a restarted VM keeps its address, else takes a free one from the kernel.
pub fn bind_forwards(
    forwards: &[PortForward],
    address: IpAddr,
    previous: &[ActiveForward],
) -> std::io::Result<Vec<ActiveForward>> {
    let mut out: Vec<ActiveForward> = Vec::with_capacity(forwards.len());
    for (i, f) in forwards.iter().enumerate() {
        let host_port = if f.host_port != 0 {
            f.host_port
        } else {
            let reuse = previous
                .get(i)
                .filter(|p| p.protocol == f.protocol && p.host_ip == address)
                .map(|p| p.host_port)
                .filter(|&port| {
                    let taken_here = out
                        .iter()
                        .any(|o| o.protocol == f.protocol && o.host_port == port);
                    !taken_here && free_port(f.protocol, address, port).is_ok()
                });
            match reuse {
                Some(port) => port,
                None => pick_port(f.protocol, address, &out)?,
            }
        };
        out.push(ActiveForward {
            name: f.name.clone(),
            protocol: f.protocol,
            guest_port: f.guest_port,
            host_ip: address,
            host_port,
        });
    }
    Ok(out)
}

/// Binds `port` (0 = any) and returns the bound port; the socket is closed at once, so QEMU
/// can take the port a moment later.
fn free_port(protocol: Protocol, address: IpAddr, port: u16) -> std::io::Result<u16> {
    let addr = SocketAddr::new(address, port);
    match protocol {
        Protocol::Tcp => TcpListener::bind(addr)?.local_addr().map(|a| a.port()),
        Protocol::Udp => UdpSocket::bind(addr)?.local_addr().map(|a| a.port()),
    }
}

fn pick_port(protocol: Protocol, address: IpAddr, taken: &[ActiveForward]) -> std::io::Result<u16> {
    // The kernel does not hand out a port that is bound, but ours are closed again at once:
    // skip any it repeats for this launch.
    for _ in 0..16 {
        let port = free_port(protocol, address, 0)?;
        if !taken
            .iter()
            .any(|o| o.protocol == protocol && o.host_port == port)
        {
            return Ok(port);
        }
    }
    Err(std::io::Error::other("no free port found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forward(guest_port: u32, host_port: u32) -> proto::PortForward {
        proto::PortForward {
            name: String::new(),
            protocol: proto::Protocol::Tcp as i32,
            guest_port,
            host_port,
        }
    }

    fn user(forwards: Vec<proto::PortForward>) -> proto::Network {
        proto::Network {
            mode: "user".into(),
            port_forwards: forwards,
        }
    }

    fn field_of(network: &proto::Network) -> String {
        match validate(Some(network)) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn bad_forwards_name_their_field() {
        assert_eq!(
            field_of(&user(vec![forward(80, 0), forward(0, 0)])),
            "spec.network.portForwards[1].guestPort"
        );
        assert_eq!(
            field_of(&user(vec![forward(80, 70_000)])),
            "spec.network.portForwards[0].hostPort"
        );
        let mut bad_protocol = forward(80, 0);
        bad_protocol.protocol = 9;
        assert_eq!(
            field_of(&user(vec![bad_protocol])),
            "spec.network.portForwards[0].protocol"
        );
        let mut bad_name = forward(80, 0);
        bad_name.name = "Web_1".into();
        assert_eq!(
            field_of(&user(vec![bad_name])),
            "spec.network.portForwards[0].name"
        );
        assert_eq!(
            field_of(&user(vec![forward(80, 8080), forward(81, 8080)])),
            "spec.network.portForwards[1]"
        );
        let none_with_forwards = proto::Network {
            mode: "none".into(),
            port_forwards: vec![forward(80, 0)],
        };
        assert_eq!(field_of(&none_with_forwards), "spec.network.portForwards");
        let bridge = proto::Network {
            mode: "bridge".into(),
            port_forwards: vec![],
        };
        assert_eq!(field_of(&bridge), "spec.network.mode");
    }

    #[test]
    fn same_host_port_on_tcp_and_udp_is_fine_and_zero_ports_may_repeat() {
        let mut udp = forward(53, 5353);
        udp.protocol = proto::Protocol::Udp as i32;
        let net = validate(Some(&user(vec![
            forward(53, 5353),
            udp,
            forward(80, 0),
            forward(81, 0),
        ])))
        .expect("valid");
        assert_eq!(net.forwards().len(), 4);
        assert_eq!(net.forwards()[1].protocol, Protocol::Udp);
    }

    #[test]
    fn picked_ports_are_distinct_and_reused_on_relaunch() {
        let Network::User { forwards } =
            validate(Some(&user(vec![forward(80, 0), forward(81, 0)]))).expect("valid")
        else {
            panic!("user network expected");
        };
        let first = bind_forwards(&forwards, DEFAULT_FORWARD_ADDRESS, &[]).expect("bind");
        assert_ne!(first[0].host_port, first[1].host_port);
        assert!(first.iter().all(|f| f.host_port != 0));
        let again = bind_forwards(&forwards, DEFAULT_FORWARD_ADDRESS, &first).expect("bind");
        assert_eq!(again, first, "a relaunch keeps free ports");
        assert_eq!(
            first[0].hostfwd(),
            format!("tcp:127.0.0.1:{}-:80", first[0].host_port)
        );
    }

    #[test]
    fn a_taken_previous_port_is_replaced() {
        let holder = TcpListener::bind("127.0.0.1:0").expect("bind");
        let taken = holder.local_addr().expect("addr").port();
        let spec = [PortForward {
            name: "web".into(),
            protocol: Protocol::Tcp,
            guest_port: 80,
            host_port: 0,
        }];
        let previous = [ActiveForward {
            name: "web".into(),
            protocol: Protocol::Tcp,
            guest_port: 80,
            host_ip: DEFAULT_FORWARD_ADDRESS,
            host_port: taken,
        }];
        let now = bind_forwards(&spec, DEFAULT_FORWARD_ADDRESS, &previous).expect("bind");
        assert_ne!(now[0].host_port, taken);
    }
}
