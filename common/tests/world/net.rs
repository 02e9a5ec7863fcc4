//! What travels on the simulated internet, and how the links treat it.

use std::net::SocketAddr;
use std::time::Duration;

use super::wireguard::Message;

/// The IP TTL of ordinary packets.
pub const DEFAULT_TTL: u8 = 64;

/// What a packet carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A datagram of the discovery protocol (to or from the server).
    Discovery(Vec<u8>),
    /// A WireGuard message.
    WireGuard(Message),
    /// An empty punch.
    Punch,
}

/// A UDP packet with its IP TTL.
#[derive(Debug, Clone)]
pub struct Packet {
    /// Source address (rewritten by NATs).
    pub src: SocketAddr,
    /// Destination address (rewritten by NATs on the way in).
    pub dst: SocketAddr,
    /// Hops left.
    pub ttl: u8,
    /// The content.
    pub payload: Payload,
}

impl Packet {
    /// A short description for the trace.
    pub fn describe(&self) -> String {
        let what = match &self.payload {
            Payload::Discovery(d) => format!("discovery({} B)", d.len()),
            Payload::WireGuard(m) => format!("wg {:?}", m.kind),
            Payload::Punch => "punch".to_owned(),
        };
        format!("{} -> {} ttl {} {}", self.src, self.dst, self.ttl, what)
    }
}

/// How the internet mistreats packets.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Per cent of packets lost in the core.
    pub loss: u64,
    /// Reordering: every packet is delayed by up to this much more, at random.
    pub jitter: Duration,
}

/// Latency between a host and its NAT.
pub const LAN_DELAY: Duration = Duration::from_millis(1);
/// Latency between the core and the server.
pub const SERVER_DELAY: Duration = Duration::from_millis(5);
