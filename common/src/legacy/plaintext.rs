//! What natpunch-go encrypts: the handshake's timestamp, the lookup's keys, the answer's endpoint.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::keys::{PublicKey, KEY_LEN};
use crate::wire::reader::Reader;
use crate::wire::WireError;

use super::packet::{ANSWER_ENDPOINT_LEN, LOOKUP_PLAINTEXT_LEN};

/// Length of the handshake payload: the client's wall clock in nanoseconds since the Unix epoch.
pub const TIMESTAMP_LEN: usize = 8;

/// The handshake payload for `timestamp` (nanoseconds since the Unix epoch), big-endian.
pub fn emit_timestamp(timestamp: u64) -> [u8; TIMESTAMP_LEN] {
    timestamp.to_be_bytes()
}

/// Reads the handshake payload; anything but exactly 8 bytes is refused.
pub fn parse_timestamp(payload: &[u8]) -> Result<u64, WireError> {
    let bytes: [u8; TIMESTAMP_LEN] = payload.try_into().map_err(|_| WireError::Length)?;
    Ok(u64::from_be_bytes(bytes))
}

/// A lookup's plaintext: who asks and whom for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupRequest {
    /// The asking client's public key; the server checks it is the session's.
    pub client: PublicKey,
    /// The public key of the peer whose endpoint the client wants.
    pub target: PublicKey,
}

impl LookupRequest {
    /// Reads the 64-byte plaintext.
    pub fn parse(plaintext: &[u8]) -> Result<Self, WireError> {
        if plaintext.len() != LOOKUP_PLAINTEXT_LEN {
            return Err(WireError::Length);
        }
        let mut r = Reader::new(plaintext);
        let client: [u8; KEY_LEN] = r.array().ok_or(WireError::Truncated)?;
        let target: [u8; KEY_LEN] = r.array().ok_or(WireError::Truncated)?;
        Ok(Self {
            client: PublicKey(client),
            target: PublicKey(target),
        })
    }

    /// The 64-byte plaintext.
    pub fn emit(&self) -> [u8; LOOKUP_PLAINTEXT_LEN] {
        let mut out = [0u8; LOOKUP_PLAINTEXT_LEN];
        let (client, target) = out.split_at_mut(KEY_LEN);
        client.copy_from_slice(self.client.as_bytes());
        target.copy_from_slice(self.target.as_bytes());
        out
    }
}

/// Reads an answer's plaintext: empty (not found) or an IPv4 address and port.
pub fn parse_answer(plaintext: &[u8]) -> Result<Option<SocketAddrV4>, WireError> {
    match plaintext.len() {
        0 => Ok(None),
        ANSWER_ENDPOINT_LEN => {
            let mut r = Reader::new(plaintext);
            let ip: [u8; 4] = r.array().ok_or(WireError::Truncated)?;
            let port = r.u16().ok_or(WireError::Truncated)?;
            Ok(Some(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        _ => Err(WireError::Length),
    }
}

/// Appends an answer's plaintext to `out`: nothing for `None`, else the address and port.
pub fn emit_answer(endpoint: Option<SocketAddrV4>, out: &mut Vec<u8>) {
    if let Some(endpoint) = endpoint {
        out.extend_from_slice(&endpoint.ip().octets());
        out.extend_from_slice(&endpoint.port().to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layouts_are_natpunch_gos() {
        assert_eq!(emit_timestamp(0x0102), [0, 0, 0, 0, 0, 0, 1, 2]);
        let mut out = Vec::new();
        emit_answer(Some("192.0.2.7:51820".parse().unwrap()), &mut out);
        assert_eq!(out, [192, 0, 2, 7, 0xca, 0x6c]);
        let request = LookupRequest {
            client: PublicKey([1; 32]),
            target: PublicKey([2; 32]),
        };
        let bytes = request.emit();
        assert_eq!(&bytes[..32], &[1; 32]);
        assert_eq!(&bytes[32..], &[2; 32]);
    }

    #[test]
    fn wrong_lengths_are_refused() {
        for len in [0, 7, 9] {
            assert_eq!(parse_timestamp(&vec![0; len]), Err(WireError::Length));
        }
        for len in [1, 5, 7, 18] {
            assert_eq!(parse_answer(&vec![0; len]), Err(WireError::Length));
        }
        for len in [0, 63, 65] {
            assert_eq!(LookupRequest::parse(&vec![0; len]), Err(WireError::Length));
        }
    }

    proptest! {
        #[test]
        fn plaintexts_round_trip(t: u64, a: [u8; 32], b: [u8; 32], ip: [u8; 4], port: u16, found: bool) {
            prop_assert_eq!(parse_timestamp(&emit_timestamp(t)), Ok(t));
            let request = LookupRequest { client: PublicKey(a), target: PublicKey(b) };
            prop_assert_eq!(LookupRequest::parse(&request.emit()), Ok(request));
            let endpoint = found.then(|| SocketAddrV4::new(Ipv4Addr::from(ip), port));
            let mut out = Vec::new();
            emit_answer(endpoint, &mut out);
            prop_assert_eq!(parse_answer(&out), Ok(endpoint));
        }
    }
}
