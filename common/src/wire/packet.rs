//! The outer datagrams: handshake initiation and response, and transport messages.
//!
//! Every datagram starts with a type byte and three reserved zero bytes. The type bytes (0x11 to
//! 0x14) differ from WireGuard's (1 to 4) and natpunch-go's (1 to 3), so a datagram that reaches
//! the WireGuard socket by mistake is ignored there, and both protocols can share a server port.
//! All integers are big-endian. `docs/PROTOCOL.md` has the full layout.

use super::reader::Reader;
use super::WireError;

/// Type byte of a handshake initiation (client to server).
pub const TYPE_HANDSHAKE_INIT: u8 = 0x11;
/// Type byte of a handshake response (server to client).
pub const TYPE_HANDSHAKE_RESPONSE: u8 = 0x12;
/// Type byte of a cookie reply (server to client, under load: the cookie for mac2).
pub const TYPE_COOKIE_REPLY: u8 = 0x13;
/// Type byte of a transport message (both directions).
pub const TYPE_TRANSPORT: u8 = 0x14;

/// Length of the type byte and the three reserved bytes.
pub const PREFIX_LEN: usize = 4;
/// Length of Noise IK message 1 with its 8-byte timestamp payload: e 32, s 32+16, payload 8+16.
pub const NOISE_INIT_LEN: usize = 104;
/// Length of Noise IK message 2 with an empty payload: e 32, payload 0+16.
pub const NOISE_RESPONSE_LEN: usize = 48;
/// Length of a MAC field.
pub const MAC_LEN: usize = 16;
/// Offset of mac1 in a handshake initiation: mac1 covers every byte before it.
pub const MAC1_OFFSET: usize = PREFIX_LEN + 4 + NOISE_INIT_LEN;
/// Offset of mac2 in a handshake initiation: mac2 covers every byte before it.
pub const MAC2_OFFSET: usize = MAC1_OFFSET + MAC_LEN;
/// Length of a handshake initiation.
pub const HANDSHAKE_INIT_LEN: usize = MAC2_OFFSET + MAC_LEN;
/// Length of a handshake response.
pub const HANDSHAKE_RESPONSE_LEN: usize = PREFIX_LEN + 4 + 4 + NOISE_RESPONSE_LEN;
/// Length of the nonce of a cookie reply.
pub const COOKIE_NONCE_LEN: usize = 24;
/// Length of an encrypted cookie with its tag.
pub const ENCRYPTED_COOKIE_LEN: usize = 16 + 16;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = PREFIX_LEN + 4 + COOKIE_NONCE_LEN + ENCRYPTED_COOKIE_LEN;
/// Length of a transport message's header: prefix, receiver index, counter.
pub const TRANSPORT_HEADER_LEN: usize = PREFIX_LEN + 4 + 8;
/// Length of the authentication tag that ends every ciphertext.
pub const TAG_LEN: usize = 16;
/// Largest plaintext a transport message carries.
pub const MAX_PLAINTEXT_LEN: usize = 1200;
/// Smallest transport message: header and tag around the smallest plaintext (a reply header).
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + 8 + TAG_LEN;
/// Largest transport message (fits an IPv6 minimum-MTU packet with its IP and UDP headers).
pub const TRANSPORT_MAX_LEN: usize = TRANSPORT_HEADER_LEN + MAX_PLAINTEXT_LEN + TAG_LEN;

// A handshake response or cookie reply must never be larger than the initiation that caused it.
const _: () = assert!(HANDSHAKE_RESPONSE_LEN < HANDSHAKE_INIT_LEN);
const _: () = assert!(COOKIE_REPLY_LEN < HANDSHAKE_INIT_LEN);

/// A handshake initiation: Noise IK message 1, framed and MACed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInit {
    /// The index the client wants the server's replies to carry.
    pub sender_index: u32,
    /// Noise message 1.
    pub noise: [u8; NOISE_INIT_LEN],
    /// MAC over the preceding bytes, keyed by a hash of the server's public key.
    pub mac1: [u8; MAC_LEN],
    /// Reserved for a cookie MAC under load; zero otherwise.
    pub mac2: [u8; MAC_LEN],
}

/// A handshake response: Noise IK message 2, framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The index the server wants the client's transport messages to carry.
    pub sender_index: u32,
    /// The initiation's sender index, echoed.
    pub receiver_index: u32,
    /// Noise message 2.
    pub noise: [u8; NOISE_RESPONSE_LEN],
}

/// A cookie reply: the server is under load and wants initiations from this source to carry a
/// mac2 made with this cookie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReply {
    /// The initiation's sender index, echoed.
    pub receiver_index: u32,
    /// The XChaCha20-Poly1305 nonce.
    pub nonce: [u8; COOKIE_NONCE_LEN],
    /// The cookie, encrypted with the initiation's mac1 as associated data.
    pub encrypted_cookie: [u8; ENCRYPTED_COOKIE_LEN],
}

impl CookieReply {
    /// Appends the encoded cookie reply to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        prefix(TYPE_COOKIE_REPLY, out);
        out.extend_from_slice(&self.receiver_index.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.encrypted_cookie);
    }
}

/// A transport message: an encrypted request or reply of an established session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport<'a> {
    /// The receiving side's session index.
    pub receiver_index: u32,
    /// The sender's message counter, used as the AEAD nonce.
    pub counter: u64,
    /// The ciphertext with its tag.
    pub ciphertext: &'a [u8],
}

/// Any datagram of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// See [`HandshakeInit`].
    HandshakeInit(HandshakeInit),
    /// See [`HandshakeResponse`].
    HandshakeResponse(HandshakeResponse),
    /// See [`CookieReply`].
    CookieReply(CookieReply),
    /// See [`Transport`].
    Transport(Transport<'a>),
}

impl<'a> Packet<'a> {
    /// Reads a datagram, checking its type and length together before any field.
    pub fn parse(datagram: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(datagram);
        let prefix: [u8; PREFIX_LEN] = r.array().ok_or(WireError::Truncated)?;
        if prefix[1..] != [0, 0, 0] {
            return Err(WireError::Reserved);
        }
        let len = datagram.len();
        match prefix[0] {
            TYPE_HANDSHAKE_INIT if len == HANDSHAKE_INIT_LEN => {
                let sender_index = r.u32().ok_or(WireError::Truncated)?;
                let noise = r.array().ok_or(WireError::Truncated)?;
                let mac1 = r.array().ok_or(WireError::Truncated)?;
                let mac2 = r.array().ok_or(WireError::Truncated)?;
                Ok(Packet::HandshakeInit(HandshakeInit {
                    sender_index,
                    noise,
                    mac1,
                    mac2,
                }))
            }
            TYPE_HANDSHAKE_RESPONSE if len == HANDSHAKE_RESPONSE_LEN => {
                let sender_index = r.u32().ok_or(WireError::Truncated)?;
                let receiver_index = r.u32().ok_or(WireError::Truncated)?;
                let noise = r.array().ok_or(WireError::Truncated)?;
                Ok(Packet::HandshakeResponse(HandshakeResponse {
                    sender_index,
                    receiver_index,
                    noise,
                }))
            }
            TYPE_COOKIE_REPLY if len == COOKIE_REPLY_LEN => {
                let receiver_index = r.u32().ok_or(WireError::Truncated)?;
                let nonce = r.array().ok_or(WireError::Truncated)?;
                let encrypted_cookie = r.array().ok_or(WireError::Truncated)?;
                Ok(Packet::CookieReply(CookieReply {
                    receiver_index,
                    nonce,
                    encrypted_cookie,
                }))
            }
            TYPE_TRANSPORT if (TRANSPORT_MIN_LEN..=TRANSPORT_MAX_LEN).contains(&len) => {
                let receiver_index = r.u32().ok_or(WireError::Truncated)?;
                let counter = r.u64().ok_or(WireError::Truncated)?;
                let ciphertext = r.take_rest();
                Ok(Packet::Transport(Transport {
                    receiver_index,
                    counter,
                    ciphertext,
                }))
            }
            TYPE_HANDSHAKE_INIT | TYPE_HANDSHAKE_RESPONSE | TYPE_TRANSPORT => {
                Err(WireError::Length)
            }
            _ => Err(WireError::UnknownType),
        }
    }
}

impl Packet<'_> {
    /// Appends the encoded datagram to `out`: the inverse of [`Packet::parse`].
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Packet::HandshakeInit(p) => p.emit(out),
            Packet::HandshakeResponse(p) => p.emit(out),
            Packet::CookieReply(p) => p.emit(out),
            Packet::Transport(t) => {
                Transport::emit_header(t.receiver_index, t.counter, out);
                out.extend_from_slice(t.ciphertext);
            }
        }
    }
}

fn prefix(kind: u8, out: &mut Vec<u8>) {
    out.extend_from_slice(&[kind, 0, 0, 0]);
}

impl HandshakeInit {
    /// Appends the encoded initiation to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        prefix(TYPE_HANDSHAKE_INIT, out);
        out.extend_from_slice(&self.sender_index.to_be_bytes());
        out.extend_from_slice(&self.noise);
        out.extend_from_slice(&self.mac1);
        out.extend_from_slice(&self.mac2);
    }
}

impl HandshakeResponse {
    /// Appends the encoded response to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        prefix(TYPE_HANDSHAKE_RESPONSE, out);
        out.extend_from_slice(&self.sender_index.to_be_bytes());
        out.extend_from_slice(&self.receiver_index.to_be_bytes());
        out.extend_from_slice(&self.noise);
    }
}

impl Transport<'_> {
    /// Appends the transport header for `receiver_index` and `counter` to `out`; the caller
    /// appends the ciphertext.
    pub fn emit_header(receiver_index: u32, counter: u64, out: &mut Vec<u8>) {
        prefix(TYPE_TRANSPORT, out);
        out.extend_from_slice(&receiver_index.to_be_bytes());
        out.extend_from_slice(&counter.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn init() -> HandshakeInit {
        HandshakeInit {
            sender_index: 0x0102_0304,
            noise: [7; NOISE_INIT_LEN],
            mac1: [8; MAC_LEN],
            mac2: [0; MAC_LEN],
        }
    }

    #[test]
    fn sizes_are_as_documented() {
        assert_eq!(HANDSHAKE_INIT_LEN, 144);
        assert_eq!(HANDSHAKE_RESPONSE_LEN, 60);
        assert_eq!(TRANSPORT_MAX_LEN, 1232);
    }

    #[test]
    fn handshake_messages_round_trip() {
        let mut bytes = Vec::new();
        init().emit(&mut bytes);
        assert_eq!(bytes.len(), HANDSHAKE_INIT_LEN);
        assert_eq!(Packet::parse(&bytes), Ok(Packet::HandshakeInit(init())));

        let response = HandshakeResponse {
            sender_index: 5,
            receiver_index: 6,
            noise: [9; NOISE_RESPONSE_LEN],
        };
        let mut bytes = Vec::new();
        response.emit(&mut bytes);
        assert_eq!(
            Packet::parse(&bytes),
            Ok(Packet::HandshakeResponse(response))
        );
    }

    #[test]
    fn transport_round_trips() {
        let mut bytes = Vec::new();
        Transport::emit_header(42, 7, &mut bytes);
        bytes.extend_from_slice(&[3; 40]);
        let expected = Transport {
            receiver_index: 42,
            counter: 7,
            ciphertext: &[3; 40],
        };
        assert_eq!(Packet::parse(&bytes), Ok(Packet::Transport(expected)));
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let mut bytes = Vec::new();
        init().emit(&mut bytes);
        for len in 0..bytes.len() {
            assert!(Packet::parse(&bytes[..len]).is_err(), "truncated to {len}");
        }
        bytes.push(0);
        assert_eq!(Packet::parse(&bytes), Err(WireError::Length));
    }

    #[test]
    fn reserved_bytes_and_foreign_types_are_rejected() {
        let mut bytes = Vec::new();
        init().emit(&mut bytes);
        bytes[2] = 1;
        assert_eq!(Packet::parse(&bytes), Err(WireError::Reserved));
        for foreign in [0u8, 1, 2, 3, 4, 0x15, 0xff] {
            let mut bytes = vec![0u8; HANDSHAKE_INIT_LEN];
            bytes[0] = foreign;
            assert_eq!(
                Packet::parse(&bytes),
                Err(WireError::UnknownType),
                "type {foreign}"
            );
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(packet) = Packet::parse(&bytes) {
                let mut again = Vec::new();
                packet.emit(&mut again);
                prop_assert_eq!(again, bytes);
            }
        }
    }
}
