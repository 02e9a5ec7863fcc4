//! An established natpunch-go session: Noise transport keys used with explicit nonces (the
//! counter travels in the clear), one send counter, and an anti-replay window on the receive side.
//!
//! The initiator sends with the first key of the Noise split and the responder with the second;
//! snow's [`StatelessTransportState`] picks the right one for each side. No associated data.

use std::net::SocketAddrV4;

use snow::StatelessTransportState;

use crate::session::{SessionError, SessionKeys};

use super::packet::{
    Answer, Lookup, ANSWER_ENDPOINT_LEN, LOOKUP_CIPHERTEXT_LEN, LOOKUP_PLAINTEXT_LEN, TAG_LEN,
};
use super::plaintext::{emit_answer, parse_answer, LookupRequest};

/// Largest plaintext either side of a natpunch-go session carries (a lookup's).
pub const MAX_PLAINTEXT_LEN: usize = LOOKUP_PLAINTEXT_LEN;

/// Transport state of one natpunch-go session, on either side.
pub struct LegacySession {
    keys: SessionKeys,
    /// The session index lookups carry (the one the server's response named).
    pub index: u32,
}

impl std::fmt::Debug for LegacySession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacySession")
            .field("index", &self.index)
            .field("next_nonce", &self.keys.next_counter())
            .finish_non_exhaustive()
    }
}

impl LegacySession {
    /// Wraps the transport keys of a finished handshake.
    pub fn new(transport: StatelessTransportState, index: u32) -> Self {
        Self {
            keys: SessionKeys::new(transport),
            index,
        }
    }

    /// Encrypts `plaintext` (at most [`MAX_PLAINTEXT_LEN`] bytes) with the next nonce, appends
    /// the ciphertext and tag to `out`, and returns the nonce used.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<u64, SessionError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SessionError::TooLarge);
        }
        let nonce = self.keys.take_counter()?;
        let mut buf = [0u8; MAX_PLAINTEXT_LEN + TAG_LEN];
        let written = self.keys.encrypt(nonce, plaintext, &mut buf)?;
        out.extend_from_slice(buf.get(..written).ok_or(SessionError::TooLarge)?);
        Ok(nonce)
    }

    /// Checks `nonce` against the window, decrypts `ciphertext` into `out` (which must hold
    /// [`MAX_PLAINTEXT_LEN`] bytes), then records the nonce; returns the plaintext length.
    /// Forged or replayed messages never move the window.
    pub fn open(
        &mut self,
        nonce: u64,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        self.keys.open(nonce, ciphertext, out)
    }

    /// Client side: the whole lookup datagram asking for `request`.
    pub fn seal_lookup(&mut self, request: &LookupRequest) -> Result<Vec<u8>, SessionError> {
        let mut ciphertext = Vec::with_capacity(LOOKUP_CIPHERTEXT_LEN);
        let nonce = self.seal(&request.emit(), &mut ciphertext)?;
        let ciphertext = ciphertext.try_into().map_err(|_| SessionError::TooLarge)?;
        let mut datagram = Vec::new();
        Lookup {
            index: self.index,
            nonce,
            ciphertext,
        }
        .emit(&mut datagram);
        Ok(datagram)
    }

    /// Server side: decrypts a lookup (the caller has matched its index to this session).
    pub fn open_lookup(&mut self, lookup: &Lookup) -> Result<LookupRequest, SessionError> {
        let mut plain = [0u8; MAX_PLAINTEXT_LEN];
        let len = self.open(lookup.nonce, &lookup.ciphertext, &mut plain)?;
        LookupRequest::parse(plain.get(..len).ok_or(SessionError::Decrypt)?)
            .map_err(|_| SessionError::Decrypt)
    }

    /// Server side: the whole answer datagram carrying `endpoint` (or nothing).
    pub fn seal_answer(&mut self, endpoint: Option<SocketAddrV4>) -> Result<Vec<u8>, SessionError> {
        let mut plaintext = Vec::with_capacity(ANSWER_ENDPOINT_LEN);
        emit_answer(endpoint, &mut plaintext);
        let mut ciphertext = Vec::with_capacity(ANSWER_ENDPOINT_LEN + TAG_LEN);
        let nonce = self.seal(&plaintext, &mut ciphertext)?;
        let mut datagram = Vec::new();
        Answer {
            nonce,
            ciphertext: &ciphertext,
        }
        .emit(&mut datagram);
        Ok(datagram)
    }

    /// Client side: decrypts an answer into the endpoint it carries, if any.
    pub fn open_answer(
        &mut self,
        answer: &Answer<'_>,
    ) -> Result<Option<SocketAddrV4>, SessionError> {
        let mut plain = [0u8; MAX_PLAINTEXT_LEN];
        let len = self.open(answer.nonce, answer.ciphertext, &mut plain)?;
        parse_answer(plain.get(..len).ok_or(SessionError::Decrypt)?)
            .map_err(|_| SessionError::Decrypt)
    }
}
