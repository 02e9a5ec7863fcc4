//! The simplest topology: a server's namespace and two WireGuard peers on one switch, no NAT.
//!
//! The peers list each other (tunnel addresses 192.0.2.1 and 192.0.2.2) without endpoints; the
//! client under test has to set them.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::netns::{Netns, Switch};
use crate::wg::WgInterface;
use crate::wgpunch::SERVER_PORT;

/// The server namespace's address on the switch.
pub const LAN_SERVER_IP: &str = "198.51.100.1";
/// Peer a's address on the switch.
pub const LAN_A_IP: &str = "198.51.100.2";
/// Peer b's address on the switch.
pub const LAN_B_IP: &str = "198.51.100.3";

/// The switch, the server's namespace (nothing running in it yet) and the two WireGuard peers.
pub struct Lan {
    _switch: Switch,
    /// The server's namespace, at [`LAN_SERVER_IP`].
    pub server: Netns,
    /// Peer a's namespace, at [`LAN_A_IP`].
    pub a: Netns,
    /// Peer b's namespace, at [`LAN_B_IP`].
    pub b: Netns,
    /// a's WireGuard interface, 192.0.2.1/24, with b as a peer.
    pub wg_a: WgInterface,
    /// b's WireGuard interface, 192.0.2.2/24, with a as a peer.
    pub wg_b: WgInterface,
}

impl Lan {
    /// Builds the switch, the three namespaces and the two WireGuard peers.
    pub fn build() -> Result<Self> {
        Self::build_with(WgInterface::start)
    }

    /// Like [`Lan::build`], with a's interface started by `start_a` (for example
    /// [`WgInterface::start_as_nobody`]) instead of [`WgInterface::start`].
    pub fn build_with(
        start_a: fn(&Netns, &str, Option<u16>) -> Result<WgInterface>,
    ) -> Result<Self> {
        let switch = Switch::new("sw")?;
        let server = Netns::new("server")?;
        let a = Netns::new("a")?;
        let b = Netns::new("b")?;
        switch.attach(&server, "eth0", &[&format!("{LAN_SERVER_IP}/24")])?;
        switch.attach(&a, "eth0", &[&format!("{LAN_A_IP}/24")])?;
        switch.attach(&b, "eth0", &[&format!("{LAN_B_IP}/24")])?;
        let wg_a = start_a(&a, "192.0.2.1/24", None)?;
        let wg_b = WgInterface::start(&b, "192.0.2.2/24", None)?;
        wg_a.add_peer(wg_b.public_key(), &["192.0.2.2/32"])?;
        wg_b.add_peer(wg_a.public_key(), &["192.0.2.1/32"])?;
        Ok(Self {
            _switch: switch,
            server,
            a,
            b,
            wg_a,
            wg_b,
        })
    }

    /// Where the tests' server listens: [`LAN_SERVER_IP`], port [`SERVER_PORT`].
    pub fn server_addr() -> SocketAddr {
        SocketAddr::new(
            LAN_SERVER_IP
                .parse()
                .unwrap_or_else(|_| unreachable!("a valid IPv4 literal")),
            SERVER_PORT,
        )
    }

    /// Where a's WireGuard sends from on the switch: its address and listen port.
    pub fn a_endpoint(&self) -> Result<SocketAddr> {
        Ok(format!("{LAN_A_IP}:{}", self.wg_a.listen_port()).parse()?)
    }

    /// Where b's WireGuard sends from on the switch: its address and listen port.
    pub fn b_endpoint(&self) -> Result<SocketAddr> {
        Ok(format!("{LAN_B_IP}:{}", self.wg_b.listen_port()).parse()?)
    }

    /// Fails unless each peer has the other at its switch address and listen port, with
    /// persistent keepalive `keepalive`.
    pub fn ensure_endpoints(&self, keepalive: u16) -> Result<()> {
        let sides = [
            (&self.wg_a, &self.wg_b, self.b_endpoint()?),
            (&self.wg_b, &self.wg_a, self.a_endpoint()?),
        ];
        for (wg, peer, expected) in sides {
            let endpoint = wg.endpoint(peer.public_key())?;
            ensure!(
                endpoint == Some(expected),
                "{}'s endpoint for its peer is {endpoint:?}, expected {expected}",
                wg.name()
            );
            let found = wg
                .persistent_keepalives()?
                .remove(peer.public_key())
                .with_context(|| format!("{} has no peer {}", wg.name(), peer.public_key()))?;
            ensure!(
                found == Some(keepalive),
                "{}'s keepalive for its peer is {found:?}, expected {keepalive}",
                wg.name()
            );
        }
        Ok(())
    }

    /// Pings b from a through the tunnel, within `timeout`.
    pub fn ping_a_to_b(&self, timeout: Duration) -> Result<()> {
        self.a
            .ping_until("192.0.2.2", timeout)
            .context("ping a -> b through the tunnel")?;
        Ok(())
    }

    /// Pings a from b through the tunnel, within `timeout`.
    pub fn ping_b_to_a(&self, timeout: Duration) -> Result<()> {
        self.b
            .ping_until("192.0.2.1", timeout)
            .context("ping b -> a through the tunnel")?;
        Ok(())
    }
}
