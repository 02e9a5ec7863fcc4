//! The unit tests' world: a server with natpunch-go compatibility on a simulated clock, legacy
//! clients built from the codec, and native clients.

use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use crate::client::{Client, ClientConfig, Event};
use crate::handshake::unix_nanos;
use crate::keys::PrivateKey;
use crate::legacy::packet::{parse_from_server, FromServer};
use crate::legacy::{Initiation, LegacySession, LookupRequest};
use crate::server::{Server, ServerConfig};

use super::{LegacyConfig, LegacyConsent};

const WALL: u64 = 1_800_000_000;

pub(in crate::server) fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

pub(in crate::server) fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

pub(in crate::server) struct World {
    pub(in crate::server) server: Server,
    pub(in crate::server) now: Instant,
    pub(in crate::server) wall: SystemTime,
}

impl World {
    pub(in crate::server) fn new(consent: LegacyConsent, allowed: Option<&[u8]>) -> Self {
        Self::with(ServerConfig {
            natpunch_go: Some(LegacyConfig {
                consent,
                ..LegacyConfig::default()
            }),
            allowed_keys: allowed.map(|a| a.iter().map(|&n| key(n).public_key()).collect()),
            ..ServerConfig::default()
        })
    }

    pub(in crate::server) fn with(config: ServerConfig) -> Self {
        Self {
            server: Server::new(key(100), config, [9; 32]),
            now: Instant::now(),
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(WALL),
        }
    }

    pub(in crate::server) fn send(&mut self, from: &str, datagram: &[u8]) -> Option<Vec<u8>> {
        let reply = self
            .server
            .handle(self.now, self.wall, addr(from), datagram);
        if let Some(r) = &reply {
            assert!(r.len() <= datagram.len(), "amplified");
        }
        reply
    }

    pub(in crate::server) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.wall += by;
    }

    pub(in crate::server) fn nanos(&self) -> u64 {
        unix_nanos(self.wall)
    }
}

/// A legacy client built from the codec (the golden tests check the codec independently).
pub(in crate::server) struct Legacy {
    key: PrivateKey,
    pub(in crate::server) session: Option<LegacySession>,
}

impl Legacy {
    pub(in crate::server) fn new(n: u8) -> Self {
        Self {
            key: key(n),
            session: None,
        }
    }

    pub(in crate::server) fn initiation(
        &self,
        world: &World,
        index: u32,
        timestamp: u64,
    ) -> (Initiation, Vec<u8>) {
        Initiation::start(
            &self.key,
            &world.server.public_key(),
            index,
            timestamp,
            [index as u8; 32],
        )
        .unwrap()
    }

    pub(in crate::server) fn connect(&mut self, world: &mut World, from: &str) -> bool {
        let timestamp = world.nanos();
        let (pending, init) = self.initiation(world, 7, timestamp);
        let Some(response) = world.send(from, &init) else {
            return false;
        };
        let Ok(FromServer::HandshakeResponse(response)) = parse_from_server(&response) else {
            panic!("not a response")
        };
        self.session = Some(pending.complete(&response).unwrap());
        true
    }

    pub(in crate::server) fn lookup_datagram(&mut self, target: u8) -> Vec<u8> {
        let request = LookupRequest {
            client: self.key.public_key(),
            target: key(target).public_key(),
        };
        self.session
            .as_mut()
            .unwrap()
            .seal_lookup(&request)
            .unwrap()
    }

    /// Looks `target` up; `None` when the server stayed silent.
    pub(in crate::server) fn lookup(
        &mut self,
        world: &mut World,
        from: &str,
        target: u8,
    ) -> Option<Option<SocketAddrV4>> {
        let datagram = self.lookup_datagram(target);
        let answer = world.send(from, &datagram)?;
        let Ok(FromServer::Answer(answer)) = parse_from_server(&answer) else {
            panic!("not an answer")
        };
        Some(self.session.as_mut().unwrap().open_answer(&answer).unwrap())
    }
}

pub(in crate::server) fn native(world: &mut World, n: u8, from: &str, peers: &[u8]) -> Client {
    let mut client = Client::new(
        key(n),
        world.server.public_key(),
        peers.iter().map(|&p| key(p).public_key()).collect(),
        vec![],
        ClientConfig::default(),
        [n; 32],
    );
    exchange(world, &mut client, from);
    assert!(client.is_registered());
    client
}

pub(in crate::server) fn exchange(
    world: &mut World,
    client: &mut Client,
    from: &str,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..10 {
        while let Some(datagram) = client.poll_transmit(world.now, world.wall) {
            if let Some(reply) = world.send(from, &datagram) {
                client.handle_datagram(world.now, &reply);
            }
        }
        while let Some(event) = client.poll_event() {
            events.push(event);
        }
    }
    events
}

pub(in crate::server) fn resolved(events: &[Event], peer: u8) -> Option<SocketAddr> {
    events.iter().find_map(|e| match e {
        Event::Resolved {
            peer: p, endpoint, ..
        } if *p == key(peer).public_key() => Some(*endpoint),
        _ => None,
    })
}

pub(in crate::server) fn has_yours(events: &[Event], peer: u8) -> Option<bool> {
    events.iter().find_map(|e| match e {
        Event::Resolved {
            peer: p,
            peer_has_yours,
            ..
        } if *p == key(peer).public_key() => Some(*peer_has_yours),
        _ => None,
    })
}
