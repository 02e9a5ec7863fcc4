//! Cookies and mac2: proof that an initiation's sender receives packets at its source address.
//!
//! Under load the server answers an initiation that lacks a valid mac2 with a cookie reply
//! instead of doing any Diffie-Hellman. The cookie is a MAC of the sender's address under a secret
//! that changes every two minutes. It travels encrypted (XChaCha20-Poly1305, keyed by a hash of
//! the server's public key, with the initiation's mac1 as associated data), so only the real
//! initiator can read it. The initiator retries with mac2 = MAC(cookie, initiation before mac2).
//! Spoofed sources never see their cookie. This is WireGuard's scheme under this protocol's
//! labels.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};

use crate::keys::PublicKey;
use crate::mac::{keyed_mac, labelled_key, verify_keyed_mac};
use crate::wire::packet::{
    CookieReply, COOKIE_NONCE_LEN, ENCRYPTED_COOKIE_LEN, MAC2_OFFSET, MAC_LEN,
};

/// Domain-separation label of the cookie encryption key.
pub const COOKIE_LABEL: &[u8] = b"wgpunch cookie--";

/// How long a cookie secret (and so a cookie) stays valid.
pub const COOKIE_SECRET_LIFETIME: Duration = Duration::from_secs(120);

/// A cookie: 16 bytes.
pub type Cookie = [u8; MAC_LEN];

fn address_bytes(source: SocketAddr) -> Vec<u8> {
    let mut bytes = match source.ip() {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.extend_from_slice(&source.port().to_be_bytes());
    bytes
}

/// mac2 of an initiation: keyed by the cookie, over every byte before mac2.
pub fn mac2(cookie: &Cookie, initiation: &[u8]) -> [u8; MAC_LEN] {
    keyed_mac(cookie, initiation.get(..MAC2_OFFSET).unwrap_or(initiation))
}

/// The server's cookie secret and the key its cookie replies are encrypted with.
pub struct CookieJar {
    secret: [u8; 32],
    born: Instant,
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CookieJar")
            .field("born", &self.born)
            .finish_non_exhaustive()
    }
}

impl CookieJar {
    /// A jar for the server `server`, with a first secret.
    pub fn new(server: &PublicKey, secret: [u8; 32], now: Instant) -> Self {
        let cipher = XChaCha20Poly1305::new(&labelled_key(COOKIE_LABEL, server).into());
        Self {
            secret,
            born: now,
            cipher,
        }
    }

    /// True when the secret is old enough to be replaced.
    pub fn needs_rotation(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.born) >= COOKIE_SECRET_LIFETIME
    }

    /// Replaces the secret; cookies made with the old one stop working.
    pub fn rotate(&mut self, secret: [u8; 32], now: Instant) {
        self.secret = secret;
        self.born = now;
    }

    /// The cookie of `source` under the current secret.
    pub fn cookie_for(&self, source: SocketAddr) -> Cookie {
        keyed_mac(&self.secret, &address_bytes(source))
    }

    /// True when `initiation` (the whole datagram) carries the mac2 of `source`'s cookie.
    pub fn verify_mac2(
        &self,
        source: SocketAddr,
        initiation: &[u8],
        mac2_field: &[u8; MAC_LEN],
    ) -> bool {
        let prefix = initiation.get(..MAC2_OFFSET).unwrap_or(initiation);
        verify_keyed_mac(&self.cookie_for(source), prefix, mac2_field)
    }

    /// The cookie reply for an initiation from `source` with sender index `receiver_index` and
    /// mac1 `mac1`; `nonce` must be random.
    pub fn reply(
        &self,
        source: SocketAddr,
        receiver_index: u32,
        mac1: &[u8; MAC_LEN],
        nonce: [u8; COOKIE_NONCE_LEN],
    ) -> Option<CookieReply> {
        let cookie = self.cookie_for(source);
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &cookie,
                    aad: mac1,
                },
            )
            .ok()?;
        let encrypted_cookie: [u8; ENCRYPTED_COOKIE_LEN] = sealed.try_into().ok()?;
        Some(CookieReply {
            receiver_index,
            nonce,
            encrypted_cookie,
        })
    }
}

/// The client's side: reads the cookie out of a reply to the initiation whose mac1 was `mac1`.
pub fn open_reply(server: &PublicKey, reply: &CookieReply, mac1: &[u8; MAC_LEN]) -> Option<Cookie> {
    let cipher = XChaCha20Poly1305::new(&labelled_key(COOKIE_LABEL, server).into());
    let plain = cipher
        .decrypt(
            XNonce::from_slice(&reply.nonce),
            Payload {
                msg: &reply.encrypted_cookie,
                aad: mac1,
            },
        )
        .ok()?;
    plain.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jar() -> (PublicKey, CookieJar) {
        let server = PublicKey([7; 32]);
        (server, CookieJar::new(&server, [1; 32], Instant::now()))
    }

    #[test]
    fn only_the_initiator_reads_its_cookie_and_mac2_binds_the_source() {
        let (server, jar) = jar();
        let source: SocketAddr = "198.51.100.7:51820".parse().unwrap();
        let mac1 = [3u8; MAC_LEN];
        let reply = jar.reply(source, 9, &mac1, [5; COOKIE_NONCE_LEN]).unwrap();
        assert_eq!(
            open_reply(&server, &reply, &[4u8; MAC_LEN]),
            None,
            "wrong mac1"
        );
        assert_eq!(
            open_reply(&PublicKey([8; 32]), &reply, &mac1),
            None,
            "another server"
        );
        let cookie = open_reply(&server, &reply, &mac1).unwrap();
        let initiation = [0x11u8; 144];
        let tag = mac2(&cookie, &initiation);
        assert!(jar.verify_mac2(source, &initiation, &tag));
        assert!(
            !jar.verify_mac2("198.51.100.8:51820".parse().unwrap(), &initiation, &tag),
            "other source"
        );
        assert!(
            !jar.verify_mac2("198.51.100.7:51821".parse().unwrap(), &initiation, &tag),
            "other port"
        );
    }

    #[test]
    fn rotation_retires_old_cookies() {
        let (_, mut jar) = jar();
        let source: SocketAddr = "198.51.100.7:51820".parse().unwrap();
        let initiation = [0x11u8; 144];
        let tag = mac2(&jar.cookie_for(source), &initiation);
        let now = Instant::now();
        assert!(jar.needs_rotation(now + COOKIE_SECRET_LIFETIME));
        jar.rotate([2; 32], now);
        assert!(!jar.verify_mac2(source, &initiation, &tag));
    }
}
