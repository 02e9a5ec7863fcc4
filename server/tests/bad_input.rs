//! Bad input against the real `wgpunch-server` binary on loopback: garbage, truncations, bit flips,
//! replays, unknown sessions and malformed authenticated plaintexts. After every attack the server
//! must still run, answer legitimate clients correctly, and hold every registration unchanged;
//! and every attack that is not a valid, fresh, authenticated request must get no reply at all.
//! The same for natpunch-go's packets is in `bad_input_legacy.rs`.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::handshake::{unix_nanos, Initiation};
use wgpunch_common::keys::PrivateKey;
use wgpunch_common::session::Session;
use wgpunch_common::wire::message::KIND_LOOKUP;
use wgpunch_common::wire::packet::{MAC1_OFFSET, MAC_LEN, TYPE_HANDSHAKE_INIT, TYPE_TRANSPORT};
use wgpunch_common::wire::{Lookup, Packet, Register, Reply, Request};

use support::attack::{
    assert_silent, attacker, send_bit_flips, send_truncations, Rng, World, SILENCE,
};
use support::client::TestClient;
use support::{public, ServerProcess};

/// A session of our own, with a key we control, for sending sealed plaintexts of our choice.
struct OwnSession {
    session: Session,
    socket: UdpSocket,
    server: SocketAddr,
}

impl OwnSession {
    fn handshake(key: u8, server: &ServerProcess) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let (pending, datagram) = Initiation::start(
            &PrivateKey::from_bytes([key; 32]),
            &server.public,
            0x5eed_0000 | u32::from(key),
            unix_nanos(SystemTime::now()),
            [key; 32],
        )
        .unwrap();
        socket.send_to(&datagram, server.addr).unwrap();
        let mut buf = [0u8; 2048];
        let (len, _) = socket.recv_from(&mut buf).expect("handshake response");
        let Ok(Packet::HandshakeResponse(response)) = Packet::parse(&buf[..len]) else {
            panic!("not a handshake response")
        };
        let session = pending.complete(&response).unwrap();
        Self {
            session,
            socket,
            server: server.addr,
        }
    }

    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut datagram = Vec::new();
        self.session.seal(plaintext, &mut datagram).unwrap();
        datagram
    }

    fn send(&mut self, plaintext: &[u8]) {
        let datagram = self.seal(plaintext);
        self.socket.send_to(&datagram, self.server).unwrap();
    }

    /// Receives and opens one reply.
    fn reply(&mut self) -> Reply {
        self.try_reply().expect("a reply")
    }

    /// Receives and opens one reply, if one comes before the socket's read timeout.
    fn try_reply(&mut self) -> std::io::Result<Reply> {
        let mut buf = [0u8; 2048];
        let (len, _) = self.socket.recv_from(&mut buf)?;
        let Ok(Packet::Transport(message)) = Packet::parse(&buf[..len]) else {
            panic!("not a transport message")
        };
        let mut plain = [0u8; 1200];
        let n = self.session.open(&message, &mut plain).unwrap();
        Ok(Reply::parse(&plain[..n]).unwrap())
    }

    fn assert_silent(&self, what: &str) {
        self.socket.set_read_timeout(Some(SILENCE)).unwrap();
        assert_silent(&self.socket, what);
        self.socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
    }
}

fn encode(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request.emit(&mut out).unwrap();
    out
}

fn lookup_plaintext(peers: &[u8]) -> Vec<u8> {
    encode(&Request::Lookup(Lookup {
        request_id: 7,
        peers: peers.iter().map(|&p| public(p)).collect(),
        punched: 0,
    }))
}

fn register_plaintext(peers: &[u8]) -> Vec<u8> {
    encode(&Request::Register(Register {
        request_id: 8,
        generation: 1,
        part: 0,
        parts: 1,
        peers: peers.iter().map(|&p| public(p)).collect(),
        local_addrs: vec![],
        watch: false,
        hard_nat: false,
    }))
}

#[test]
fn empty_and_one_byte_datagrams_are_dropped_silently() {
    let mut world = World::new("short");
    let attacker = attacker();
    attacker.send_to(&[], world.server.addr).unwrap();
    for byte in 0..=255u8 {
        attacker.send_to(&[byte], world.server.addr).unwrap();
    }
    assert_silent(&attacker, "empty and 1-byte datagrams");
    world.check();
}

#[test]
fn truncated_and_extended_packets_are_dropped_silently() {
    let mut world = World::new("truncate");
    let attacker = attacker();
    for packet in world.captured() {
        send_truncations(&attacker, &packet, world.server.addr);
        for extra in [1, 100] {
            let mut longer = packet.clone();
            longer.resize(packet.len() + extra, 0xA5);
            attacker.send_to(&longer, world.server.addr).unwrap();
        }
    }
    assert_silent(&attacker, "truncated or extended packets");
    world.check();
}

#[test]
fn every_single_bit_flip_is_dropped_silently() {
    let mut world = World::new("bitflip");
    let attacker = attacker();
    for packet in world.captured() {
        send_bit_flips(&attacker, &packet, world.server.addr);
    }
    assert_silent(&attacker, "bit-flipped packets");
    world.check();
}

#[test]
fn bit_flips_of_an_unseen_transport_message_do_not_burn_its_counter() {
    let mut world = World::new("unseen");
    let mut own = OwnSession::handshake(9, &world.server);
    let attacker = attacker();
    let register = own.seal(&register_plaintext(&[]));
    send_bit_flips(&attacker, &register, world.server.addr);
    send_truncations(&attacker, &register, world.server.addr);
    assert_silent(&attacker, "forgeries of an unseen transport message");
    own.socket.send_to(&register, world.server.addr).unwrap();
    assert!(
        matches!(own.reply(), Reply::RegisterAck(ack) if ack.observed == own.socket.local_addr().unwrap()),
        "the genuine message still opens after its forgeries"
    );
    world.check();
}

#[test]
fn an_initiation_with_a_wrong_mac1_gets_no_reply() {
    let mut world = World::new("mac1");
    let attacker = attacker();
    let (_, fresh) = Initiation::start(
        &PrivateKey::from_bytes([9; 32]),
        &world.server.public,
        99,
        unix_nanos(SystemTime::now()),
        [9; 32],
    )
    .unwrap();
    for i in 0..MAC_LEN {
        let mut bad = fresh.clone();
        bad[MAC1_OFFSET + i] ^= 0xFF;
        attacker.send_to(&bad, world.server.addr).unwrap();
    }
    let mut zeroed = fresh.clone();
    zeroed[MAC1_OFFSET..MAC1_OFFSET + MAC_LEN].fill(0);
    attacker.send_to(&zeroed, world.server.addr).unwrap();
    assert_silent(&attacker, "initiation with a wrong mac1");
    // The same fresh initiation with its real mac1 is answered: the silence was the mac1's doing.
    attacker.send_to(&fresh, world.server.addr).unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = attacker
        .recv_from(&mut buf)
        .expect("an answer to the real initiation");
    assert!(matches!(
        Packet::parse(&buf[..len]),
        Ok(Packet::HandshakeResponse(_))
    ));
    world.check();
}

#[test]
fn a_replayed_initiation_gets_no_reply_and_moves_nothing() {
    let mut world = World::new("replay-init");
    let attacker = attacker();
    let initiation = world.a.captured(TYPE_HANDSHAKE_INIT)[0].clone();
    for _ in 0..3 {
        attacker.send_to(&initiation, world.server.addr).unwrap();
    }
    assert_silent(&attacker, "replayed initiation");
    world.check();
}

#[test]
fn a_replayed_initiation_after_a_restart_creates_and_moves_no_registration() {
    let mut world = World::new("restart");
    let old_initiation = world.a.captured(TYPE_HANDSHAKE_INIT)[0].clone();
    world.server.restart();
    world.server.assert_running();
    let attacker = attacker();
    // Before A registers again: an answer is allowed, a registration is not.
    attacker
        .send_to(&old_initiation, world.server.addr)
        .unwrap();
    let mut buf = [0u8; 2048];
    if let Ok((len, _)) = attacker.recv_from(&mut buf) {
        assert!(matches!(
            Packet::parse(&buf[..len]),
            Ok(Packet::HandshakeResponse(_))
        ));
    }
    let mut b = TestClient::with_seed(2, 102, &world.server, &[1]);
    b.register();
    assert_eq!(
        b.lookup(1),
        None,
        "a replayed initiation created a registration"
    );

    let mut a = TestClient::with_seed(1, 101, &world.server, &[2, 3]);
    let mut c = TestClient::with_seed(3, 103, &world.server, &[1]);
    a.register();
    c.register();
    world.a = a;
    world.b = b;
    world.c = c;
    world.check();
    attacker
        .send_to(&old_initiation, world.server.addr)
        .unwrap();
    // Whatever answer comes, the attacker cannot use it; nothing may move.
    let _ = attacker.recv_from(&mut buf);
    world.check();
}

#[test]
fn replayed_transport_messages_get_no_reply_and_do_not_move_the_sender() {
    let mut world = World::new("replay-transport");
    let attacker = attacker();
    for transport in world.a.captured(TYPE_TRANSPORT) {
        attacker.send_to(&transport, world.server.addr).unwrap();
    }
    assert_silent(&attacker, "replayed transport messages");
    world.check();
}

#[test]
fn transport_messages_for_unknown_sessions_get_no_reply() {
    let mut world = World::new("unknown-index");
    let attacker = attacker();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let template = world.a.captured(TYPE_TRANSPORT)[0].clone();
    for i in 0..2000 {
        let len = [40, template.len(), 76, 1232][i % 4];
        let mut datagram = vec![0u8; len];
        datagram[0] = TYPE_TRANSPORT;
        let index = rng.next() as u32;
        datagram[4..8].copy_from_slice(&index.to_be_bytes());
        datagram[8..16].copy_from_slice(&(rng.next() % 1024).to_be_bytes());
        for byte in &mut datagram[16..] {
            *byte = rng.next() as u8;
        }
        attacker.send_to(&datagram, world.server.addr).unwrap();
    }
    // A's real message body under random indexes.
    for _ in 0..200 {
        let mut datagram = template.clone();
        datagram[4..8].copy_from_slice(&(rng.next() as u32).to_be_bytes());
        attacker.send_to(&datagram, world.server.addr).unwrap();
    }
    assert_silent(&attacker, "transport for unknown sessions");
    world.check();
}

#[test]
fn malformed_authenticated_plaintexts_get_no_reply() {
    let mut world = World::new("malformed");
    let mut own = OwnSession::handshake(9, &world.server);
    let mut lookup = lookup_plaintext(&[1]);
    let register = register_plaintext(&[1]);

    let mut garbage: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("one byte", vec![KIND_LOOKUP]),
        ("eight zero bytes", vec![0; 8]),
        ("32 zero bytes", vec![0; 32]),
    ];
    for kind in [0x00, 0x02, 0x04, 0x05, 0x7F, 0xFF] {
        let mut p = vec![0u8; 32];
        p[0] = kind;
        garbage.push(("unknown kind", p));
    }
    let mut p = lookup.clone();
    p[2..4].copy_from_slice(&0u16.to_be_bytes());
    garbage.push(("lookup with count 0", p));
    let mut p = lookup_plaintext(&[1; 32]);
    p[2..4].copy_from_slice(&33u16.to_be_bytes());
    p.extend_from_slice(public(1).as_bytes());
    garbage.push(("lookup with count 33", p));
    let mut p = lookup.clone();
    p[2..4].copy_from_slice(&2u16.to_be_bytes());
    garbage.push(("lookup with count over its keys", p));
    let mut p = lookup.clone();
    p[1] = 1;
    garbage.push(("lookup with a reserved byte set", p));
    let mut p = lookup.clone();
    p[8..12].copy_from_slice(&2u32.to_be_bytes());
    garbage.push(("lookup punching a key it did not ask for", p));
    let mut p = lookup.clone();
    p.push(0);
    garbage.push(("lookup with one byte too many", p));
    let mut p = lookup.clone();
    p.pop();
    garbage.push(("lookup with one byte too few", p));
    let mut p = register.clone();
    p[2] = 0;
    garbage.push(("register with parts 0", p));
    let mut p = register.clone();
    p[1] = 1;
    garbage.push(("register with part equal to parts", p));
    let mut p = register.clone();
    p[3] = 1;
    garbage.push(("register announcing an address it lacks", p));
    let mut p = register.clone();
    p[12..14].copy_from_slice(&33u16.to_be_bytes());
    p.resize(16 + 33 * 32, 0);
    garbage.push(("register with 33 keys", p));
    let mut p = register.clone();
    p[14] = 1;
    garbage.push(("register with a reserved byte set", p));
    // Dirty padding: a request shorter than 32 bytes with a non-zero pad byte.
    let mut p = register_plaintext(&[]);
    p[31] = 1;
    garbage.push(("register with dirty padding", p));
    lookup.truncate(12);
    lookup.resize(32, 0);
    lookup[2..4].copy_from_slice(&0u16.to_be_bytes());
    lookup[31] = 0xFF;
    garbage.push(("lookup with count 0 and dirty padding", lookup));
    garbage.push(("all 0xFF", vec![0xFF; 1200]));

    for (what, plaintext) in &garbage {
        own.send(plaintext);
        own.assert_silent(what);
    }
    // The session survived all of it: real requests are still answered.
    own.send(&register_plaintext(&[1]));
    assert!(matches!(own.reply(), Reply::RegisterAck(_)));
    own.send(&lookup_plaintext(&[1]));
    let Reply::LookupReply(reply) = own.reply() else {
        panic!("not a lookup reply")
    };
    assert_eq!(reply.entries, vec![None], "A does not list key 9");
    world.check();
}

#[test]
fn a_lookup_flood_leaves_the_server_responsive() {
    let mut world = World::new("flood");
    let mut own = OwnSession::handshake(9, &world.server);
    own.send(&register_plaintext(&[1]));
    assert!(matches!(own.reply(), Reply::RegisterAck(_)));
    let lookup = lookup_plaintext(&[1, 2, 3]);
    let datagrams: Vec<Vec<u8>> = (0..10_000).map(|_| own.seal(&lookup)).collect();
    let socket = own.socket.try_clone().unwrap();
    let server = world.server.addr;
    let started = Instant::now();
    let flood = std::thread::spawn(move || {
        for datagram in &datagrams {
            socket.send_to(datagram, server).unwrap();
        }
    });
    // Legitimate clients are served during the flood, too.
    world.check();
    flood.join().unwrap();
    let flood_time = started.elapsed();
    world.check();
    // The flood was served, not just dropped: its replies open under our session.
    own.socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut answered = 0;
    while let Ok(Reply::LookupReply(reply)) = own.try_reply() {
        assert_eq!(reply.entries, vec![None; 3], "nobody lists key 9");
        answered += 1;
    }
    assert!(answered > 0, "no lookup of the flood was answered");
    assert!(
        flood_time < Duration::from_secs(30),
        "flood and checks took {flood_time:?}"
    );
}
