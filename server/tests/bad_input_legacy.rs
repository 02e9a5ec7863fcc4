//! natpunch-go's packets against the real `wgpunch-server` binary on loopback, started with
//! `--compat natpunch-go`: garbage, truncations, bit flips, replayed and stale initiations,
//! replayed lookups, lookups naming another key and unknown indexes. After every attack the server
//! must still run, answer legitimate native and natpunch-go clients correctly, and hold every
//! registration unchanged; and every attack must get no reply at all. The native protocol's
//! attacks are in `bad_input.rs`.

mod legacy_client;
mod support;

use std::net::SocketAddr;

use legacy_client::{now_nanos, LegacyClient};
use support::attack::{assert_silent, attacker, send_bit_flips, send_truncations, Rng, World};
use support::{public, ServerProcess, COMPAT};

/// The native world on a server with `--compat natpunch-go`, plus natpunch-go clients D (key 4)
/// and E (key 5) that found each other.
struct LegacyWorld {
    world: World,
    d: LegacyClient,
    e: LegacyClient,
}

impl LegacyWorld {
    fn new(name: &str) -> Self {
        let world = World::register(ServerProcess::start(name, COMPAT));
        let server = &world.server;
        let mut d = LegacyClient::new(4, server.addr, server.public);
        let mut e = LegacyClient::new(5, server.addr, server.public);
        assert!(d.handshake() && e.handshake(), "legacy handshakes");
        assert_eq!(d.lookup(&e.public), Some(None), "E has not looked up yet");
        let mut world = Self { world, d, e };
        world.check();
        world
    }

    /// The server runs and every native and natpunch-go registration is where it was.
    fn check(&mut self) {
        self.world.check();
        let (d, e) = (self.d.addr(), self.e.addr());
        let (dk, ek) = (self.d.public, self.e.public);
        assert_eq!(
            self.e.lookup(&dk).map(|a| a.map(SocketAddr::V4)),
            Some(Some(d))
        );
        assert_eq!(
            self.d.lookup(&ek).map(|a| a.map(SocketAddr::V4)),
            Some(Some(e))
        );
        self.world.server.assert_running();
    }

    /// D's captured initiation and lookups.
    fn captured(&self) -> Vec<Vec<u8>> {
        self.d.sent.clone()
    }

    fn addr(&self) -> SocketAddr {
        self.world.server.addr
    }
}

#[test]
fn natpunch_go_empty_and_one_byte_datagrams_are_dropped_silently() {
    let mut world = LegacyWorld::new("legacy-short");
    let attacker = attacker();
    attacker.send_to(&[], world.addr()).unwrap();
    for byte in 0..=255u8 {
        attacker.send_to(&[byte], world.addr()).unwrap();
    }
    for kind in 1..=3u8 {
        for len in [2, 5, 9, 13] {
            attacker.send_to(&vec![kind; len], world.addr()).unwrap();
        }
    }
    assert_silent(&attacker, "empty and short datagrams with compat on");
    world.check();
}

#[test]
fn natpunch_go_truncated_and_extended_packets_are_dropped_silently() {
    let mut world = LegacyWorld::new("legacy-truncate");
    let attacker = attacker();
    let mut packets = world.captured();
    // The server-to-client shapes, sent to the server: a response and both answer sizes.
    packets.push(vec![2; 53]);
    packets.push(vec![3; 25]);
    packets.push(vec![3; 31]);
    for packet in &packets {
        send_truncations(&attacker, packet, world.addr());
        let mut longer = packet.clone();
        longer.push(0xA5);
        attacker.send_to(&longer, world.addr()).unwrap();
    }
    for packet in &packets[packets.len() - 3..] {
        attacker.send_to(packet, world.addr()).unwrap();
    }
    assert_silent(&attacker, "truncated or extended natpunch-go packets");
    world.check();
}

#[test]
fn natpunch_go_bit_flips_are_dropped_and_do_not_burn_a_nonce() {
    let mut world = LegacyWorld::new("legacy-bitflip");
    let attacker = attacker();
    for packet in world.captured() {
        send_bit_flips(&attacker, &packet, world.addr());
    }
    // A lookup the server has not seen yet, forged every way before the genuine one arrives.
    let target = world.e.public;
    let unseen = world.d.lookup_datagram(&target);
    send_bit_flips(&attacker, &unseen, world.addr());
    assert_silent(&attacker, "bit-flipped natpunch-go packets");
    world.d.send_raw(&unseen);
    assert_eq!(
        world.d.answer(),
        Some(Some(match world.e.addr() {
            SocketAddr::V4(v4) => v4,
            SocketAddr::V6(_) => unreachable!(),
        })),
        "the genuine lookup still opens after its forgeries"
    );
    world.check();
}

#[test]
fn natpunch_go_replayed_initiations_and_old_timestamps_get_no_reply() {
    let mut world = LegacyWorld::new("legacy-replay-init");
    let attacker = attacker();
    let initiation = world.d.sent[0].clone();
    assert_eq!(initiation[0], 1);
    for _ in 0..3 {
        attacker.send_to(&initiation, world.addr()).unwrap();
    }
    // A fresh Noise message, but with a timestamp older than the one the server accepted.
    let (_, older) = world.d.initiation(77, now_nanos() - 60_000_000_000);
    attacker.send_to(&older, world.addr()).unwrap();
    // And one far from the server's clock.
    let (_, future) = world.d.initiation(78, now_nanos() + 3_600_000_000_000);
    attacker.send_to(&future, world.addr()).unwrap();
    assert_silent(&attacker, "replayed or stale natpunch-go initiations");
    world.check();
}

#[test]
fn natpunch_go_replayed_lookups_get_no_reply_and_do_not_move_the_sender() {
    let mut world = LegacyWorld::new("legacy-replay-lookup");
    let attacker = attacker();
    let lookups: Vec<Vec<u8>> = world.captured().into_iter().filter(|d| d[0] == 3).collect();
    assert!(!lookups.is_empty());
    for lookup in &lookups {
        attacker.send_to(lookup, world.addr()).unwrap();
    }
    assert_silent(&attacker, "replayed natpunch-go lookups");
    world.check();
}

#[test]
fn natpunch_go_lookups_naming_another_client_key_get_no_reply() {
    let mut world = LegacyWorld::new("legacy-other-key");
    // D, in its own session, claims to be key 6 and to be E.
    for claimed in [public(6), world.e.public] {
        let target = world.e.public;
        let forged = world.d.lookup_as(&claimed, &target);
        world.d.send_raw(&forged);
        assert_eq!(world.d.answer(), None, "a lookup as {claimed} was answered");
    }
    // Key 6 was not registered by it: a fresh natpunch-go client 7 does not find it.
    let mut g = LegacyClient::new(7, world.addr(), world.world.server.public);
    assert!(g.handshake());
    assert_eq!(g.lookup(&public(6)), Some(None));
    world.check();
}

#[test]
fn natpunch_go_lookups_for_unknown_indexes_get_no_reply() {
    let mut world = LegacyWorld::new("legacy-unknown-index");
    let attacker = attacker();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let template = world.captured().into_iter().rfind(|d| d[0] == 3).unwrap();
    for _ in 0..500 {
        let mut datagram = template.clone();
        datagram[1..5].copy_from_slice(&(rng.next() as u32).to_be_bytes());
        attacker.send_to(&datagram, world.addr()).unwrap();
        let mut random = vec![3u8; 93];
        for byte in &mut random[1..] {
            *byte = rng.next() as u8;
        }
        attacker.send_to(&random, world.addr()).unwrap();
    }
    assert_silent(&attacker, "natpunch-go lookups for unknown sessions");
    world.check();
}
