//! The request for one peer's candidates (the local addresses it registered) and its answer.
//!
//! ```text
//! request: kind 0x07 | reserved 3 (0) | request_id u32 | peer 32 | zero padding to 200 bytes
//! reply:   kind 0x08 | flags u8 | count u16 | request_id u32 | peer 32 | count endpoints (20 each)
//! ```
//! The request is padded to the length of the largest reply, so that, like every other answer,
//! the reply is never larger than what caused it. Reply flags: [`FLAG_KNOWN`] (the peer is
//! registered and lists the asker back, so the list is its real one, maybe empty),
//! [`FLAG_SAME_PUBLIC`] (the server sees both at the same public address) and [`FLAG_HARD_NAT`]
//! (the peer declared a NAT that maps each destination to its own port). A peer the server
//! cannot tell about gets no flags and no candidates, alike for unknown, expired and not
//! consenting.

use std::net::SocketAddr;

use super::endpoint::{self, ENDPOINT_LEN};
use super::reader::Reader;
use super::{zero_padding, WireError};
use crate::keys::{PublicKey, KEY_LEN};

/// Kind byte of a candidates request.
pub const KIND_CANDIDATES: u8 = 0x07;
/// Kind byte of a candidates reply.
pub const KIND_CANDIDATES_REPLY: u8 = 0x08;
/// Most candidates one reply carries (as many as a registration declares).
pub const MAX_CANDIDATES: usize = super::message::MAX_LOCAL_ADDRS;
/// Length of a reply's fixed part.
pub const CANDIDATES_REPLY_HEADER_LEN: usize = 8 + KEY_LEN;
/// Length of a candidates request: the largest reply's.
pub const CANDIDATES_REQUEST_LEN: usize =
    CANDIDATES_REPLY_HEADER_LEN + MAX_CANDIDATES * ENDPOINT_LEN;
/// Reply flag: the peer is registered and consents, so the list is its own.
pub const FLAG_KNOWN: u8 = 0x01;
/// Reply flag: the server sees the asker and the peer at the same public IP address.
pub const FLAG_SAME_PUBLIC: u8 = 0x02;
/// Reply flag: the peer declared that its NAT maps each destination to its own port.
pub const FLAG_HARD_NAT: u8 = 0x04;

/// Asks for the candidates of `peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CandidatesRequest {
    /// Matches the reply to this request.
    pub request_id: u32,
    /// The peer asked about.
    pub peer: PublicKey,
}

/// The candidates of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidatesReply {
    /// The request this answers.
    pub request_id: u32,
    /// The peer the candidates are of.
    pub peer: PublicKey,
    /// The peer is registered and lists the asker back ([`FLAG_KNOWN`]).
    pub known: bool,
    /// The server sees both at one public IP address ([`FLAG_SAME_PUBLIC`]).
    pub same_public: bool,
    /// The peer's NAT maps each destination to its own port ([`FLAG_HARD_NAT`]).
    pub hard_nat: bool,
    /// Where the peer's WireGuard port may be reached besides its public endpoint.
    pub candidates: Vec<SocketAddr>,
}

impl CandidatesRequest {
    /// Reads the request after its kind byte.
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let reserved = r.array::<3>().ok_or(WireError::Truncated)?;
        let request_id = r.u32().ok_or(WireError::Truncated)?;
        let peer = PublicKey(r.array::<KEY_LEN>().ok_or(WireError::Truncated)?);
        if reserved != [0; 3] {
            return Err(WireError::Reserved);
        }
        zero_padding(r, CANDIDATES_REQUEST_LEN - 8 - KEY_LEN)?;
        Ok(Self { request_id, peer })
    }

    /// Appends the whole padded request, kind byte included.
    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[KIND_CANDIDATES, 0, 0, 0]);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.extend_from_slice(self.peer.as_bytes());
        out.resize(start + CANDIDATES_REQUEST_LEN, 0);
    }
}

impl CandidatesReply {
    /// Reads the reply after its kind byte.
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let flags = r.u8().ok_or(WireError::Truncated)?;
        let count = usize::from(r.u16().ok_or(WireError::Truncated)?);
        let request_id = r.u32().ok_or(WireError::Truncated)?;
        let peer = PublicKey(r.array::<KEY_LEN>().ok_or(WireError::Truncated)?);
        if flags & !(FLAG_KNOWN | FLAG_SAME_PUBLIC | FLAG_HARD_NAT) != 0 {
            return Err(WireError::Reserved);
        }
        let known = flags & FLAG_KNOWN != 0;
        if count > MAX_CANDIDATES || (!known && (count != 0 || flags != 0)) {
            return Err(WireError::Field);
        }
        let candidates = (0..count)
            .map(|_| match endpoint::parse(r) {
                Some(Some(addr)) => Ok(addr),
                Some(None) => Err(WireError::Field),
                None => Err(WireError::Truncated),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            request_id,
            peer,
            known,
            same_public: flags & FLAG_SAME_PUBLIC != 0,
            hard_nat: flags & FLAG_HARD_NAT != 0,
            candidates,
        })
    }

    /// Appends the reply, kind byte included; at most [`MAX_CANDIDATES`] candidates are sent,
    /// and none (nor any flag) for a peer that is not known.
    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        let candidates = if self.known {
            self.candidates
                .get(..MAX_CANDIDATES.min(self.candidates.len()))
        } else {
            None
        }
        .unwrap_or_default();
        let mut flags = 0;
        if self.known {
            flags |= FLAG_KNOWN;
            if self.same_public {
                flags |= FLAG_SAME_PUBLIC;
            }
            if self.hard_nat {
                flags |= FLAG_HARD_NAT;
            }
        }
        out.extend_from_slice(&[KIND_CANDIDATES_REPLY, flags]);
        out.extend_from_slice(&(candidates.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.extend_from_slice(self.peer.as_bytes());
        for addr in candidates {
            endpoint::emit(Some(*addr), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Reply, Request};

    fn key(n: u8) -> PublicKey {
        PublicKey([n; KEY_LEN])
    }

    #[test]
    fn the_request_is_as_long_as_the_largest_reply() {
        let mut request = Vec::new();
        Request::Candidates(CandidatesRequest {
            request_id: 7,
            peer: key(1),
        })
        .emit(&mut request)
        .unwrap();
        let mut reply = Vec::new();
        Reply::Candidates(CandidatesReply {
            request_id: 7,
            peer: key(1),
            known: true,
            same_public: true,
            hard_nat: true,
            candidates: vec!["[2001:db8::1]:51820".parse().unwrap(); MAX_CANDIDATES + 3],
        })
        .emit(&mut reply);
        assert_eq!(request.len(), CANDIDATES_REQUEST_LEN);
        assert_eq!(
            reply.len(),
            CANDIDATES_REQUEST_LEN,
            "trimmed to MAX_CANDIDATES"
        );
    }

    #[test]
    fn an_unknown_peer_gets_nothing_and_flags_must_agree() {
        let mut bytes = Vec::new();
        let unknown = CandidatesReply {
            request_id: 1,
            peer: key(2),
            known: false,
            same_public: true,
            hard_nat: true,
            candidates: vec!["10.0.0.1:1".parse().unwrap()],
        };
        Reply::Candidates(unknown).emit(&mut bytes);
        assert_eq!(bytes[1], 0, "no flags");
        assert_eq!(&bytes[2..4], &[0, 0], "no candidates");
        let mut same_public_only = bytes.clone();
        same_public_only[1] = FLAG_SAME_PUBLIC;
        assert_eq!(Reply::parse(&same_public_only), Err(WireError::Field));
        let mut unknown_flag = bytes;
        unknown_flag[1] = 0x80;
        assert_eq!(Reply::parse(&unknown_flag), Err(WireError::Reserved));
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut bytes = Vec::new();
        Request::Candidates(CandidatesRequest {
            request_id: 1,
            peer: key(3),
        })
        .emit(&mut bytes)
        .unwrap();
        let mut short = bytes.clone();
        short.pop();
        assert_eq!(Request::parse(&short), Err(WireError::Length));
        let mut padding = bytes.clone();
        padding[CANDIDATES_REQUEST_LEN - 1] = 1;
        assert_eq!(Request::parse(&padding), Err(WireError::Reserved));
        let mut reserved = bytes;
        reserved[2] = 1;
        assert_eq!(Request::parse(&reserved), Err(WireError::Reserved));
    }
}
