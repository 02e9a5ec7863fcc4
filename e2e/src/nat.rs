//! NATs between WireGuard peers: an "internet" router, NAT routers built with nftables, hosts
//! behind them, and the routers' connection tracking read back.
//!
//! ```text
//!   server 198.51.100.2 ── .0/29 ──┐
//!                                  │    internet router (.1, .9, .17, ...: an L3 hop)
//!   NAT a  198.51.100.10 ── .8/29 ─┤     NAT a ── 203.0.113.0/26 ── host a 203.0.113.2
//!   NAT b  198.51.100.18 ── .16/29 ┤     NAT b ── 203.0.113.64/26 ── host b 203.0.113.66
//!   public host 198.51.100.26 ─────┘
//! ```
//!
//! Every site has its own point-to-point link to the [`Internet`] router: site `k` gets
//! 198.51.100.(8k)/29, the router .8k+1, the site .8k+2. So any two NAT routers are a routing hop
//! apart: a packet sent with TTL 2 from a host behind one NAT passes its own NAT and dies at the
//! internet router, before it can reach (and leave state in) the other NAT. NAT router `r` has
//! the LAN 203.0.113.(64r)/26, itself .64r+1, its one host .64r+2. Nothing here routes anywhere
//! but inside the namespaces the test creates.
//!
//! What the [`NatKind`]s do, as measured on Linux 6.x (read them back with [`NatRouter::flow`]):
//! - A source NAT reuses the mapping of an existing conntrack entry with the same source
//!   address and port for every new destination (endpoint-independent mapping), for as long as
//!   such an entry exists. Without one, `masquerade` keeps the source port when it is free, and
//!   `snat to IP:LO-HI` picks a *random* port of the range: the mapping of a source port is not a
//!   function of the port, and a conntrack flush gives it a new one. A UDP entry lives 30 s
//!   after its last packet (120 s once it has seen traffic both ways for a while), so a mapping
//!   lasts only while some flow from that port keeps sending.
//! - The conntrack trap: an inbound packet that matches no entry and is not dropped creates an
//!   entry (remote -> NAT's public ip:port) when it is accepted for the router itself. Its reply
//!   tuple is exactly what the LAN host's own flow to that remote would need, so that flow gets
//!   another public port. A NAT without filtering ([`NatKind::Masquerade`], [`NatKind::EimRemap`])
//!   falls into it when the peer's packets arrive before the host's own went out; a stateful
//!   firewall ([`NatKind::Firewall`], [`NatKind::FirewallRemap`]) drops such packets before their
//!   entry is confirmed, so it never does.
//! - [`NatRouter::change_public_ip`] moves a router to another address of its link, as an ISP
//!   handing out a new address does: every mapping is gone, and the peers see the host from an
//!   address they have never heard of.

mod conntrack;
mod world;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::netns::Netns;

pub use conntrack::{parse_conntrack, Flow};
pub use world::{server_addr, EndpointCheck, NatWorld, Peer};

/// The discovery server's address: the first site on the internet.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The public port range of an [`NatKind::EimRemap`] or [`NatKind::FirewallRemap`] router.
pub const SNAT_RANGE: RangeInclusive<u16> = 40000..=40999;

/// A second range for [`NatRouter::set_port_range`], disjoint from [`SNAT_RANGE`].
pub const REMAP_RANGE: RangeInclusive<u16> = 41000..=41999;

/// A NAT router's interface towards the internet.
pub const WAN_IF: &str = "wan0";
/// A NAT router's interface towards its LAN.
pub const LAN_IF: &str = "lan0";
/// A host's only interface.
pub const HOST_IF: &str = "eth0";

/// Sites one [`Internet`] can hold: /29 links in a /24.
const MAX_SITES: u8 = 32;
/// NAT LANs one [`Internet`] can hold: /26 LANs in a /24.
const MAX_LANS: u8 = 4;

/// How a NAT router treats traffic between its LAN and the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NatKind {
    /// Port-preserving `masquerade`, no filtering: endpoint-independent mapping.
    Masquerade,
    /// `snat to WAN:40000-40999` for UDP: endpoint-independent mapping to another port.
    EimRemap,
    /// `masquerade` plus a stateful firewall dropping unsolicited packets from the WAN.
    Firewall,
    /// `masquerade fully-random`: a new random public port for every destination.
    Symmetric,
    /// `snat to WAN:40000-40999` for UDP (as [`NatKind::EimRemap`]) plus the stateful firewall
    /// of [`NatKind::Firewall`].
    FirewallRemap,
}

impl NatKind {
    /// All kinds, in declaration order.
    pub const ALL: [NatKind; 5] = [
        NatKind::Masquerade,
        NatKind::EimRemap,
        NatKind::Firewall,
        NatKind::Symmetric,
        NatKind::FirewallRemap,
    ];

    /// Whether one source port keeps one public address for every destination.
    pub fn is_endpoint_independent(self) -> bool {
        self != NatKind::Symmetric
    }

    /// Whether it maps UDP into a port range ([`NatRouter::set_port_range`] moves it).
    pub fn has_port_range(self) -> bool {
        matches!(self, NatKind::EimRemap | NatKind::FirewallRemap)
    }

    /// Whether a stateful firewall drops unsolicited packets from the WAN.
    pub fn filters_inbound(self) -> bool {
        matches!(self, NatKind::Firewall | NatKind::FirewallRemap)
    }

    /// A few words for messages: `"port-preserving masquerade"`.
    pub fn describe(self) -> &'static str {
        match self {
            NatKind::Masquerade => "port-preserving masquerade",
            NatKind::EimRemap => "endpoint-independent NAT to another port",
            NatKind::Firewall => "masquerade with a stateful firewall",
            NatKind::Symmetric => "symmetric NAT (a random port per destination)",
            NatKind::FirewallRemap => {
                "endpoint-independent NAT to another port with a stateful firewall"
            }
        }
    }
}

impl fmt::Display for NatKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// Where a host sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Site {
    /// Directly on the internet, no NAT.
    Public,
    /// Alone on the LAN of a NAT router of this kind.
    Behind(NatKind),
}

/// The nftables ruleset of a NAT router (loaded whole, replacing what was there).
pub fn nat_ruleset(kind: NatKind, wan_ip: Ipv4Addr, range: &RangeInclusive<u16>) -> String {
    let (lo, hi) = (range.start(), range.end());
    let nat = match kind {
        NatKind::Masquerade | NatKind::Firewall => format!("oifname \"{WAN_IF}\" masquerade"),
        NatKind::EimRemap | NatKind::FirewallRemap => format!(
            "oifname \"{WAN_IF}\" meta l4proto udp snat to {wan_ip}:{lo}-{hi}\n        \
             oifname \"{WAN_IF}\" snat to {wan_ip}"
        ),
        NatKind::Symmetric => format!("oifname \"{WAN_IF}\" masquerade fully-random"),
    };
    let mut rules = format!(
        "flush ruleset\n\
         table ip wgpe_nat {{\n    \
             chain postrouting {{\n        \
                 type nat hook postrouting priority srcnat; policy accept;\n        \
                 {nat}\n    \
             }}\n\
         }}\n"
    );
    if kind.filters_inbound() {
        rules.push_str("table inet wgpe_filter {\n");
        for chain in ["input", "forward"] {
            // IPv6 neighbour discovery must reach the router itself, or the internet router
            // cannot resolve its address and nothing is routed to its LAN (ARP is not IP).
            let discovery = if chain == "input" {
                "icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept\n        "
            } else {
                ""
            };
            rules.push_str(&format!(
                "    chain {chain} {{\n        \
                     type filter hook {chain} priority filter; policy accept;\n        \
                     ct state established,related accept\n        \
                     {discovery}\
                     iifname \"{WAN_IF}\" drop\n    \
                 }}\n"
            ));
        }
        rules.push_str("}\n");
    }
    rules
}

/// Site `k`'s link: (internet router's address, site's address), both /29.
fn site_link(k: u8) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(198, 51, 100, 8 * k + 1),
        Ipv4Addr::new(198, 51, 100, 8 * k + 2),
    )
}

/// For a site address `.8k+2` or `.8k+3`: (internet router's address `.8k+1`, the other one).
fn other_link_address(site: Ipv4Addr) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let [a, b, c, d] = site.octets();
    let base = d & !7;
    let other = match d & 7 {
        2 => base + 3,
        3 => base + 2,
        _ => anyhow::bail!("{site} is not a site address (.8k+2 or .8k+3) of a /29 link"),
    };
    Ok((
        Ipv4Addr::new(a, b, c, base + 1),
        Ipv4Addr::new(a, b, c, other),
    ))
}

/// NAT LAN `r`: (router's address, host's address), both /26.
fn lan_link(r: u8) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(203, 0, 113, 64 * r + 1),
        Ipv4Addr::new(203, 0, 113, 64 * r + 2),
    )
}

/// Site `k`'s IPv6 link in a dual-stack internet: (router's address, site's address), /64.
fn site_link_v6(k: u8) -> (Ipv6Addr, Ipv6Addr) {
    let net = 0x2001_0db8_0000_0000_u128 << 64 | u128::from(k) << 64;
    (Ipv6Addr::from(net | 1), Ipv6Addr::from(net | 2))
}

/// NAT LAN `r`'s IPv6 /64 in a dual-stack internet (routed, not translated): the router's
/// address, and host `i`'s.
fn lan_link_v6(r: u8, i: u8) -> (Ipv6Addr, Ipv6Addr) {
    let net = 0x2001_0db8_0001_0000_u128 << 64 | u128::from(r) << 64;
    (
        Ipv6Addr::from(net | 1),
        Ipv6Addr::from(net | (2 + u128::from(i))),
    )
}

/// A NAT router and its LAN, while hosts are plugged in.
struct NatLan {
    nat: Arc<NatRouter>,
    /// Which of the internet's NAT LANs.
    r: u8,
    /// Bridge ports made so far.
    ports: AtomicU8,
}

/// The "internet": a router namespace with one point-to-point link per attached site.
#[derive(Debug)]
pub struct Internet {
    router: Netns,
    next_site: AtomicU8,
    next_lan: AtomicU8,
    /// Sites and LANs also get IPv6 addresses from 2001:db8::/32.
    dual_stack: bool,
}

impl Internet {
    /// Creates the router namespace, forwarding on, no sites yet.
    pub fn new() -> Result<Self> {
        let router = Netns::new("inet")?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        Ok(Self {
            router,
            next_site: AtomicU8::new(0),
            next_lan: AtomicU8::new(0),
            dual_stack: false,
        })
    }

    /// An internet where every site and NAT LAN also has IPv6: site `k` 2001:db8:0:k::2/64
    /// (the router ::1), NAT LAN `r` 2001:db8:1:r::/64, routed through its NAT router without
    /// translation (a [`NatKind`] with a stateful firewall filters it too, as home routers do).
    pub fn dual_stack() -> Result<Self> {
        let mut internet = Self::new()?;
        internet
            .router
            .sysctl("net.ipv6.conf.all.forwarding", "1")?;
        internet.dual_stack = true;
        Ok(internet)
    }

    /// Whether sites get IPv6 too.
    pub fn is_dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// The router's namespace.
    pub fn netns(&self) -> &Netns {
        &self.router
    }

    /// Links `ns` to the router as the next site (`ifname` on its side, `site<k>` on the
    /// router's), with a default route through the router. Returns the site's address.
    pub fn attach(&self, ns: &Netns, ifname: &str) -> Result<Ipv4Addr> {
        let k = self.next_site.fetch_add(1, Ordering::Relaxed);
        ensure!(k < MAX_SITES, "an internet holds at most {MAX_SITES} sites");
        let (gateway, addr) = site_link(k);
        let port = format!("site{k}");
        self.router
            .veth(&port, ns, ifname)
            .with_context(|| format!("linking {} to the internet", ns.name()))?;
        self.router.addr_add(&port, &format!("{gateway}/29"))?;
        ns.addr_add(ifname, &format!("{addr}/29"))?;
        ns.route_add("default", &gateway.to_string())?;
        if self.dual_stack {
            let (gateway, addr) = site_link_v6(k);
            self.router.addr_add(&port, &format!("{gateway}/64"))?;
            ns.addr_add(ifname, &format!("{addr}/64"))?;
            ns.route_add("default", &gateway.to_string())?;
        }
        Ok(addr)
    }

    /// The IPv6 address of the site whose IPv4 address is `site` (a dual-stack internet).
    fn site_v6(site: Ipv4Addr) -> Ipv6Addr {
        site_link_v6(site.octets()[3] / 8).1
    }

    /// The IPv6 address of the site [`Internet::attach`] gave `site`, in a dual-stack internet.
    pub fn site_ipv6(&self, site: Ipv4Addr) -> Option<Ipv6Addr> {
        self.dual_stack.then(|| Self::site_v6(site))
    }

    /// A host (namespace `label`) attached directly, no NAT.
    pub fn public_host(&self, label: &str) -> Result<Host> {
        let ns = Netns::new(label)?;
        let ip = self.attach(&ns, HOST_IF)?;
        let ipv6 = self.dual_stack.then(|| Self::site_v6(ip));
        Ok(Host {
            ns,
            ip,
            ipv6,
            nat: None,
        })
    }

    /// A NAT router of `kind` (namespace `<label>-nat`) with one host (namespace `label`) on
    /// its LAN.
    pub fn nat_host(&self, label: &str, kind: NatKind) -> Result<Host> {
        let mut hosts = self.shared_nat(&format!("{label}-nat"), kind, &[label])?;
        hosts
            .pop()
            .ok_or_else(|| anyhow::anyhow!("a NAT LAN without its host"))
    }

    /// A NAT router of `kind` (namespace `router`) whose LAN is a switch (the bridge
    /// [`LAN_IF`] in the router's namespace) with one host per label, at .2, .3, ... of the
    /// LAN's /26. The router does not hairpin: a host sending to the router's public address
    /// reaches the router, not the other host, as with most home routers.
    pub fn shared_nat(&self, router: &str, kind: NatKind, labels: &[&str]) -> Result<Vec<Host>> {
        ensure!(labels.len() <= 60, "a NAT LAN holds at most 60 hosts");
        let lan = self.nat_lan(router, kind)?;
        let mut hosts = Vec::with_capacity(labels.len());
        for (i, label) in (0u8..).zip(labels) {
            let ns = Netns::new(label)?;
            let (ip, ipv6) = self.plug(&lan, i, &ns, HOST_IF)?;
            hosts.push(Host {
                ns,
                ip,
                ipv6,
                nat: Some(Arc::clone(&lan.nat)),
            });
        }
        Ok(hosts)
    }

    /// Moves `host` to the LAN of a new NAT router of `kind` (namespace `router`), as a laptop
    /// leaves home for a café: its old link goes down and its old router away, and a new
    /// interface `ifname` comes up with an address and default route on the new LAN.
    pub fn move_host(
        &self,
        host: &mut Host,
        router: &str,
        kind: NatKind,
        ifname: &str,
    ) -> Result<()> {
        let lan = self.nat_lan(router, kind)?;
        let old_if = host
            .ns
            .run("ip", ["-o", "route", "show", "default"])?
            .stdout
            .split_whitespace()
            .skip_while(|w| *w != "dev")
            .nth(1)
            .map(str::to_owned)
            .unwrap_or_else(|| HOST_IF.to_owned());
        host.ns.ip(["link", "set", &old_if, "down"])?;
        let (ip, ipv6) = self.plug(&lan, 0, &host.ns, ifname)?;
        host.ip = ip;
        host.ipv6 = ipv6;
        host.nat = Some(lan.nat);
        Ok(())
    }

    /// A new NAT router of `kind` (namespace `router`) on the next free LAN, its bridge up.
    fn nat_lan(&self, router: &str, kind: NatKind) -> Result<NatLan> {
        let r = self.next_lan.fetch_add(1, Ordering::Relaxed);
        ensure!(
            r < MAX_LANS,
            "an internet holds at most {MAX_LANS} NAT LANs"
        );
        let router = Netns::new(router)?;
        let wan_ip = self.attach(&router, WAN_IF)?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        let nat = Arc::new(NatRouter {
            ns: router,
            kind,
            wan_ip: Mutex::new(wan_ip),
            range: Mutex::new(SNAT_RANGE),
        });
        nat.load_rules()?;
        let (gateway, _) = lan_link(r);
        nat.ns.ip(["link", "add", LAN_IF, "type", "bridge"])?;
        nat.ns.link_up(LAN_IF)?;
        nat.ns.addr_add(LAN_IF, &format!("{gateway}/26"))?;
        if self.dual_stack {
            nat.ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
            let (v6_gateway, _) = lan_link_v6(r, 0);
            nat.ns.addr_add(LAN_IF, &format!("{v6_gateway}/64"))?;
            self.router.route_add(
                &format!("{v6_gateway}/64"),
                &Self::site_v6(wan_ip).to_string(),
            )?;
        }
        Ok(NatLan {
            nat,
            r,
            ports: AtomicU8::new(0),
        })
    }

    /// Plugs `ns` into `lan` as host `i` through its interface `ifname`: address, default
    /// route, and in a dual-stack internet the same for IPv6.
    fn plug(
        &self,
        lan: &NatLan,
        i: u8,
        ns: &Netns,
        ifname: &str,
    ) -> Result<(Ipv4Addr, Option<Ipv6Addr>)> {
        let port = format!("{LAN_IF}p{}", lan.ports.fetch_add(1, Ordering::Relaxed));
        lan.nat.ns.veth(&port, ns, ifname)?;
        lan.nat.ns.ip(["link", "set", &port, "master", LAN_IF])?;
        let (gateway, _) = lan_link(lan.r);
        let ip = Ipv4Addr::from(u32::from(gateway) + 1 + u32::from(i));
        ns.addr_add(ifname, &format!("{ip}/26"))?;
        ns.route_add("default", &gateway.to_string())?;
        if !self.dual_stack {
            return Ok((ip, None));
        }
        let (v6_gateway, v6) = lan_link_v6(lan.r, i);
        ns.addr_add(ifname, &format!("{v6}/64"))?;
        ns.route_add("default", &v6_gateway.to_string())?;
        Ok((ip, Some(v6)))
    }

    /// A host at `site`.
    pub fn host(&self, label: &str, site: Site) -> Result<Host> {
        match site {
            Site::Public => self.public_host(label),
            Site::Behind(kind) => self.nat_host(label, kind),
        }
    }
}

/// A NAT router namespace: nftables NAT on [`WAN_IF`], one LAN on [`LAN_IF`].
#[derive(Debug)]
pub struct NatRouter {
    ns: Netns,
    kind: NatKind,
    wan_ip: Mutex<Ipv4Addr>,
    range: Mutex<RangeInclusive<u16>>,
}

impl NatRouter {
    /// What kind of NAT it is.
    pub fn kind(&self) -> NatKind {
        self.kind
    }

    /// Its namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its public (WAN) address (the current one, after [`NatRouter::change_public_ip`]).
    pub fn public_ip(&self) -> Ipv4Addr {
        *self.wan_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The public UDP port range of a router whose kind [`NatKind::has_port_range`].
    pub fn port_range(&self) -> RangeInclusive<u16> {
        self.range.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves an [`NatKind::EimRemap`] or [`NatKind::FirewallRemap`] router to another public
    /// port range. Existing conntrack entries keep their mappings until
    /// [`NatRouter::flush_conntrack`].
    pub fn set_port_range(&self, range: RangeInclusive<u16>) -> Result<()> {
        ensure!(
            self.kind.has_port_range(),
            "only an EimRemap or FirewallRemap NAT has a port range; {} is {:?}",
            self.ns.name(),
            self.kind
        );
        *self.range.lock().unwrap_or_else(|e| e.into_inner()) = range;
        self.load_rules()
    }

    /// Moves its WAN address to the other free address of its /29 link (.8k+3, and back to
    /// .8k+2 on the next call), as an ISP handing out a new address does: the default route is
    /// put back, the ruleset is reloaded with the new address, a ping to the internet router
    /// from the new address must be answered, and every conntrack entry is deleted. Returns the
    /// new address, which [`NatRouter::public_ip`] reports from now on.
    pub fn change_public_ip(&self) -> Result<Ipv4Addr> {
        let old = self.public_ip();
        let (gateway, new) = other_link_address(old)?;
        let name = self.ns.name().to_owned();
        // Deleting the link's only address takes the default route with it.
        self.ns
            .ip(["addr", "del", &format!("{old}/29"), "dev", WAN_IF])
            .with_context(|| format!("removing {old} from NAT {name}"))?;
        self.ns.addr_add(WAN_IF, &format!("{new}/29"))?;
        self.ns
            .ip([
                "-4",
                "route",
                "replace",
                "default",
                "via",
                &gateway.to_string(),
            ])
            .with_context(|| format!("restoring the default route of NAT {name}"))?;
        *self.wan_ip.lock().unwrap_or_else(|e| e.into_inner()) = new;
        self.load_rules()?;
        let out = self
            .ns
            .cmd("ping")?
            .args(["-n", "-c", "1", "-W", "2", "-I", &new.to_string()])
            .arg(gateway.to_string())
            .timeout(Duration::from_secs(5))
            .run()?;
        ensure!(
            out.status.success(),
            "NAT {name} cannot reach the internet router {gateway} from its new address {new}: \
             {out}"
        );
        self.flush_conntrack()?;
        Ok(new)
    }

    fn load_rules(&self) -> Result<()> {
        self.ns.nft(&nat_ruleset(
            self.kind,
            self.public_ip(),
            &self.port_range(),
        ))
    }

    /// `nft list ruleset`, for messages.
    pub fn ruleset(&self) -> Result<String> {
        Ok(self.ns.run("nft", ["list", "ruleset"])?.stdout)
    }

    /// Every UDP flow in its connection tracking table.
    pub fn udp_flows(&self) -> Result<Vec<Flow>> {
        let out = self
            .ns
            .run("conntrack", ["-L", "-p", "udp"])
            .with_context(|| format!("reading conntrack of NAT {}", self.ns.name()))?;
        parse_conntrack(&out.stdout)
    }

    /// The flows whose original source is `from` (a LAN address and port).
    pub fn flows_from(&self, from: SocketAddrV4) -> Result<Vec<Flow>> {
        let mut flows = self.udp_flows()?;
        flows.retain(|f| f.src == from);
        Ok(flows)
    }

    /// The flow from `from` (a LAN address and port) to `to`, if there is one. Its
    /// [`Flow::public_source`] is the public address the NAT really uses for `from` towards `to`.
    pub fn flow(&self, from: SocketAddrV4, to: SocketAddrV4) -> Result<Option<Flow>> {
        Ok(self
            .udp_flows()?
            .into_iter()
            .find(|f| f.src == from && f.dst == to))
    }

    /// The flows that came in unsolicited from the internet to the router's own address: the
    /// entries of the conntrack trap (see the module docs).
    pub fn inbound_flows(&self) -> Result<Vec<Flow>> {
        let mut flows = self.udp_flows()?;
        let wan_ip = self.public_ip();
        flows.retain(|f| *f.dst.ip() == wan_ip);
        Ok(flows)
    }

    /// Deletes every conntrack entry, so every flow gets a new mapping on its next packet.
    pub fn flush_conntrack(&self) -> Result<()> {
        self.ns
            .run("conntrack", ["-F"])
            .with_context(|| format!("flushing conntrack of NAT {}", self.ns.name()))?;
        Ok(())
    }
}

/// A host namespace with one address, on the internet or behind a [`NatRouter`].
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    ip: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    nat: Option<Arc<NatRouter>>,
}

impl Host {
    /// Its namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its own address (a LAN address behind NAT).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Its global IPv6 address, in a dual-stack internet.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// The NAT router in front of it, if any (shared by every host on its LAN).
    pub fn nat(&self) -> Option<&NatRouter> {
        self.nat.as_deref()
    }

    /// Its public address: its own, or its NAT's.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.nat.as_ref().map_or(self.ip, |n| n.public_ip())
    }

    /// Where its UDP `port` appears from outside towards `to`: itself for a public host, else the
    /// NAT's conntrack mapping for that flow (`None` when the NAT has no such flow).
    pub fn public_endpoint(&self, port: u16, to: SocketAddrV4) -> Result<Option<SocketAddrV4>> {
        let from = SocketAddrV4::new(self.ip, port);
        match self.nat() {
            None => Ok(Some(from)),
            Some(nat) => Ok(nat.flow(from, to)?.map(|f| f.public_source())),
        }
    }

    /// `203.0.113.2 behind NAT 198.51.100.10` or `198.51.100.26, public`.
    pub fn describe(&self) -> String {
        match self.nat() {
            None => format!("{}, public", self.ip),
            Some(nat) => format!("{} behind NAT {}", self.ip, nat.public_ip()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan_gives_each_site_its_own_link_and_lan() {
        assert_eq!(
            site_link(0),
            (Ipv4Addr::new(198, 51, 100, 1), SERVER_IP),
            "the first site is the server"
        );
        assert_eq!(site_link(1).1, Ipv4Addr::new(198, 51, 100, 10));
        assert_eq!(site_link(MAX_SITES - 1).1, Ipv4Addr::new(198, 51, 100, 250));
        assert_eq!(
            lan_link(0),
            (Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2))
        );
        assert_eq!(lan_link(MAX_LANS - 1).1, Ipv4Addr::new(203, 0, 113, 194));
    }

    #[test]
    fn ipv6_sites_and_lans_have_their_own_networks() {
        assert_eq!(
            site_link_v6(0).1,
            "2001:db8::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            site_link_v6(3).0,
            "2001:db8:0:3::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(Internet::site_v6(site_link(5).1), site_link_v6(5).1);
        assert_eq!(
            lan_link_v6(1, 0).0,
            "2001:db8:1:1::1".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            lan_link_v6(1, 2).1,
            "2001:db8:1:1::4".parse::<Ipv6Addr>().unwrap()
        );
    }

    #[test]
    fn a_new_public_ip_is_the_other_free_address_of_the_link() {
        let site = site_link(2).1;
        let (gateway, moved) = other_link_address(site).unwrap();
        assert_eq!(gateway, site_link(2).0);
        assert_eq!(moved, Ipv4Addr::new(198, 51, 100, 19));
        assert_eq!(other_link_address(moved).unwrap(), (gateway, site));
        assert!(other_link_address(gateway).is_err());
        assert!(other_link_address(Ipv4Addr::new(198, 51, 100, 20)).is_err());
    }

    #[test]
    fn rulesets_match_their_kind() {
        let wan = Ipv4Addr::new(198, 51, 100, 10);
        let masq = nat_ruleset(NatKind::Masquerade, wan, &SNAT_RANGE);
        assert!(masq.starts_with("flush ruleset\n"));
        assert!(masq.contains("oifname \"wan0\" masquerade\n"), "{masq}");
        assert!(!masq.contains("drop"), "{masq}");
        let remap = nat_ruleset(NatKind::EimRemap, wan, &REMAP_RANGE);
        assert!(
            remap.contains("udp snat to 198.51.100.10:41000-41999"),
            "{remap}"
        );
        let fw = nat_ruleset(NatKind::Firewall, wan, &SNAT_RANGE);
        assert!(
            fw.contains("hook input") && fw.contains("hook forward"),
            "{fw}"
        );
        assert_eq!(fw.matches("iifname \"wan0\" drop").count(), 2, "{fw}");
        let sym = nat_ruleset(NatKind::Symmetric, wan, &SNAT_RANGE);
        assert!(sym.contains("masquerade fully-random"), "{sym}");
        let fw_remap = nat_ruleset(NatKind::FirewallRemap, wan, &REMAP_RANGE);
        assert!(
            fw_remap.contains("udp snat to 198.51.100.10:41000-41999"),
            "{fw_remap}"
        );
        assert_eq!(
            fw_remap.matches("iifname \"wan0\" drop").count(),
            2,
            "{fw_remap}"
        );
        for kind in NatKind::ALL {
            let rules = nat_ruleset(kind, wan, &SNAT_RANGE);
            assert_eq!(rules.contains("drop"), kind.filters_inbound(), "{kind:?}");
            assert_eq!(rules.contains("snat to"), kind.has_port_range(), "{kind:?}");
        }
        assert!(NatKind::ALL
            .iter()
            .all(|k| k.is_endpoint_independent() != (*k == NatKind::Symmetric)));
    }
}
