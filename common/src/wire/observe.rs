//! The request for the address the server observes, and its answer: how a client learns its NAT's
//! mapping behaviour by asking from one port to several server addresses.
//!
//! ```text
//! request: kind 0x09 | reserved 3 (0) | request_id u32 | zero padding to 68 bytes
//! reply:   kind 0x0a | count u8 | reserved 2 (0) | request_id u32 | observed endpoint 20
//!          | count alternates (20 each)
//! ```
//! The request is padded to the length of the largest reply, so that the reply is never larger
//! than what caused it. The alternates are the server's other addresses for this purpose (a
//! second port, maybe a second address); an alternate with an unspecified IP address means "the
//! address you sent this to, at this port". Only an answer that came through the main address
//! lists alternates.

use std::net::SocketAddr;

use super::endpoint::{self, ENDPOINT_LEN};
use super::reader::Reader;
use super::{zero_padding, WireError};

/// Kind byte of an observe request.
pub const KIND_OBSERVE: u8 = 0x09;
/// Kind byte of an observe reply.
pub const KIND_OBSERVE_REPLY: u8 = 0x0a;
/// Most alternates one reply lists: a second port, and a second address.
pub const MAX_ALTERNATES: usize = 2;
/// Length of a reply's fixed part, the observed endpoint included.
pub const OBSERVE_REPLY_HEADER_LEN: usize = 8 + ENDPOINT_LEN;
/// Length of an observe request: the largest reply's.
pub const OBSERVE_REQUEST_LEN: usize = OBSERVE_REPLY_HEADER_LEN + MAX_ALTERNATES * ENDPOINT_LEN;

/// Asks where the server sees us, and (at its main address) where else to ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObserveRequest {
    /// Matches the reply to this request.
    pub request_id: u32,
}

/// Where the server saw the request come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObserveReply {
    /// The request this answers.
    pub request_id: u32,
    /// The request's source address and port, as the server saw it.
    pub observed: SocketAddr,
    /// The server's other addresses to ask; an unspecified IP means the one asked here.
    pub alternates: Vec<SocketAddr>,
}

impl ObserveRequest {
    /// Reads the request after its kind byte.
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let reserved = r.array::<3>().ok_or(WireError::Truncated)?;
        let request_id = r.u32().ok_or(WireError::Truncated)?;
        if reserved != [0; 3] {
            return Err(WireError::Reserved);
        }
        zero_padding(r, OBSERVE_REQUEST_LEN - 8)?;
        Ok(Self { request_id })
    }

    /// Appends the whole padded request, kind byte included.
    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[KIND_OBSERVE, 0, 0, 0]);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        out.resize(start + OBSERVE_REQUEST_LEN, 0);
    }
}

impl ObserveReply {
    /// Reads the reply after its kind byte.
    pub(super) fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let count = usize::from(r.u8().ok_or(WireError::Truncated)?);
        let reserved = r.array::<2>().ok_or(WireError::Truncated)?;
        let request_id = r.u32().ok_or(WireError::Truncated)?;
        if reserved != [0; 2] {
            return Err(WireError::Reserved);
        }
        if count > MAX_ALTERNATES {
            return Err(WireError::Field);
        }
        let mut endpoint = || match endpoint::parse(r) {
            Some(Some(addr)) => Ok(addr),
            Some(None) => Err(WireError::Field),
            None => Err(WireError::Truncated),
        };
        let observed = endpoint()?;
        let alternates = (0..count).map(|_| endpoint()).collect::<Result<_, _>>()?;
        Ok(Self {
            request_id,
            observed,
            alternates,
        })
    }

    /// Appends the reply, kind byte included; at most [`MAX_ALTERNATES`] alternates are sent.
    pub(super) fn emit(&self, out: &mut Vec<u8>) {
        let alternates = self
            .alternates
            .get(..MAX_ALTERNATES.min(self.alternates.len()))
            .unwrap_or_default();
        out.extend_from_slice(&[KIND_OBSERVE_REPLY, alternates.len() as u8, 0, 0]);
        out.extend_from_slice(&self.request_id.to_be_bytes());
        endpoint::emit(Some(self.observed), out);
        for addr in alternates {
            endpoint::emit(Some(*addr), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Reply, Request};
    use proptest::prelude::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_request_is_as_long_as_the_largest_reply() {
        let mut request = Vec::new();
        Request::Observe(ObserveRequest { request_id: 7 })
            .emit(&mut request)
            .unwrap();
        let mut reply = Vec::new();
        Reply::Observed(ObserveReply {
            request_id: 7,
            observed: addr("[2001:db8::1]:40000"),
            alternates: vec![addr("0.0.0.0:51819"); MAX_ALTERNATES + 2],
        })
        .emit(&mut reply);
        assert_eq!(request.len(), OBSERVE_REQUEST_LEN);
        assert_eq!(
            reply.len(),
            OBSERVE_REQUEST_LEN,
            "trimmed to MAX_ALTERNATES"
        );
    }

    #[test]
    fn replies_round_trip_and_bad_ones_are_refused() {
        let reply = Reply::Observed(ObserveReply {
            request_id: 9,
            observed: addr("198.51.100.10:40001"),
            alternates: vec![addr("0.0.0.0:51819")],
        });
        let mut bytes = Vec::new();
        reply.emit(&mut bytes);
        assert_eq!(Reply::parse(&bytes), Ok(reply));
        let mut too_many = bytes.clone();
        too_many[1] = 3;
        assert_eq!(Reply::parse(&too_many), Err(WireError::Field));
        let mut reserved = bytes.clone();
        reserved[2] = 1;
        assert_eq!(Reply::parse(&reserved), Err(WireError::Reserved));
        let mut none = bytes.clone();
        none[8..28].fill(0);
        assert_eq!(
            Reply::parse(&none),
            Err(WireError::Field),
            "observed is never none"
        );
        bytes.pop();
        assert!(Reply::parse(&bytes).is_err());
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut bytes = Vec::new();
        Request::Observe(ObserveRequest { request_id: 1 })
            .emit(&mut bytes)
            .unwrap();
        let mut short = bytes.clone();
        short.pop();
        assert_eq!(Request::parse(&short), Err(WireError::Length));
        let mut padding = bytes.clone();
        padding[40] = 1;
        assert_eq!(Request::parse(&padding), Err(WireError::Reserved));
        let mut reserved = bytes;
        reserved[1] = 1;
        assert_eq!(Request::parse(&reserved), Err(WireError::Reserved));
    }

    proptest! {
        #[test]
        fn any_request_bytes_parse_only_if_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut framed = vec![KIND_OBSERVE];
            framed.extend_from_slice(&bytes);
            if let Ok(request) = Request::parse(&framed) {
                let mut again = Vec::new();
                request.emit(&mut again).unwrap();
                prop_assert_eq!(again, framed);
            }
        }

        #[test]
        fn any_reply_bytes_parse_only_if_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut framed = vec![KIND_OBSERVE_REPLY];
            framed.extend_from_slice(&bytes);
            if let Ok(reply) = Reply::parse(&framed) {
                let mut again = Vec::new();
                reply.emit(&mut again);
                prop_assert_eq!(again, framed);
            }
        }
    }
}
