//! The natpunch-go client's whole datagram handling (`wgpunch_common::legacy::client`), against a
//! puppet natpunch-go server that the input drives: it accepts the client's latest initiation
//! with an index the input picks, answers any lookup it received (in any order, each at most once,
//! as a real server does) with an endpoint or nothing, and the input also replays, corrupts and
//! invents datagrams, lets time pass and steps the wall clock.
//!
//! Input: up to [`MAX_OPS`] operations, each a tag byte (modulo 8) and its fields, read with
//! `wgpunch_fuzz::input::Input` (any byte string is a valid script).
//!
//! Checked: nothing panics; everything the client sends is a well-formed natpunch-go client
//! datagram, with at most one lookup per send burst, naming the client's own key; and every event
//! is true: a peer is reported found at an endpoint (or not found) only if the puppet answered a
//! lookup *for that peer* with exactly that, so an answer is never taken for another peer's.
#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};

use libfuzzer_sys::fuzz_target;
use wgpunch_common::keys::PublicKey;
use wgpunch_common::legacy::client::{LegacyClient, LegacyConfig, LegacyEvent};
use wgpunch_common::legacy::packet::{parse_from_client, FromClient, HandshakeInit};
use wgpunch_common::legacy::{Accepted, LegacySession};
use wgpunch_fuzz::input::Input;
use wgpunch_fuzz::world::{self, Clock};

/// Most operations one input runs.
const MAX_OPS: usize = 128;
/// Most datagrams the client may send in one burst.
const MAX_SENDS: usize = 8;
/// Longest raw datagram.
const MAX_RAW: usize = 200;

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

fuzz_target!(|data: &[u8]| {
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

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let delivered: Option<Vec<u8>> = match input.u8() % 8 {
            0 => {
                clock.advance(input.u16());
                None
            }
            1 => {
                clock.step_wall(input.i16());
                None
            }
            2 => {
                transmit(&mut client, &mut puppet, clock, me);
                None
            }
            3 => {
                let (index, flip) = (input.u32(), input.u16());
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
            4 => {
                let (which, found, ip, port) = (input.u8(), input.u8(), input.u32(), input.u16());
                answer(&mut puppet, which, found % 2 == 1, ip, port)
            }
            5 => {
                let (which, flip) = (input.u8(), input.u16());
                let n = puppet.sent.len();
                (n > 0).then(|| world::flipped(&puppet.sent[usize::from(which) % n], flip))
            }
            6 => Some(input.chunk(MAX_RAW).to_vec()),
            _ => {
                client.lookup(world::peers_in(input.u8()));
                None
            }
        };
        if let Some(datagram) = delivered {
            client.handle_datagram(clock.now, &datagram);
        }
        while let Some(event) = client.poll_event() {
            check_event(&event, &puppet, me);
        }
    }
});

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
    panic!("the client sent more than {MAX_SENDS} datagrams at once");
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
