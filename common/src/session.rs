//! An established session: the two transport keys, the send counter and the anti-replay window.

use snow::StatelessTransportState;

use crate::replay::{ReplayWindow, REJECT_AFTER_MESSAGES};
use crate::wire::packet::{Transport, MAX_PLAINTEXT_LEN, TAG_LEN};

/// Why a transport message could not be sealed or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// The counter was seen before or is too old for the window.
    #[error("replayed or stale counter")]
    Replay,
    /// The ciphertext did not decrypt under this session's key.
    #[error("decryption failed")]
    Decrypt,
    /// The plaintext is larger than a transport message carries.
    #[error("plaintext too large")]
    TooLarge,
    /// The session has sent as many messages as it may; it needs a new handshake.
    #[error("session exhausted")]
    Exhausted,
}

/// What the sessions of both protocols (wgpunch's and natpunch-go's) share: the transport keys
/// used with explicit counters, the send counter, and the anti-replay window.
pub(crate) struct SessionKeys {
    transport: StatelessTransportState,
    next_counter: u64,
    replay: ReplayWindow,
}

impl SessionKeys {
    /// Wraps the transport keys of a finished handshake.
    pub(crate) fn new(transport: StatelessTransportState) -> Self {
        Self {
            transport,
            next_counter: 0,
            replay: ReplayWindow::new(),
        }
    }

    /// The counter the next message sent will carry.
    pub(crate) fn next_counter(&self) -> u64 {
        self.next_counter
    }

    /// Takes the counter for the next message sent; refused once the session has sent as many
    /// messages as it may.
    pub(crate) fn take_counter(&mut self) -> Result<u64, SessionError> {
        if self.next_counter >= REJECT_AFTER_MESSAGES {
            return Err(SessionError::Exhausted);
        }
        let counter = self.next_counter;
        self.next_counter += 1;
        Ok(counter)
    }

    /// Encrypts `plaintext` with `counter` into `out`; returns the length of ciphertext and tag.
    pub(crate) fn encrypt(
        &self,
        counter: u64,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        self.transport
            .write_message(counter, plaintext, out)
            .map_err(|_| SessionError::TooLarge)
    }

    /// Checks `counter` against the window, decrypts `ciphertext` into `out`, then records the
    /// counter; returns the plaintext length. Forged or replayed messages never move the window.
    pub(crate) fn open(
        &mut self,
        counter: u64,
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SessionError> {
        if !self.replay.check(counter) {
            return Err(SessionError::Replay);
        }
        let len = self
            .transport
            .read_message(counter, ciphertext, out)
            .map_err(|_| SessionError::Decrypt)?;
        if !self.replay.update(counter) {
            return Err(SessionError::Replay);
        }
        Ok(len)
    }
}

/// Transport state of one session, the same on both sides.
pub struct Session {
    keys: SessionKeys,
    /// The index the peer puts in messages to us.
    pub local_index: u32,
    /// The index we put in messages to the peer.
    pub remote_index: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("next_counter", &self.keys.next_counter())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Wraps the transport keys of a finished handshake.
    pub fn new(transport: StatelessTransportState, local_index: u32, remote_index: u32) -> Self {
        Self {
            keys: SessionKeys::new(transport),
            local_index,
            remote_index,
        }
    }

    /// Encrypts `plaintext` and appends the whole transport datagram to `out`.
    pub fn seal(&mut self, plaintext: &[u8], out: &mut Vec<u8>) -> Result<(), SessionError> {
        if plaintext.len() > MAX_PLAINTEXT_LEN {
            return Err(SessionError::TooLarge);
        }
        let counter = self.keys.take_counter()?;
        let start = out.len();
        Transport::emit_header(self.remote_index, counter, out);
        let body = out.len();
        out.resize(body + plaintext.len() + TAG_LEN, 0);
        let sealed = out
            .get_mut(body..)
            .ok_or(SessionError::TooLarge)
            .and_then(|buf| self.keys.encrypt(counter, plaintext, buf));
        match sealed {
            Ok(_) => Ok(()),
            Err(e) => {
                out.truncate(start);
                Err(e)
            }
        }
    }

    /// Checks the counter, decrypts, then records the counter; returns the plaintext length
    /// written to `out` (which must hold [`MAX_PLAINTEXT_LEN`] bytes).
    pub fn open(&mut self, message: &Transport<'_>, out: &mut [u8]) -> Result<usize, SessionError> {
        self.keys.open(message.counter, message.ciphertext, out)
    }
}
