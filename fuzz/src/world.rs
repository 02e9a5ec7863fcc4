//! The fixed cast and simulated clock the stateful targets share: keys, seeds, source addresses,
//! and helpers to corrupt a datagram.
//!
//! Everything here is deterministic: the same input always drives the state machines through the
//! same steps. The monotonic clock starts at whatever `Instant::now()` is, but the protocol code
//! only ever looks at differences between instants, so that does not change behaviour.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wgpunch_common::client::{Client, ClientConfig};
use wgpunch_common::keys::{PrivateKey, PublicKey, KEY_LEN};
use wgpunch_common::noise::Seed;
use wgpunch_common::server::legacy::{LegacyConfig, LegacyConsent};
use wgpunch_common::server::{Server, ServerConfig};

/// The server's static key.
pub fn server_key() -> PrivateKey {
    PrivateKey::from_bytes([1; KEY_LEN])
}

/// The seed of the server's randomness.
pub const SERVER_SEED: Seed = [2; 32];

/// The real client's static key.
pub fn client_key() -> PrivateKey {
    PrivateKey::from_bytes([3; KEY_LEN])
}

/// The seed of the real client's randomness.
pub const CLIENT_SEED: Seed = [4; 32];

/// How many puppet clients (handshakes and plaintexts chosen by the input) the server target has.
pub const PUPPETS: usize = 3;

/// The static key of puppet `n` (taken modulo [`PUPPETS`]).
pub fn puppet_key(n: u8) -> PrivateKey {
    let n = usize::from(n) % PUPPETS;
    PrivateKey::from_bytes([10 + n as u8; KEY_LEN])
}

/// The public keys of the cast, computed once: each is a scalar multiplication, which would
/// otherwise cost every run.
struct PublicKeys {
    server: PublicKey,
    client: PublicKey,
    puppets: [PublicKey; PUPPETS],
}

static PUBLIC_KEYS: LazyLock<PublicKeys> = LazyLock::new(|| PublicKeys {
    server: server_key().public_key(),
    client: client_key().public_key(),
    puppets: std::array::from_fn(|n| puppet_key(n as u8).public_key()),
});

/// The server's public key.
pub fn server_public() -> PublicKey {
    PUBLIC_KEYS.server
}

/// The real client's public key.
pub fn client_public() -> PublicKey {
    PUBLIC_KEYS.client
}

/// The public key of puppet `n` (taken modulo [`PUPPETS`]).
pub fn puppet_public(n: u8) -> PublicKey {
    PUBLIC_KEYS.puppets[usize::from(n) % PUPPETS]
}

/// Wall-clock time at the start of every run (2027-01-15).
pub fn wall_start() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The limits the targets run the server with: the defaults, or small ones (first input byte odd)
/// so that full tables, expiry, over-limit registrations, a closed server (puppet 2 is not on the
/// allowed list), load (cookie replies) and rate limits are reachable in a few steps. Both serve
/// natpunch-go clients too: the tight one with the allowed-keys consent, the other trusting all.
// The struct update is there for fields added later: they keep their defaults.
#[allow(clippy::needless_update)]
pub fn server_config(tight: bool) -> ServerConfig {
    if !tight {
        return ServerConfig {
            natpunch_go: Some(LegacyConfig {
                consent: LegacyConsent::TrustAll,
                ..LegacyConfig::default()
            }),
            ..ServerConfig::default()
        };
    }
    ServerConfig {
        registration_ttl: Duration::from_secs(10),
        session_lifetime: Duration::from_secs(20),
        clock_tolerance: Duration::from_secs(5),
        max_sessions: 2,
        max_registrations: 2,
        max_peers_per_client: 40,
        allowed_keys: Some([client_public(), puppet_public(0), puppet_public(1)].into()),
        load_threshold: 2,
        source_rate: 1,
        source_burst: 2,
        max_sources: 4,
        key_rate: 1,
        key_burst: 3,
        natpunch_go: Some(LegacyConfig::default()),
        ..ServerConfig::default()
    }
}

/// The discovery server the targets run.
pub fn server(tight: bool) -> Server {
    Server::new(server_key(), server_config(tight), SERVER_SEED)
}

/// The real client, declaring the puppets as its peers.
pub fn client() -> Client {
    let peers = (0..PUPPETS as u8).map(puppet_public).collect();
    let local_addrs = vec![
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), 51820),
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x20)),
            51820,
        ),
    ];
    Client::new(
        client_key(),
        server_public(),
        peers,
        local_addrs,
        ClientConfig::default(),
        CLIENT_SEED,
    )
}

/// A peer key for peer lists and lookups: the puppets and the real client first, then keys nobody
/// holds.
pub fn peer(n: u16) -> PublicKey {
    match usize::from(n) {
        i if i < PUPPETS => puppet_public(i as u8),
        i if i == PUPPETS => client_public(),
        _ => {
            let mut key = [0xa5; KEY_LEN];
            key[..2].copy_from_slice(&n.to_be_bytes());
            PublicKey(key)
        }
    }
}

/// The keys whose bits are set in `mask`, bit 0 being [`peer`]`(0)`.
pub fn peers_in(mask: u8) -> Vec<PublicKey> {
    (0..8u16)
        .filter(|i| mask & (1 << i) != 0)
        .map(peer)
        .collect()
}

/// A source address for a datagram: IPv4, IPv6 and IPv4-mapped IPv6 in turn, on several hosts,
/// so the server sees clients move between addresses and families.
pub fn source(port: u8) -> SocketAddr {
    let host = port / 4 % 4;
    let port_number = 40_000 + u16::from(port);
    let ip = match port % 4 {
        0 | 1 => IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1 + host)),
        2 => IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0,
            0,
            0,
            0,
            0,
            1 + u16::from(host),
        )),
        _ => IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1 + host).to_ipv6_mapped()),
    };
    SocketAddr::new(ip, port_number)
}

/// The simulated clocks: monotonic and wall time advance together; the wall clock may also jump.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Monotonic time.
    pub now: Instant,
    /// Real time.
    pub wall: SystemTime,
    /// True once the wall clock has been set back.
    pub wall_stepped_back: bool,
}

impl Clock {
    /// Both clocks at the start of a run.
    pub fn start() -> Self {
        Self {
            now: Instant::now(),
            wall: wall_start(),
            wall_stepped_back: false,
        }
    }

    /// Lets `centis` hundredths of a second pass.
    pub fn advance(&mut self, centis: u16) {
        let d = Duration::from_millis(10 * u64::from(centis));
        self.now += d;
        self.wall += d;
    }

    /// Sets the wall clock forward or back by `secs` seconds, as an NTP step would.
    pub fn step_wall(&mut self, secs: i16) {
        let d = Duration::from_secs(u64::from(secs.unsigned_abs()));
        if secs < 0 {
            self.wall -= d;
            self.wall_stepped_back = true;
        } else {
            self.wall += d;
        }
    }

    /// The wall clock in nanoseconds since the Unix epoch, shifted by `skew_centis` hundredths of a
    /// second: a handshake timestamp from a client whose clock is off.
    pub fn skewed_nanos(&self, skew_centis: i16) -> u64 {
        let now = wgpunch_common::handshake::unix_nanos(self.wall);
        let skew = u64::from(skew_centis.unsigned_abs()) * 10_000_000;
        if skew_centis < 0 {
            now.saturating_sub(skew)
        } else {
            now.saturating_add(skew)
        }
    }
}

/// `datagram` with one bit flipped: `flip` 0 leaves it alone, otherwise bit `flip - 1` (modulo the
/// length in bits) is inverted.
pub fn flipped(datagram: &[u8], flip: u16) -> Vec<u8> {
    let mut out = datagram.to_vec();
    if flip != 0 && !out.is_empty() {
        let bit = usize::from(flip - 1) % (out.len() * 8);
        if let Some(byte) = out.get_mut(bit / 8) {
            *byte ^= 1 << (bit % 8);
        }
    }
    out
}

/// A derived seed, so each puppet handshake uses a different ephemeral key.
pub fn seed(tag: u8, n: usize) -> Seed {
    let mut seed = [tag; 32];
    seed[..8].copy_from_slice(&(n as u64).to_be_bytes());
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flipping_changes_exactly_one_bit_or_none() {
        let d = [0u8; 4];
        assert_eq!(flipped(&d, 0), d);
        assert_eq!(flipped(&d, 1), [1, 0, 0, 0]);
        assert_eq!(flipped(&d, 32), [0, 0, 0, 0x80]);
        assert_eq!(flipped(&d, 33), [1, 0, 0, 0]);
        assert_eq!(flipped(&[], 5), Vec::<u8>::new());
    }

    #[test]
    fn sources_cover_both_families_and_mapped_addresses() {
        assert!(source(0).is_ipv4());
        assert!(source(2).is_ipv6());
        let mapped = source(3);
        assert!(matches!(mapped.ip(), IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
    }

    #[test]
    fn cached_public_keys_match_the_private_keys() {
        assert_eq!(server_public(), server_key().public_key());
        assert_eq!(client_public(), client_key().public_key());
        for n in 0..PUPPETS as u8 {
            assert_eq!(puppet_public(n), puppet_key(n).public_key());
        }
    }

    #[test]
    fn the_first_peers_are_the_puppets_and_the_client() {
        assert_eq!(peer(0), puppet_key(0).public_key());
        assert_eq!(peer(PUPPETS as u16), client_key().public_key());
        assert_ne!(peer(PUPPETS as u16 + 1), peer(PUPPETS as u16 + 2));
    }
}
