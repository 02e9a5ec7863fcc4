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
//! What the [`NatKind`]s do, as measured on Linux 6.x (see `NatRouter::mapping`):
//! - A source NAT reuses the mapping of an existing conntrack entry with the same source
//!   address and port for every new destination (endpoint-independent mapping), for as long as
//!   such an entry exists. Without one, `masquerade` keeps the source port when it is free, and
//!   `snat to IP:LO-HI` picks a *random* port of the range: the mapping of a source port is not a
//!   function of the port, and a conntrack flush gives it a new one.
//! - The conntrack trap: an inbound packet that matches no entry and is not dropped creates an
//!   entry (remote -> NAT's public ip:port) when it is accepted for the router itself. Its reply
//!   tuple is exactly what the LAN host's own flow to that remote would need, so that flow gets
//!   another public port. A NAT without filtering ([`NatKind::Masquerade`], [`NatKind::EimRemap`])
//!   falls into it when the peer's packets arrive before the host's own went out; a stateful
//!   firewall ([`NatKind::Firewall`]) drops such packets before their entry is confirmed, so it
//!   never does.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};

use crate::cmd::Cmd;
use crate::netns::Netns;
use crate::wg::{random_listen_port, WgInterface};
use crate::wgpunch::{client_cmd, Server, SERVER_PORT};

/// The discovery server's address: the first site on the internet.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

/// The public port range of an [`NatKind::EimRemap`] router.
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
}

impl NatKind {
    /// All kinds, in declaration order.
    pub const ALL: [NatKind; 4] = [
        NatKind::Masquerade,
        NatKind::EimRemap,
        NatKind::Firewall,
        NatKind::Symmetric,
    ];

    /// Whether one source port keeps one public address for every destination.
    pub fn is_endpoint_independent(self) -> bool {
        self != NatKind::Symmetric
    }

    /// A few words for messages: `"port-preserving masquerade"`.
    pub fn describe(self) -> &'static str {
        match self {
            NatKind::Masquerade => "port-preserving masquerade",
            NatKind::EimRemap => "endpoint-independent NAT to another port",
            NatKind::Firewall => "masquerade with a stateful firewall",
            NatKind::Symmetric => "symmetric NAT (a random port per destination)",
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
        NatKind::EimRemap => format!(
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
    if kind == NatKind::Firewall {
        rules.push_str("table inet wgpe_filter {\n");
        for chain in ["input", "forward"] {
            rules.push_str(&format!(
                "    chain {chain} {{\n        \
                     type filter hook {chain} priority filter; policy accept;\n        \
                     ct state established,related accept\n        \
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

/// NAT LAN `r`: (router's address, host's address), both /26.
fn lan_link(r: u8) -> (Ipv4Addr, Ipv4Addr) {
    (
        Ipv4Addr::new(203, 0, 113, 64 * r + 1),
        Ipv4Addr::new(203, 0, 113, 64 * r + 2),
    )
}

/// The "internet": a router namespace with one point-to-point link per attached site.
#[derive(Debug)]
pub struct Internet {
    router: Netns,
    next_site: AtomicU8,
    next_lan: AtomicU8,
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
        })
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
        Ok(addr)
    }

    /// A host (namespace `label`) attached directly, no NAT.
    pub fn public_host(&self, label: &str) -> Result<Host> {
        let ns = Netns::new(label)?;
        let ip = self.attach(&ns, HOST_IF)?;
        Ok(Host { ns, ip, nat: None })
    }

    /// A NAT router of `kind` (namespace `<label>-nat`) with one host (namespace `label`) on
    /// its LAN.
    pub fn nat_host(&self, label: &str, kind: NatKind) -> Result<Host> {
        let r = self.next_lan.fetch_add(1, Ordering::Relaxed);
        ensure!(
            r < MAX_LANS,
            "an internet holds at most {MAX_LANS} NAT LANs"
        );
        let router = Netns::new(&format!("{label}-nat"))?;
        let wan_ip = self.attach(&router, WAN_IF)?;
        router.sysctl("net.ipv4.ip_forward", "1")?;
        let nat = NatRouter {
            ns: router,
            kind,
            wan_ip,
            range: Mutex::new(SNAT_RANGE),
        };
        nat.load_rules()?;

        let ns = Netns::new(label)?;
        let (gateway, ip) = lan_link(r);
        nat.ns.veth(LAN_IF, &ns, HOST_IF)?;
        nat.ns.addr_add(LAN_IF, &format!("{gateway}/26"))?;
        ns.addr_add(HOST_IF, &format!("{ip}/26"))?;
        ns.route_add("default", &gateway.to_string())?;
        Ok(Host {
            ns,
            ip,
            nat: Some(nat),
        })
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
    wan_ip: Ipv4Addr,
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

    /// Its public (WAN) address.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.wan_ip
    }

    /// The public UDP port range of an [`NatKind::EimRemap`] router.
    pub fn port_range(&self) -> RangeInclusive<u16> {
        self.range.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves an [`NatKind::EimRemap`] router to another public port range. Existing conntrack
    /// entries keep their mappings until [`NatRouter::flush_conntrack`].
    pub fn set_port_range(&self, range: RangeInclusive<u16>) -> Result<()> {
        ensure!(
            self.kind == NatKind::EimRemap,
            "only an EimRemap NAT has a port range; {} is {:?}",
            self.ns.name(),
            self.kind
        );
        *self.range.lock().unwrap_or_else(|e| e.into_inner()) = range;
        self.load_rules()
    }

    fn load_rules(&self) -> Result<()> {
        self.ns
            .nft(&nat_ruleset(self.kind, self.wan_ip, &self.port_range()))
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
        flows.retain(|f| *f.dst.ip() == self.wan_ip);
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

/// One UDP conntrack entry (`conntrack -L` line): the original and the reply tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// Original source (for an outbound flow: the LAN host).
    pub src: SocketAddrV4,
    /// Original destination.
    pub dst: SocketAddrV4,
    /// Reply source (the original destination, unless DNAT).
    pub reply_src: SocketAddrV4,
    /// Reply destination: where the source appears to be from outside.
    pub reply_dst: SocketAddrV4,
    /// No packet came back yet.
    pub unreplied: bool,
    /// Seen both ways often enough to be kept longer.
    pub assured: bool,
    /// Seconds until it expires.
    pub timeout_secs: u32,
}

impl Flow {
    /// The public address the flow's source appears as (the reply's destination).
    pub fn public_source(&self) -> SocketAddrV4 {
        self.reply_dst
    }

    /// Whether the NAT rewrote the source.
    pub fn is_translated(&self) -> bool {
        self.reply_dst != self.src
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.src, self.dst)?;
        if self.is_translated() {
            write!(f, " appears as {}", self.reply_dst)?;
        }
        if self.unreplied {
            f.write_str(" [unreplied]")?;
        }
        if self.assured {
            f.write_str(" [assured]")?;
        }
        Ok(())
    }
}

/// Parses `conntrack -L -p udp` output (IPv4).
pub fn parse_conntrack(text: &str) -> Result<Vec<Flow>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| parse_flow(line).with_context(|| format!("conntrack line {line:?}")))
        .collect()
}

fn parse_flow(line: &str) -> Result<Flow> {
    let mut tokens = line.split_whitespace();
    let proto = tokens.next().unwrap_or_default();
    ensure!(proto == "udp", "not a UDP entry");
    let _number = tokens.next();
    let timeout_secs = tokens
        .next()
        .ok_or_else(|| anyhow!("no timeout"))?
        .parse()
        .context("timeout")?;
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    let (mut unreplied, mut assured) = (false, false);
    for token in tokens {
        match token.split_once('=') {
            Some(("src" | "dst", v)) => ips.push(v.parse::<Ipv4Addr>().context("address")?),
            Some(("sport" | "dport", v)) => ports.push(v.parse::<u16>().context("port")?),
            Some(_) => {}
            None if token == "[UNREPLIED]" => unreplied = true,
            None if token == "[ASSURED]" => assured = true,
            None => {}
        }
    }
    let [src, dst, reply_src, reply_dst] = ips[..] else {
        bail!("expected 4 addresses, found {}", ips.len());
    };
    let [sport, dport, reply_sport, reply_dport] = ports[..] else {
        bail!("expected 4 ports, found {}", ports.len());
    };
    Ok(Flow {
        src: SocketAddrV4::new(src, sport),
        dst: SocketAddrV4::new(dst, dport),
        reply_src: SocketAddrV4::new(reply_src, reply_sport),
        reply_dst: SocketAddrV4::new(reply_dst, reply_dport),
        unreplied,
        assured,
        timeout_secs,
    })
}

/// A host namespace with one address, on the internet or behind a [`NatRouter`].
#[derive(Debug)]
pub struct Host {
    ns: Netns,
    ip: Ipv4Addr,
    nat: Option<NatRouter>,
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

    /// The NAT router in front of it, if any.
    pub fn nat(&self) -> Option<&NatRouter> {
        self.nat.as_ref()
    }

    /// Its public address: its own, or its NAT's.
    pub fn public_ip(&self) -> Ipv4Addr {
        self.nat.as_ref().map_or(self.ip, |n| n.public_ip())
    }

    /// Where its UDP `port` appears from outside towards `to`: itself for a public host, else the
    /// NAT's conntrack mapping for that flow (`None` when the NAT has no such flow).
    pub fn public_endpoint(&self, port: u16, to: SocketAddrV4) -> Result<Option<SocketAddrV4>> {
        let from = SocketAddrV4::new(self.ip, port);
        match &self.nat {
            None => Ok(Some(from)),
            Some(nat) => Ok(nat.flow(from, to)?.map(|f| f.public_source())),
        }
    }

    /// `203.0.113.2 behind NAT 198.51.100.10` or `198.51.100.26, public`.
    pub fn describe(&self) -> String {
        match &self.nat {
            None => format!("{}, public", self.ip),
            Some(nat) => format!("{} behind NAT {}", self.ip, nat.public_ip()),
        }
    }
}

/// A host running a `wireguard-go` interface: one WireGuard peer of a test.
#[derive(Debug)]
pub struct Peer {
    name: String,
    host: Host,
    wg: WgInterface,
    tunnel_ip: Ipv4Addr,
}

impl Peer {
    /// Starts `wireguard-go` on `host` with `tunnel_ip`/24 and a random listen port outside
    /// [`SNAT_RANGE`] and [`REMAP_RANGE`] (so a remapped port always differs from it).
    pub fn start(name: &str, host: Host, tunnel_ip: Ipv4Addr) -> Result<Self> {
        let port = loop {
            let port = random_listen_port();
            if !SNAT_RANGE.contains(&port) && !REMAP_RANGE.contains(&port) {
                break port;
            }
        };
        let wg = WgInterface::start(&host.ns, &format!("{tunnel_ip}/24"), Some(port))?;
        Ok(Self {
            name: name.to_owned(),
            host,
            wg,
            tunnel_ip,
        })
    }

    /// Its name (`"a"`, `"alice"`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host it runs on.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The host's namespace.
    pub fn netns(&self) -> &Netns {
        &self.host.ns
    }

    /// Its WireGuard interface.
    pub fn wg(&self) -> &WgInterface {
        &self.wg
    }

    /// Its WireGuard public key.
    pub fn public_key(&self) -> &str {
        self.wg.public_key()
    }

    /// Its address inside the tunnel.
    pub fn tunnel_ip(&self) -> Ipv4Addr {
        self.tunnel_ip
    }

    /// Its WireGuard socket as the host sees it: host address and listen port.
    pub fn local_endpoint(&self) -> SocketAddrV4 {
        SocketAddrV4::new(self.host.ip, self.wg.listen_port())
    }

    /// Where its WireGuard port appears from outside towards `to` (see
    /// [`Host::public_endpoint`]).
    pub fn public_endpoint(&self, to: SocketAddrV4) -> Result<Option<SocketAddrV4>> {
        self.host.public_endpoint(self.wg.listen_port(), to)
    }

    /// Adds `other` as a WireGuard peer: its public key and tunnel address, no endpoint.
    pub fn add_peer(&self, other: &Peer) -> Result<()> {
        self.wg
            .add_peer(other.public_key(), &[&format!("{}/32", other.tunnel_ip)])
    }

    /// Its WireGuard endpoint for `other` (IPv4), `None` while unset.
    pub fn endpoint_of(&self, other: &Peer) -> Result<Option<SocketAddrV4>> {
        match self.wg.endpoint(other.public_key())? {
            None => Ok(None),
            Some(SocketAddr::V4(v4)) => Ok(Some(v4)),
            Some(v6) => bail!("{} has an IPv6 endpoint {v6} for {}", self.name, other.name),
        }
    }

    /// `wgpunch-client OPTIONS... IFACE SERVER PUBKEY` on this peer's host.
    pub fn client_cmd(&self, options: &[&str], server: &Server) -> Result<Cmd> {
        let addr = *server
            .listen()
            .first()
            .ok_or_else(|| anyhow!("the server listens nowhere"))?;
        client_cmd(
            &self.host.ns,
            options,
            self.wg.name(),
            addr,
            server.public_key(),
        )
    }

    /// One ping (`-c 1 -W 1`) to `other`'s tunnel address; whether it was answered.
    pub fn ping_once(&self, other: &Peer) -> Result<bool> {
        let out = self
            .host
            .ns
            .cmd("ping")?
            .args(["-n", "-c", "1", "-W", "1", &other.tunnel_ip.to_string()])
            .timeout(Duration::from_secs(5))
            .run()?;
        Ok(out.status.success())
    }

    /// Pings `other` through the tunnel until it answers (see [`Netns::ping_until`]).
    pub fn ping_until(&self, other: &Peer, timeout: Duration) -> Result<Duration> {
        self.host
            .ns
            .ping_until(&other.tunnel_ip.to_string(), timeout)
            .with_context(|| format!("ping {} -> {} through the tunnel", self.name, other.name))
    }

    /// `alice (203.0.113.2 behind NAT 198.51.100.10)`.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.host.describe())
    }
}

/// What one peer's WireGuard endpoint for the other is, checked against the other's NAT.
#[derive(Debug, Clone)]
pub struct EndpointCheck {
    /// The peer whose `wg show` was read.
    pub viewer: String,
    /// The peer it points at.
    pub peer: String,
    /// The endpoint `viewer` has for `peer`.
    pub endpoint: SocketAddrV4,
    /// `peer`'s NAT flow from its WireGuard port towards `viewer`'s public endpoint (`None` for a
    /// public peer).
    pub flow: Option<Flow>,
    /// Where `peer`'s WireGuard port appears towards the discovery server.
    pub towards_server: Option<SocketAddrV4>,
}

impl fmt::Display for EndpointCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} has {} at {}", self.viewer, self.peer, self.endpoint)?;
        match &self.flow {
            Some(flow) => write!(f, " (NAT flow {flow})"),
            None => f.write_str(" (public, no NAT)"),
        }
    }
}

/// The discovery server's address.
pub fn server_addr() -> SocketAddr {
    SocketAddr::V4(server_addr_v4())
}

fn server_addr_v4() -> SocketAddrV4 {
    SocketAddrV4::new(SERVER_IP, SERVER_PORT)
}

/// An internet with the discovery server's namespace and two WireGuard peers that list each
/// other (tunnel 192.0.2.1 and 192.0.2.2, no endpoints).
#[derive(Debug)]
pub struct NatWorld {
    // Field order is drop order: peers (and their processes) before the namespaces they use.
    a: Peer,
    b: Peer,
    server_ns: Netns,
    internet: Internet,
}

impl NatWorld {
    /// Peers `a` at `a_site` and `b` at `b_site`.
    pub fn build(a_site: Site, b_site: Site) -> Result<Self> {
        Self::build_named(("a", a_site), ("b", b_site))
    }

    /// Peers with the given names (also their namespace labels) and sites.
    pub fn build_named(a: (&str, Site), b: (&str, Site)) -> Result<Self> {
        let internet = Internet::new()?;
        let server_ns = Netns::new("server")?;
        let server_ip = internet.attach(&server_ns, HOST_IF)?;
        ensure!(
            server_ip == SERVER_IP,
            "the server is the first site, {SERVER_IP}"
        );
        let a = Peer::start(a.0, internet.host(a.0, a.1)?, Ipv4Addr::new(192, 0, 2, 1))?;
        let b = Peer::start(b.0, internet.host(b.0, b.1)?, Ipv4Addr::new(192, 0, 2, 2))?;
        a.add_peer(&b)?;
        b.add_peer(&a)?;
        Ok(Self {
            a,
            b,
            server_ns,
            internet,
        })
    }

    /// Starts `wgpunch-server --listen 198.51.100.2:51818` (as `nobody`).
    pub fn start_server(&self) -> Result<Server> {
        Server::start(&self.server_ns, &[server_addr()])
    }

    /// The first peer.
    pub fn a(&self) -> &Peer {
        &self.a
    }

    /// The second peer.
    pub fn b(&self) -> &Peer {
        &self.b
    }

    /// The internet router.
    pub fn internet(&self) -> &Internet {
        &self.internet
    }

    /// The discovery server's namespace.
    pub fn server_netns(&self) -> &Netns {
        &self.server_ns
    }

    /// Checks that `viewer`'s endpoint for `peer` is what `peer`'s NAT really uses: the public
    /// source of `peer`'s flow from its WireGuard port towards `viewer`'s public endpoint (the
    /// one `peer` has for `viewer`). For an endpoint-independent NAT it must also be the mapping
    /// the discovery server saw.
    pub fn check_endpoint(&self, viewer: &Peer, peer: &Peer) -> Result<EndpointCheck> {
        let endpoint = viewer
            .endpoint_of(peer)?
            .ok_or_else(|| anyhow!("{} has no endpoint for {}", viewer.name, peer.name))?;
        let viewer_public = peer
            .endpoint_of(viewer)?
            .ok_or_else(|| anyhow!("{} has no endpoint for {}", peer.name, viewer.name))?;
        let towards_server = peer.public_endpoint(server_addr_v4())?;
        let flow = match peer.host.nat() {
            None => None,
            Some(nat) => Some(nat.flow(peer.local_endpoint(), viewer_public)?.ok_or_else(
                || {
                    anyhow!(
                        "{}'s NAT has no flow from {} to {viewer_public} ({}'s endpoint for {})",
                        peer.name,
                        peer.local_endpoint(),
                        peer.name,
                        viewer.name
                    )
                },
            )?),
        };
        let real = flow
            .as_ref()
            .map_or(peer.local_endpoint(), |f| f.public_source());
        ensure!(
            endpoint == real,
            "{} has {} at {endpoint}, but {}'s WireGuard port appears as {real} towards \
             {viewer_public}",
            viewer.name,
            peer.name,
            peer.name
        );
        if let Some(nat) = peer.host.nat() {
            if nat.kind().is_endpoint_independent() {
                ensure!(
                    towards_server == Some(real),
                    "{}'s NAT ({}) maps its WireGuard port to {real} towards {} but to \
                     {towards_server:?} towards the server (conntrack trap?)",
                    peer.name,
                    nat.kind(),
                    viewer.name
                );
            }
        }
        Ok(EndpointCheck {
            viewer: viewer.name.clone(),
            peer: peer.name.clone(),
            endpoint,
            flow,
            towards_server,
        })
    }

    /// [`NatWorld::check_endpoint`] both ways: a's view of b, then b's view of a.
    pub fn check_endpoints(&self) -> Result<[EndpointCheck; 2]> {
        Ok([
            self.check_endpoint(&self.a, &self.b)?,
            self.check_endpoint(&self.b, &self.a)?,
        ])
    }

    /// One ping each way through the tunnel; whether both were answered.
    pub fn ping_once_both_ways(&self) -> Result<bool> {
        Ok(self.a.ping_once(&self.b)? && self.b.ping_once(&self.a)?)
    }

    /// `wg show` of both peers, the NAT rulesets and conntrack tables, for failure messages.
    pub fn diagnostics(&self) -> String {
        let mut text = String::from("network state:");
        for peer in [&self.a, &self.b] {
            text.push_str(&format!(
                "\n{}: WireGuard {} listens on {}",
                peer.describe(),
                peer.wg.name(),
                peer.local_endpoint()
            ));
            match peer.wg.show(None) {
                Ok(show) => text.push_str(&format!("\n  wg show:\n{}", indent(&show))),
                Err(e) => text.push_str(&format!("\n  wg show failed: {e:#}")),
            }
            if let Some(nat) = peer.host.nat() {
                text.push_str(&format!(
                    "\n  NAT {} ({}) conntrack:",
                    nat.public_ip(),
                    nat.kind
                ));
                match nat.udp_flows() {
                    Ok(flows) if flows.is_empty() => text.push_str(" (empty)"),
                    Ok(flows) => {
                        for flow in flows {
                            text.push_str(&format!("\n    {flow}"));
                        }
                    }
                    Err(e) => text.push_str(&format!(" failed: {e:#}")),
                }
            }
        }
        text
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_lines_parse_into_flows() {
        let text = "\
udp      17 29 src=203.0.113.2 dst=198.51.100.18 sport=51821 dport=51820 [UNREPLIED] src=198.51.100.18 dst=198.51.100.10 sport=51820 dport=40068 mark=0 use=1
udp      17 117 src=203.0.113.66 dst=198.51.100.2 sport=23456 dport=51818 src=198.51.100.2 dst=198.51.100.18 sport=51818 dport=23456 [ASSURED] mark=0 use=1
";
        let flows = parse_conntrack(text).unwrap();
        assert_eq!(flows.len(), 2);
        assert_eq!(flows[0].src, "203.0.113.2:51821".parse().unwrap());
        assert_eq!(flows[0].dst, "198.51.100.18:51820".parse().unwrap());
        assert_eq!(
            flows[0].public_source(),
            "198.51.100.10:40068".parse().unwrap()
        );
        assert!(flows[0].unreplied && !flows[0].assured);
        assert_eq!(flows[0].timeout_secs, 29);
        assert!(flows[1].assured && !flows[1].unreplied);
        assert_eq!(
            flows[1].to_string(),
            "203.0.113.66:23456 -> 198.51.100.2:51818 appears as 198.51.100.18:23456 [assured]"
        );
        assert!(parse_conntrack("").unwrap().is_empty());
    }

    #[test]
    fn malformed_conntrack_lines_are_errors() {
        assert!(parse_conntrack("tcp 6 10 src=1.2.3.4").is_err());
        assert!(parse_conntrack("udp 17 29 src=203.0.113.2 dst=198.51.100.18 sport=1").is_err());
        assert!(parse_conntrack("udp 17 soon src=203.0.113.2").is_err());
    }

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
        assert!(NatKind::ALL
            .iter()
            .all(|k| k.is_endpoint_independent() != (*k == NatKind::Symmetric)));
    }
}
