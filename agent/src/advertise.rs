//! The gRPC address the agent advertises in its Host (and Status): where others must dial it.
//!
//! The bound address is not always that: an agent listening on `0.0.0.0` would advertise an
//! address nobody can dial. The rule, in order: an explicit `--advertise-address` (which must
//! itself be routable), else the bind address unless it is unspecified, else the host's
//! primary non-loopback address, else an error asking for the flag.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use crate::{Error, Result};

/// Where to dial the agent bound to `bound`, given `explicit` (the flag) and a way to find
/// the host's primary address (see [`primary_address`]).
pub fn advertised_address(
    explicit: Option<IpAddr>,
    bound: SocketAddr,
    primary: impl FnOnce(IpAddr) -> Option<IpAddr>,
) -> Result<SocketAddr> {
    if let Some(ip) = explicit {
        if ip.is_unspecified() {
            return Err(Error::Config(format!(
                "--advertise-address {ip} is not an address others can dial"
            )));
        }
        return Ok(SocketAddr::new(ip, bound.port()));
    }
    if !bound.ip().is_unspecified() {
        return Ok(bound);
    }
    match primary(bound.ip()).filter(|ip| !ip.is_loopback() && !ip.is_unspecified()) {
        Some(ip) => Ok(SocketAddr::new(ip, bound.port())),
        None => Err(Error::Config(format!(
            "gRPC is bound to {bound} and this host has no non-loopback address to advertise; \
             pass --advertise-address"
        ))),
    }
}

/// The host's primary address of `family`'s kind: the source address the routing table picks
/// for traffic leaving the host (a UDP `connect` to a documentation address; no packet is
/// sent). `None` without such a route.
#[must_use]
pub fn primary_address(family: IpAddr) -> Option<IpAddr> {
    let (local, probe): (SocketAddr, SocketAddr) = if family.is_ipv6() {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            // 2001:db8::/32 (RFC 3849), never routed to anyone.
            (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
        )
    } else {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            // TEST-NET-1 (RFC 5737), never routed to anyone.
            (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        )
    };
    let socket = UdpSocket::bind(local).ok()?;
    socket.connect(probe).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn explicit_address_wins_with_the_bound_port() {
        let got = advertised_address(Some(ip("10.0.0.7")), addr("0.0.0.0:7443"), |_| {
            panic!("no lookup needed")
        });
        assert_eq!(got.expect("advertised"), addr("10.0.0.7:7443"));
    }

    #[test]
    fn explicit_unspecified_address_is_refused() {
        let got = advertised_address(Some(ip("0.0.0.0")), addr("0.0.0.0:7443"), |_| None);
        assert!(matches!(got, Err(Error::Config(m)) if m.contains("--advertise-address")));
    }

    #[test]
    fn a_specific_bind_address_is_advertised_as_is() {
        let got = advertised_address(None, addr("127.0.0.1:7443"), |_| panic!("no lookup"));
        assert_eq!(got.expect("advertised"), addr("127.0.0.1:7443"));
    }

    #[test]
    fn bound_to_all_interfaces_advertises_the_primary_address_never_0_0_0_0() {
        let got = advertised_address(None, addr("0.0.0.0:7443"), |_| Some(ip("192.168.1.20")));
        assert_eq!(got.expect("advertised"), addr("192.168.1.20:7443"));
        let v6 = advertised_address(None, addr("[::]:7443"), |family| {
            assert!(family.is_ipv6());
            Some(ip("fd00::20"))
        });
        assert_eq!(v6.expect("advertised"), addr("[fd00::20]:7443"));
    }

    #[test]
    fn bound_to_all_interfaces_without_a_routable_address_is_a_clear_error() {
        for primary in [None, Some(ip("127.0.0.1"))] {
            let got = advertised_address(None, addr("0.0.0.0:7443"), |_| primary);
            assert!(
                matches!(&got, Err(Error::Config(m)) if m.contains("pass --advertise-address")),
                "{got:?}"
            );
        }
    }

    #[test]
    fn the_primary_address_found_here_is_routable_when_there_is_one() {
        if let Some(found) = primary_address(ip("0.0.0.0")) {
            assert!(found.is_ipv4() && !found.is_unspecified(), "{found}");
        }
    }
}
