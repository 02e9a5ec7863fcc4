//! The `server` target: the discovery server's whole datagram handling, driven by a script of
//! operations decoded from the input.
//!
//! Three kinds of sender reach the server: the real client state machine (so genuine sessions,
//! registrations and lookups exist), puppet clients whose handshakes (index, timestamp skew) and
//! request plaintexts come from the input but are sealed with real Noise keys (so the fuzzer
//! reaches the request handling behind the AEAD; a puppet given a cookie reply sends mac2 from
//! then on), natpunch-go puppets (the server runs with `--compat natpunch-go`) whose handshakes
//! and lookups the input chooses, and raw or bit-flipped bytes.
//!
//! Input: one header byte (bit 0: tight server limits, see [`world::server_config`]), then up to
//! [`MAX_OPS`] operations, each a tag byte (modulo the number of operations) and its fields as
//! [`ServerOp::decode`] reads them.
//!
//! Checked on every datagram: the reply is never longer than the datagram (no amplification), the
//! server never counts an answer it does not send, and replies to puppets complete their
//! handshake, open as a cookie, or decrypt, parse and answer the request that caused them. Every
//! push the server queues is drained after each datagram: it must go to an address that some
//! authenticated transport message came from, be a push-sized transport datagram, and be counted. A datagram the server answered is never answered again (unless
//! the wall clock was set back, which makes an old initiation's timestamp fresh again).

use std::collections::HashSet;
use std::net::SocketAddr;

use wgpunch_common::client::Client;
use wgpunch_common::cookie::{self, Cookie};
use wgpunch_common::handshake::Initiation;
use wgpunch_common::legacy::packet::{parse_from_server, FromServer};
use wgpunch_common::legacy::{self, LegacySession, LookupRequest};
use wgpunch_common::server::{Server, Via};
use wgpunch_common::session::Session;
use wgpunch_common::wire::endpoint::canonical;
use wgpunch_common::wire::message::PUSH_DATAGRAM_LEN;
use wgpunch_common::wire::packet::MAX_PLAINTEXT_LEN;
use wgpunch_common::wire::{Packet, Reply, Request};

use crate::input::{Input, Script};
use crate::world::{self, Clock};

/// Most operations one input runs.
pub const MAX_OPS: usize = 96;
/// Most datagrams the real client may send in one step.
/// Source selectors from this one up send to the server's second port ([`Via::Mapping`]).
const MAPPING_SOURCES: u8 = 200;
const MAX_SENDS_PER_STEP: usize = 8;
/// How many past datagrams are kept for resending.
const HISTORY: usize = 64;
/// Longest raw datagram (a little over the largest the protocol defines).
const MAX_RAW_LEN: usize = 1300;

/// One step of a server script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerOp {
    /// Let `centis` hundredths of a second pass.
    Advance { centis: u16 },
    /// Step the wall clock by `secs` seconds.
    StepWall { secs: i16 },
    /// The real client sends what is due, from `port`, with bit `flip - 1` of its first datagram
    /// flipped (0: none); replies go back to it.
    ClientStep { port: u8, flip: u16 },
    /// The real client is asked for the peers in `mask` (see [`world::peers_in`]).
    ClientLookup { mask: u8 },
    /// The real client's peer list becomes the first `count` of [`world::peer`].
    ClientSetPeers { count: u8 },
    /// Datagram `index` of those sent so far, again, with bit `flip - 1` flipped, from `port`.
    Resend { index: u8, flip: u16, port: u8 },
    /// Arbitrary bytes from `port`.
    Raw { port: u8, bytes: Vec<u8> },
    /// Puppet `who` sends an initiation with session index `index` and a timestamp `skew_centis`
    /// hundredths of a second off the wall clock, from `port`.
    PuppetHandshake {
        who: u8,
        index: u32,
        skew_centis: i16,
        port: u8,
    },
    /// Puppet `who` seals `plaintext` in its session and sends it from `port`.
    PuppetSend {
        who: u8,
        port: u8,
        plaintext: Vec<u8>,
    },
    /// The server drops what has expired.
    Expire,
    /// natpunch-go puppet `who` sends an initiation proposing `index`, with a timestamp
    /// `skew_centis` hundredths of a second off the wall clock, from `port`.
    LegacyHandshake {
        who: u8,
        index: u32,
        skew_centis: i16,
        port: u8,
    },
    /// natpunch-go puppet `who` looks up [`world::peer`]`(target)` from `port`, claiming to be
    /// [`world::peer`]`(claim - 1)` (0: itself).
    LegacyLookup {
        who: u8,
        port: u8,
        target: u8,
        claim: u8,
    },
}

const TAG_ADVANCE: u8 = 0;
const TAG_STEP_WALL: u8 = 1;
const TAG_CLIENT_STEP: u8 = 2;
const TAG_CLIENT_LOOKUP: u8 = 3;
const TAG_CLIENT_SET_PEERS: u8 = 4;
const TAG_RESEND: u8 = 5;
const TAG_RAW: u8 = 6;
const TAG_PUPPET_HANDSHAKE: u8 = 7;
const TAG_PUPPET_SEND: u8 = 8;
const TAG_EXPIRE: u8 = 9;
const TAG_LEGACY_HANDSHAKE: u8 = 10;
const TAG_LEGACY_LOOKUP: u8 = 11;
const TAGS: u8 = 12;

impl ServerOp {
    /// Reads one operation; any bytes decode to some operation.
    pub fn decode(r: &mut Input<'_>) -> Self {
        match r.u8() % TAGS {
            TAG_ADVANCE => Self::Advance { centis: r.u16() },
            TAG_STEP_WALL => Self::StepWall { secs: r.i16() },
            TAG_CLIENT_STEP => Self::ClientStep {
                port: r.u8(),
                flip: r.u16(),
            },
            TAG_CLIENT_LOOKUP => Self::ClientLookup { mask: r.u8() },
            TAG_CLIENT_SET_PEERS => Self::ClientSetPeers { count: r.u8() },
            TAG_RESEND => Self::Resend {
                index: r.u8(),
                flip: r.u16(),
                port: r.u8(),
            },
            TAG_RAW => Self::Raw {
                port: r.u8(),
                bytes: r.chunk(MAX_RAW_LEN).to_vec(),
            },
            TAG_PUPPET_HANDSHAKE => Self::PuppetHandshake {
                who: r.u8(),
                index: r.u32(),
                skew_centis: r.i16(),
                port: r.u8(),
            },
            TAG_PUPPET_SEND => Self::PuppetSend {
                who: r.u8(),
                port: r.u8(),
                plaintext: r.chunk(MAX_PLAINTEXT_LEN).to_vec(),
            },
            TAG_LEGACY_HANDSHAKE => Self::LegacyHandshake {
                who: r.u8(),
                index: r.u32(),
                skew_centis: r.i16(),
                port: r.u8(),
            },
            TAG_LEGACY_LOOKUP => Self::LegacyLookup {
                who: r.u8(),
                port: r.u8(),
                target: r.u8(),
                claim: r.u8(),
            },
            _ => Self::Expire,
        }
    }

    /// Writes the operation as [`ServerOp::decode`] reads it.
    pub fn encode(&self, s: &mut Script) {
        match self {
            Self::Advance { centis } => s.u8(TAG_ADVANCE).u16(*centis),
            Self::StepWall { secs } => s.u8(TAG_STEP_WALL).i16(*secs),
            Self::ClientStep { port, flip } => s.u8(TAG_CLIENT_STEP).u8(*port).u16(*flip),
            Self::ClientLookup { mask } => s.u8(TAG_CLIENT_LOOKUP).u8(*mask),
            Self::ClientSetPeers { count } => s.u8(TAG_CLIENT_SET_PEERS).u8(*count),
            Self::Resend { index, flip, port } => s.u8(TAG_RESEND).u8(*index).u16(*flip).u8(*port),
            Self::Raw { port, bytes } => s.u8(TAG_RAW).u8(*port).chunk(bytes),
            Self::PuppetHandshake {
                who,
                index,
                skew_centis,
                port,
            } => s
                .u8(TAG_PUPPET_HANDSHAKE)
                .u8(*who)
                .u32(*index)
                .i16(*skew_centis)
                .u8(*port),
            Self::PuppetSend {
                who,
                port,
                plaintext,
            } => s.u8(TAG_PUPPET_SEND).u8(*who).u8(*port).chunk(plaintext),
            Self::Expire => s.u8(TAG_EXPIRE),
            Self::LegacyHandshake {
                who,
                index,
                skew_centis,
                port,
            } => s
                .u8(TAG_LEGACY_HANDSHAKE)
                .u8(*who)
                .u32(*index)
                .i16(*skew_centis)
                .u8(*port),
            Self::LegacyLookup {
                who,
                port,
                target,
                claim,
            } => s
                .u8(TAG_LEGACY_LOOKUP)
                .u8(*who)
                .u8(*port)
                .u8(*target)
                .u8(*claim),
        };
    }
}

/// Writes a whole server input: the header byte and `ops`.
pub fn script(tight: bool, ops: &[ServerOp]) -> Vec<u8> {
    let mut s = Script::new();
    s.u8(u8::from(tight));
    for op in ops {
        op.encode(&mut s);
    }
    s.into_bytes()
}

/// A client whose messages the input chooses.
#[derive(Default)]
struct Puppet {
    session: Option<Session>,
    handshakes: usize,
    /// The server's last cookie: the puppet's next initiations carry its mac2.
    cookie: Option<Cookie>,
}

/// The server and everyone who talks to it.
pub struct ServerSim {
    clock: Clock,
    server: Server,
    client: Client,
    puppets: Vec<Puppet>,
    /// natpunch-go puppets: their sessions and how many handshakes each started.
    legacy: Vec<(Option<LegacySession>, usize)>,
    /// Datagrams handed to the server, for resending.
    history: Vec<Vec<u8>>,
    sent: usize,
    /// Datagrams the server answered.
    answered: HashSet<Vec<u8>>,
    /// Every source an authenticated transport message came from: the only places pushes may go.
    authenticated: HashSet<SocketAddr>,
}

/// Answers the server counts: every one of them must leave as a reply.
fn answers(server: &Server) -> u64 {
    let stats = server.stats();
    let legacy = server.legacy_stats();
    stats.handshakes
        + stats.cookie_replies
        + stats.registrations
        + stats.lookups
        + stats.candidate_lookups
        + legacy.handshakes
        + legacy.lookups
}

impl ServerSim {
    /// A server and a real client that has already connected and registered.
    pub fn new(tight: bool) -> Self {
        let mut sim = Self {
            clock: Clock::start(),
            server: world::server(tight),
            client: world::client(),
            puppets: (0..world::PUPPETS).map(|_| Puppet::default()).collect(),
            legacy: (0..world::PUPPETS).map(|_| (None, 0)).collect(),
            history: Vec::new(),
            sent: 0,
            answered: HashSet::new(),
            authenticated: HashSet::new(),
        };
        for _ in 0..3 {
            sim.clock.advance(1);
            sim.apply(&ServerOp::ClientStep { port: 0, flip: 0 });
        }
        sim
    }

    /// The server, for inspection.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The real client, for inspection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// How many puppets hold a session.
    pub fn puppets_connected(&self) -> usize {
        self.puppets.iter().filter(|p| p.session.is_some()).count()
    }

    /// Runs one operation.
    pub fn apply(&mut self, op: &ServerOp) {
        match op {
            ServerOp::Advance { centis } => self.clock.advance(*centis),
            ServerOp::StepWall { secs } => self.clock.step_wall(*secs),
            ServerOp::ClientStep { port, flip } => self.client_step(*port, *flip),
            ServerOp::ClientLookup { mask } => self.client.lookup(world::peers_in(*mask)),
            ServerOp::ClientSetPeers { count } => self
                .client
                .set_peers((0..u16::from(*count)).map(world::peer).collect()),
            ServerOp::Resend { index, flip, port } => {
                let Some(original) = self.history_entry(*index) else {
                    return;
                };
                let datagram = world::flipped(&original, *flip);
                if let Some(reply) = self.deliver(world::source(*port), &datagram) {
                    self.client.handle_datagram(self.clock.now, &reply);
                }
            }
            ServerOp::Raw { port, bytes } => {
                if let Some(reply) = self.deliver(world::source(*port), bytes) {
                    self.client.handle_datagram(self.clock.now, &reply);
                }
            }
            ServerOp::PuppetHandshake {
                who,
                index,
                skew_centis,
                port,
            } => self.puppet_handshake(*who, *index, *skew_centis, *port),
            ServerOp::PuppetSend {
                who,
                port,
                plaintext,
            } => self.puppet_send(*who, *port, plaintext),
            ServerOp::Expire => self.server.expire(self.clock.now),
            ServerOp::LegacyHandshake {
                who,
                index,
                skew_centis,
                port,
            } => self.legacy_handshake(*who, *index, *skew_centis, *port),
            ServerOp::LegacyLookup {
                who,
                port,
                target,
                claim,
            } => self.legacy_lookup(*who, *port, *target, *claim),
        }
        while self.client.poll_event().is_some() {}
    }

    fn history_entry(&self, index: u8) -> Option<Vec<u8>> {
        if self.history.is_empty() {
            return None;
        }
        self.history
            .get(usize::from(index) % self.history.len())
            .cloned()
    }

    /// Hands `datagram` from `from` to the server and checks what comes back.
    fn deliver(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<Vec<u8>> {
        if self.history.len() < HISTORY {
            self.history.push(datagram.to_vec());
        } else {
            self.history[self.sent % HISTORY] = datagram.to_vec();
        }
        self.sent += 1;
        let replayed = self.answered.contains(datagram);
        let before_answers = answers(&self.server);
        let before = self.server.stats().clone();
        // Sources from selector MAPPING_SOURCES up reach the server's second port instead.
        let via = if from.port() >= world::source(MAPPING_SOURCES).port() {
            Via::Mapping
        } else {
            Via::Main
        };
        let reply = self
            .server
            .handle_via(self.clock.now, self.clock.wall, from, via, datagram);
        let after = self.server.stats().clone();
        if via == Via::Mapping {
            assert_eq!(
                (after.registrations, after.pushes, after.lookups),
                (before.registrations, before.pushes, before.lookups),
                "the second port registered, pushed or answered a lookup"
            );
        }
        assert_eq!(
            after.datagrams,
            before.datagrams + 1,
            "datagram not counted"
        );
        let authenticated = matches!(Packet::parse(datagram), Ok(Packet::Transport(_)))
            && after.unknown_session == before.unknown_session
            && after.bad_transport == before.bad_transport;
        if authenticated {
            self.authenticated.insert(canonical(from));
        }
        let mut pushes = 0;
        while let Some(push) = self.server.poll_transmit() {
            pushes += 1;
            assert!(
                self.authenticated.contains(&push.destination),
                "a push to {}, which no authenticated message came from",
                push.destination
            );
            assert_eq!(
                push.datagram.len(),
                PUSH_DATAGRAM_LEN,
                "a push of the wrong size"
            );
            assert!(
                matches!(Packet::parse(&push.datagram), Ok(Packet::Transport(_))),
                "a push that is not a transport message"
            );
        }
        assert_eq!(
            after.pushes - before.pushes,
            pushes,
            "the server counted a push it did not queue, or queued one it did not count"
        );
        if let Some(reply) = &reply {
            assert!(
                reply.len() <= datagram.len(),
                "the server amplified: {} byte reply to a {} byte datagram",
                reply.len(),
                datagram.len()
            );
            // Under load any initiation may get a cookie reply, which costs the server nothing
            // and completes nothing; an old initiation becomes fresh again only if the wall clock
            // goes back to its time.
            let cookie = matches!(Packet::parse(reply), Ok(Packet::CookieReply(_)));
            assert!(
                !replayed || cookie || self.clock.wall_stepped_back,
                "the server answered a replay of a {} byte datagram it answered before",
                datagram.len()
            );
            self.answered.insert(datagram.to_vec());
        }
        assert_eq!(
            answers(&self.server) - before_answers,
            u64::from(reply.is_some()),
            "the server counted an answer it did not send, or sent one it did not count"
        );
        reply
    }

    fn client_step(&mut self, port: u8, flip: u16) {
        let from = world::source(port);
        for i in 0..MAX_SENDS_PER_STEP {
            let Some(datagram) = self.client.poll_transmit(self.clock.now, self.clock.wall) else {
                break;
            };
            let datagram = if i == 0 {
                world::flipped(&datagram, flip)
            } else {
                datagram
            };
            if let Some(reply) = self.deliver(from, &datagram) {
                self.client.handle_datagram(self.clock.now, &reply);
            }
        }
    }

    fn puppet_handshake(&mut self, who: u8, index: u32, skew_centis: i16, port: u8) {
        let slot = usize::from(who) % world::PUPPETS;
        let key = world::puppet_key(who);
        let seed = world::seed(
            0x50 + who % world::PUPPETS as u8,
            self.puppets[slot].handshakes,
        );
        self.puppets[slot].handshakes += 1;
        let timestamp = self.clock.skewed_nanos(skew_centis);
        let cookie = self.puppets[slot].cookie;
        let Ok((initiation, datagram)) = Initiation::start_with_cookie(
            &key,
            &world::server_public(),
            index,
            timestamp,
            seed,
            cookie.as_ref(),
        ) else {
            return;
        };
        let Some(reply) = self.deliver(world::source(port), &datagram) else {
            return;
        };
        match Packet::parse(&reply) {
            Ok(Packet::HandshakeResponse(response)) => match initiation.complete(&response) {
                Ok(session) => self.puppets[slot].session = Some(session),
                Err(e) => panic!("the server's handshake response did not complete: {e}"),
            },
            Ok(Packet::CookieReply(reply)) => {
                assert_eq!(
                    reply.receiver_index, index,
                    "cookie reply for another index"
                );
                let cookie = cookie::open_reply(&world::server_public(), &reply, &initiation.mac1);
                assert!(cookie.is_some(), "the server's cookie reply did not open");
                self.puppets[slot].cookie = cookie;
            }
            other => panic!("the server answered an initiation with {other:?}"),
        }
    }

    fn legacy_handshake(&mut self, who: u8, index: u32, skew_centis: i16, port: u8) {
        let slot = usize::from(who) % world::PUPPETS;
        let key = world::puppet_key(who);
        let seed = world::seed(0x70 + who % world::PUPPETS as u8, self.legacy[slot].1);
        self.legacy[slot].1 += 1;
        let timestamp = self.clock.skewed_nanos(skew_centis);
        let Ok((initiation, datagram)) =
            legacy::Initiation::start(&key, &world::server_public(), index, timestamp, seed)
        else {
            return;
        };
        let Some(reply) = self.deliver(world::source(port), &datagram) else {
            return;
        };
        match parse_from_server(&reply) {
            Ok(FromServer::HandshakeResponse(response)) => match initiation.complete(&response) {
                Ok(session) => self.legacy[slot].0 = Some(session),
                Err(e) => panic!("the server's natpunch-go response did not complete: {e}"),
            },
            other => panic!("the server answered a natpunch-go initiation with {other:?}"),
        }
    }

    fn legacy_lookup(&mut self, who: u8, port: u8, target: u8, claim: u8) {
        let slot = usize::from(who) % world::PUPPETS;
        let own = world::puppet_key(who).public_key();
        let claimed = match claim {
            0 => own,
            n => world::peer(u16::from(n - 1)),
        };
        let request = LookupRequest {
            client: claimed,
            target: world::peer(u16::from(target)),
        };
        let Some(Ok(datagram)) = self.legacy[slot]
            .0
            .as_mut()
            .map(|s| s.seal_lookup(&request))
        else {
            return;
        };
        let Some(reply) = self.deliver(world::source(port), &datagram) else {
            return;
        };
        assert_eq!(
            claimed, own,
            "the server answered a lookup naming another key"
        );
        let Some(session) = self.legacy[slot].0.as_mut() else {
            return;
        };
        match parse_from_server(&reply) {
            Ok(FromServer::Answer(answer)) => {
                if let Err(e) = session.open_answer(&answer) {
                    panic!("a natpunch-go answer did not open: {e}");
                }
            }
            other => panic!("the server answered a natpunch-go lookup with {other:?}"),
        }
    }

    fn puppet_send(&mut self, who: u8, port: u8, plaintext: &[u8]) {
        let slot = usize::from(who) % world::PUPPETS;
        let Some(session) = self.puppets[slot].session.as_mut() else {
            return;
        };
        let mut datagram = Vec::new();
        if session.seal(plaintext, &mut datagram).is_err() {
            return;
        }
        let from = world::source(port);
        let Some(reply) = self.deliver(from, &datagram) else {
            return;
        };
        let Some(session) = self.puppets[slot].session.as_mut() else {
            return;
        };
        let message = match Packet::parse(&reply) {
            Ok(Packet::Transport(message)) => message,
            other => panic!("the server answered a transport message with {other:?}"),
        };
        let mut opened = vec![0u8; MAX_PLAINTEXT_LEN];
        let len = session
            .open(&message, &mut opened)
            .unwrap_or_else(|e| panic!("a reply on the puppet's session did not open: {e}"));
        let reply = Reply::parse(&opened[..len])
            .unwrap_or_else(|e| panic!("the server sent an unparseable reply: {e}"));
        let request = Request::parse(plaintext).unwrap_or_else(|e| {
            panic!("the server answered an invalid request ({e}) with {reply:?}")
        });
        check_answer(&request, &reply, from);
    }
}

/// Checks that `reply` answers `request`, received from `from`.
fn check_answer(request: &Request, reply: &Reply, from: SocketAddr) {
    match (request, reply) {
        (Request::Register(register), Reply::RegisterAck(ack)) => {
            assert_eq!(
                ack.request_id, register.request_id,
                "ack for another request"
            );
            assert_eq!(ack.part, register.part, "ack for another part");
            assert_eq!(
                ack.observed,
                canonical(from),
                "ack with a wrong observed address"
            );
        }
        (Request::Lookup(lookup), Reply::LookupReply(answer)) => {
            assert_eq!(
                answer.request_id, lookup.request_id,
                "answer to another lookup"
            );
            assert_eq!(
                answer.entries.len(),
                lookup.peers.len(),
                "answer of the wrong size"
            );
        }
        _ => panic!("{reply:?} does not answer {request:?}"),
    }
}

/// The target's body: decodes the header and operations of `data`, runs them, and returns the
/// final state for inspection.
pub fn run(data: &[u8]) -> ServerSim {
    let mut r = Input::new(data);
    let tight = r.u8() & 1 == 1;
    let mut sim = ServerSim::new(tight);
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = ServerOp::decode(&mut r);
        sim.apply(&op);
    }
    sim
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_survive_encoding() {
        let ops = [
            ServerOp::Advance { centis: 300 },
            ServerOp::StepWall { secs: -5 },
            ServerOp::ClientStep { port: 3, flip: 9 },
            ServerOp::ClientLookup { mask: 5 },
            ServerOp::ClientSetPeers { count: 40 },
            ServerOp::Resend {
                index: 1,
                flip: 0,
                port: 2,
            },
            ServerOp::Raw {
                port: 1,
                bytes: vec![1, 2, 3],
            },
            ServerOp::PuppetHandshake {
                who: 1,
                index: 7,
                skew_centis: -100,
                port: 4,
            },
            ServerOp::PuppetSend {
                who: 1,
                port: 4,
                plaintext: vec![3; 40],
            },
            ServerOp::Expire,
            ServerOp::LegacyHandshake {
                who: 2,
                index: 9,
                skew_centis: 50,
                port: 1,
            },
            ServerOp::LegacyLookup {
                who: 2,
                port: 1,
                target: 3,
                claim: 0,
            },
        ];
        let bytes = script(true, &ops);
        let mut r = Input::new(&bytes);
        assert_eq!(r.u8(), 1);
        for op in &ops {
            assert_eq!(&ServerOp::decode(&mut r), op);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn natpunch_go_puppets_find_each_other() {
        use ServerOp::*;
        let ops = [
            LegacyHandshake {
                who: 0,
                index: 1,
                skew_centis: 0,
                port: 1,
            },
            LegacyHandshake {
                who: 1,
                index: 2,
                skew_centis: 0,
                port: 2,
            },
            LegacyLookup {
                who: 0,
                port: 1,
                target: 1,
                claim: 0,
            },
            LegacyLookup {
                who: 1,
                port: 2,
                target: 0,
                claim: 0,
            },
            LegacyLookup {
                who: 1,
                port: 2,
                target: 0,
                claim: 3,
            },
        ];
        for tight in [false, true] {
            let sim = run(&script(tight, &ops));
            let stats = sim.server.legacy_stats();
            assert_eq!(stats.handshakes, 2, "{stats:?}");
            assert_eq!(stats.lookups, 2, "{stats:?}");
            assert_eq!(stats.found, 1, "{stats:?}");
            assert_eq!(stats.wrong_client_key, 1, "{stats:?}");
        }
    }

    #[test]
    fn the_real_client_is_registered_before_the_script_starts() {
        let sim = ServerSim::new(false);
        assert!(sim.client.is_registered());
        assert_eq!(sim.server.stats().registrations, 1);
    }
}
