//! The probe one client sends from its WireGuard port to a peer's candidate address, and the
//! answer the peer's client sends back from its own WireGuard port.
//!
//! ```text
//! magic [0xf7 'w' 'g' 'p'] | kind u8 (1 ping, 2 pong) | reserved 3 (0) | txid u64
//! | sender's WireGuard public key 32 | receiver's WireGuard public key 32
//! ```
//! 80 bytes, both kinds alike, so an answer is never larger than what caused it. The first byte
//! is none of WireGuard's message types (1 to 4), so the WireGuard socket that shares the port
//! drops a probe as garbage. A probe proves nothing by itself: it only tells which candidate
//! carries packets both ways. The WireGuard handshake that follows on the chosen candidate is
//! the proof that the peer is there.

use super::reader::Reader;
use super::WireError;
use crate::keys::{PublicKey, KEY_LEN};

/// The first four bytes of every probe, also matched by the client's kernel filter.
pub const PROBE_MAGIC: [u8; 4] = [0xf7, b'w', b'g', b'p'];
/// Length of a probe and of its answer.
pub const PROBE_LEN: usize = 4 + 4 + 8 + 2 * KEY_LEN;

const KIND_PING: u8 = 1;
const KIND_PONG: u8 = 2;

/// Which way a probe goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Asks the receiver to answer from its WireGuard port.
    Ping,
    /// The answer to a ping, with its `txid`.
    Pong,
}

/// One probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Ping or pong.
    pub kind: ProbeKind,
    /// Random; a pong repeats its ping's.
    pub txid: u64,
    /// The sender's WireGuard public key.
    pub sender: PublicKey,
    /// The WireGuard public key of the peer it is meant for.
    pub receiver: PublicKey,
}

impl Probe {
    /// True when `payload` starts like a probe (what the kernel filter lets through).
    pub fn looks_like(payload: &[u8]) -> bool {
        payload.starts_with(&PROBE_MAGIC)
    }

    /// Reads a probe: exactly [`PROBE_LEN`] bytes with the magic, a known kind and zero reserved
    /// bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(bytes);
        if r.array::<4>().ok_or(WireError::Truncated)? != PROBE_MAGIC {
            return Err(WireError::UnknownType);
        }
        let kind = match r.u8().ok_or(WireError::Truncated)? {
            KIND_PING => ProbeKind::Ping,
            KIND_PONG => ProbeKind::Pong,
            _ => return Err(WireError::UnknownType),
        };
        if r.array::<3>().ok_or(WireError::Truncated)? != [0; 3] {
            return Err(WireError::Reserved);
        }
        let txid = r.u64().ok_or(WireError::Truncated)?;
        let sender = PublicKey(r.array::<KEY_LEN>().ok_or(WireError::Truncated)?);
        let receiver = PublicKey(r.array::<KEY_LEN>().ok_or(WireError::Truncated)?);
        if !r.is_empty() {
            return Err(WireError::Length);
        }
        Ok(Self {
            kind,
            txid,
            sender,
            receiver,
        })
    }

    /// The encoded probe.
    pub fn emit(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PROBE_LEN);
        out.extend_from_slice(&PROBE_MAGIC);
        out.push(match self.kind {
            ProbeKind::Ping => KIND_PING,
            ProbeKind::Pong => KIND_PONG,
        });
        out.extend_from_slice(&[0; 3]);
        out.extend_from_slice(&self.txid.to_be_bytes());
        out.extend_from_slice(self.sender.as_bytes());
        out.extend_from_slice(self.receiver.as_bytes());
        out
    }

    /// The answer to this ping.
    pub fn pong(&self) -> Self {
        Self {
            kind: ProbeKind::Pong,
            txid: self.txid,
            sender: self.receiver,
            receiver: self.sender,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ping() -> Probe {
        Probe {
            kind: ProbeKind::Ping,
            txid: 0x0102_0304_0506_0708,
            sender: PublicKey([1; KEY_LEN]),
            receiver: PublicKey([2; KEY_LEN]),
        }
    }

    #[test]
    fn a_probe_has_a_fixed_layout() {
        let bytes = ping().emit();
        assert_eq!(bytes.len(), PROBE_LEN);
        assert_eq!(&bytes[..8], &[0xf7, b'w', b'g', b'p', 1, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(Probe::parse(&bytes), Ok(ping()));
    }

    #[test]
    fn a_pong_answers_its_ping_with_the_keys_swapped() {
        let pong = ping().pong();
        assert_eq!(pong.kind, ProbeKind::Pong);
        assert_eq!(
            (pong.sender, pong.receiver),
            (ping().receiver, ping().sender)
        );
        assert_eq!(pong.emit().len(), ping().emit().len());
    }

    #[test]
    fn bad_probes_are_refused() {
        let good = ping().emit();
        assert_eq!(Probe::parse(&good[..79]), Err(WireError::Truncated));
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Probe::parse(&long), Err(WireError::Length));
        let mut kind = good.clone();
        kind[4] = 3;
        assert_eq!(Probe::parse(&kind), Err(WireError::UnknownType));
        let mut reserved = good.clone();
        reserved[6] = 1;
        assert_eq!(Probe::parse(&reserved), Err(WireError::Reserved));
        let mut magic = good;
        magic[0] = 1;
        assert_eq!(Probe::parse(&magic), Err(WireError::UnknownType));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = Probe::parse(&bytes);
        }

        #[test]
        fn emit_then_parse_round_trips(txid: u64, a: [u8; 32], b: [u8; 32], pong: bool) {
            let probe = Probe {
                kind: if pong { ProbeKind::Pong } else { ProbeKind::Ping },
                txid,
                sender: PublicKey(a),
                receiver: PublicKey(b),
            };
            prop_assert_eq!(Probe::parse(&probe.emit()), Ok(probe));
        }

        #[test]
        fn a_parsed_probe_emits_the_same_bytes(mut bytes in proptest::collection::vec(any::<u8>(), PROBE_LEN)) {
            bytes[..4].copy_from_slice(&PROBE_MAGIC);
            if let Ok(probe) = Probe::parse(&bytes) {
                prop_assert_eq!(probe.emit(), bytes);
            }
        }
    }
}
