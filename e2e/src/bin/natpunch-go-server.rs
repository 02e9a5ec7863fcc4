//! `natpunch-go-server`: a test stand-in for natpunch-go's discovery server, speaking exactly the
//! bytes described in `shared/natpunch-go-wire.md`, written from that description alone.
//!
//! It exists so that end-to-end tests can check `wgpunch-client --protocol natpunch-go` against a
//! server that shares no code with wgpunch: it uses `snow` directly, with natpunch-go's prologue,
//! and its own packet layouts, replay window and tables. Like natpunch-go's server it records the
//! source `ip:port` of every accepted initiation and lookup, keeps every entry for ever and answers
//! any client that completed a handshake. Unlike it, it drops malformed datagrams instead of dying.
//!
//! ```text
//! natpunch-go-server PORT KEY_FILE
//! ```
//!
//! `KEY_FILE` holds a base64 Curve25519 private key (`wg genkey`). It prints `public key: KEY` on
//! stdout once it listens, and one line on stderr per recorded endpoint:
//! `recorded KEY at IP:PORT (initiation|lookup)`, and per answer: `answered KEY about KEY: ...`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use snow::params::DHChoice;
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::{Builder, StatelessTransportState};

/// natpunch-go's Noise protocol.
const PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// natpunch-go's prologue (26 ASCII bytes).
const PROLOGUE: &[u8] = b"natpunch-go is the best :)";

const TYPE_INITIATION: u8 = 1;
const TYPE_RESPONSE: u8 = 2;
const TYPE_LOOKUP: u8 = 3;
const TYPE_ANSWER: u8 = 3;

/// `0x01` · index u32 · e 32 · encrypted s 48 · encrypted timestamp 24.
const INITIATION_LEN: usize = 1 + 4 + 32 + 48 + 24;
/// `0x03` · index u32 · nonce u64 · ciphertext 64 + tag 16.
const LOOKUP_LEN: usize = 1 + 4 + 8 + 64 + 16;
const TAG_LEN: usize = 16;
const KEY_LEN: usize = 32;

/// Counters this far behind the highest one received are still accepted, once.
const REPLAY_WINDOW: u64 = 64;

/// Which of the last [`REPLAY_WINDOW`] counters arrived.
#[derive(Debug, Default)]
struct Replay {
    /// One above the highest counter accepted (0: none yet).
    next: u64,
    /// Bit `i` set: counter `next - 1 - i` arrived.
    seen: u64,
}

impl Replay {
    fn is_fresh(&self, counter: u64) -> bool {
        if counter >= self.next {
            return true;
        }
        let behind = self.next - 1 - counter;
        behind < REPLAY_WINDOW && self.seen & (1 << behind) == 0
    }

    fn accept(&mut self, counter: u64) {
        if counter >= self.next {
            let shift = counter - self.next + 1;
            self.seen = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.next = counter + 1;
        } else {
            self.seen |= 1 << (self.next - 1 - counter);
        }
    }
}

/// One completed handshake.
struct Session {
    client: [u8; KEY_LEN],
    transport: StatelessTransportState,
    send_counter: u64,
    replay: Replay,
}

/// Everything the server knows.
struct Server {
    private: [u8; KEY_LEN],
    /// Sessions by the index the server returned in its response.
    sessions: HashMap<u32, Session>,
    /// Last accepted handshake timestamp per client key.
    timestamps: HashMap<[u8; KEY_LEN], u64>,
    /// Last observed IPv4 source per client key, kept for ever.
    endpoints: HashMap<[u8; KEY_LEN], SocketAddr>,
    next_index: u32,
}

fn b64(key: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn u32_at(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(data.get(at..at + 8)?.try_into().ok()?))
}

impl Server {
    fn new(private: [u8; KEY_LEN]) -> Self {
        Self {
            private,
            sessions: HashMap::new(),
            timestamps: HashMap::new(),
            endpoints: HashMap::new(),
            next_index: 1,
        }
    }

    /// The reply to one datagram from `from`, if any. Anything malformed gets `None`.
    fn handle(&mut self, data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        match (data.first().copied(), data.len()) {
            (Some(TYPE_INITIATION), INITIATION_LEN) => self.initiation(data, from),
            (Some(TYPE_LOOKUP), LOOKUP_LEN) => self.lookup(data, from),
            _ => {
                eprintln!("dropped a {}-byte datagram from {from}", data.len());
                None
            }
        }
    }

    fn record(&mut self, client: [u8; KEY_LEN], from: SocketAddr, what: &str) {
        // natpunch-go answers with an IPv4 address only.
        let from = match from.ip() {
            IpAddr::V4(_) => from,
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), from.port()),
                None => return,
            },
        };
        self.endpoints.insert(client, from);
        eprintln!("recorded {} at {from} ({what})", b64(&client));
    }

    fn initiation(&mut self, data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let index = u32_at(data, 1)?;
        let message = data.get(5..)?;
        let mut noise = Builder::new(PARAMS.parse().ok()?)
            .local_private_key(&self.private)
            .ok()?
            .prologue(PROLOGUE)
            .ok()?
            .build_responder()
            .ok()?;
        let mut payload = [0u8; 64];
        let Ok(len) = noise.read_message(message, &mut payload) else {
            eprintln!("dropped an initiation from {from}: it does not decrypt");
            return None;
        };
        let timestamp = u64_at(payload.get(..len)?, 0).filter(|_| len == 8)?;
        let client: [u8; KEY_LEN] = noise.get_remote_static()?.try_into().ok()?;
        if self
            .timestamps
            .get(&client)
            .is_some_and(|last| timestamp <= *last)
        {
            eprintln!(
                "dropped an initiation from {} at {from}: timestamp not newer",
                b64(&client)
            );
            return None;
        }
        let mut response = vec![TYPE_RESPONSE];
        // Keep the client's index unless another session holds it.
        let index = if self.sessions.contains_key(&index) {
            while self.sessions.contains_key(&self.next_index) {
                self.next_index = self.next_index.wrapping_add(1);
            }
            self.next_index
        } else {
            index
        };
        response.extend_from_slice(&index.to_be_bytes());
        let mut message = [0u8; 64];
        let len = noise.write_message(&[], &mut message).ok()?;
        response.extend_from_slice(message.get(..len)?);
        let transport = noise.into_stateless_transport_mode().ok()?;
        self.timestamps.insert(client, timestamp);
        self.sessions.insert(
            index,
            Session {
                client,
                transport,
                send_counter: 0,
                replay: Replay::default(),
            },
        );
        self.record(client, from, "initiation");
        Some(response)
    }

    fn lookup(&mut self, data: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let index = u32_at(data, 1)?;
        let nonce = u64_at(data, 5)?;
        let ciphertext = data.get(13..)?;
        let session = self.sessions.get_mut(&index)?;
        if !session.replay.is_fresh(nonce) {
            eprintln!("dropped a replayed lookup from {from}");
            return None;
        }
        let mut plaintext = [0u8; 2 * KEY_LEN + TAG_LEN];
        let Ok(len) = session
            .transport
            .read_message(nonce, ciphertext, &mut plaintext)
        else {
            eprintln!("dropped a lookup from {from}: it does not decrypt");
            return None;
        };
        let claimed: [u8; KEY_LEN] = plaintext.get(..KEY_LEN)?.try_into().ok()?;
        let target: [u8; KEY_LEN] = plaintext.get(KEY_LEN..2 * KEY_LEN)?.try_into().ok()?;
        if len != 2 * KEY_LEN || claimed != session.client {
            eprintln!("dropped a lookup from {from}: wrong plaintext");
            return None;
        }
        session.replay.accept(nonce);
        let client = session.client;
        self.record(client, from, "lookup");

        let answer: Vec<u8> = match self.endpoints.get(&target) {
            Some(SocketAddr::V4(v4)) => {
                let mut found = v4.ip().octets().to_vec();
                found.extend_from_slice(&v4.port().to_be_bytes());
                eprintln!("answered {} about {}: {v4}", b64(&client), b64(&target));
                found
            }
            _ => {
                eprintln!("answered {} about {}: unknown", b64(&client), b64(&target));
                Vec::new()
            }
        };
        let session = self.sessions.get_mut(&index)?;
        let counter = session.send_counter;
        session.send_counter += 1;
        let mut sealed = [0u8; 6 + TAG_LEN];
        let len = session
            .transport
            .write_message(counter, &answer, &mut sealed)
            .ok()?;
        let mut reply = vec![TYPE_ANSWER];
        reply.extend_from_slice(&counter.to_be_bytes());
        reply.extend_from_slice(sealed.get(..len)?);
        Some(reply)
    }
}

fn public_key(private: &[u8; KEY_LEN]) -> Result<Vec<u8>> {
    let mut dh = DefaultResolver
        .resolve_dh(&DHChoice::Curve25519)
        .ok_or_else(|| anyhow!("snow has no Curve25519"))?;
    dh.set(private);
    Ok(dh.pubkey().to_vec())
}

fn read_key(path: &str) -> Result<[u8; KEY_LEN]> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {path}"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .with_context(|| format!("key file {path} is not base64"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow!("key file {path} does not hold a 32-byte key"))
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [port, key_file] = args.as_slice() else {
        bail!("usage: natpunch-go-server PORT KEY_FILE");
    };
    let port: u16 = port.parse().with_context(|| format!("bad PORT {port:?}"))?;
    let private = read_key(key_file)?;
    let socket =
        UdpSocket::bind(("0.0.0.0", port)).with_context(|| format!("binding UDP port {port}"))?;
    println!("public key: {}", b64(&public_key(&private)?));
    let mut server = Server::new(private);
    let mut buf = [0u8; 2048];
    loop {
        let (len, from) = socket.recv_from(&mut buf).context("receiving")?;
        if let Some(reply) = buf.get(..len).and_then(|d| server.handle(d, from)) {
            socket.send_to(&reply, from).context("sending")?;
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("natpunch-go-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> ([u8; 32], [u8; 32]) {
        let k = Builder::new(PARAMS.parse().unwrap())
            .generate_keypair()
            .unwrap();
        (
            k.private.as_slice().try_into().unwrap(),
            k.public.as_slice().try_into().unwrap(),
        )
    }

    /// A client written against the description: handshake, then one lookup.
    struct TestClient {
        private: [u8; 32],
        public: [u8; 32],
    }

    impl TestClient {
        fn handshake(
            &self,
            server: &mut Server,
            server_public: &[u8; 32],
            from: SocketAddr,
            timestamp: u64,
        ) -> Option<(u32, StatelessTransportState)> {
            let mut noise = Builder::new(PARAMS.parse().unwrap())
                .local_private_key(&self.private)
                .unwrap()
                .remote_public_key(server_public)
                .unwrap()
                .prologue(PROLOGUE)
                .unwrap()
                .build_initiator()
                .unwrap();
            let mut init = vec![1, 0, 0, 0, 7];
            let mut msg = [0u8; 200];
            let len = noise
                .write_message(&timestamp.to_be_bytes(), &mut msg)
                .unwrap();
            init.extend_from_slice(&msg[..len]);
            assert_eq!(init.len(), 109);
            let response = server.handle(&init, from)?;
            assert_eq!(response.len(), 53);
            assert_eq!(response[0], 2);
            noise.read_message(&response[5..], &mut msg).unwrap();
            let index = u32::from_be_bytes(response[1..5].try_into().unwrap());
            Some((index, noise.into_stateless_transport_mode().unwrap()))
        }

        fn lookup(
            &self,
            index: u32,
            transport: &StatelessTransportState,
            nonce: u64,
            target: &[u8; 32],
        ) -> Vec<u8> {
            let mut plain = self.public.to_vec();
            plain.extend_from_slice(target);
            let mut ct = [0u8; 80];
            transport.write_message(nonce, &plain, &mut ct).unwrap();
            let mut packet = vec![3];
            packet.extend_from_slice(&index.to_be_bytes());
            packet.extend_from_slice(&nonce.to_be_bytes());
            packet.extend_from_slice(&ct);
            assert_eq!(packet.len(), 93);
            packet
        }
    }

    fn open(transport: &StatelessTransportState, answer: &[u8]) -> Vec<u8> {
        assert_eq!(answer[0], 3);
        let nonce = u64::from_be_bytes(answer[1..9].try_into().unwrap());
        let mut out = [0u8; 64];
        let len = transport
            .read_message(nonce, &answer[9..], &mut out)
            .unwrap();
        out[..len].to_vec()
    }

    #[test]
    fn records_handshakes_and_answers_lookups_by_order() {
        let (server_private, server_public) = keypair();
        let mut server = Server::new(server_private);
        let (a_private, a_public) = keypair();
        let (b_private, b_public) = keypair();
        let a = TestClient {
            private: a_private,
            public: a_public,
        };
        let b = TestClient {
            private: b_private,
            public: b_public,
        };
        let a_at: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let b_at: SocketAddr = "192.0.2.2:40000".parse().unwrap();

        let (a_index, a_tx) = a.handshake(&mut server, &server_public, a_at, 10).unwrap();
        // The second client asks for the same index: the server hands out another.
        let (b_index, b_tx) = b.handshake(&mut server, &server_public, b_at, 10).unwrap();
        assert_ne!(a_index, b_index);

        let answer = server
            .handle(&a.lookup(a_index, &a_tx, 0, &b_public), a_at)
            .unwrap();
        assert_eq!(answer.len(), 31);
        assert_eq!(open(&a_tx, &answer), [192, 0, 2, 2, 0x9c, 0x40]);
        let unknown = server
            .handle(&b.lookup(b_index, &b_tx, 0, &[9; 32]), b_at)
            .unwrap();
        assert_eq!(unknown.len(), 25);
        assert_eq!(open(&b_tx, &unknown), Vec::<u8>::new());

        // Replays and old timestamps are dropped; garbage does not kill it.
        assert!(server
            .handle(&a.lookup(a_index, &a_tx, 0, &b_public), a_at)
            .is_none());
        assert!(a.handshake(&mut server, &server_public, a_at, 10).is_none());
        for bad in [&[][..], &[1], &[3; 93], &[1; 109]] {
            assert!(server.handle(bad, a_at).is_none());
        }
    }

    #[test]
    fn the_replay_window_accepts_each_counter_once() {
        let mut r = Replay::default();
        for c in [0, 2, 1, 70, 10, 69] {
            assert!(r.is_fresh(c), "{c}");
            r.accept(c);
            assert!(!r.is_fresh(c), "{c} again");
        }
        assert!(!r.is_fresh(5), "fell out of the window");
        assert!(r.is_fresh(68));
    }
}
