//! natpunch-go compatibility: the server's side of natpunch-go's protocol, on the same port as
//! wgpunch's own, when [`ServerConfig::natpunch_go`](super::ServerConfig) is set.
//!
//! [`Server::handle`](super::Server::handle) hands every datagram whose first byte is 1, 2 or 3
//! here (wgpunch's own types are 0x11 to 0x14). Legacy clients get every protection of the native
//! protocol that natpunch-go's format allows:
//!
//! - exact lengths per type, checked before anything else;
//! - Noise IK, low-order keys refused, the allowed-keys list applied at the handshake;
//! - the handshake timestamp within the clock tolerance and strictly greater than the last one
//!   accepted for the key (a bounded table that outlives the sessions, as for native keys);
//! - the per-key handshake rate; under load, the per-source handshake rate (natpunch-go has no
//!   mac1 and no cookies, so a legacy source cannot prove its address: under load it is only
//!   rate-limited, and its initiations count towards the load that sends native clients to
//!   cookies);
//! - an anti-replay window on lookup nonces; a lookup must name the session's own key;
//! - bounded session, key and registration tables that expire, and that refuse newcomers rather
//!   than push out existing entries when full;
//! - the endpoint recorded only from an authenticated lookup (never from the unauthenticated-source
//!   initiation), valid for the registration TTL after the client's last lookup;
//! - answers never larger than the lookup, and identical in size whether the target is unknown,
//!   not consenting, or only known at an IPv6 endpoint.
//!
//! Consent: legacy clients send no peer list, so a legacy client's consent to be found comes from
//! the operator ([`LegacyConsent`]). A native client is found by a legacy one only when the native
//! client's own peer list names the legacy key; a legacy client is found by a native one that lists
//! it, and by every legacy client. A legacy client never confirms punches: a native client asking
//! for one is told *peer has yours* once the legacy client was given the asker's current endpoint,
//! since natpunch-go then keeps sending WireGuard keepalives there.
//!
//! The modules: what the operator chose (`config`), what the server counted (`stats`), the
//! session, key and registration tables (`tables`), the handshake (`handshake`) and the lookup
//! (`lookup`).

mod config;
mod handshake;
mod lookup;
mod stats;
mod tables;
#[cfg(test)]
pub(super) mod test_support;

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use crate::keys::PublicKey;
use crate::legacy::packet::{parse_from_client, FromClient};

use super::Server;

pub use config::{LegacyConfig, LegacyConsent};
pub use stats::LegacyStats;
pub(super) use tables::LegacyState;

impl Server {
    /// What the server has done with natpunch-go datagrams.
    pub fn legacy_stats(&self) -> &LegacyStats {
        &self.legacy.stats
    }

    /// Number of natpunch-go sessions held.
    pub fn legacy_session_count(&self) -> usize {
        self.legacy.sessions.len()
    }

    /// Where the natpunch-go client `key` was last seen, if its registration is live.
    pub fn legacy_endpoint(&self, key: &PublicKey, now: Instant) -> Option<SocketAddr> {
        self.legacy_registration(key, now).map(|s| s.endpoint)
    }

    /// Handles a datagram whose first byte is a natpunch-go type; the caller checked that
    /// compatibility is on.
    pub(super) fn handle_legacy(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let config = self.config.natpunch_go?;
        if config.consent == LegacyConsent::AllowedKeys && self.config.allowed_keys.is_none() {
            self.legacy.stats.not_allowed += 1;
            return None;
        }
        match parse_from_client(datagram) {
            Ok(FromClient::HandshakeInit(init)) => {
                self.legacy_initiation(now, wall, from, &init, config)
            }
            Ok(FromClient::Lookup(lookup)) => self.legacy_lookup(now, from, &lookup, config),
            Err(_) => {
                self.legacy.stats.malformed += 1;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::server::ServerConfig;

    #[test]
    fn without_an_allowed_list_the_default_consent_fails_closed() {
        let mut w = World::new(LegacyConsent::AllowedKeys, None);
        let mut a = Legacy::new(1);
        assert!(!a.connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(w.server.legacy_stats().not_allowed, 1);
        assert_eq!(w.server.legacy_session_count(), 0);
    }

    #[test]
    fn compatibility_off_drops_legacy_datagrams() {
        let mut w = World::with(ServerConfig::default());
        assert!(!Legacy::new(1).connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(w.server.stats().malformed, 1);
        assert_eq!(w.server.legacy_stats(), &LegacyStats::default());
    }
}
