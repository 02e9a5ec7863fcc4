//! The bad-input tests' world: legitimate clients registered with the real server, so that after
//! each attack the test can check the server still runs and every registration is where it was;
//! and the attacker's tools (a socket that expects silence, a deterministic generator).

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use wgpunch_common::wire::packet::{TYPE_HANDSHAKE_INIT, TYPE_TRANSPORT};

use super::client::TestClient;
use super::ServerProcess;

/// How long an attacker waits to be sure no reply comes.
pub const SILENCE: Duration = Duration::from_millis(200);

/// A (peers 2, 3), B (peer 1) and C (peer 1), registered, and A and B resolved each other.
pub struct World {
    pub server: ServerProcess,
    pub a: TestClient,
    pub b: TestClient,
    pub c: TestClient,
}

impl World {
    /// A server started for the test `name`, with A, B and C registered and checked.
    pub fn new(name: &str) -> Self {
        let mut world = Self::register(ServerProcess::start(name, &[]));
        world.check();
        world
    }

    /// A, B and C registered with `server` (not yet checked).
    pub fn register(server: ServerProcess) -> Self {
        let mut a = TestClient::with_seed(1, 1, &server, &[2, 3]);
        let mut b = TestClient::with_seed(2, 2, &server, &[1]);
        let mut c = TestClient::with_seed(3, 3, &server, &[1]);
        a.register();
        b.register();
        c.register();
        Self { server, a, b, c }
    }

    /// The server runs and every registration is where it was.
    pub fn check(&mut self) {
        self.server.assert_running();
        let (a, b, c) = (self.a.addr(), self.b.addr(), self.c.addr());
        assert_eq!(self.a.lookup(2), Some(b), "A's view of B");
        assert_eq!(self.a.lookup(3), Some(c), "A's view of C");
        assert_eq!(self.b.lookup(1), Some(a), "B's view of A");
        assert_eq!(self.c.lookup(1), Some(a), "C's view of A");
        self.server.assert_running();
    }

    /// Valid datagrams A sent: its initiation, its register and its latest lookup.
    pub fn captured(&self) -> Vec<Vec<u8>> {
        let initiations = self.a.captured(TYPE_HANDSHAKE_INIT);
        let transports = self.a.captured(TYPE_TRANSPORT);
        assert!(!initiations.is_empty() && transports.len() >= 2);
        vec![
            initiations[0].clone(),
            transports[0].clone(),
            transports[transports.len() - 1].clone(),
        ]
    }
}

/// A socket for the attacker, whose reads give up after [`SILENCE`].
pub fn attacker() -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(SILENCE)).unwrap();
    socket
}

/// Asserts that nothing at all arrives at `socket` within [`SILENCE`].
pub fn assert_silent(socket: &UdpSocket, what: &str) {
    let mut buf = [0u8; 2048];
    if let Ok((len, from)) = socket.recv_from(&mut buf) {
        panic!("{what}: got a {len}-byte reply from {from}, expected none");
    }
}

/// Sends `packet` from `attacker` to `to` once with each of its bits flipped in turn.
pub fn send_bit_flips(attacker: &UdpSocket, packet: &[u8], to: SocketAddr) {
    for bit in 0..packet.len() * 8 {
        let mut flipped = packet.to_vec();
        flipped[bit / 8] ^= 1 << (bit % 8);
        attacker.send_to(&flipped, to).unwrap();
    }
}

/// Sends every truncation of `packet` from `attacker` to `to`, from empty to one byte short.
pub fn send_truncations(attacker: &UdpSocket, packet: &[u8], to: SocketAddr) {
    for len in 0..packet.len() {
        attacker.send_to(&packet[..len], to).unwrap();
    }
}

/// A tiny deterministic generator (xorshift64), so no test depends on OS randomness.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}
