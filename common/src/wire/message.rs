//! The plaintexts carried inside transport messages: the client's requests and the server's
//! replies.
//!
//! Requests are zero-padded to at least [`MIN_REQUEST_LEN`] bytes and every reply is no longer than
//! the request that caused it, so the server never amplifies. All integers are big-endian.

use std::net::SocketAddr;

use super::candidates::{
    CandidatesReply, CandidatesRequest, KIND_CANDIDATES, KIND_CANDIDATES_REPLY,
};
use super::endpoint::{self, ENDPOINT_LEN};
use super::observe::{ObserveReply, ObserveRequest, KIND_OBSERVE, KIND_OBSERVE_REPLY};
use super::reader::Reader;
use super::{zero_padding, WireError};
use crate::keys::{PublicKey, KEY_LEN};

/// Kind byte of a registration request.
pub const KIND_REGISTER: u8 = 0x01;
/// Kind byte of a registration acknowledgement.
pub const KIND_REGISTER_ACK: u8 = 0x02;
/// Kind byte of a lookup request.
pub const KIND_LOOKUP: u8 = 0x03;
/// Kind byte of a lookup reply.
pub const KIND_LOOKUP_REPLY: u8 = 0x04;
/// Kind byte of a push: the server tells a watching client, unasked, where a peer now is.
pub const KIND_PUSH: u8 = 0x05;
/// Kind byte of a push acknowledgement.
pub const KIND_PUSH_ACK: u8 = 0x06;

/// Every request is padded with zeroes to at least this length.
pub const MIN_REQUEST_LEN: usize = 32;
/// Length of a registration's fixed header.
pub const REGISTER_HEADER_LEN: usize = 16;
/// Most peer keys one registration part carries.
pub const MAX_KEYS_PER_PART: usize = 32;
/// Most local addresses a registration carries (all in part 0).
pub const MAX_LOCAL_ADDRS: usize = 8;
/// Registration flag (header offset 14): push me what changes about my peers.
pub const FLAG_WATCH: u16 = 0x0001;
/// Registration flag: my NAT maps each destination to its own port (my mapping check said so).
/// Sent only to a server that answered an observe request, so older servers never see it.
pub const FLAG_HARD_NAT: u16 = 0x0002;
/// Length of a registration acknowledgement.
pub const REGISTER_ACK_LEN: usize = 8 + ENDPOINT_LEN;
// The smallest request must be able to carry the largest fixed-size reply.
const _: () = assert!(REGISTER_ACK_LEN <= MIN_REQUEST_LEN);
// A reply entry must not be larger than the key that asked for it.
const _: () = assert!(LOOKUP_ENTRY_LEN <= KEY_LEN);

/// Length of a lookup's fixed header.
pub const LOOKUP_HEADER_LEN: usize = 12;
/// Length of a lookup reply's fixed header.
pub const LOOKUP_REPLY_HEADER_LEN: usize = 8;
/// Most keys one lookup asks for.
pub const MAX_KEYS_PER_LOOKUP: usize = 32;
/// Length of one lookup reply entry: an endpoint, its age in seconds, flags and 3 reserved bytes.
pub const LOOKUP_ENTRY_LEN: usize = ENDPOINT_LEN + 4 + 4;
/// Length of a push's fixed header: kind, reserved, count, sequence.
pub const PUSH_HEADER_LEN: usize = 8;
/// Length of a push: its header, the peer's key and one lookup reply entry.
pub const PUSH_LEN: usize = PUSH_HEADER_LEN + KEY_LEN + LOOKUP_ENTRY_LEN;
/// Length of the transport datagram that carries a push.
pub const PUSH_DATAGRAM_LEN: usize =
    crate::wire::packet::TRANSPORT_HEADER_LEN + PUSH_LEN + crate::wire::packet::TAG_LEN;
/// Length of a push acknowledgement's content (kind, 3 reserved, `acked`), before the padding
/// every request gets.
pub const PUSH_ACK_LEN: usize = 8;
/// Entry flag: the peer has already been given the asker's current endpoint, so it has opened
/// (or is opening) its NAT towards the asker, and the asker can start WireGuard towards it.
pub const FLAG_PEER_HAS_YOURS: u8 = 0x01;

/// One part of a registration: the client's WireGuard peers and local addresses.
///
/// A peer list longer than [`MAX_KEYS_PER_PART`] is split into `parts` parts of one `generation`;
/// the server replaces the client's peer list once it holds every part of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// Matches the acknowledgement to this request.
    pub request_id: u32,
    /// Identifies one whole peer list; later generations replace earlier ones.
    pub generation: u32,
    /// This part's number, below `parts`.
    pub part: u8,
    /// How many parts the generation has, at least 1.
    pub parts: u8,
    /// Public keys of the client's WireGuard peers in this part.
    pub peers: Vec<PublicKey>,
    /// The client's local addresses with its WireGuard port (part 0 only).
    pub local_addrs: Vec<SocketAddr>,
    /// [`FLAG_WATCH`]: the client asks to be pushed what changes about its peers. The client
    /// sets it alike on every part; the server takes it from part 0, as the local addresses.
    pub watch: bool,
    /// [`FLAG_HARD_NAT`]: the client's NAT maps each destination to its own port. Taken from
    /// part 0 too; peers learn it with the client's candidates.
    pub hard_nat: bool,
}

/// The server's acknowledgement of one registration part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterAck {
    /// The request this answers.
    pub request_id: u32,
    /// The part acknowledged.
    pub part: u8,
    /// Seconds the registration stays valid without a refresh.
    pub ttl_secs: u16,
    /// The source address and port the server saw the request come from.
    pub observed: SocketAddr,
}

/// A request for the endpoints of up to [`MAX_KEYS_PER_LOOKUP`] peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Matches the reply to this request.
    pub request_id: u32,
    /// The peers asked for, at least one.
    pub peers: Vec<PublicKey>,
    /// Bit i set: we have just punched our NAT open towards the endpoint the server last gave us
    /// for `peers[i]`. Bits at and above `peers.len()` are zero.
    pub punched: u32,
}

/// Where the server last saw a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sighting {
    /// The peer's public address and port.
    pub endpoint: SocketAddr,
    /// Seconds since the server saw it.
    pub age_secs: u32,
    /// True when the peer was already given the asker's current endpoint ([`FLAG_PEER_HAS_YOURS`]).
    pub peer_has_yours: bool,
}

/// The answer to a [`Lookup`]: one entry per key asked for, in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupReply {
    /// The request this answers.
    pub request_id: u32,
    /// `None` for a peer the server cannot tell about.
    pub entries: Vec<Option<Sighting>>,
}

/// Sent by the server unasked, in the session of a watching client's latest message: where one
/// of the client's peers is now, as a lookup of that peer would answer right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// This push's number in its session, from 1, increasing.
    pub sequence: u32,
    /// The peer the sighting is about.
    pub peer: PublicKey,
    /// Where the peer is (always a real endpoint, never "none").
    pub sighting: Sighting,
}

/// The client's cumulative acknowledgement of the pushes of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushAck {
    /// The highest push sequence received in this session.
    pub acked: u32,
}

/// A plaintext the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// See [`Register`].
    Register(Register),
    /// See [`Lookup`].
    Lookup(Lookup),
    /// See [`PushAck`].
    PushAck(PushAck),
    /// See [`CandidatesRequest`].
    Candidates(CandidatesRequest),
    /// See [`ObserveRequest`].
    Observe(ObserveRequest),
}

/// A plaintext the server sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// See [`RegisterAck`].
    RegisterAck(RegisterAck),
    /// See [`LookupReply`].
    LookupReply(LookupReply),
    /// See [`Push`].
    Push(Push),
    /// See [`CandidatesReply`].
    Candidates(CandidatesReply),
    /// See [`ObserveReply`].
    Observed(ObserveReply),
}

fn keys(r: &mut Reader<'_>, count: usize) -> Result<Vec<PublicKey>, WireError> {
    (0..count)
        .map(|_| {
            r.array::<KEY_LEN>()
                .map(PublicKey)
                .ok_or(WireError::Truncated)
        })
        .collect()
}

/// Checks that what is left is exactly the zero padding that brings `content_len` up to the
/// minimum request length.
fn padding(r: &mut Reader<'_>, content_len: usize) -> Result<(), WireError> {
    zero_padding(r, MIN_REQUEST_LEN.saturating_sub(content_len))
}

fn pad(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    if len < MIN_REQUEST_LEN {
        out.resize(start + MIN_REQUEST_LEN, 0);
    }
}

impl Request {
    /// Reads a request plaintext.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        match r.u8().ok_or(WireError::Truncated)? {
            KIND_REGISTER => {
                let part = r.u8().ok_or(WireError::Truncated)?;
                let parts = r.u8().ok_or(WireError::Truncated)?;
                let addr_count = usize::from(r.u8().ok_or(WireError::Truncated)?);
                let request_id = r.u32().ok_or(WireError::Truncated)?;
                let generation = r.u32().ok_or(WireError::Truncated)?;
                let key_count = usize::from(r.u16().ok_or(WireError::Truncated)?);
                let flags = r.u16().ok_or(WireError::Truncated)?;
                if flags & !(FLAG_WATCH | FLAG_HARD_NAT) != 0 {
                    return Err(WireError::Reserved);
                }
                if parts == 0 || part >= parts || key_count > MAX_KEYS_PER_PART {
                    return Err(WireError::Field);
                }
                if addr_count > MAX_LOCAL_ADDRS || (part != 0 && addr_count != 0) {
                    return Err(WireError::Field);
                }
                let peers = keys(&mut r, key_count)?;
                let local_addrs = (0..addr_count)
                    .map(|_| match endpoint::parse(&mut r) {
                        Some(Some(addr)) => Ok(addr),
                        Some(None) => Err(WireError::Field),
                        None => Err(WireError::Truncated),
                    })
                    .collect::<Result<_, _>>()?;
                padding(
                    &mut r,
                    REGISTER_HEADER_LEN + key_count * KEY_LEN + addr_count * ENDPOINT_LEN,
                )?;
                Ok(Request::Register(Register {
                    request_id,
                    generation,
                    part,
                    parts,
                    peers,
                    local_addrs,
                    watch: flags & FLAG_WATCH != 0,
                    hard_nat: flags & FLAG_HARD_NAT != 0,
                }))
            }
            KIND_LOOKUP => {
                let reserved = r.u8().ok_or(WireError::Truncated)?;
                let count = usize::from(r.u16().ok_or(WireError::Truncated)?);
                let request_id = r.u32().ok_or(WireError::Truncated)?;
                let punched = r.u32().ok_or(WireError::Truncated)?;
                if reserved != 0 {
                    return Err(WireError::Reserved);
                }
                if count == 0 || count > MAX_KEYS_PER_LOOKUP {
                    return Err(WireError::Field);
                }
                if u64::from(punched) >> count != 0 {
                    return Err(WireError::Reserved);
                }
                let peers = keys(&mut r, count)?;
                padding(&mut r, LOOKUP_HEADER_LEN + count * KEY_LEN)?;
                Ok(Request::Lookup(Lookup {
                    request_id,
                    peers,
                    punched,
                }))
            }
            KIND_PUSH_ACK => {
                let reserved = r.array::<3>().ok_or(WireError::Truncated)?;
                let acked = r.u32().ok_or(WireError::Truncated)?;
                if reserved != [0; 3] {
                    return Err(WireError::Reserved);
                }
                padding(&mut r, PUSH_ACK_LEN)?;
                Ok(Request::PushAck(PushAck { acked }))
            }
            KIND_CANDIDATES => Ok(Request::Candidates(CandidatesRequest::parse(&mut r)?)),
            KIND_OBSERVE => Ok(Request::Observe(ObserveRequest::parse(&mut r)?)),
            _ => Err(WireError::UnknownType),
        }
    }

    /// Appends the encoded, padded request to `out`.
    ///
    /// Fails with [`WireError::Field`] when a count is over its limit, so nothing unparseable is
    /// ever sent.
    pub fn emit(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        let start = out.len();
        match self {
            Request::Register(m) => {
                if m.parts == 0
                    || m.part >= m.parts
                    || m.peers.len() > MAX_KEYS_PER_PART
                    || m.local_addrs.len() > MAX_LOCAL_ADDRS
                    || (m.part != 0 && !m.local_addrs.is_empty())
                {
                    return Err(WireError::Field);
                }
                out.extend_from_slice(&[KIND_REGISTER, m.part, m.parts, m.local_addrs.len() as u8]);
                out.extend_from_slice(&m.request_id.to_be_bytes());
                out.extend_from_slice(&m.generation.to_be_bytes());
                out.extend_from_slice(&(m.peers.len() as u16).to_be_bytes());
                let flags = if m.watch { FLAG_WATCH } else { 0 }
                    | if m.hard_nat { FLAG_HARD_NAT } else { 0 };
                out.extend_from_slice(&flags.to_be_bytes());
                for key in &m.peers {
                    out.extend_from_slice(key.as_bytes());
                }
                for addr in &m.local_addrs {
                    endpoint::emit(Some(*addr), out);
                }
            }
            Request::Lookup(m) => {
                if m.peers.is_empty()
                    || m.peers.len() > MAX_KEYS_PER_LOOKUP
                    || u64::from(m.punched) >> m.peers.len() != 0
                {
                    return Err(WireError::Field);
                }
                out.extend_from_slice(&[KIND_LOOKUP, 0]);
                out.extend_from_slice(&(m.peers.len() as u16).to_be_bytes());
                out.extend_from_slice(&m.request_id.to_be_bytes());
                out.extend_from_slice(&m.punched.to_be_bytes());
                for key in &m.peers {
                    out.extend_from_slice(key.as_bytes());
                }
            }
            Request::PushAck(m) => {
                out.extend_from_slice(&[KIND_PUSH_ACK, 0, 0, 0]);
                out.extend_from_slice(&m.acked.to_be_bytes());
            }
            Request::Candidates(m) => m.emit(out),
            Request::Observe(m) => m.emit(out),
        }
        pad(out, start);
        Ok(())
    }
}

impl Reply {
    /// Reads a reply plaintext.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        let reply = match r.u8().ok_or(WireError::Truncated)? {
            KIND_REGISTER_ACK => {
                let part = r.u8().ok_or(WireError::Truncated)?;
                let ttl_secs = r.u16().ok_or(WireError::Truncated)?;
                let request_id = r.u32().ok_or(WireError::Truncated)?;
                let observed = endpoint::parse(&mut r)
                    .ok_or(WireError::Truncated)?
                    .ok_or(WireError::Field)?;
                Reply::RegisterAck(RegisterAck {
                    request_id,
                    part,
                    ttl_secs,
                    observed,
                })
            }
            KIND_LOOKUP_REPLY => {
                let reserved = r.u8().ok_or(WireError::Truncated)?;
                let count = usize::from(r.u16().ok_or(WireError::Truncated)?);
                let request_id = r.u32().ok_or(WireError::Truncated)?;
                if reserved != 0 {
                    return Err(WireError::Reserved);
                }
                if count == 0 || count > MAX_KEYS_PER_LOOKUP {
                    return Err(WireError::Field);
                }
                let entries = (0..count)
                    .map(|_| entry(&mut r))
                    .collect::<Result<_, _>>()?;
                Reply::LookupReply(LookupReply {
                    request_id,
                    entries,
                })
            }
            KIND_PUSH => {
                let reserved = r.u8().ok_or(WireError::Truncated)?;
                let count = r.u16().ok_or(WireError::Truncated)?;
                let sequence = r.u32().ok_or(WireError::Truncated)?;
                if reserved != 0 {
                    return Err(WireError::Reserved);
                }
                if count != 1 {
                    return Err(WireError::Field);
                }
                let peer = r
                    .array::<KEY_LEN>()
                    .map(PublicKey)
                    .ok_or(WireError::Truncated)?;
                let sighting = entry(&mut r)?.ok_or(WireError::Field)?;
                Reply::Push(Push {
                    sequence,
                    peer,
                    sighting,
                })
            }
            KIND_CANDIDATES_REPLY => Reply::Candidates(CandidatesReply::parse(&mut r)?),
            KIND_OBSERVE_REPLY => Reply::Observed(ObserveReply::parse(&mut r)?),
            _ => return Err(WireError::UnknownType),
        };
        if !r.is_empty() {
            return Err(WireError::Length);
        }
        Ok(reply)
    }

    /// Appends the encoded reply to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Reply::RegisterAck(m) => {
                out.extend_from_slice(&[KIND_REGISTER_ACK, m.part]);
                out.extend_from_slice(&m.ttl_secs.to_be_bytes());
                out.extend_from_slice(&m.request_id.to_be_bytes());
                endpoint::emit(Some(m.observed), out);
            }
            Reply::LookupReply(m) => {
                out.extend_from_slice(&[KIND_LOOKUP_REPLY, 0]);
                out.extend_from_slice(&(m.entries.len() as u16).to_be_bytes());
                out.extend_from_slice(&m.request_id.to_be_bytes());
                for entry in &m.entries {
                    emit_entry(*entry, out);
                }
            }
            Reply::Push(m) => {
                out.extend_from_slice(&[KIND_PUSH, 0]);
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&m.sequence.to_be_bytes());
                out.extend_from_slice(m.peer.as_bytes());
                emit_entry(Some(m.sighting), out);
            }
            Reply::Candidates(m) => m.emit(out),
            Reply::Observed(m) => m.emit(out),
        }
    }
}

/// Reads one lookup reply entry (also the entry of a push): `None` is the all-zero entry.
fn entry(r: &mut Reader<'_>) -> Result<Option<Sighting>, WireError> {
    let endpoint = endpoint::parse(r).ok_or(WireError::Truncated)?;
    let age_secs = r.u32().ok_or(WireError::Truncated)?;
    let [flags, reserved @ ..] = r.array::<4>().ok_or(WireError::Truncated)?;
    if reserved != [0; 3] || flags & !FLAG_PEER_HAS_YOURS != 0 {
        return Err(WireError::Reserved);
    }
    let peer_has_yours = flags & FLAG_PEER_HAS_YOURS != 0;
    match endpoint {
        Some(endpoint) => Ok(Some(Sighting {
            endpoint,
            age_secs,
            peer_has_yours,
        })),
        None if age_secs == 0 && flags == 0 => Ok(None),
        None => Err(WireError::Reserved),
    }
}

fn emit_entry(entry: Option<Sighting>, out: &mut Vec<u8>) {
    endpoint::emit(entry.map(|s| s.endpoint), out);
    out.extend_from_slice(&entry.map_or(0, |s| s.age_secs).to_be_bytes());
    let flags = if entry.is_some_and(|s| s.peer_has_yours) {
        FLAG_PEER_HAS_YOURS
    } else {
        0
    };
    out.extend_from_slice(&[flags, 0, 0, 0]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::IpAddr;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; KEY_LEN])
    }

    fn emit_request(request: &Request) -> Vec<u8> {
        let mut out = Vec::new();
        request.emit(&mut out).unwrap();
        out
    }

    fn emit_reply(reply: &Reply) -> Vec<u8> {
        let mut out = Vec::new();
        reply.emit(&mut out);
        out
    }

    #[test]
    fn an_empty_registration_is_padded_and_its_ack_is_not_larger() {
        let register = Request::Register(Register {
            request_id: 1,
            generation: 2,
            part: 0,
            parts: 1,
            peers: vec![],
            local_addrs: vec![],
            watch: false,
            hard_nat: false,
        });
        let bytes = emit_request(&register);
        assert_eq!(bytes.len(), MIN_REQUEST_LEN);
        assert_eq!(Request::parse(&bytes), Ok(register));
    }

    #[test]
    fn a_full_registration_fits_the_largest_plaintext() {
        let register = Request::Register(Register {
            request_id: 1,
            generation: 2,
            part: 0,
            parts: 3,
            peers: (0..MAX_KEYS_PER_PART as u8).map(key).collect(),
            local_addrs: vec!["[2001:db8::1]:51820".parse().unwrap(); MAX_LOCAL_ADDRS],
            watch: true,
            hard_nat: false,
        });
        let bytes = emit_request(&register);
        assert_eq!(bytes.len(), crate::wire::packet::MAX_PLAINTEXT_LEN);
        assert_eq!(Request::parse(&bytes), Ok(register));
    }

    #[test]
    fn over_limit_requests_are_refused_when_emitting() {
        let too_many = Request::Lookup(Lookup {
            request_id: 1,
            peers: (0..33).map(key).collect(),
            punched: 0,
        });
        assert_eq!(too_many.emit(&mut Vec::new()), Err(WireError::Field));
        let none = Request::Lookup(Lookup {
            request_id: 1,
            peers: vec![],
            punched: 0,
        });
        assert_eq!(none.emit(&mut Vec::new()), Err(WireError::Field));
        let stray_bit = Request::Lookup(Lookup {
            request_id: 1,
            peers: vec![key(1)],
            punched: 0b10,
        });
        assert_eq!(stray_bit.emit(&mut Vec::new()), Err(WireError::Field));
        let none = Request::Lookup(Lookup {
            request_id: 1,
            peers: vec![],
            punched: 0,
        });
        assert_eq!(none.emit(&mut Vec::new()), Err(WireError::Field));
        let addrs_in_later_part = Request::Register(Register {
            request_id: 1,
            generation: 1,
            part: 1,
            parts: 2,
            peers: vec![],
            local_addrs: vec!["198.51.100.1:1".parse().unwrap()],
            watch: true,
            hard_nat: false,
        });
        assert_eq!(
            addrs_in_later_part.emit(&mut Vec::new()),
            Err(WireError::Field)
        );
    }

    #[test]
    fn lookup_reply_is_smaller_than_its_lookup() {
        for n in 1..=MAX_KEYS_PER_LOOKUP {
            let lookup = emit_request(&Request::Lookup(Lookup {
                request_id: 1,
                peers: (0..n as u8).map(key).collect(),
                punched: 0,
            }));
            let reply = emit_reply(&Reply::LookupReply(LookupReply {
                request_id: 1,
                entries: vec![
                    Some(Sighting {
                        endpoint: "[2001:db8::1]:1".parse().unwrap(),
                        age_secs: 1,
                        peer_has_yours: true,
                    });
                    n
                ],
            }));
            assert!(reply.len() <= lookup.len(), "{n} keys");
        }
    }

    #[test]
    fn unknown_entries_are_all_zero_bytes() {
        let reply = emit_reply(&Reply::LookupReply(LookupReply {
            request_id: 9,
            entries: vec![None],
        }));
        assert_eq!(&reply[LOOKUP_REPLY_HEADER_LEN..], &[0u8; LOOKUP_ENTRY_LEN]);
    }

    #[test]
    fn trailing_bytes_and_dirty_padding_are_rejected() {
        let bytes = emit_request(&Request::Lookup(Lookup {
            request_id: 1,
            peers: vec![key(1)],
            punched: 1,
        }));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Request::parse(&longer), Err(WireError::Length));
        let short = emit_request(&Request::Register(Register {
            request_id: 1,
            generation: 1,
            part: 0,
            parts: 1,
            peers: vec![],
            local_addrs: vec![],
            watch: false,
            hard_nat: false,
        }));
        let mut dirty = short.clone();
        if let Some(last) = dirty.last_mut() {
            *last = 1;
        }
        assert_eq!(Request::parse(&dirty), Err(WireError::Reserved));
        for len in 0..bytes.len() {
            assert!(Request::parse(&bytes[..len]).is_err(), "truncated to {len}");
        }
    }

    #[test]
    fn the_watch_and_hard_nat_flags_are_bits_0_and_1_at_offset_14_and_other_bits_are_refused() {
        let mut bytes = emit_request(&Request::Register(Register {
            request_id: 1,
            generation: 1,
            part: 0,
            parts: 1,
            peers: vec![],
            local_addrs: vec![],
            watch: true,
            hard_nat: false,
        }));
        assert_eq!(bytes.get(14..16), Some(&[0, 1][..]));
        bytes[14..16].copy_from_slice(&(FLAG_WATCH | FLAG_HARD_NAT).to_be_bytes());
        assert!(matches!(
            Request::parse(&bytes),
            Ok(Request::Register(Register {
                watch: true,
                hard_nat: true,
                ..
            }))
        ));
        for bit in 2..16 {
            let flags = FLAG_WATCH | 1 << bit;
            bytes[14..16].copy_from_slice(&flags.to_be_bytes());
            assert_eq!(
                Request::parse(&bytes),
                Err(WireError::Reserved),
                "bit {bit}"
            );
        }
    }

    fn push() -> Push {
        Push {
            sequence: 7,
            peer: key(3),
            sighting: Sighting {
                endpoint: "[2001:db8::1]:51820".parse().unwrap(),
                age_secs: 2,
                peer_has_yours: true,
            },
        }
    }

    #[test]
    fn a_push_is_68_bytes_and_fits_a_100_byte_datagram() {
        let bytes = emit_reply(&Reply::Push(push()));
        assert_eq!(bytes.len(), PUSH_LEN);
        assert_eq!(PUSH_LEN, 68);
        assert_eq!(PUSH_DATAGRAM_LEN, 100);
        assert_eq!(bytes.get(..8), Some(&[KIND_PUSH, 0, 0, 1, 0, 0, 0, 7][..]));
    }

    #[test]
    fn a_push_carries_exactly_one_real_endpoint() {
        let bytes = emit_reply(&Reply::Push(push()));
        let mut two = bytes.clone();
        two[3] = 2;
        assert_eq!(Reply::parse(&two), Err(WireError::Field));
        let mut zero = bytes.clone();
        zero[3] = 0;
        assert_eq!(Reply::parse(&zero), Err(WireError::Field));
        let mut none = bytes.clone();
        none[PUSH_HEADER_LEN + KEY_LEN..].fill(0);
        assert_eq!(Reply::parse(&none), Err(WireError::Field));
        let mut reserved = bytes;
        reserved[1] = 1;
        assert_eq!(Reply::parse(&reserved), Err(WireError::Reserved));
    }

    #[test]
    fn a_push_ack_is_padded_to_the_minimum_request() {
        let bytes = emit_request(&Request::PushAck(PushAck { acked: 0x0102_0304 }));
        assert_eq!(bytes.len(), MIN_REQUEST_LEN);
        assert_eq!(
            bytes.get(..8),
            Some(&[KIND_PUSH_ACK, 0, 0, 0, 1, 2, 3, 4][..])
        );
        let mut reserved = bytes.clone();
        reserved[2] = 1;
        assert_eq!(Request::parse(&reserved), Err(WireError::Reserved));
        assert_eq!(
            Request::parse(&bytes[..PUSH_ACK_LEN]),
            Err(WireError::Length)
        );
    }

    fn arb_key() -> impl Strategy<Value = PublicKey> {
        any::<[u8; KEY_LEN]>().prop_map(PublicKey)
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        (any::<IpAddr>(), any::<u16>())
            .prop_map(|(ip, port)| endpoint::canonical(SocketAddr::new(ip, port)))
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let register = (
            any::<u32>(),
            any::<u32>(),
            1u8..=255,
            proptest::collection::vec(arb_key(), 0..=MAX_KEYS_PER_PART),
            proptest::collection::vec(arb_addr(), 0..=MAX_LOCAL_ADDRS),
            any::<(bool, bool)>(),
        )
            .prop_flat_map(
                |(request_id, generation, parts, peers, addrs, (watch, hard_nat))| {
                    (0..parts).prop_map(move |part| {
                        Request::Register(Register {
                            request_id,
                            generation,
                            part,
                            parts,
                            peers: peers.clone(),
                            local_addrs: if part == 0 { addrs.clone() } else { vec![] },
                            watch,
                            hard_nat,
                        })
                    })
                },
            );
        let lookup = (
            any::<u32>(),
            proptest::collection::vec(arb_key(), 1..=MAX_KEYS_PER_LOOKUP),
        )
            .prop_flat_map(|(request_id, peers)| {
                let bits = peers.len();
                (0..=u32::MAX >> (32 - bits)).prop_map(move |punched| {
                    Request::Lookup(Lookup {
                        request_id,
                        peers: peers.clone(),
                        punched,
                    })
                })
            });
        let push_ack = any::<u32>().prop_map(|acked| Request::PushAck(PushAck { acked }));
        let candidates = (any::<u32>(), arb_key()).prop_map(|(request_id, peer)| {
            Request::Candidates(CandidatesRequest { request_id, peer })
        });
        prop_oneof![register, lookup, push_ack, candidates]
    }

    fn arb_reply() -> impl Strategy<Value = Reply> {
        let ack = (any::<u32>(), any::<u8>(), any::<u16>(), arb_addr()).prop_map(
            |(request_id, part, ttl_secs, observed)| {
                Reply::RegisterAck(RegisterAck {
                    request_id,
                    part,
                    ttl_secs,
                    observed,
                })
            },
        );
        fn sighting() -> impl Strategy<Value = Sighting> {
            (arb_addr(), any::<u32>(), any::<bool>()).prop_map(
                |(endpoint, age_secs, peer_has_yours)| Sighting {
                    endpoint,
                    age_secs,
                    peer_has_yours,
                },
            )
        }
        let entry = proptest::option::of(sighting());
        let push = (any::<u32>(), arb_key(), sighting()).prop_map(|(sequence, peer, sighting)| {
            Reply::Push(Push {
                sequence,
                peer,
                sighting,
            })
        });
        let lookup = (
            any::<u32>(),
            proptest::collection::vec(entry, 1..=MAX_KEYS_PER_LOOKUP),
        )
            .prop_map(|(request_id, entries)| {
                Reply::LookupReply(LookupReply {
                    request_id,
                    entries,
                })
            });
        let candidates = (
            any::<u32>(),
            arb_key(),
            any::<(bool, bool)>(),
            proptest::collection::vec(arb_addr(), 0..=super::super::candidates::MAX_CANDIDATES),
        )
            .prop_map(|(request_id, peer, (same_public, hard_nat), candidates)| {
                Reply::Candidates(CandidatesReply {
                    request_id,
                    peer,
                    known: true,
                    same_public,
                    hard_nat,
                    candidates,
                })
            });
        prop_oneof![ack, lookup, push, candidates]
    }

    proptest! {
        #[test]
        fn requests_round_trip(request in arb_request()) {
            let bytes = emit_request(&request);
            prop_assert!(bytes.len() >= MIN_REQUEST_LEN);
            prop_assert!(bytes.len() <= crate::wire::packet::MAX_PLAINTEXT_LEN);
            prop_assert_eq!(Request::parse(&bytes), Ok(request));
        }

        #[test]
        fn replies_round_trip(reply in arb_reply()) {
            prop_assert_eq!(Reply::parse(&emit_reply(&reply)), Ok(reply));
        }

        #[test]
        fn parsers_never_panic_and_accept_only_canonical_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..1300)) {
            if let Ok(request) = Request::parse(&bytes) {
                prop_assert_eq!(emit_request(&request), bytes.clone());
            }
            if let Ok(reply) = Reply::parse(&bytes) {
                prop_assert_eq!(emit_reply(&reply), bytes);
            }
        }
    }
}
