//! A natpunch-go handshake initiation: every check natpunch-go's format allows, then a new
//! session.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use tracing::debug;

use crate::legacy::packet::HandshakeInit;
use crate::legacy::Accepted;

use super::super::key_state::{self, Refusal};
use super::super::limits::LoadMeter;
use super::super::Server;
use super::tables::Entry;
use super::LegacyConfig;

impl Server {
    pub(super) fn legacy_initiation(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        init: &HandshakeInit,
        config: LegacyConfig,
    ) -> Option<Vec<u8>> {
        // No mac1 and no cookie exist in this format: under load the per-source rate is the only
        // gate before the Diffie-Hellman. Its sources are unproven, so they have a table of their
        // own: made-up ones can fill it, but not the native handshakes' table.
        let load = self.load.get_or_insert_with(|| LoadMeter::new(now));
        load.note(now);
        if load.is_over(self.config.load_threshold) && !self.legacy_sources.allow(from, now) {
            self.legacy.stats.rate_limited += 1;
            return None;
        }
        let Ok(accepted) = Accepted::read(&self.private, init, self.rng.seed()) else {
            self.legacy.stats.bad_handshake += 1;
            return None;
        };
        let client = accepted.client;
        let admitted = key_state::admit(
            &self.config,
            &self.private,
            &mut self.legacy.keys,
            &client,
            accepted.timestamp,
            wall,
            now,
        );
        if let Err(refusal) = admitted {
            let stats = &mut self.legacy.stats;
            let counter = match refusal {
                Refusal::LowOrderKey => &mut stats.bad_handshake,
                Refusal::NotAllowed => &mut stats.not_allowed,
                Refusal::StaleTimestamp => {
                    debug!(peer = %client, "natpunch-go initiation timestamp outside clock tolerance");
                    &mut stats.stale_timestamp
                }
                Refusal::ReplayedInitiation => &mut stats.replayed_initiation,
                Refusal::RateLimited => &mut stats.rate_limited,
            };
            *counter += 1;
            return None;
        }
        let known = self.legacy.keys.get(&client);
        // A key's new session replaces its pending one, or, when the table is full, its current
        // one: a client can always re-handshake, and a full table never grows.
        let replaces_own = known.is_some_and(|k| k.pending.is_some() || k.current.is_some());
        let new_key = known.is_none();
        if self.legacy_is_full(new_key, replaces_own) {
            self.expire_legacy(now, config);
            if self.legacy_is_full(new_key, replaces_own) {
                self.legacy.stats.sessions_full += 1;
                return None;
            }
        }
        // natpunch-go lets the client propose the index; another one is chosen if it is taken.
        let index = Some(accepted.index)
            .filter(|i| !self.legacy.sessions.contains_key(i))
            .or_else(|| key_state::free_index(&mut self.rng, &self.legacy.sessions))?;
        let timestamp = accepted.timestamp;
        let Ok((session, response)) = accepted.respond(index) else {
            self.legacy.stats.bad_handshake += 1;
            return None;
        };
        let state = self.legacy.keys.entry(client).or_default();
        state.last_timestamp = timestamp;
        state.last_handshake = Some(now);
        if let Some(old) = state.pending.replace(index) {
            self.legacy.sessions.remove(&old);
        } else if self.legacy.sessions.len() >= self.config.max_sessions {
            if let Some(old) = state.current.take() {
                self.legacy.sessions.remove(&old);
            }
        }
        self.legacy.sessions.insert(
            index,
            Entry {
                session,
                client,
                created: now,
                confirmed: false,
            },
        );
        let (tolerance, lifetime) = (self.config.clock_tolerance, config.session_lifetime);
        let legacy = &mut self.legacy;
        legacy.queues.session_added(
            &legacy.sessions,
            &mut legacy.keys,
            index,
            tolerance,
            lifetime,
        );
        self.legacy.stats.handshakes += 1;
        debug!(peer = %client, index, "natpunch-go handshake answered");
        Some(response)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::*;
    use super::super::{LegacyConfig, LegacyConsent};
    use crate::server::ServerConfig;

    #[test]
    fn the_allowed_list_applies_to_legacy_keys() {
        let mut w = World::new(LegacyConsent::AllowedKeys, Some(&[1, 2]));
        assert!(Legacy::new(1).connect(&mut w, "198.51.100.1:1000"));
        assert!(!Legacy::new(3).connect(&mut w, "198.51.100.3:1000"));
        assert_eq!(w.server.legacy_stats().not_allowed, 1);
        assert_eq!(w.server.legacy_session_count(), 1);
    }

    #[test]
    fn replayed_and_old_initiations_are_refused() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let a = Legacy::new(1);
        let t = w.nanos();
        let (_, first) = a.initiation(&w, 1, t);
        assert!(w.send("198.51.100.1:1", &first).is_some());
        assert_eq!(w.send("198.51.100.1:1", &first), None);
        let (_, older) = a.initiation(&w, 2, t - 1);
        assert_eq!(w.send("198.51.100.1:1", &older), None);
        assert_eq!(w.server.legacy_stats().replayed_initiation, 2);
        let far = t + 3_600_000_000_000;
        let (_, future) = a.initiation(&w, 3, far);
        assert_eq!(w.send("198.51.100.1:1", &future), None);
        assert_eq!(w.server.legacy_stats().stale_timestamp, 1);
        let (_, newer) = a.initiation(&w, 4, t + 1);
        assert!(w.send("198.51.100.1:1", &newer).is_some());
    }

    #[test]
    fn under_load_legacy_initiations_are_held_to_the_per_source_rate() {
        let mut w = World::with(ServerConfig {
            natpunch_go: Some(LegacyConfig {
                consent: LegacyConsent::TrustAll,
                ..LegacyConfig::default()
            }),
            load_threshold: 1,
            source_rate: 1,
            source_burst: 1,
            ..ServerConfig::default()
        });
        // Below the threshold nothing is limited; then one source gets one handshake a second.
        assert!(Legacy::new(1).connect(&mut w, "198.51.100.1:1"));
        assert!(Legacy::new(2).connect(&mut w, "198.51.100.1:2"));
        assert!(!Legacy::new(3).connect(&mut w, "198.51.100.1:3"));
        assert_eq!(w.server.legacy_stats().rate_limited, 1);
        assert!(
            Legacy::new(4).connect(&mut w, "198.51.100.9:1"),
            "another source"
        );
        w.advance(Duration::from_secs(1));
        assert!(Legacy::new(3).connect(&mut w, "198.51.100.1:3"));
    }

    #[test]
    fn made_up_legacy_sources_do_not_take_room_from_native_clients() {
        let mut w = World::with(ServerConfig {
            natpunch_go: Some(LegacyConfig {
                consent: LegacyConsent::TrustAll,
                ..LegacyConfig::default()
            }),
            load_threshold: 0,
            max_sources: 2,
            ..ServerConfig::default()
        });
        // Legacy initiations from many sources fill their table; the later ones are refused.
        for n in 0..6u8 {
            let from = format!("198.51.100.{n}:1");
            Legacy::new(10 + n).connect(&mut w, &from);
        }
        assert!(w.server.legacy_stats().rate_limited > 0);
        // Native clients from new sources still prove their address and get in.
        native(&mut w, 1, "203.0.113.1:1", &[2]);
        native(&mut w, 2, "203.0.113.2:1", &[1]);
        assert_eq!(w.server.stats().handshakes, 2);
    }

    #[test]
    fn the_client_proposed_index_is_kept_unless_taken() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let (mut a, mut b) = (Legacy::new(1), Legacy::new(2));
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(b.connect(&mut w, "198.51.100.2:1000"));
        let (ia, ib) = (a.session.unwrap().index, b.session.unwrap().index);
        assert_eq!(ia, 7);
        assert_ne!(ib, 7);
    }
}
