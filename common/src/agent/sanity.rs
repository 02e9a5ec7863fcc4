//! Which endpoints the client will never set on a peer, whatever a server says.

use std::net::{IpAddr, SocketAddr};

use crate::wire::endpoint::canonical;

/// Why an endpoint was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Port 0 cannot be sent to.
    #[error("port 0")]
    PortZero,
    /// 0.0.0.0 or `::` (or 0.0.0.0/8).
    #[error("unspecified address")]
    Unspecified,
    /// The host itself.
    #[error("loopback address")]
    Loopback,
    /// A group address.
    #[error("multicast address")]
    Multicast,
    /// 255.255.255.255.
    #[error("broadcast address")]
    Broadcast,
    /// Only valid on one link, meaningless from a server on the internet.
    #[error("link-local address")]
    LinkLocal,
    /// Of an address family `--family` leaves out.
    #[error("address family left out by --family")]
    Family,
    /// Inside a network the interface routes through its own tunnel: packets to it would loop.
    #[error("address inside the WireGuard interface's own allowed IPs")]
    InsideTunnel,
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if prefix <= 32 => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if prefix <= 128 => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Checks an endpoint a server gave for a peer. `tunnel_networks` are the allowed IPs of the
/// interface's peers; default routes (/0) are skipped, since wg-quick keeps the endpoints of a
/// full tunnel outside it with policy routing.
pub fn check_endpoint(
    endpoint: SocketAddr,
    tunnel_networks: &[(IpAddr, u8)],
) -> Result<(), Refused> {
    if endpoint.port() == 0 {
        return Err(Refused::PortZero);
    }
    let ip = canonical(endpoint).ip();
    match ip {
        IpAddr::V4(v4) => {
            if v4.octets()[0] == 0 {
                return Err(Refused::Unspecified);
            }
            if v4.is_loopback() {
                return Err(Refused::Loopback);
            }
            if v4.is_multicast() {
                return Err(Refused::Multicast);
            }
            if v4.is_broadcast() {
                return Err(Refused::Broadcast);
            }
            if v4.is_link_local() {
                return Err(Refused::LinkLocal);
            }
        }
        IpAddr::V6(v6) => {
            if v6.is_unspecified() {
                return Err(Refused::Unspecified);
            }
            if v6.is_loopback() {
                return Err(Refused::Loopback);
            }
            if v6.is_multicast() {
                return Err(Refused::Multicast);
            }
            if v6.segments()[0] & 0xffc0 == 0xfe80 {
                return Err(Refused::LinkLocal);
            }
        }
    }
    if tunnel_networks
        .iter()
        .any(|&(net, prefix)| prefix != 0 && in_network(ip, net, prefix))
    {
        return Err(Refused::InsideTunnel);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(endpoint: &str) -> Result<(), Refused> {
        let tunnel = [
            ("192.0.2.0".parse().unwrap(), 24),
            ("2001:db8:1::".parse().unwrap(), 64),
            ("0.0.0.0".parse().unwrap(), 0),
        ];
        check_endpoint(endpoint.parse().unwrap(), &tunnel)
    }

    #[test]
    fn public_endpoints_pass() {
        assert_eq!(check("198.51.100.7:51820"), Ok(()));
        assert_eq!(check("[2001:db8:2::7]:51820"), Ok(()));
        assert_eq!(check("[::ffff:198.51.100.7]:51820"), Ok(()));
    }

    #[test]
    fn nonsense_endpoints_are_refused() {
        assert_eq!(check("198.51.100.7:0"), Err(Refused::PortZero));
        assert_eq!(check("0.0.0.0:1"), Err(Refused::Unspecified));
        assert_eq!(check("[::]:1"), Err(Refused::Unspecified));
        assert_eq!(check("127.0.0.1:1"), Err(Refused::Loopback));
        assert_eq!(check("[::1]:1"), Err(Refused::Loopback));
        assert_eq!(check("[::ffff:127.0.0.1]:1"), Err(Refused::Loopback));
        assert_eq!(check("224.0.0.1:1"), Err(Refused::Multicast));
        assert_eq!(check("[ff02::1]:1"), Err(Refused::Multicast));
        assert_eq!(check("255.255.255.255:1"), Err(Refused::Broadcast));
        assert_eq!(check("169.254.1.1:1"), Err(Refused::LinkLocal));
        assert_eq!(check("[fe80::1]:1"), Err(Refused::LinkLocal));
        assert_eq!(check("192.0.2.9:1"), Err(Refused::InsideTunnel));
        assert_eq!(check("[2001:db8:1::9]:1"), Err(Refused::InsideTunnel));
    }

    proptest! {
        #[test]
        fn never_panics(ip in any::<IpAddr>(), port in any::<u16>(), net in any::<IpAddr>(), prefix in any::<u8>()) {
            let _ = check_endpoint(SocketAddr::new(ip, port), &[(net, prefix)]);
        }
    }
}
