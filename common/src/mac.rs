//! mac1: a cheap keyed MAC over a handshake initiation that only those who know the server's public
//! key can compute, so the server spends no Diffie-Hellman on anyone else's packets.

use blake2::digest::consts::U16;
use blake2::digest::{KeyInit, Mac};
use blake2::{Blake2s256, Blake2sMac, Digest};

use crate::keys::PublicKey;
use crate::wire::packet::MAC_LEN;

/// Domain-separation label hashed with the server's public key to make the mac1 key.
pub const MAC1_LABEL: &[u8] = b"wgpunch mac1----";

/// BLAKE2s-256(label || server public key): how every key derived from the server's public key
/// is made (the mac1 key here, the cookie encryption key in [`crate::cookie`]).
pub fn labelled_key(label: &[u8], server: &PublicKey) -> [u8; 32] {
    let mut hash = Blake2s256::new();
    hash.update(label);
    hash.update(server.as_bytes());
    hash.finalize().into()
}

fn keyed(key: &[u8], bytes: &[u8]) -> Blake2sMac<U16> {
    // Keys here are 16 or 32 bytes, within BLAKE2s's key size, so this cannot fail.
    let mut mac =
        <Blake2sMac<U16> as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(bytes);
    mac
}

/// Keyed BLAKE2s-128 of `bytes`: the MAC behind mac1, mac2 and cookies.
pub fn keyed_mac(key: &[u8], bytes: &[u8]) -> [u8; MAC_LEN] {
    keyed(key, bytes).finalize().into_bytes().into()
}

/// Checks a keyed BLAKE2s-128 `tag` of `bytes` in constant time.
pub fn verify_keyed_mac(key: &[u8], bytes: &[u8], tag: &[u8; MAC_LEN]) -> bool {
    keyed(key, bytes).verify_slice(tag).is_ok()
}

/// The key of mac1 for one server: BLAKE2s-256(label || server public key).
#[derive(Clone)]
pub struct Mac1Key([u8; 32]);

impl Mac1Key {
    /// Derives the mac1 key of the server with public key `server`.
    pub fn for_server(server: &PublicKey) -> Self {
        Self(labelled_key(MAC1_LABEL, server))
    }

    /// Computes keyed BLAKE2s-128 over `bytes`.
    pub fn compute(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        keyed_mac(&self.0, bytes)
    }

    /// Checks `tag` against `bytes` in constant time.
    pub fn verify(&self, bytes: &[u8], tag: &[u8; MAC_LEN]) -> bool {
        verify_keyed_mac(&self.0, bytes, tag)
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
