//! The host's own addresses that a peer may reach the WireGuard port at: the candidates the
//! client registers with the server.
//!
//! Every IPv4 and IPv6 address of an interface that is up counts, except loopback, link-local and
//! other unusable addresses, the WireGuard interface's own, and those of interfaces that only lead
//! into this host's containers or into tunnels (docker bridges, container veths, other
//! WireGuard/TUN/TAP devices, point-to-point links). `--allow-candidates` and
//! `--deny-candidates` narrow the list further. [`read`] asks the OS; [`CandidateFilter`] is the
//! pure part that decides.

use std::io;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;
use nix::net::if_::InterfaceFlags;
use nix::sys::socket::SockaddrStorage;
use wgpunch_common::agent::local::{is_unusable, Family, LocalAddr, Prefix};

/// Name prefixes of interfaces that lead into containers, VMs or tunnels on this host. A peer
/// elsewhere cannot reach the WireGuard port through them.
const VIRTUAL_PREFIXES: &[&str] = &[
    "docker",
    "br-",
    "veth",
    "virbr",
    "vnet",
    "cni",
    "flannel",
    "cali",
    "vxlan",
    "podman",
    "lxc",
    "lxd",
    "wg",
    "tun",
    "tap",
    "tailscale",
    "zt",
    "nebula",
    "ham",
];

/// One address of one interface, as the OS lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// The interface's name.
    pub interface: String,
    /// The interface is up.
    pub up: bool,
    /// The interface is a loopback or point-to-point (tunnel) device.
    pub loopback_or_tunnel: bool,
    /// The address and its prefix length.
    pub addr: LocalAddr,
}

/// Which of the host's addresses are registered as candidates.
#[derive(Debug, Clone, Default)]
pub struct CandidateFilter {
    /// The WireGuard interface, whose own addresses are never candidates.
    pub wireguard: String,
    /// Only addresses inside one of these prefixes (all, when empty).
    pub allow: Vec<Prefix>,
    /// Never addresses inside one of these.
    pub deny: Vec<Prefix>,
    /// The address families paths may use.
    pub family: Family,
}

impl CandidateFilter {
    /// True when `addr` is a candidate.
    pub fn keeps(&self, addr: &IfAddr) -> bool {
        let ip = addr.addr.ip;
        addr.up
            && !addr.loopback_or_tunnel
            && addr.interface != self.wireguard
            && !is_virtual(&addr.interface)
            && !is_unusable(ip)
            && self.family.allows(ip)
            && (self.allow.is_empty() || self.allow.iter().any(|p| p.contains(ip)))
            && !self.deny.iter().any(|p| p.contains(ip))
    }

    /// The candidates among `addrs`, sorted, without repeats.
    pub fn select(&self, addrs: &[IfAddr]) -> Vec<LocalAddr> {
        let mut kept: Vec<LocalAddr> = addrs
            .iter()
            .filter(|a| self.keeps(a))
            .map(|a| a.addr)
            .collect();
        kept.sort();
        kept.dedup();
        kept
    }
}

/// True for the name of an interface that leads into containers, VMs or tunnels.
fn is_virtual(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Every IPv4 and IPv6 address of the host's interfaces (`getifaddrs`).
pub fn read() -> io::Result<Vec<IfAddr>> {
    let list = getifaddrs().map_err(io::Error::from)?;
    let mut addrs = Vec::new();
    for entry in list {
        let Some(ip) = entry.address.as_ref().and_then(ip_of) else {
            continue;
        };
        let prefix = entry.netmask.as_ref().and_then(ip_of).map_or(
            if ip.is_ipv4() { 32 } else { 128 },
            |mask| match mask {
                IpAddr::V4(m) => u32::from(m).count_ones() as u8,
                IpAddr::V6(m) => u128::from(m).count_ones() as u8,
            },
        );
        addrs.push(IfAddr {
            up: entry.flags.contains(InterfaceFlags::IFF_UP),
            loopback_or_tunnel: entry
                .flags
                .intersects(InterfaceFlags::IFF_LOOPBACK | InterfaceFlags::IFF_POINTOPOINT),
            interface: entry.interface_name,
            addr: LocalAddr::new(ip, prefix),
        });
    }
    Ok(addrs)
}

/// The IP address in a socket address of either family.
fn ip_of(addr: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        Some(IpAddr::V4(v4.ip()))
    } else {
        addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(interface: &str, ip: &str, prefix: u8) -> IfAddr {
        IfAddr {
            interface: interface.to_owned(),
            up: true,
            loopback_or_tunnel: false,
            addr: LocalAddr::new(ip.parse().unwrap(), prefix),
        }
    }

    fn filter() -> CandidateFilter {
        CandidateFilter {
            wireguard: "wg0".to_owned(),
            ..CandidateFilter::default()
        }
    }

    fn ips(kept: &[LocalAddr]) -> Vec<String> {
        kept.iter().map(|a| a.ip.to_string()).collect()
    }

    #[test]
    fn lan_and_global_addresses_of_both_families_are_candidates() {
        let host = [
            addr("eth0", "192.168.1.20", 24),
            addr("eth0", "2001:db8:1::20", 64),
            addr("wlan0", "10.0.0.5", 8),
            addr("eth0", "fd00::5", 64),
        ];
        assert_eq!(
            ips(&filter().select(&host)),
            ["10.0.0.5", "192.168.1.20", "2001:db8:1::20", "fd00::5"]
        );
    }

    #[test]
    fn loopback_link_local_tunnels_and_containers_are_left_out() {
        let mut lo = addr("lo", "127.0.0.1", 8);
        lo.loopback_or_tunnel = true;
        let mut ppp = addr("ppp0", "198.51.100.7", 32);
        ppp.loopback_or_tunnel = true;
        let mut down = addr("eth1", "192.168.9.1", 24);
        down.up = false;
        let host = [
            lo,
            ppp,
            down,
            addr("eth0", "fe80::1", 64),
            addr("eth0", "169.254.3.4", 16),
            addr("wg0", "10.77.0.1", 24),
            addr("wg1", "10.78.0.1", 24),
            addr("docker0", "172.17.0.1", 16),
            addr("br-3f2a", "172.18.0.1", 16),
            addr("veth12ab", "172.19.0.1", 16),
            addr("virbr0", "192.168.122.1", 24),
            addr("tun0", "10.8.0.2", 24),
            addr("tailscale0", "100.101.102.103", 32),
            addr("eth0", "192.0.2.10", 24),
        ];
        assert_eq!(ips(&filter().select(&host)), ["192.0.2.10"]);
    }

    #[test]
    fn allowed_and_denied_prefixes_narrow_the_list() {
        let host = [
            addr("eth0", "192.168.1.20", 24),
            addr("eth1", "10.1.2.3", 16),
            addr("eth0", "2001:db8::20", 64),
        ];
        let mut f = filter();
        f.allow = vec![
            "192.168.0.0/16".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
        assert_eq!(ips(&f.select(&host)), ["192.168.1.20", "2001:db8::20"]);
        f.deny = vec!["2001:db8::/48".parse().unwrap()];
        assert_eq!(ips(&f.select(&host)), ["192.168.1.20"]);
        let mut f = filter();
        f.deny = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert!(f.select(&host).is_empty(), "deny everything: no candidates");
    }

    #[test]
    fn the_family_option_leaves_out_the_other_family() {
        let host = [
            addr("eth0", "192.168.1.20", 24),
            addr("eth0", "2001:db8::20", 64),
        ];
        let mut f = filter();
        f.family = Family::V4;
        assert_eq!(ips(&f.select(&host)), ["192.168.1.20"]);
        f.family = Family::V6;
        assert_eq!(ips(&f.select(&host)), ["2001:db8::20"]);
    }

    #[test]
    fn the_hosts_own_addresses_can_be_read() {
        let addrs = read().expect("getifaddrs works");
        assert!(
            addrs.iter().any(|a| a.addr.ip.is_loopback()),
            "every host has a loopback address: {addrs:?}"
        );
    }
}
