//! What the agent knows of the WireGuard interface: a snapshot the IO layer reads and hands in.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use crate::keys::PublicKey;

/// A peer whose latest handshake is younger than this has a working path; it is left alone.
/// WireGuard rekeys every 120 s while traffic flows, and keepalives keep traffic flowing.
pub const FRESH_HANDSHAKE: Duration = Duration::from_secs(180);

/// One peer of the interface as the agent needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    /// Its public key.
    pub key: PublicKey,
    /// Its configured (or roamed-to) endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its persistent keepalive, `None` when off.
    pub keepalive: Option<u16>,
    /// When it last completed a handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from it so far.
    pub rx_bytes: u64,
    /// Bytes sent to it so far.
    pub tx_bytes: u64,
    /// The networks routed to it through the tunnel.
    pub allowed_ips: Vec<(IpAddr, u8)>,
}

impl PeerSnapshot {
    /// A peer with only its key: no endpoint, no handshake, nothing sent or received.
    pub fn new(key: PublicKey) -> Self {
        Self {
            key,
            endpoint: None,
            keepalive: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            allowed_ips: Vec::new(),
        }
    }

    /// True when the peer completed a handshake less than [`FRESH_HANDSHAKE`] before `wall`. A
    /// handshake in the future (a clock stepped back) counts as just now.
    pub fn has_fresh_handshake(&self, wall: SystemTime) -> bool {
        self.last_handshake
            .map(|t| wall.duration_since(t).unwrap_or(Duration::ZERO))
            .is_some_and(|age| age < FRESH_HANDSHAKE)
    }
}

/// The interface as read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InterfaceSnapshot {
    /// Its peers.
    pub peers: Vec<PeerSnapshot>,
}

impl InterfaceSnapshot {
    /// The peer with `key`, if the interface has it.
    pub fn peer(&self, key: &PublicKey) -> Option<&PeerSnapshot> {
        self.peers.iter().find(|p| p.key == *key)
    }

    /// The public keys of its peers, in the interface's order.
    pub fn keys(&self) -> Vec<PublicKey> {
        self.peers.iter().map(|p| p.key).collect()
    }

    /// Every network routed through the tunnel, for the endpoint sanity check.
    pub fn tunnel_networks(&self) -> Vec<(IpAddr, u8)> {
        self.peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_is_fresh_for_180_s_and_one_from_the_future_counts_as_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut peer = PeerSnapshot::new(PublicKey([1; 32]));
        assert!(!peer.has_fresh_handshake(now));
        peer.last_handshake = Some(now - Duration::from_secs(179));
        assert!(peer.has_fresh_handshake(now));
        peer.last_handshake = Some(now - FRESH_HANDSHAKE);
        assert!(!peer.has_fresh_handshake(now));
        peer.last_handshake = Some(now + Duration::from_secs(60));
        assert!(peer.has_fresh_handshake(now));
    }
}
