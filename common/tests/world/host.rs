//! A WireGuard host: the real [`Agent`] driven the way `client/src/run.rs` drives it, and the
//! WireGuard model its actions are applied to.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::agent::discovery::Discovery;
use wgpunch_common::agent::{Action, Agent, AgentConfig, Outcome};
use wgpunch_common::client::{Client, ClientConfig};
use wgpunch_common::keys::{PrivateKey, PublicKey};

use super::net::{Packet, Payload, DEFAULT_TTL};
use super::wireguard::WireGuard;

/// The WireGuard port of every host.
pub const WG_PORT: u16 = 51820;

/// One WireGuard host and its client.
pub struct Host {
    /// A short name for the trace.
    pub name: String,
    /// Its WireGuard public key.
    pub key: PublicKey,
    /// Its own address: LAN address (or public address) and the WireGuard port.
    pub local: SocketAddr,
    /// The WireGuard model.
    pub wg: WireGuard,
    /// The client while it runs.
    pub agent: Option<Agent>,
    /// When the client must be woken up next.
    pub wake: Option<Instant>,
    /// How the client ended, in one-shot mode.
    pub outcome: Option<(Outcome, Instant)>,
    /// Everything the client asked for, for the trace.
    pub actions: Vec<(Instant, Action)>,
}

impl Host {
    /// A host with key `private` at `local`, with `peers`, whose client is not started yet.
    pub fn new(name: &str, private: &PrivateKey, local: SocketAddr, peers: &[PublicKey]) -> Self {
        let key = private.public_key();
        Self {
            name: name.to_owned(),
            key,
            local,
            wg: WireGuard::new(key, peers),
            agent: None,
            wake: None,
            outcome: None,
            actions: Vec::new(),
        }
    }

    /// Starts the client (native protocol) at `now`.
    pub fn start(
        &mut self,
        private: PrivateKey,
        server: PublicKey,
        config: AgentConfig,
        seed: [u8; 32],
        now: Instant,
        wall: SystemTime,
    ) {
        let peers = self.wg.peers.iter().map(|p| p.key).collect();
        let client = Client::new(
            private,
            server,
            peers,
            vec![self.local],
            ClientConfig::default(),
            seed,
        );
        let discovery = Discovery::Native(Box::new(client));
        self.agent = Some(Agent::new(
            config,
            discovery,
            self.local,
            self.wg.snapshot(),
            now,
            wall,
        ));
        self.wake = Some(now);
    }

    /// A datagram from the server arrived.
    pub fn receive_discovery(&mut self, now: Instant, wall: SystemTime, datagram: &[u8]) {
        if let Some(agent) = &mut self.agent {
            agent.handle_datagram(now, wall, datagram);
            self.wake = Some(now);
        }
    }

    /// One turn of the client's IO loop: the timeout, every action, every datagram for the
    /// server, then the next wake-up. Returns the packets to send.
    pub fn step(&mut self, now: Instant, wall: SystemTime, server: SocketAddr) -> Vec<Packet> {
        let mut out = Vec::new();
        let Some(agent) = &mut self.agent else {
            self.wake = None;
            return out;
        };
        agent.handle_timeout(now);
        let mut exited = false;
        while let Some(action) = agent.poll_action() {
            self.actions.push((now, action.clone()));
            match action {
                Action::Punch { endpoint, ttl, .. } => out.push(Packet {
                    src: self.local,
                    dst: endpoint,
                    ttl,
                    payload: Payload::Punch,
                }),
                Action::SetEndpoint {
                    peer,
                    endpoint,
                    keepalive,
                } => {
                    if let Some(p) = self.wg.peer_mut(&peer) {
                        p.endpoint = Some(endpoint);
                        p.keepalive = Some(keepalive);
                    }
                }
                Action::SetKeepalive { peer, keepalive } => {
                    if let Some(p) = self.wg.peer_mut(&peer) {
                        p.keepalive = Some(keepalive);
                    }
                }
                Action::Park { peer, endpoint, .. } => {
                    if let Some(p) = self.wg.peer_mut(&peer) {
                        p.endpoint = Some(endpoint);
                    }
                }
                Action::ReadInterface => agent.handle_interface(self.wg.snapshot(), now, wall),
                Action::Probe { .. } => {}
                Action::Notice(_) => {}
                Action::Exit(outcome) => {
                    self.outcome = Some((outcome, now));
                    exited = true;
                    break;
                }
            }
        }
        if exited {
            // The binary returns at once: nothing more is sent.
            self.agent = None;
            self.wake = None;
            return out;
        }
        while let Some(datagram) = agent.poll_transmit(now, wall) {
            out.push(Packet {
                src: self.local,
                dst: server,
                ttl: DEFAULT_TTL,
                payload: Payload::Discovery(datagram),
            });
        }
        let wake = agent.poll_timeout().unwrap_or(now + Duration::from_secs(1));
        self.wake = Some(wake.max(now + Duration::from_millis(1)));
        out
    }
}
