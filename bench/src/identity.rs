//! Deterministic client identities and socket addresses, so a run can be repeated exactly.

use std::net::{IpAddr, Ipv4Addr};

use blake2::{Blake2s256, Digest as _};
use wgpunch_common::keys::{PrivateKey, PublicKey};
use wgpunch_common::noise::Seed;

/// Most sockets a run may use: one loopback address each, 127.1.0.1 upwards.
pub const MAX_SOCKETS: usize = 65_000;

fn derive(label: &str, index: u64) -> [u8; 32] {
    Blake2s256::new()
        .chain_update(label.as_bytes())
        .chain_update(index.to_le_bytes())
        .finalize()
        .into()
}

/// The private key of load client `index`.
pub fn client_key(index: u64) -> PrivateKey {
    PrivateKey::from_bytes(derive("wgpunch-bench client key", index))
}

/// The public key of load client `index`.
pub fn client_public(index: u64) -> PublicKey {
    client_key(index).public_key()
}

/// The seed of load client `index`'s state machine.
pub fn client_seed(index: u64) -> Seed {
    derive("wgpunch-bench client seed", index)
}

/// A private key and seed for throw-away client `index` of a flood (a different space).
pub fn flood_identity(index: u64) -> (PrivateKey, Seed) {
    (
        PrivateKey::from_bytes(derive("wgpunch-bench flood key", index)),
        derive("wgpunch-bench flood seed", index),
    )
}

/// 32 pseudo-random bytes for garbage datagrams.
pub fn noise_bytes(index: u64) -> [u8; 32] {
    derive("wgpunch-bench garbage", index)
}

/// The loopback address of socket `slot`: 127.1.0.1, 127.1.0.2, ... (all of 127.0.0.0/8 is
/// loopback on Linux, so no setup is needed).
pub fn socket_ip(slot: usize) -> IpAddr {
    let offset = u32::try_from(slot.min(MAX_SOCKETS)).unwrap_or(0);
    IpAddr::V4(Ipv4Addr::from(0x7f01_0001 + offset))
}

/// A loopback address outside the load's range, for the flood scenario: 127.2.0.`host`.
pub fn flood_ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 2, 0, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_deterministic_and_distinct() {
        assert_eq!(client_public(7), client_public(7));
        assert_ne!(client_public(7), client_public(8));
        assert_ne!(client_seed(7), client_seed(8));
    }

    #[test]
    fn socket_addresses_stay_on_loopback() {
        assert!(socket_ip(0).is_loopback());
        assert!(socket_ip(MAX_SOCKETS).is_loopback());
        assert_ne!(socket_ip(0), socket_ip(1));
    }
}
