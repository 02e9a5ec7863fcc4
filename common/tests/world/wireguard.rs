//! A model of a WireGuard interface, as far as NAT traversal sees it: per peer an endpoint, a
//! keepalive, a session, the last handshake and byte counters.
//!
//! With an endpoint and no session it sends a handshake initiation, again every 5 s; an
//! initiation from a known key gets a response and both sides have a session. Every
//! authenticated packet moves the peer's endpoint to its source (roaming). With a session,
//! persistent keepalive sends a keepalive when nothing was sent for that long, and the session is
//! renewed after 120 s and dropped at 180 s like WireGuard's rekey timers. A "ping" application
//! sends a data packet every 200 ms. An endpoint on loopback (parked) sends nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::agent::snapshot::{InterfaceSnapshot, PeerSnapshot};
use wgpunch_common::keys::PublicKey;

/// WireGuard's retry interval for handshake initiations.
const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// A session older than this is renewed when something is sent.
const REKEY_AFTER: Duration = Duration::from_secs(120);
/// A session older than this is dead.
const REJECT_AFTER: Duration = Duration::from_secs(180);
/// How often the ping application sends.
pub const PING_EVERY: Duration = Duration::from_millis(200);

/// Sizes of WireGuard's messages on the wire, as counted in rx/tx bytes.
const INIT_LEN: u64 = 148;
const RESPONSE_LEN: u64 = 92;
const KEEPALIVE_LEN: u64 = 32;
const DATA_LEN: u64 = 128;

/// What kind of WireGuard message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Handshake initiation.
    Init,
    /// Handshake response.
    Response,
    /// Empty transport message.
    Keepalive,
    /// A ping through the tunnel.
    Data,
}

/// A WireGuard message, authenticated as coming from `from` (the model trusts the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The sender's public key.
    pub from: PublicKey,
    /// What it is.
    pub kind: Kind,
}

impl Message {
    fn len(self) -> u64 {
        match self.kind {
            Kind::Init => INIT_LEN,
            Kind::Response => RESPONSE_LEN,
            Kind::Keepalive => KEEPALIVE_LEN,
            Kind::Data => DATA_LEN,
        }
    }
}

/// One peer of the modelled interface.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Its public key.
    pub key: PublicKey,
    /// Its endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Persistent keepalive in seconds.
    pub keepalive: Option<u16>,
    /// Last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// When that handshake was, in monotonic time.
    session_at: Option<Instant>,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    last_init: Option<Instant>,
    last_sent: Option<Instant>,
    /// Pings received from the peer, and when the last one came.
    pub pings_received: u64,
    /// When the last ping came in.
    pub last_ping: Option<Instant>,
}

impl Peer {
    /// True with a live session.
    pub fn has_session(&self) -> bool {
        self.session_at.is_some()
    }
}

/// The WireGuard interface of one host.
#[derive(Debug)]
pub struct WireGuard {
    /// Our public key.
    pub key: PublicKey,
    /// The peers.
    pub peers: Vec<Peer>,
    /// The ping application runs.
    pub pinging: bool,
    last_ping: Option<Instant>,
}

impl WireGuard {
    /// An interface with key `key` and these peers, none with an endpoint yet.
    pub fn new(key: PublicKey, peers: &[PublicKey]) -> Self {
        Self {
            key,
            peers: peers
                .iter()
                .map(|&key| Peer {
                    key,
                    endpoint: None,
                    keepalive: None,
                    last_handshake: None,
                    session_at: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    last_init: None,
                    last_sent: None,
                    pings_received: 0,
                    last_ping: None,
                })
                .collect(),
            pinging: false,
            last_ping: None,
        }
    }

    /// The peer with `key`.
    pub fn peer(&self, key: &PublicKey) -> Option<&Peer> {
        self.peers.iter().find(|p| p.key == *key)
    }

    /// The peer with `key`, to change.
    pub fn peer_mut(&mut self, key: &PublicKey) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.key == *key)
    }

    /// What `wg show` would say.
    pub fn snapshot(&self) -> InterfaceSnapshot {
        InterfaceSnapshot {
            peers: self
                .peers
                .iter()
                .map(|p| PeerSnapshot {
                    endpoint: p.endpoint,
                    keepalive: p.keepalive,
                    last_handshake: p.last_handshake,
                    rx_bytes: p.rx_bytes,
                    tx_bytes: p.tx_bytes,
                    ..PeerSnapshot::new(p.key)
                })
                .collect(),
        }
    }

    /// Lets time pass: retries, keepalives, rekeys and pings. Returns what to send where.
    pub fn tick(&mut self, now: Instant) -> Vec<(SocketAddr, Message)> {
        let ping = self.pinging && self.last_ping.is_none_or(|t| now - t >= PING_EVERY);
        if ping {
            self.last_ping = Some(now);
        }
        let me = self.key;
        let mut out = Vec::new();
        for peer in &mut self.peers {
            if peer.session_at.is_some_and(|t| now - t >= REJECT_AFTER) {
                peer.session_at = None;
            }
            let Some(endpoint) = peer.endpoint.filter(|e| !e.ip().is_loopback()) else {
                continue;
            };
            let retry_due = peer.last_init.is_none_or(|t| now - t >= REKEY_TIMEOUT);
            let mut send = |peer: &mut Peer, kind| {
                let message = Message { from: me, kind };
                peer.tx_bytes += message.len();
                if kind != Kind::Init {
                    peer.last_sent = Some(now);
                }
                out.push((endpoint, message));
            };
            match peer.session_at {
                None => {
                    if retry_due {
                        peer.last_init = Some(now);
                        send(peer, Kind::Init);
                    }
                }
                Some(at) => {
                    let keepalive_due = peer.keepalive.is_some_and(|k| {
                        k > 0
                            && peer
                                .last_sent
                                .is_none_or(|t| now - t >= Duration::from_secs(u64::from(k)))
                    });
                    if ping {
                        send(peer, Kind::Data);
                    } else if keepalive_due {
                        send(peer, Kind::Keepalive);
                    }
                    if (ping || keepalive_due) && now - at >= REKEY_AFTER && retry_due {
                        peer.last_init = Some(now);
                        send(peer, Kind::Init);
                    }
                }
            }
        }
        out
    }

    /// Receives `message` from `source`; returns the answer to send back, if any.
    pub fn receive(
        &mut self,
        now: Instant,
        wall: SystemTime,
        source: SocketAddr,
        message: Message,
    ) -> Option<(SocketAddr, Message)> {
        let me = self.key;
        let peer = self.peers.iter_mut().find(|p| p.key == message.from)?;
        if matches!(message.kind, Kind::Keepalive | Kind::Data) && peer.session_at.is_none() {
            return None;
        }
        peer.rx_bytes += message.len();
        peer.endpoint = Some(source);
        match message.kind {
            Kind::Init => {
                peer.session_at = Some(now);
                peer.last_handshake = Some(wall);
                let response = Message {
                    from: me,
                    kind: Kind::Response,
                };
                peer.tx_bytes += response.len();
                peer.last_sent = Some(now);
                Some((source, response))
            }
            Kind::Response => {
                peer.session_at = Some(now);
                peer.last_handshake = Some(wall);
                None
            }
            Kind::Keepalive => None,
            Kind::Data => {
                peer.pings_received += 1;
                peer.last_ping = Some(now);
                None
            }
        }
    }
}
