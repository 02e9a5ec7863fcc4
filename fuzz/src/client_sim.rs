//! The `client` target: the client state machine's whole datagram handling, driven by a script of
//! operations decoded from the input.
//!
//! The client talks to a real server, whose replies the input may deliver, lose, replay or
//! corrupt, and to a puppet server holding the same key: it answers the client's handshake itself
//! and then seals replies the input chooses, either arbitrary plaintexts or answers to the
//! client's actual requests with input-chosen fields (so the fuzzer gets past request ids it cannot
//! guess). It can also answer an initiation with a cookie reply, as a server under load does. Raw
//! bytes arrive too.
//!
//! Input: up to [`MAX_OPS`] operations, each a tag byte (modulo the number of operations) and its
//! fields as [`ClientOp::decode`] reads them.
//!
//! Checked: nothing panics, and every datagram the client sends is a well-formed datagram of the
//! protocol that a server accepts the shape of (an initiation or a transport message of legal size).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use wgpunch_common::client::{Client, Event};
use wgpunch_common::cookie::CookieJar;
use wgpunch_common::handshake::Accepted;
use wgpunch_common::server::Server;
use wgpunch_common::session::Session;
use wgpunch_common::wire::packet::{COOKIE_NONCE_LEN, MAX_PLAINTEXT_LEN};
use wgpunch_common::wire::{
    CandidatesReply, LookupReply, ObserveReply, Packet, RegisterAck, Reply, Request, Sighting,
};

use crate::input::{Input, Script};
use crate::world::{self, Clock};

/// Most operations one input runs.
pub const MAX_OPS: usize = 96;
/// Most datagrams the client may send in one step.
const MAX_SENDS_PER_STEP: usize = 16;
/// How many past datagrams are kept, each way.
const HISTORY: usize = 64;
/// Longest raw datagram (a little over the largest the protocol defines).
const MAX_RAW_LEN: usize = 1300;

/// One step of a client script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOp {
    /// Let `centis` hundredths of a second pass.
    Advance { centis: u16 },
    /// Step the wall clock by `secs` seconds.
    StepWall { secs: i16 },
    /// The client sends what is due; if `to_server` is odd the real server gets it (bit
    /// `flip - 1` of the first datagram flipped, 0: none) and its replies are queued.
    Transmit { to_server: u8, flip: u16 },
    /// Up to `count` queued replies of the real server reach the client, in order.
    Deliver { count: u8 },
    /// The queued replies of the real server are lost.
    Lose,
    /// Datagram `index` of those the client received, again, with bit `flip - 1` flipped.
    Resend { index: u8, flip: u16 },
    /// Arbitrary bytes.
    Raw { bytes: Vec<u8> },
    /// The puppet server answers the client's latest initiation with session index `index` (bit
    /// `flip - 1` of the response flipped).
    PuppetAccept { index: u32, flip: u16 },
    /// The puppet server seals `plaintext` in its session.
    PuppetSeal { plaintext: Vec<u8> },
    /// The puppet server answers the client's latest initiation with a cookie reply, as a server
    /// under load does (bit `flip - 1` flipped).
    PuppetCookie { flip: u16 },
    /// The puppet server answers the client's oldest unanswered request. `mode` bits: 0 wrong
    /// part, 1 wrong entry count, 2 wrong request id, 3 keep the request to answer it again, 4
    /// known entries say the peer has the client's endpoint.
    /// Acks carry `ttl_secs` and an observed address with port `port`; lookup entry `i` is known
    /// (at port `port`, seen `age_secs` ago) when bit `i` of `known` is set.
    PuppetAnswer {
        mode: u8,
        ttl_secs: u16,
        port: u16,
        age_secs: u32,
        known: u32,
    },
    /// The client is asked for the peers in `mask` (see [`world::peers_in`]).
    Lookup { mask: u8 },
    /// The client's peer list becomes the first `count` of [`world::peer`].
    SetPeers { count: u8 },
    /// The real server drops what has expired.
    ServerExpire,
}

const TAG_ADVANCE: u8 = 0;
const TAG_STEP_WALL: u8 = 1;
const TAG_TRANSMIT: u8 = 2;
const TAG_DELIVER: u8 = 3;
const TAG_LOSE: u8 = 4;
const TAG_RESEND: u8 = 5;
const TAG_RAW: u8 = 6;
const TAG_PUPPET_ACCEPT: u8 = 7;
const TAG_PUPPET_SEAL: u8 = 8;
const TAG_PUPPET_ANSWER: u8 = 9;
const TAG_LOOKUP: u8 = 10;
const TAG_SET_PEERS: u8 = 11;
const TAG_SERVER_EXPIRE: u8 = 12;
const TAG_PUPPET_COOKIE: u8 = 13;
const TAGS: u8 = 14;

impl ClientOp {
    /// Reads one operation; any bytes decode to some operation.
    pub fn decode(r: &mut Input<'_>) -> Self {
        match r.u8() % TAGS {
            TAG_ADVANCE => Self::Advance { centis: r.u16() },
            TAG_STEP_WALL => Self::StepWall { secs: r.i16() },
            TAG_TRANSMIT => Self::Transmit {
                to_server: r.u8(),
                flip: r.u16(),
            },
            TAG_DELIVER => Self::Deliver { count: r.u8() },
            TAG_LOSE => Self::Lose,
            TAG_RESEND => Self::Resend {
                index: r.u8(),
                flip: r.u16(),
            },
            TAG_RAW => Self::Raw {
                bytes: r.chunk(MAX_RAW_LEN).to_vec(),
            },
            TAG_PUPPET_ACCEPT => Self::PuppetAccept {
                index: r.u32(),
                flip: r.u16(),
            },
            TAG_PUPPET_SEAL => Self::PuppetSeal {
                plaintext: r.chunk(MAX_PLAINTEXT_LEN).to_vec(),
            },
            TAG_PUPPET_ANSWER => Self::PuppetAnswer {
                mode: r.u8(),
                ttl_secs: r.u16(),
                port: r.u16(),
                age_secs: r.u32(),
                known: r.u32(),
            },
            TAG_LOOKUP => Self::Lookup { mask: r.u8() },
            TAG_SET_PEERS => Self::SetPeers { count: r.u8() },
            TAG_SERVER_EXPIRE => Self::ServerExpire,
            _ => Self::PuppetCookie { flip: r.u16() },
        }
    }

    /// Writes the operation as [`ClientOp::decode`] reads it.
    pub fn encode(&self, s: &mut Script) {
        match self {
            Self::Advance { centis } => s.u8(TAG_ADVANCE).u16(*centis),
            Self::StepWall { secs } => s.u8(TAG_STEP_WALL).i16(*secs),
            Self::Transmit { to_server, flip } => s.u8(TAG_TRANSMIT).u8(*to_server).u16(*flip),
            Self::Deliver { count } => s.u8(TAG_DELIVER).u8(*count),
            Self::Lose => s.u8(TAG_LOSE),
            Self::Resend { index, flip } => s.u8(TAG_RESEND).u8(*index).u16(*flip),
            Self::Raw { bytes } => s.u8(TAG_RAW).chunk(bytes),
            Self::PuppetAccept { index, flip } => s.u8(TAG_PUPPET_ACCEPT).u32(*index).u16(*flip),
            Self::PuppetSeal { plaintext } => s.u8(TAG_PUPPET_SEAL).chunk(plaintext),
            Self::PuppetAnswer {
                mode,
                ttl_secs,
                port,
                age_secs,
                known,
            } => s
                .u8(TAG_PUPPET_ANSWER)
                .u8(*mode)
                .u16(*ttl_secs)
                .u16(*port)
                .u32(*age_secs)
                .u32(*known),
            Self::Lookup { mask } => s.u8(TAG_LOOKUP).u8(*mask),
            Self::SetPeers { count } => s.u8(TAG_SET_PEERS).u8(*count),
            Self::ServerExpire => s.u8(TAG_SERVER_EXPIRE),
            Self::PuppetCookie { flip } => s.u8(TAG_PUPPET_COOKIE).u16(*flip),
        };
    }
}

/// Writes a whole client input.
pub fn script(ops: &[ClientOp]) -> Vec<u8> {
    let mut s = Script::new();
    for op in ops {
        op.encode(&mut s);
    }
    s.into_bytes()
}

/// Where the real server sees the client.
fn client_address() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), 40_001)
}

/// Keeps the last [`HISTORY`] datagrams.
fn remember(history: &mut Vec<Vec<u8>>, count: &mut usize, datagram: &[u8]) {
    if history.len() < HISTORY {
        history.push(datagram.to_vec());
    } else {
        history[*count % HISTORY] = datagram.to_vec();
    }
    *count += 1;
}

/// The client and the servers it talks to.
pub struct ClientSim {
    clock: Clock,
    client: Client,
    server: Server,
    /// Real server replies not delivered yet.
    queued: VecDeque<Vec<u8>>,
    /// Datagrams the client received, for resending.
    received: Vec<Vec<u8>>,
    received_count: usize,
    /// The client's latest initiation, for the puppet to answer.
    last_initiation: Option<Vec<u8>>,
    /// The puppet server's session with the client.
    puppet: Option<Session>,
    puppet_handshakes: usize,
    puppet_cookies: usize,
    /// The client's transport datagrams since the puppet's handshake, not opened yet.
    unopened: VecDeque<Vec<u8>>,
    /// Requests the puppet opened and has not answered.
    requests: VecDeque<Request>,
    /// The first events the client reported.
    events: Vec<Event>,
}

impl ClientSim {
    /// A fresh client and server at the start of a run.
    pub fn new() -> Self {
        Self {
            clock: Clock::start(),
            client: world::client(),
            server: world::server(false),
            queued: VecDeque::new(),
            received: Vec::new(),
            received_count: 0,
            last_initiation: None,
            puppet: None,
            puppet_handshakes: 0,
            puppet_cookies: 0,
            unopened: VecDeque::new(),
            requests: VecDeque::new(),
            events: Vec::new(),
        }
    }

    /// The client, for inspection.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The real server, for inspection.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Events the client reported so far.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Runs one operation.
    pub fn apply(&mut self, op: &ClientOp) {
        match op {
            ClientOp::Advance { centis } => self.clock.advance(*centis),
            ClientOp::StepWall { secs } => self.clock.step_wall(*secs),
            ClientOp::Transmit { to_server, flip } => self.transmit(to_server & 1 == 1, *flip),
            ClientOp::Deliver { count } => {
                for _ in 0..*count {
                    let Some(datagram) = self.queued.pop_front() else {
                        break;
                    };
                    self.receive(&datagram);
                }
            }
            ClientOp::Lose => self.queued.clear(),
            ClientOp::Resend { index, flip } => {
                if !self.received.is_empty() {
                    let i = usize::from(*index) % self.received.len();
                    let datagram = world::flipped(&self.received[i], *flip);
                    self.receive(&datagram);
                }
            }
            ClientOp::Raw { bytes } => self.receive(bytes),
            ClientOp::PuppetAccept { index, flip } => self.puppet_accept(*index, *flip),
            ClientOp::PuppetSeal { plaintext } => self.puppet_seal(plaintext),
            ClientOp::PuppetCookie { flip } => self.puppet_cookie(*flip),
            ClientOp::PuppetAnswer {
                mode,
                ttl_secs,
                port,
                age_secs,
                known,
            } => self.puppet_answer(*mode, *ttl_secs, *port, *age_secs, *known),
            ClientOp::Lookup { mask } => self.client.lookup(world::peers_in(*mask)),
            ClientOp::SetPeers { count } => self
                .client
                .set_peers((0..u16::from(*count)).map(world::peer).collect()),
            ClientOp::ServerExpire => self.server.expire(self.clock.now),
        }
        while let Some(event) = self.client.poll_event() {
            if self.events.len() < HISTORY {
                self.events.push(event);
            }
        }
    }

    fn receive(&mut self, datagram: &[u8]) {
        remember(&mut self.received, &mut self.received_count, datagram);
        self.client.handle_datagram(self.clock.now, datagram);
    }

    fn transmit(&mut self, to_server: bool, flip: u16) {
        for i in 0..MAX_SENDS_PER_STEP {
            let Some(datagram) = self.client.poll_transmit(self.clock.now, self.clock.wall) else {
                break;
            };
            match Packet::parse(&datagram) {
                Ok(Packet::HandshakeInit(_)) => self.last_initiation = Some(datagram.clone()),
                Ok(Packet::Transport(_)) => {
                    if self.puppet.is_some() && self.unopened.len() < HISTORY {
                        self.unopened.push_back(datagram.clone());
                    }
                }
                other => panic!("the client sent a datagram no server accepts: {other:?}"),
            }
            if to_server {
                let datagram = if i == 0 {
                    world::flipped(&datagram, flip)
                } else {
                    datagram
                };
                let reply = self.server.handle(
                    self.clock.now,
                    self.clock.wall,
                    client_address(),
                    &datagram,
                );
                if let Some(reply) = reply {
                    if self.queued.len() < HISTORY {
                        self.queued.push_back(reply);
                    }
                }
            }
        }
    }

    fn puppet_accept(&mut self, index: u32, flip: u16) {
        let Some(datagram) = self.last_initiation.clone() else {
            return;
        };
        let Ok(Packet::HandshakeInit(init)) = Packet::parse(&datagram) else {
            return;
        };
        let seed = world::seed(0x70, self.puppet_handshakes);
        self.puppet_handshakes += 1;
        let accepted = Accepted::read(&world::server_key(), &init, seed)
            .unwrap_or_else(|e| panic!("the client's own initiation was rejected: {e}"));
        let Ok((session, response)) = accepted.respond(index) else {
            return;
        };
        self.puppet = Some(session);
        self.unopened.clear();
        self.requests.clear();
        self.receive(&world::flipped(&response, flip));
    }

    fn puppet_cookie(&mut self, flip: u16) {
        let Some(datagram) = self.last_initiation.clone() else {
            return;
        };
        let Ok(Packet::HandshakeInit(init)) = Packet::parse(&datagram) else {
            return;
        };
        let jar = CookieJar::new(&world::server_public(), [0x72; 32], self.clock.now);
        self.puppet_cookies += 1;
        let nonce = [self.puppet_cookies as u8; COOKIE_NONCE_LEN];
        let Some(reply) = jar.reply(client_address(), init.sender_index, &init.mac1, nonce) else {
            return;
        };
        let mut out = Vec::new();
        reply.emit(&mut out);
        self.receive(&world::flipped(&out, flip));
    }

    fn puppet_seal(&mut self, plaintext: &[u8]) {
        let Some(session) = self.puppet.as_mut() else {
            return;
        };
        let mut datagram = Vec::new();
        if session.seal(plaintext, &mut datagram).is_ok() {
            self.receive(&datagram);
        }
    }

    /// Opens the client's transport datagrams the puppet has not read yet.
    fn open_requests(&mut self) {
        let Some(session) = self.puppet.as_mut() else {
            return;
        };
        let mut plaintext = vec![0u8; MAX_PLAINTEXT_LEN];
        while let Some(datagram) = self.unopened.pop_front() {
            let Ok(Packet::Transport(message)) = Packet::parse(&datagram) else {
                continue;
            };
            if message.receiver_index != session.local_index {
                continue;
            }
            let Ok(len) = session.open(&message, &mut plaintext) else {
                continue;
            };
            let request = Request::parse(&plaintext[..len])
                .unwrap_or_else(|e| panic!("the client sent an unparseable request: {e}"));
            self.requests.push_back(request);
        }
    }

    fn puppet_answer(&mut self, mode: u8, ttl_secs: u16, port: u16, age_secs: u32, known: u32) {
        self.open_requests();
        let Some(request) = self.requests.front().cloned() else {
            return;
        };
        if mode & 8 == 0 {
            self.requests.pop_front();
        }
        let id_offset = u32::from(mode & 4 != 0);
        let reply = match request {
            Request::Register(register) => Reply::RegisterAck(RegisterAck {
                request_id: register.request_id.wrapping_add(id_offset),
                part: register.part ^ (mode & 1),
                ttl_secs,
                observed: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), port),
            }),
            Request::Lookup(lookup) => {
                let count = lookup.peers.len() + usize::from(mode & 2 != 0);
                let entries = (0..count)
                    .map(|i| {
                        (known & (1 << (i % 32)) != 0).then(|| Sighting {
                            endpoint: SocketAddr::new(
                                IpAddr::V4(Ipv4Addr::new(198, 51, 100, i as u8)),
                                port,
                            ),
                            age_secs,
                            peer_has_yours: mode & 16 != 0,
                        })
                    })
                    .collect();
                Reply::LookupReply(LookupReply {
                    request_id: lookup.request_id.wrapping_add(id_offset),
                    entries,
                })
            }
            Request::Candidates(candidates) => Reply::Candidates(CandidatesReply {
                request_id: candidates.request_id.wrapping_add(id_offset),
                peer: candidates.peer,
                known: mode & 16 != 0,
                same_public: mode & 2 != 0,
                hard_nat: mode & 1 != 0,
                candidates: (0..known % 10)
                    .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, i as u8)), port))
                    .collect(),
            }),
            Request::Observe(observe) => Reply::Observed(ObserveReply {
                request_id: observe.request_id.wrapping_add(id_offset),
                observed: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)), port),
                alternates: (0..known % 4)
                    .map(|i| SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port ^ i as u16))
                    .collect(),
            }),
            // The server never answers an acknowledgement of its pushes.
            Request::PushAck(_) => return,
        };
        let mut plaintext = Vec::new();
        reply.emit(&mut plaintext);
        self.puppet_seal(&plaintext);
    }
}

impl Default for ClientSim {
    fn default() -> Self {
        Self::new()
    }
}

/// The target's body: decodes the operations of `data`, runs them, and returns the final state
/// for inspection.
pub fn run(data: &[u8]) -> ClientSim {
    let mut r = Input::new(data);
    let mut sim = ClientSim::new();
    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let op = ClientOp::decode(&mut r);
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
            ClientOp::Advance { centis: 2 },
            ClientOp::StepWall { secs: 30 },
            ClientOp::Transmit {
                to_server: 1,
                flip: 0,
            },
            ClientOp::Deliver { count: 4 },
            ClientOp::Lose,
            ClientOp::Resend { index: 2, flip: 8 },
            ClientOp::Raw { bytes: vec![0x14] },
            ClientOp::PuppetAccept { index: 9, flip: 0 },
            ClientOp::PuppetSeal {
                plaintext: vec![2; 28],
            },
            ClientOp::PuppetAnswer {
                mode: 3,
                ttl_secs: 120,
                port: 9,
                age_secs: 4,
                known: 1,
            },
            ClientOp::Lookup { mask: 1 },
            ClientOp::SetPeers { count: 33 },
            ClientOp::ServerExpire,
            ClientOp::PuppetCookie { flip: 3 },
        ];
        let bytes = script(&ops);
        let mut r = Input::new(&bytes);
        for op in &ops {
            assert_eq!(&ClientOp::decode(&mut r), op);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn the_puppet_server_gets_the_client_registered_and_answers_lookups() {
        let mut sim = ClientSim::new();
        let answer = ClientOp::PuppetAnswer {
            mode: 0,
            ttl_secs: 120,
            port: 51820,
            age_secs: 1,
            known: u32::MAX,
        };
        let transmit = ClientOp::Transmit {
            to_server: 0,
            flip: 0,
        };
        for op in [
            transmit.clone(),
            ClientOp::PuppetAccept { index: 5, flip: 0 },
            ClientOp::Advance { centis: 1 },
            transmit.clone(),
            answer.clone(),
        ] {
            sim.apply(&op);
        }
        assert!(sim.client.is_registered());
        sim.client.lookup(world::peers_in(1));
        sim.apply(&transmit);
        sim.open_requests();
        assert!(matches!(sim.requests.front(), Some(Request::Lookup(_))));
        sim.apply(&answer);
        assert!(sim.requests.is_empty());
    }

    #[test]
    fn the_real_server_gets_the_client_registered() {
        let mut sim = ClientSim::new();
        let transmit = ClientOp::Transmit {
            to_server: 1,
            flip: 0,
        };
        for op in [
            transmit.clone(),
            ClientOp::Deliver { count: 8 },
            ClientOp::Advance { centis: 1 },
            transmit,
            ClientOp::Deliver { count: 8 },
        ] {
            sim.apply(&op);
        }
        assert!(sim.client.is_registered());
    }
}
