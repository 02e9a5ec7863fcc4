//! A natpunch-go client for the tests, written independently of `wgpunch_common::legacy`: snow
//! used directly with the documented prologue, and every datagram laid out by hand from
//! `docs/PROTOCOL.md` ("natpunch-go compatibility"). It speaks exactly natpunch-go's bytes.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use snow::{Builder, StatelessTransportState};
use wgpunch_common::keys::{PrivateKey, PublicKey};

/// natpunch-go's Noise prologue.
pub const PROLOGUE: &[u8] = b"natpunch-go is the best :)";
/// natpunch-go's Noise protocol.
pub const PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// How long the client waits for an answer (natpunch-go waits 10 s; the tests need less).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// One natpunch-go client with its own UDP socket.
pub struct LegacyClient {
    key: PrivateKey,
    pub public: PublicKey,
    pub socket: UdpSocket,
    server: SocketAddr,
    server_public: PublicKey,
    transport: Option<StatelessTransportState>,
    /// The index the server's response named.
    pub index: u32,
    next_nonce: u64,
    /// Every datagram sent, in order.
    pub sent: Vec<Vec<u8>>,
}

/// Nanoseconds since the Unix epoch, natpunch-go's handshake payload.
pub fn now_nanos() -> u64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(d.as_nanos()).unwrap()
}

impl LegacyClient {
    /// A client with the key `[n; 32]` for the server at `server`.
    pub fn new(n: u8, server: SocketAddr, server_public: PublicKey) -> Self {
        let key = PrivateKey::from_bytes([n; 32]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(ANSWER_TIMEOUT)).unwrap();
        Self {
            public: key.public_key(),
            key,
            socket,
            server,
            server_public,
            transport: None,
            index: 0,
            next_nonce: 0,
            sent: Vec::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    fn send(&mut self, datagram: Vec<u8>) {
        self.socket.send_to(&datagram, self.server).unwrap();
        self.sent.push(datagram);
    }

    /// The initiation (109 bytes) proposing `index` with `timestamp`, and the handshake state
    /// that reads its response.
    pub fn initiation(&self, index: u32, timestamp: u64) -> (snow::HandshakeState, Vec<u8>) {
        let mut state = Builder::new(PARAMS.parse().unwrap())
            .prologue(PROLOGUE)
            .unwrap()
            .local_private_key(self.key.as_bytes())
            .unwrap()
            .remote_public_key(self.server_public.as_bytes())
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut noise = [0u8; 200];
        let n = state
            .write_message(&timestamp.to_be_bytes(), &mut noise)
            .unwrap();
        assert_eq!(n, 104);
        let mut datagram = vec![0x01];
        datagram.extend_from_slice(&index.to_be_bytes());
        datagram.extend_from_slice(&noise[..n]);
        assert_eq!(datagram.len(), 109);
        (state, datagram)
    }

    /// Handshakes with the current time; false when no valid response came.
    pub fn handshake(&mut self) -> bool {
        self.handshake_at(now_nanos())
    }

    /// Handshakes with `timestamp`; false when no valid response came.
    pub fn handshake_at(&mut self, timestamp: u64) -> bool {
        let (mut state, datagram) = self.initiation(0x0c0f_fee0, timestamp);
        self.send(datagram);
        let mut buf = [0u8; 2048];
        let Ok((len, _)) = self.socket.recv_from(&mut buf) else {
            return false;
        };
        let response = &buf[..len];
        assert_eq!(len, 53, "a handshake response is 53 bytes");
        assert_eq!(response[0], 0x02);
        let index = u32::from_be_bytes(response[1..5].try_into().unwrap());
        let mut payload = [0u8; 64];
        let n = state.read_message(&response[5..], &mut payload).unwrap();
        assert_eq!(n, 0, "the response's payload is empty");
        self.transport = Some(state.into_stateless_transport_mode().unwrap());
        self.index = index;
        self.next_nonce = 0;
        true
    }

    /// The lookup (93 bytes) for `target`, claiming to be `claimed`.
    pub fn lookup_as(&mut self, claimed: &PublicKey, target: &PublicKey) -> Vec<u8> {
        let mut plain = Vec::new();
        plain.extend_from_slice(claimed.as_bytes());
        plain.extend_from_slice(target.as_bytes());
        let nonce = self.next_nonce;
        self.next_nonce += 1;
        let mut ciphertext = [0u8; 128];
        let n = self
            .transport
            .as_ref()
            .expect("handshake first")
            .write_message(nonce, &plain, &mut ciphertext)
            .unwrap();
        assert_eq!(n, 80);
        let mut datagram = vec![0x03];
        datagram.extend_from_slice(&self.index.to_be_bytes());
        datagram.extend_from_slice(&nonce.to_be_bytes());
        datagram.extend_from_slice(&ciphertext[..n]);
        assert_eq!(datagram.len(), 93);
        datagram
    }

    /// The lookup for `target`.
    pub fn lookup_datagram(&mut self, target: &PublicKey) -> Vec<u8> {
        let me = self.public;
        self.lookup_as(&me, target)
    }

    /// Reads one answer: `None` when nothing came, else the endpoint it carries, if any.
    pub fn answer(&mut self) -> Option<Option<SocketAddrV4>> {
        let mut buf = [0u8; 2048];
        let (len, _) = self.socket.recv_from(&mut buf).ok()?;
        let answer = &buf[..len];
        assert!(
            len == 25 || len == 31,
            "an answer is 25 or 31 bytes, got {len}"
        );
        assert_eq!(answer[0], 0x03);
        let nonce = u64::from_be_bytes(answer[1..9].try_into().unwrap());
        let mut plain = [0u8; 64];
        let n = self
            .transport
            .as_ref()
            .unwrap()
            .read_message(nonce, &answer[9..], &mut plain)
            .expect("the answer decrypts");
        match n {
            0 => Some(None),
            6 => {
                let ip = Ipv4Addr::new(plain[0], plain[1], plain[2], plain[3]);
                let port = u16::from_be_bytes([plain[4], plain[5]]);
                Some(Some(SocketAddrV4::new(ip, port)))
            }
            _ => panic!("an answer's plaintext is 0 or 6 bytes, got {n}"),
        }
    }

    /// Looks `target` up: `None` when the server stayed silent, else its answer.
    pub fn lookup(&mut self, target: &PublicKey) -> Option<Option<SocketAddrV4>> {
        let datagram = self.lookup_datagram(target);
        self.send(datagram);
        self.answer()
    }

    /// Sends a datagram of the test's choosing from this client's socket.
    pub fn send_raw(&mut self, datagram: &[u8]) {
        self.socket.send_to(datagram, self.server).unwrap();
    }
}
