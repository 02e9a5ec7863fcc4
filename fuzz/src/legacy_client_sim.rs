//! The `legacy_client` target: the natpunch-go client's whole datagram handling
//! (`wgpunch_common::legacy::client`), against a puppet natpunch-go server that the input drives:
//! it accepts the client's latest initiation with an index the input picks, answers any lookup it
//! received (in any order, each at most once, as a real server does) with an endpoint or nothing,
//! and the input also replays, corrupts and invents datagrams, lets time pass and steps the wall
//! clock.
//!
//! Input: up to [`MAX_OPS`] operations, each a tag byte (modulo the number of operations) and its
//! fields as [`LegacyClientOp::decode`] reads them (any byte string is a valid script).
//!
//! Checked: nothing panics; everything the client sends is a well-formed natpunch-go client
//! datagram, with at most one lookup per send burst, naming the client's own key; and every event
//! is true: a peer is reported found at an endpoint (or not found) only if the puppet answered a
//! lookup *for that peer* with exactly that, so an answer is never taken for another peer's.

use std::net::{Ipv4Addr, SocketAddrV4};

use wgpunch_common::keys::PublicKey;
use wgpunch_common::legacy::client::{LegacyClient, LegacyConfig, LegacyEvent};
use wgpunch_common::legacy::packet::{parse_from_client, FromClient, HandshakeInit};
use wgpunch_common::legacy::{Accepted, LegacySession};

use crate::input::{Input, Script};
use crate::world::{self, Clock};

/// Most operations one input runs.
pub const MAX_OPS: usize = 128;
/// Datagrams in one burst that fail the run: the client never needs this many at once.
const MAX_SENDS: usize = 8;
/// Longest raw datagram.
const MAX_RAW: usize = 200;

/// One step of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyClientOp {
    /// Let `centis` hundredths of a second pass on both clocks.
    Advance {
        /// Hundredths of a second.
        centis: u16,
    },
    /// Step the wall clock by `secs` (negative: backwards), as NTP might.
    StepWall {
        /// Seconds.
        secs: i16,
    },
    /// The client sends what is due; the puppet receives it.
    Transmit,
    /// The puppet accepts the client's latest initiation, proposing `index`, and delivers its
    /// response with [`world::flipped`]`(flip)` applied.
    Accept {
        /// The session index the puppet hands out.
        index: u32,
        /// Which bit to flip (see [`world::flipped`]).
        flip: u16,
    },
    /// The puppet answers one of the lookups it received and has not answered yet.
    Answer {
        /// Which one, modulo their number.
        which: u8,
        /// Whether the answer is an endpoint (`ip:port`) or nothing.
        found: bool,
        /// The endpoint's IPv4 address.
        ip: u32,
        /// The endpoint's port.
        port: u16,
    },
    /// Delivers again a datagram the puppet sent, with [`world::flipped`]`(flip)` applied.
    Replay {
        /// Which one, modulo their number.
        which: u8,
        /// Which bit to flip.
        flip: u16,
    },
    /// Delivers raw bytes.
    Raw {
        /// The datagram (at most [`MAX_RAW`] bytes are read).
        bytes: Vec<u8>,
    },
    /// The client queues lookups of [`world::peers_in`]`(mask)`.
    Lookup {
        /// Which peers.
        mask: u8,
    },
}

const TAG_ADVANCE: u8 = 0;
const TAG_STEP_WALL: u8 = 1;
const TAG_TRANSMIT: u8 = 2;
const TAG_ACCEPT: u8 = 3;
const TAG_ANSWER: u8 = 4;
const TAG_REPLAY: u8 = 5;
const TAG_RAW: u8 = 6;
const TAG_LOOKUP: u8 = 7;
const TAGS: u8 = 8;

impl LegacyClientOp {
    /// Reads one operation; any bytes decode to some operation.
    pub fn decode(r: &mut Input<'_>) -> Self {
        match r.u8() % TAGS {
            TAG_ADVANCE => Self::Advance { centis: r.u16() },
            TAG_STEP_WALL => Self::StepWall { secs: r.i16() },
            TAG_TRANSMIT => Self::Transmit,
            TAG_ACCEPT => Self::Accept {
                index: r.u32(),
                flip: r.u16(),
            },
            TAG_ANSWER => Self::Answer {
                which: r.u8(),
                found: r.u8() % 2 == 1,
                ip: r.u32(),
                port: r.u16(),
            },
            TAG_REPLAY => Self::Replay {
                which: r.u8(),
                flip: r.u16(),
            },
            TAG_RAW => Self::Raw {
                bytes: r.chunk(MAX_RAW).to_vec(),
            },
            _ => Self::Lookup { mask: r.u8() },
        }
    }

    /// Writes the operation as [`LegacyClientOp::decode`] reads it.
    pub fn encode(&self, s: &mut Script) {
        match self {
            Self::Advance { centis } => s.u8(TAG_ADVANCE).u16(*centis),
            Self::StepWall { secs } => s.u8(TAG_STEP_WALL).i16(*secs),
            Self::Transmit => s.u8(TAG_TRANSMIT),
            Self::Accept { index, flip } => s.u8(TAG_ACCEPT).u32(*index).u16(*flip),
            Self::Answer {
                which,
                found,
                ip,
                port,
            } => s
                .u8(TAG_ANSWER)
                .u8(*which)
                .u8(u8::from(*found))
                .u32(*ip)
                .u16(*port),
            Self::Replay { which, flip } => s.u8(TAG_REPLAY).u8(*which).u16(*flip),
            Self::Raw { bytes } => s.u8(TAG_RAW).chunk(bytes),
            Self::Lookup { mask } => s.u8(TAG_LOOKUP).u8(*mask),
        };
    }
}

/// Writes a script of `ops`.
pub fn script(ops: &[LegacyClientOp]) -> Vec<u8> {
    let mut s = Script::new();
    for op in ops {
        op.encode(&mut s);
    }
    s.into_bytes()
}

/// What an answer the puppet sealed says.
struct Sealed {
    target: PublicKey,
    endpoint: Option<SocketAddrV4>,
}

#[derive(Default)]
struct Puppet {
    last_init: Option<HandshakeInit>,
    sessions: Vec<LegacySession>,
    /// Lookups received and not answered yet: session number and target.
    unanswered: Vec<(usize, PublicKey)>,
    /// Everything the puppet sent, for replays.
    sent: Vec<Vec<u8>>,
    sealed: Vec<Sealed>,
}

/// Runs the script in `data`, panicking when a check fails; returns the client's events.
pub fn run(data: &[u8]) -> Vec<LegacyEvent> {
    let mut input = Input::new(data);
    let mut clock = Clock::start();
    let me = world::client_key().public_key();
    let mut client = LegacyClient::new(
        world::client_key(),
        world::server_public(),
        LegacyConfig::default(),
        world::CLIENT_SEED,
    );
    let mut puppet = Puppet::default();
    let mut events = Vec::new();

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let delivered: Option<Vec<u8>> = match LegacyClientOp::decode(&mut input) {
            LegacyClientOp::Advance { centis } => {
                clock.advance(centis);
                None
            }
            LegacyClientOp::StepWall { secs } => {
                clock.step_wall(secs);
                None
            }
            LegacyClientOp::Transmit => {
                transmit(&mut client, &mut puppet, clock, me);
                None
            }
            LegacyClientOp::Accept { index, flip } => {
                let seed = world::seed(9, puppet.sessions.len());
                puppet
                    .last_init
                    .take()
                    .and_then(|init| Accepted::read(&world::server_key(), &init, seed).ok())
                    .and_then(|accepted| accepted.respond(index).ok())
                    .map(|(session, response)| {
                        puppet.sessions.push(session);
                        puppet.sent.push(response.clone());
                        world::flipped(&response, flip)
                    })
            }
            LegacyClientOp::Answer {
                which,
                found,
                ip,
                port,
            } => answer(&mut puppet, which, found, ip, port),
            LegacyClientOp::Replay { which, flip } => {
                let n = puppet.sent.len();
                (n > 0).then(|| world::flipped(&puppet.sent[usize::from(which) % n], flip))
            }
            LegacyClientOp::Raw { bytes } => Some(bytes),
            LegacyClientOp::Lookup { mask } => {
                client.lookup(world::peers_in(mask));
                None
            }
        };
        if let Some(datagram) = delivered {
            client.handle_datagram(clock.now, &datagram);
        }
        while let Some(event) = client.poll_event() {
            check_event(&event, &puppet, me);
            events.push(event);
        }
    }
    events
}

/// Lets the client send what is due; the puppet receives it.
fn transmit(client: &mut LegacyClient, puppet: &mut Puppet, clock: Clock, me: PublicKey) {
    let mut lookups = 0;
    for _ in 0..MAX_SENDS {
        let Some(datagram) = client.poll_transmit(clock.now, clock.wall) else {
            return;
        };
        match parse_from_client(&datagram) {
            Ok(FromClient::HandshakeInit(init)) => puppet.last_init = Some(init),
            Ok(FromClient::Lookup(lookup)) => {
                lookups += 1;
                assert!(lookups <= 1, "two lookups in one burst");
                for (n, session) in puppet.sessions.iter_mut().enumerate() {
                    if session.index != lookup.index {
                        continue;
                    }
                    if let Ok(request) = session.open_lookup(&lookup) {
                        assert_eq!(request.client, me, "a lookup must name the client");
                        puppet.unanswered.push((n, request.target));
                        break;
                    }
                }
            }
            Err(e) => panic!("the client sent a malformed datagram ({e}): {datagram:02x?}"),
        }
    }
    panic!("the client sent {MAX_SENDS} datagrams at once");
}

/// The puppet answers one of the lookups it received and has not answered yet.
fn answer(puppet: &mut Puppet, which: u8, found: bool, ip: u32, port: u16) -> Option<Vec<u8>> {
    let n = puppet.unanswered.len();
    if n == 0 {
        return None;
    }
    let (session, target) = puppet.unanswered.remove(usize::from(which) % n);
    let endpoint = found.then(|| SocketAddrV4::new(Ipv4Addr::from(ip), port));
    let datagram = puppet
        .sessions
        .get_mut(session)?
        .seal_answer(endpoint)
        .ok()?;
    puppet.sent.push(datagram.clone());
    puppet.sealed.push(Sealed { target, endpoint });
    Some(datagram)
}

/// Fails unless the puppet said what `event` claims, about the peer it names.
fn check_event(event: &LegacyEvent, puppet: &Puppet, me: PublicKey) {
    let (peer, endpoint) = match *event {
        LegacyEvent::Connected => return,
        LegacyEvent::Observed(endpoint) => (me, Some(endpoint)),
        LegacyEvent::Found { peer, endpoint } => (peer, Some(endpoint)),
        LegacyEvent::NotFound { peer } => (peer, None),
    };
    let said = puppet
        .sealed
        .iter()
        .any(|s| s.target == peer && s.endpoint == endpoint);
    assert!(
        said,
        "{event:?}, but the puppet never answered that about this peer"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_round_trips() {
        let ops = [
            LegacyClientOp::Advance { centis: 300 },
            LegacyClientOp::StepWall { secs: -30 },
            LegacyClientOp::Transmit,
            LegacyClientOp::Accept { index: 7, flip: 9 },
            LegacyClientOp::Answer {
                which: 2,
                found: true,
                ip: 0xc633_6414,
                port: 51820,
            },
            LegacyClientOp::Replay { which: 1, flip: 0 },
            LegacyClientOp::Raw { bytes: vec![3; 25] },
            LegacyClientOp::Lookup { mask: 0b101 },
        ];
        let bytes = script(&ops);
        let mut r = Input::new(&bytes);
        for op in &ops {
            assert_eq!(&LegacyClientOp::decode(&mut r), op);
        }
        assert!(r.is_empty());
    }

    #[test]
    fn empty_and_short_inputs_run() {
        assert!(run(&[]).is_empty());
        run(&[7]);
        run(&[2, 3]);
    }
}
