//! The host's own addresses, which the client registers as candidates where its peers may reach
//! its WireGuard port, and the address families it may use.

use std::net::IpAddr;

pub use crate::addr::{is_global_v6, is_private, is_unusable, Prefix, PrefixError};
use crate::wire::endpoint::canonical_ip;

/// Which address family paths to peers may use (`--family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// IPv6 when both peers have a working global IPv6 address, else IPv4.
    #[default]
    Auto,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

impl Family {
    /// True when a path to `ip` may be used.
    pub fn allows(self, ip: IpAddr) -> bool {
        matches!(
            (self, canonical_ip(ip)),
            (Family::Auto, _) | (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// One address of one of the host's interfaces, with its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalAddr {
    /// The address.
    pub ip: IpAddr,
    /// The length of the on-link prefix, at most 32 (IPv4) or 128 (IPv6).
    pub prefix: u8,
}

impl LocalAddr {
    /// An address with its prefix length; the length is capped at the family's width.
    pub fn new(ip: IpAddr, prefix: u8) -> Self {
        let ip = canonical_ip(ip);
        let max = if ip.is_ipv4() { 32 } else { 128 };
        Self {
            ip,
            prefix: prefix.min(max),
        }
    }

    /// True when `ip` lies in this address's on-link network.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        Prefix {
            network: self.ip,
            len: self.prefix,
        }
        .contains(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn on_link_uses_the_prefix_length() {
        let a = LocalAddr::new(ip("192.168.1.20"), 24);
        assert!(a.on_link(ip("192.168.1.30")));
        assert!(!a.on_link(ip("192.168.2.30")));
        assert_eq!(LocalAddr::new(ip("10.0.0.1"), 200).prefix, 32);
        let mapped = LocalAddr::new(ip("::ffff:10.0.0.1"), 8);
        assert_eq!(mapped.ip, ip("10.0.0.1"));
    }

    #[test]
    fn family_filters_paths() {
        assert!(Family::Auto.allows(ip("10.0.0.1")));
        assert!(Family::V4.allows(ip("::ffff:10.0.0.1")));
        assert!(!Family::V4.allows(ip("2001:db8::1")));
        assert!(Family::V6.allows(ip("2001:db8::1")));
        assert!(!Family::V6.allows(ip("10.0.0.1")));
    }
}
