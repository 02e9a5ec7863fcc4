//! Two WireGuard peers and the discovery server's namespace on an [`Internet`], and the checks
//! that each peer's endpoint for the other is the address the other's NAT really uses.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};

use super::{Flow, Host, Internet, NatKind, Site, HOST_IF, REMAP_RANGE, SERVER_IP, SNAT_RANGE};
use crate::cmd::Cmd;
use crate::netns::Netns;
use crate::ping::RunningPing;
use crate::wg::{random_listen_port, WgInterface};
use crate::wgpunch::{client_cmd, Server, SERVER_PORT};

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
        Self::start_on_port(name, host, tunnel_ip, port)
    }

    /// Like [`Peer::start`], listening on `port` (several hosts behind one NAT may all use
    /// 51820).
    pub fn start_on_port(name: &str, host: Host, tunnel_ip: Ipv4Addr, port: u16) -> Result<Self> {
        let wg = WgInterface::start(&host.ns, &format!("{tunnel_ip}/24"), Some(port))?;
        Ok(Self {
            name: name.to_owned(),
            host,
            wg,
            tunnel_ip,
        })
    }

    /// Moves its host to a new NAT LAN (see [`Internet::move_host`]).
    pub fn move_to(
        &mut self,
        internet: &Internet,
        router: &str,
        kind: NatKind,
        ifname: &str,
    ) -> Result<()> {
        internet.move_host(&mut self.host, router, kind, ifname)
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

    /// Starts a [`RunningPing`] from this peer to `other`'s tunnel address.
    pub fn running_ping(&self, other: &Peer) -> Result<RunningPing> {
        RunningPing::start(&self.host.ns, other.tunnel_ip)
            .with_context(|| format!("starting a running ping {} -> {}", self.name, other.name))
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
