//! Address classes: which addresses are private to a site, global, or never usable as a
//! candidate, and networks as the command line names them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::wire::endpoint::canonical_ip;

/// A network, as `--allow-candidates` and `--deny-candidates` take it (`10.0.0.0/8`,
/// `2001:db8::/32`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefix {
    /// Any address inside the network.
    pub network: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl Prefix {
    /// True when `ip` lies inside the network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (canonical_ip(ip), canonical_ip(self.network)) {
            (IpAddr::V4(ip), IpAddr::V4(net)) if self.len <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            (IpAddr::V6(ip), IpAddr::V6(net)) if self.len <= 128 => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(ip) & mask == u128::from(net) & mask
            }
            _ => false,
        }
    }
}

/// Why a prefix was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    /// The address part is not an IP address.
    #[error("{0:?} is not an IP address (expected e.g. 192.168.0.0/16 or 2001:db8::/32)")]
    Address(String),
    /// The length is not a number within the family's width.
    #[error("{0:?} is not a prefix length from 0 to 32 (IPv4) or 128 (IPv6)")]
    Length(String),
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = match s.split_once('/') {
            Some((addr, len)) => (addr, Some(len)),
            None => (s, None),
        };
        let network = canonical_ip(
            addr.trim()
                .parse::<IpAddr>()
                .map_err(|_| PrefixError::Address(addr.to_owned()))?,
        );
        let max = if network.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(len) => len
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| PrefixError::Length(len.to_owned()))?,
        };
        Ok(Self { network, len })
    }
}

/// True for addresses that are only meaningful inside one site: RFC 1918, the shared address
/// space of carrier-grade NAT (100.64.0.0/10) and IPv6 unique local addresses (fc00::/7).
pub fn is_private(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.is_private() || is_shared_v4(v4),
        IpAddr::V6(v6) => is_unique_local(v6),
    }
}

/// True for a global unicast IPv6 address (2000::/3), which a peer can reach through stateful
/// firewalls without NAT.
pub fn is_global_v6(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => v6.segments()[0] & 0xe000 == 0x2000,
        IpAddr::V4(_) => false,
    }
}

/// True for addresses a candidate may never have: unspecified, loopback, link-local, multicast,
/// broadcast and 0.0.0.0/8.
pub fn is_unusable(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => {
            v4.octets()[0] == 0
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || v6.segments()[0] & 0xffc0 == 0xfe80
        }
    }
}

fn is_shared_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    a == 100 && b & 0xc0 == 64
}

fn is_unique_local(v6: Ipv6Addr) -> bool {
    v6.segments()[0] & 0xfe00 == 0xfc00
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn prefixes_parse_with_and_without_a_length() {
        let p: Prefix = "10.1.0.0/16".parse().unwrap();
        assert!(p.contains(ip("10.1.200.3")));
        assert!(!p.contains(ip("10.2.0.1")));
        let host: Prefix = "2001:db8::7".parse().unwrap();
        assert_eq!(host.len, 128);
        assert!(host.contains(ip("2001:db8::7")));
        let all: Prefix = "::/0".parse().unwrap();
        assert!(all.contains(ip("2001:db8::1")));
        assert!(!all.contains(ip("10.0.0.1")), "families never mix");
        assert!(matches!(
            "10.0.0.0/33".parse::<Prefix>(),
            Err(PrefixError::Length(_))
        ));
        assert!(matches!(
            "ten/8".parse::<Prefix>(),
            Err(PrefixError::Address(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Prefix>(),
            Err(PrefixError::Length(_))
        ));
    }

    #[test]
    fn address_classes() {
        assert!(is_private(ip("10.0.0.1")));
        assert!(is_private(ip("100.64.3.4")));
        assert!(!is_private(ip("100.128.0.1")));
        assert!(is_private(ip("fd00::1")));
        assert!(!is_private(ip("2001:db8::1")));
        assert!(is_global_v6(ip("2001:db8::1")));
        assert!(!is_global_v6(ip("fd00::1")));
        assert!(!is_global_v6(ip("198.51.100.1")));
        for bad in [
            "0.1.2.3",
            "127.0.0.1",
            "169.254.1.1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_unusable(ip(bad)), "{bad}");
        }
        for bad in ["::", "::1", "fe80::1", "ff02::1"] {
            assert!(is_unusable(ip(bad)), "{bad}");
        }
        assert!(!is_unusable(ip("192.168.0.1")));
        assert!(!is_unusable(ip("2001:db8::1")));
    }
}
