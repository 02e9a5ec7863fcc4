//! WireGuard-compatible Curve25519 keys in their 32-byte and base64 text forms.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of every key in bytes.
pub const KEY_LEN: usize = 32;

/// Length of a key in WireGuard's base64 text form (`wg genkey`, `wg pubkey`).
pub const KEY_TEXT_LEN: usize = 44;

/// Why a key could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not 44 characters of base64 decoding to 32 bytes.
    #[error("not a WireGuard key: expected 44 characters of base64 encoding 32 bytes")]
    Malformed,
    /// The key is all zeroes, which no real WireGuard key is.
    #[error("the all-zero key is not a valid WireGuard key")]
    Zero,
}

fn decode_text(text: &str) -> Result<[u8; KEY_LEN], KeyError> {
    let text = text.trim();
    if text.len() != KEY_TEXT_LEN {
        return Err(KeyError::Malformed);
    }
    let mut out = [0u8; KEY_LEN];
    let written = STANDARD
        .decode_slice(text, &mut out)
        .map_err(|_| KeyError::Malformed)?;
    if written != KEY_LEN {
        out.zeroize();
        return Err(KeyError::Malformed);
    }
    if out == [0u8; KEY_LEN] {
        return Err(KeyError::Zero);
    }
    Ok(out)
}

/// A WireGuard public key: identifies a client and the server.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The key in WireGuard's base64 text form.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }
}

impl PublicKey {
    /// True when a Diffie-Hellman of `private` with this key gives a secret that depends on
    /// `private`: false for the all-zero key and the other low-order points, which anyone could
    /// claim to own.
    pub fn is_contributory_with(&self, private: &PrivateKey) -> bool {
        let secret = x25519_dalek::StaticSecret::from(private.0);
        secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(self.0))
            .was_contributory()
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Reads a key in WireGuard's base64 form; surrounding white space is ignored.
    fn from_str(text: &str) -> Result<Self, KeyError> {
        decode_text(text).map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

/// A WireGuard private key. Zeroized on drop; never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// Takes raw key bytes, clamping them as X25519 does (as `wg genkey` does).
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(clamp(bytes));
        bytes.zeroize();
        key
    }

    /// Reads a key in WireGuard's base64 form, as written by `wg genkey`.
    pub fn from_base64(text: &str) -> Result<Self, KeyError> {
        decode_text(text).map(Self::from_bytes)
    }

    /// The key in WireGuard's base64 form, for writing a key file.
    pub fn to_base64(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(STANDARD.encode(self.0))
    }

    /// The raw key bytes, for handing to the Noise handshake.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The matching public key (as `wg pubkey` computes it).
    pub fn public_key(&self) -> PublicKey {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

fn clamp(mut bytes: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    // A pair produced by `wg genkey | tee /dev/stderr | wg pubkey`.
    const PRIVATE: &str = "SGb+ojrRNDuMePufwtIYhXzA//k6wF3R21tEBgKlzlM=";
    const PUBLIC: &str = "DD5yKRfzExcV5+kDnTroDgCU15latdMjiQ59j1hEuk8=";

    #[test]
    fn public_key_matches_wg_pubkey() {
        let private = PrivateKey::from_base64(PRIVATE).unwrap();
        assert_eq!(private.public_key().to_base64(), PUBLIC);
    }

    #[test]
    fn text_round_trip_and_whitespace() {
        let key: PublicKey = format!(" {PUBLIC}\n").parse().unwrap();
        assert_eq!(key.to_string(), PUBLIC);
        let private = PrivateKey::from_base64(PRIVATE).unwrap();
        assert_eq!(private.to_base64().as_str(), PRIVATE);
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in [
            "",
            "abc",
            &PUBLIC[..43],
            &format!("{PUBLIC}A"),
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!=",
        ] {
            assert_eq!(
                bad.parse::<PublicKey>(),
                Err(KeyError::Malformed),
                "{bad:?}"
            );
        }
        let zero = STANDARD.encode([0u8; 32]);
        assert_eq!(zero.parse::<PublicKey>(), Err(KeyError::Zero));
    }

    #[test]
    fn low_order_keys_are_not_contributory() {
        let private = PrivateKey::from_base64(PRIVATE).unwrap();
        let real: PublicKey = PUBLIC.parse().unwrap();
        assert!(real.is_contributory_with(&private));
        // The all-zero point, the point of order 1 (u = 1), and a point of order 8.
        let mut order_eight = [0u8; 32];
        order_eight[..8].copy_from_slice(&[0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae]);
        order_eight[8..].copy_from_slice(&[
            0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32,
            0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49, 0xb8, 0x00,
        ]);
        let mut one = [0u8; 32];
        one[0] = 1;
        for low in [[0u8; 32], one, order_eight] {
            assert!(!PublicKey(low).is_contributory_with(&private), "{low:?}");
        }
    }

    #[test]
    fn private_key_is_never_printed() {
        let private = PrivateKey::from_base64(PRIVATE).unwrap();
        assert!(!format!("{private:?}").contains(&PRIVATE[..10]));
    }
}
