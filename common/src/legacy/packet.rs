//! natpunch-go's four datagrams. All integers are big-endian.
//!
//! | packet | direction | layout | size |
//! | --- | --- | --- | --- |
//! | initiation | client to server | `0x01` · index u32 · Noise message 1 (104) | 109 |
//! | response | server to client | `0x02` · index u32 · Noise message 2 (48) | 53 |
//! | lookup | client to server | `0x03` · index u32 · nonce u64 · ciphertext 64 + tag 16 | 93 |
//! | answer | server to client | `0x03` · nonce u64 · ciphertext 0 or 6 + tag 16 | 25 or 31 |
//!
//! The lookup and the answer share type byte 3: which one a datagram is depends on who sent it,
//! so there is one parser per direction. Every parser matches on (type, length) together before
//! reading any field, and accepts only the exact sizes above.

use crate::wire::reader::Reader;
use crate::wire::WireError;

/// Type byte of a handshake initiation (client to server).
pub const TYPE_INITIATION: u8 = 1;
/// Type byte of a handshake response (server to client).
pub const TYPE_RESPONSE: u8 = 2;
/// Type byte of a lookup (client to server).
pub const TYPE_LOOKUP: u8 = 3;
/// Type byte of an answer (server to client): the same as the lookup's.
pub const TYPE_ANSWER: u8 = 3;

/// Length of the type byte.
pub const TYPE_LEN: usize = 1;
/// Length of a session index.
pub const INDEX_LEN: usize = 4;
/// Length of a transport nonce (the counter, sent in the clear).
pub const NONCE_LEN: usize = 8;
/// Length of the authentication tag that ends every ciphertext.
pub const TAG_LEN: usize = 16;
/// Length of Noise IK message 1 with its 8-byte timestamp payload: e 32, s 32+16, payload 8+16.
pub const NOISE_INIT_LEN: usize = 104;
/// Length of Noise IK message 2 with an empty payload: e 32, payload 0+16.
pub const NOISE_RESPONSE_LEN: usize = 48;
/// Length of a lookup's plaintext: the client's key and the target's key.
pub const LOOKUP_PLAINTEXT_LEN: usize = 64;
/// Length of a lookup's ciphertext with its tag.
pub const LOOKUP_CIPHERTEXT_LEN: usize = LOOKUP_PLAINTEXT_LEN + TAG_LEN;
/// Length of a found answer's plaintext: IPv4 address 4 and port 2.
pub const ANSWER_ENDPOINT_LEN: usize = 6;
/// Length of a handshake initiation.
pub const INITIATION_LEN: usize = TYPE_LEN + INDEX_LEN + NOISE_INIT_LEN;
/// Length of a handshake response.
pub const RESPONSE_LEN: usize = TYPE_LEN + INDEX_LEN + NOISE_RESPONSE_LEN;
/// Length of a lookup.
pub const LOOKUP_LEN: usize = TYPE_LEN + INDEX_LEN + NONCE_LEN + LOOKUP_CIPHERTEXT_LEN;
/// Length of an answer that found nothing (empty plaintext).
pub const ANSWER_EMPTY_LEN: usize = TYPE_LEN + NONCE_LEN + TAG_LEN;
/// Length of an answer carrying an endpoint.
pub const ANSWER_FOUND_LEN: usize = ANSWER_EMPTY_LEN + ANSWER_ENDPOINT_LEN;

const _: () = assert!(INITIATION_LEN == 109);
const _: () = assert!(RESPONSE_LEN == 53);
const _: () = assert!(LOOKUP_LEN == 93);
const _: () = assert!(ANSWER_EMPTY_LEN == 25 && ANSWER_FOUND_LEN == 31);
// No reply is larger than the request that causes it: the server never amplifies.
const _: () = assert!(RESPONSE_LEN < INITIATION_LEN && ANSWER_FOUND_LEN < LOOKUP_LEN);

/// A handshake initiation: the client's index and Noise message 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeInit {
    /// The index the client proposes for the session.
    pub index: u32,
    /// Noise message 1, carrying the client's static key and timestamp.
    pub noise: [u8; NOISE_INIT_LEN],
}

/// A handshake response: the index the server uses and Noise message 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandshakeResponse {
    /// The session index lookups must carry (the client's, unless the server replaced it).
    pub index: u32,
    /// Noise message 2, with an empty payload.
    pub noise: [u8; NOISE_RESPONSE_LEN],
}

/// A lookup: an encrypted pair of keys, sent in an established session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The session index from the response.
    pub index: u32,
    /// The client's transport counter, the AEAD nonce.
    pub nonce: u64,
    /// The encrypted client key and target key, with the tag.
    pub ciphertext: [u8; LOOKUP_CIPHERTEXT_LEN],
}

/// An answer: the encrypted endpoint of the target, or an encrypted empty plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<'a> {
    /// The server's transport counter, the AEAD nonce.
    pub nonce: u64,
    /// The ciphertext with its tag: [`TAG_LEN`] or [`TAG_LEN`] + [`ANSWER_ENDPOINT_LEN`] bytes.
    pub ciphertext: &'a [u8],
}

/// A datagram a natpunch-go client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromClient {
    /// See [`HandshakeInit`].
    HandshakeInit(HandshakeInit),
    /// See [`Lookup`].
    Lookup(Lookup),
}

/// A datagram a natpunch-go server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromServer<'a> {
    /// See [`HandshakeResponse`].
    HandshakeResponse(HandshakeResponse),
    /// See [`Answer`].
    Answer(Answer<'a>),
}

/// True when `byte` is the type byte of some natpunch-go datagram (1, 2 or 3): the server's
/// dispatch looks at this before parsing.
pub const fn is_legacy_type(byte: u8) -> bool {
    matches!(byte, TYPE_INITIATION | TYPE_RESPONSE | TYPE_LOOKUP)
}

// wgpunch's own type bytes never collide with natpunch-go's, so one port serves both.
const _: () = {
    use crate::wire::packet as native;
    assert!(!is_legacy_type(native::TYPE_HANDSHAKE_INIT));
    assert!(!is_legacy_type(native::TYPE_HANDSHAKE_RESPONSE));
    assert!(!is_legacy_type(native::TYPE_COOKIE_REPLY));
    assert!(!is_legacy_type(native::TYPE_TRANSPORT));
};

/// Reads a datagram a client sent to a server.
pub fn parse_from_client(datagram: &[u8]) -> Result<FromClient, WireError> {
    let mut r = Reader::new(datagram);
    let kind = r.u8().ok_or(WireError::Truncated)?;
    match (kind, datagram.len()) {
        (TYPE_INITIATION, INITIATION_LEN) => {
            let index = r.u32().ok_or(WireError::Truncated)?;
            let noise = r.array().ok_or(WireError::Truncated)?;
            Ok(FromClient::HandshakeInit(HandshakeInit { index, noise }))
        }
        (TYPE_LOOKUP, LOOKUP_LEN) => {
            let index = r.u32().ok_or(WireError::Truncated)?;
            let nonce = r.u64().ok_or(WireError::Truncated)?;
            let ciphertext = r.array().ok_or(WireError::Truncated)?;
            Ok(FromClient::Lookup(Lookup {
                index,
                nonce,
                ciphertext,
            }))
        }
        (TYPE_INITIATION | TYPE_LOOKUP, _) => Err(WireError::Length),
        _ => Err(WireError::UnknownType),
    }
}

/// Reads a datagram a server sent to a client.
pub fn parse_from_server(datagram: &[u8]) -> Result<FromServer<'_>, WireError> {
    let mut r = Reader::new(datagram);
    let kind = r.u8().ok_or(WireError::Truncated)?;
    match (kind, datagram.len()) {
        (TYPE_RESPONSE, RESPONSE_LEN) => {
            let index = r.u32().ok_or(WireError::Truncated)?;
            let noise = r.array().ok_or(WireError::Truncated)?;
            Ok(FromServer::HandshakeResponse(HandshakeResponse {
                index,
                noise,
            }))
        }
        (TYPE_ANSWER, ANSWER_EMPTY_LEN | ANSWER_FOUND_LEN) => {
            let nonce = r.u64().ok_or(WireError::Truncated)?;
            let ciphertext = r.take_rest();
            Ok(FromServer::Answer(Answer { nonce, ciphertext }))
        }
        (TYPE_RESPONSE | TYPE_ANSWER, _) => Err(WireError::Length),
        _ => Err(WireError::UnknownType),
    }
}

impl HandshakeInit {
    /// Appends the encoded initiation to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(TYPE_INITIATION);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.noise);
    }
}

impl HandshakeResponse {
    /// Appends the encoded response to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(TYPE_RESPONSE);
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.noise);
    }
}

impl Lookup {
    /// Appends the encoded lookup to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        Self::emit_header(self.index, self.nonce, out);
        out.extend_from_slice(&self.ciphertext);
    }

    /// Appends a lookup's header (type, index, nonce) to `out`; the caller appends the ciphertext.
    pub fn emit_header(index: u32, nonce: u64, out: &mut Vec<u8>) {
        out.push(TYPE_LOOKUP);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&nonce.to_be_bytes());
    }
}

impl Answer<'_> {
    /// Appends the encoded answer to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        Self::emit_header(self.nonce, out);
        out.extend_from_slice(self.ciphertext);
    }

    /// Appends an answer's header (type, nonce) to `out`; the caller appends the ciphertext.
    pub fn emit_header(nonce: u64, out: &mut Vec<u8>) {
        out.push(TYPE_ANSWER);
        out.extend_from_slice(&nonce.to_be_bytes());
    }
}

impl FromClient {
    /// Appends the encoded datagram to `out`: the inverse of [`parse_from_client`].
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            FromClient::HandshakeInit(p) => p.emit(out),
            FromClient::Lookup(p) => p.emit(out),
        }
    }
}

impl FromServer<'_> {
    /// Appends the encoded datagram to `out`: the inverse of [`parse_from_server`].
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            FromServer::HandshakeResponse(p) => p.emit(out),
            FromServer::Answer(p) => p.emit(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Vec<u8>> {
        let mut init = Vec::new();
        HandshakeInit {
            index: 0x0102_0304,
            noise: [7; NOISE_INIT_LEN],
        }
        .emit(&mut init);
        let mut lookup = Vec::new();
        Lookup {
            index: 9,
            nonce: 5,
            ciphertext: [1; LOOKUP_CIPHERTEXT_LEN],
        }
        .emit(&mut lookup);
        vec![init, lookup]
    }

    #[test]
    fn sizes_are_natpunch_gos() {
        let sizes: Vec<usize> = samples().iter().map(Vec::len).collect();
        assert_eq!(sizes, [109, 93]);
        let mut response = Vec::new();
        HandshakeResponse {
            index: 1,
            noise: [2; NOISE_RESPONSE_LEN],
        }
        .emit(&mut response);
        assert_eq!(response.len(), 53);
    }

    #[test]
    fn fields_sit_where_natpunch_go_puts_them() {
        let mut bytes = Vec::new();
        Lookup {
            index: 0x0a0b_0c0d,
            nonce: 0x0102_0304_0506_0708,
            ciphertext: [0xee; LOOKUP_CIPHERTEXT_LEN],
        }
        .emit(&mut bytes);
        assert_eq!(
            &bytes[..13],
            &[3, 0x0a, 0x0b, 0x0c, 0x0d, 1, 2, 3, 4, 5, 6, 7, 8]
        );
        let mut answer = Vec::new();
        Answer {
            nonce: 0x1122,
            ciphertext: &[0xaa; TAG_LEN],
        }
        .emit(&mut answer);
        assert_eq!(&answer[..9], &[3, 0, 0, 0, 0, 0, 0, 0x11, 0x22]);
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        for bytes in samples() {
            assert!(parse_from_client(&bytes).is_ok());
            for len in 0..bytes.len() {
                assert!(
                    parse_from_client(&bytes[..len]).is_err(),
                    "truncated to {len}"
                );
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(parse_from_client(&longer), Err(WireError::Length));
        }
        for len in 0..64 {
            let mut bytes = vec![0u8; len];
            if let Some(first) = bytes.first_mut() {
                *first = TYPE_ANSWER;
            }
            let ok = parse_from_server(&bytes).is_ok();
            assert_eq!(
                ok,
                len == ANSWER_EMPTY_LEN || len == ANSWER_FOUND_LEN,
                "{len}"
            );
        }
    }

    #[test]
    fn direction_decides_what_type_three_means() {
        let lookup = &samples()[1];
        assert!(matches!(
            parse_from_client(lookup),
            Ok(FromClient::Lookup(_))
        ));
        assert_eq!(parse_from_server(lookup), Err(WireError::Length));
        let answer = [TYPE_ANSWER; ANSWER_EMPTY_LEN];
        assert_eq!(parse_from_client(&answer), Err(WireError::Length));
        let response = [TYPE_RESPONSE; RESPONSE_LEN];
        assert_eq!(parse_from_client(&response), Err(WireError::UnknownType));
        let init = &samples()[0];
        assert_eq!(parse_from_server(init), Err(WireError::UnknownType));
    }

    #[test]
    fn native_types_are_not_legacy_ones() {
        use crate::wire::packet::{
            TYPE_COOKIE_REPLY, TYPE_HANDSHAKE_INIT, TYPE_HANDSHAKE_RESPONSE, TYPE_TRANSPORT,
        };
        for native in [
            TYPE_HANDSHAKE_INIT,
            TYPE_HANDSHAKE_RESPONSE,
            TYPE_COOKIE_REPLY,
            TYPE_TRANSPORT,
        ] {
            assert!(!is_legacy_type(native), "{native:#x}");
        }
        for legacy in [TYPE_INITIATION, TYPE_RESPONSE, TYPE_LOOKUP, TYPE_ANSWER] {
            assert!(is_legacy_type(legacy));
        }
    }

    proptest! {
        #[test]
        fn parsers_accept_only_canonical_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..140)) {
            if let Ok(packet) = parse_from_client(&bytes) {
                let mut again = Vec::new();
                packet.emit(&mut again);
                prop_assert_eq!(&again, &bytes);
            }
            if let Ok(packet) = parse_from_server(&bytes) {
                let mut again = Vec::new();
                packet.emit(&mut again);
                prop_assert_eq!(&again, &bytes);
            }
        }

        #[test]
        fn client_packets_round_trip(index: u32, nonce: u64, fill: u8, lookup: bool) {
            let packet = if lookup {
                FromClient::Lookup(Lookup { index, nonce, ciphertext: [fill; LOOKUP_CIPHERTEXT_LEN] })
            } else {
                FromClient::HandshakeInit(HandshakeInit { index, noise: [fill; NOISE_INIT_LEN] })
            };
            let mut bytes = Vec::new();
            packet.emit(&mut bytes);
            prop_assert_eq!(parse_from_client(&bytes), Ok(packet));
        }

        #[test]
        fn server_packets_round_trip(index: u32, nonce: u64, fill: u8, kind in 0u8..3) {
            let ciphertext = vec![fill; TAG_LEN + if kind == 2 { ANSWER_ENDPOINT_LEN } else { 0 }];
            let packet = if kind == 0 {
                FromServer::HandshakeResponse(HandshakeResponse { index, noise: [fill; NOISE_RESPONSE_LEN] })
            } else {
                FromServer::Answer(Answer { nonce, ciphertext: &ciphertext })
            };
            let mut bytes = Vec::new();
            packet.emit(&mut bytes);
            prop_assert_eq!(parse_from_server(&bytes), Ok(packet));
        }
    }
}
