//! mac1: a cheap keyed MAC over a handshake initiation that only those who know the server's public
//! key can compute, so the server spends no Diffie-Hellman on anyone else's packets.

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};

use crate::keys::PublicKey;
use crate::wire::packet::MAC_LEN;

/// Domain-separation label hashed with the server's public key to make the mac1 key.
pub const MAC1_LABEL: &[u8] = b"wgpunch mac1----";

/// The key of mac1 for one server: BLAKE2s-256(label || server public key).
#[derive(Clone)]
pub struct Mac1Key([u8; 32]);

impl Mac1Key {
    /// Derives the mac1 key of the server with public key `server`.
    pub fn for_server(server: &PublicKey) -> Self {
        let mut hash = Blake2s256::new();
        hash.update(MAC1_LABEL);
        hash.update(server.as_bytes());
        Self(hash.finalize().into())
    }

    fn mac(&self) -> Blake2sMac<U16> {
        // A 32-byte key is always within BLAKE2s's key size, so this cannot fail.
        <Blake2sMac<U16> as KeyInit>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!())
    }

    /// Computes keyed BLAKE2s-128 over `bytes`.
    pub fn compute(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.finalize().into_bytes().into()
    }

    /// Checks `tag` against `bytes` in constant time.
    pub fn verify(&self, bytes: &[u8], tag: &[u8; MAC_LEN]) -> bool {
        let mut mac = self.mac();
        mac.update(bytes);
        mac.verify_slice(tag).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_verifies_only_for_its_server_and_bytes() {
        let a = Mac1Key::for_server(&PublicKey([1; 32]));
        let b = Mac1Key::for_server(&PublicKey([2; 32]));
        let tag = a.compute(b"initiation");
        assert!(a.verify(b"initiation", &tag));
        assert!(!a.verify(b"initiatioN", &tag));
        assert!(!b.verify(b"initiation", &tag));
    }
}
