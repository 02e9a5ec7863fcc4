//! A client that claims a low-order (or all-zero) static key gets no session.
//!
//! No private key has such a public key, but an attacker does not need one: the server's
//! Diffie-Hellman of its key with a low-order point is a known value (all zeros), so the
//! attacker can finish the Noise message for any such point and "be" a key nobody owns. The test
//! builds exactly that initiation with snow, through a resolver whose static Diffie-Hellman
//! pretends to own the point, and sends it to the server core.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use wgpunch_common::keys::{PrivateKey, PublicKey};
use wgpunch_common::mac::Mac1Key;
use wgpunch_common::noise::{NOISE_PARAMS, PROLOGUE};
use wgpunch_common::server::{Server, ServerConfig};
use wgpunch_common::wire::packet::{HandshakeInit, MAC1_OFFSET, NOISE_INIT_LEN};
use wgpunch_common::wire::Packet;

/// The private key that makes [`ClaimingDh`] claim its low-order point instead.
const CLAIM: [u8; 32] = [0xAA; 32];

/// Low-order points of Curve25519 (in their usual encodings): zero, one, and a point of order 8.
const LOW_ORDER: [[u8; 32]; 3] = [
    [0; 32],
    {
        let mut one = [0; 32];
        one[0] = 1;
        one
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
];

/// X25519 that, given the private key [`CLAIM`], poses as the owner of `point`: that is its
/// public key, and every Diffie-Hellman with it gives what the server's side gives, all zeros.
struct ClaimingDh {
    real: Box<dyn Dh>,
    point: [u8; 32],
    claiming: bool,
}

impl Dh for ClaimingDh {
    fn name(&self) -> &'static str {
        self.real.name()
    }
    fn pub_len(&self) -> usize {
        self.real.pub_len()
    }
    fn priv_len(&self) -> usize {
        self.real.priv_len()
    }
    fn set(&mut self, privkey: &[u8]) {
        self.claiming = privkey == CLAIM;
        self.real.set(privkey);
    }
    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        self.claiming = false;
        self.real.generate(rng)
    }
    fn pubkey(&self) -> &[u8] {
        if self.claiming {
            &self.point
        } else {
            self.real.pubkey()
        }
    }
    fn privkey(&self) -> &[u8] {
        self.real.privkey()
    }
    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        if self.claiming {
            out.iter_mut().for_each(|b| *b = 0);
            Ok(())
        } else {
            self.real.dh(pubkey, out)
        }
    }
}

struct ClaimingResolver([u8; 32]);

impl CryptoResolver for ClaimingResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        DefaultResolver.resolve_rng()
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        Some(Box::new(ClaimingDh {
            real: DefaultResolver.resolve_dh(choice)?,
            point: self.0,
            claiming: false,
        }))
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A complete handshake initiation (with a valid mac1) from the static key `private`, claiming
/// `point` when `private` is [`CLAIM`].
fn initiation(private: [u8; 32], point: [u8; 32], server: &PublicKey) -> Vec<u8> {
    let params = NOISE_PARAMS.parse().unwrap();
    let mut state = snow::Builder::with_resolver(params, Box::new(ClaimingResolver(point)))
        .prologue(PROLOGUE)
        .unwrap()
        .local_private_key(&private)
        .unwrap()
        .remote_public_key(server.as_bytes())
        .unwrap()
        .build_initiator()
        .unwrap();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let timestamp = u64::try_from(now.as_nanos()).unwrap();
    let mut noise = [0u8; NOISE_INIT_LEN];
    let len = state
        .write_message(&timestamp.to_be_bytes(), &mut noise)
        .unwrap();
    assert_eq!(len, NOISE_INIT_LEN);
    let mut message = HandshakeInit {
        sender_index: 7,
        noise,
        mac1: [0; 16],
        mac2: [0; 16],
    };
    let mut datagram = Vec::new();
    message.emit(&mut datagram);
    message.mac1 = Mac1Key::for_server(server).compute(&datagram[..MAC1_OFFSET]);
    datagram.clear();
    message.emit(&mut datagram);
    datagram
}

fn server() -> Server {
    Server::new(
        PrivateKey::from_bytes([100; 32]),
        ServerConfig::default(),
        [9; 32],
    )
}

#[test]
fn an_initiation_built_this_way_from_a_real_key_is_answered() {
    let mut server = server();
    let datagram = initiation([5; 32], LOW_ORDER[0], &server.public_key());
    let reply = server.handle(
        Instant::now(),
        SystemTime::now(),
        "198.51.100.7:4000".parse().unwrap(),
        &datagram,
    );
    assert!(
        matches!(
            reply.as_deref().map(Packet::parse),
            Some(Ok(Packet::HandshakeResponse(_)))
        ),
        "{:?}",
        server.stats()
    );
    assert_eq!(server.stats().handshakes, 1);
}

#[test]
fn low_order_static_keys_get_silence_and_no_session() {
    for point in LOW_ORDER {
        let mut server = server();
        let datagram = initiation(CLAIM, point, &server.public_key());
        let reply = server.handle(
            Instant::now(),
            SystemTime::now(),
            "198.51.100.7:4000".parse().unwrap(),
            &datagram,
        );
        let stats = server.stats();
        assert!(
            reply.is_none(),
            "answered a claim of {point:02x?}: {stats:?}"
        );
        assert_eq!(stats.handshakes, 0, "{stats:?}");
        assert_eq!(stats.bad_handshake, 1, "{stats:?}");
        assert_eq!(server.session_count(), 0);
    }
}
