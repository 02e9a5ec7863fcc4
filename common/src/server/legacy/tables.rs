//! The natpunch-go tables: sessions by index, replay state by key, and where each legacy client
//! was last seen. All bounded; they expire, and refuse newcomers rather than push out existing
//! entries when full.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Instant;

use tracing::debug;

use crate::keys::PublicKey;
use crate::legacy::LegacySession;

use super::super::expiry::{deadline, ExpiryQueue, Verdict};
use super::super::key_state::{self, Held, KeyState, Queues};
use super::super::Server;
use super::{LegacyConfig, LegacyStats};

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) session: LegacySession,
    pub(super) client: PublicKey,
    pub(super) created: Instant,
    pub(super) confirmed: bool,
}

impl Held for Entry {
    fn created(&self) -> Instant {
        self.created
    }

    fn client(&self) -> PublicKey {
        self.client
    }
}

/// A legacy client's registration.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// Where its last authenticated lookup came from.
    pub(super) endpoint: SocketAddr,
    /// When.
    pub(super) at: Instant,
    /// The endpoints it was given, by target (at most `max_peers_per_client`): natpunch-go sets
    /// a found endpoint with a persistent keepalive, so it is sending towards it from then on.
    pub(super) told: BTreeMap<PublicKey, SocketAddr>,
    /// When its one entry in the expiry queue falls due.
    pub(super) queued_at: Instant,
}

/// The server's natpunch-go state: sessions by index, replay state by key, and where each
/// legacy client was last seen. Empty while compatibility is off.
#[derive(Debug, Default)]
pub(in crate::server) struct LegacyState {
    pub(super) sessions: HashMap<u32, Entry>,
    pub(super) keys: HashMap<PublicKey, KeyState>,
    pub(super) registrations: HashMap<PublicKey, Seen>,
    pub(super) stats: LegacyStats,
    /// When the sessions and keys fall due for expiry.
    pub(super) queues: Queues,
    /// When the registrations fall due for expiry.
    registrations_queue: ExpiryQueue<PublicKey>,
}

impl Server {
    pub(super) fn legacy_registration(&self, key: &PublicKey, now: Instant) -> Option<&Seen> {
        let ttl = self.registry.ttl();
        self.legacy
            .registrations
            .get(key)
            .filter(|s| now.saturating_duration_since(s.at) < ttl)
    }

    pub(super) fn legacy_is_full(&self, new_key: bool, replaces_own: bool) -> bool {
        let (config, legacy) = (&self.config, &self.legacy);
        key_state::is_full(
            config,
            &legacy.sessions,
            &legacy.keys,
            new_key,
            replaces_own,
        )
    }

    /// Makes session `index` the key's current one, dropping the one it replaces.
    pub(super) fn legacy_confirm(&mut self, client: PublicKey, index: u32) {
        let legacy = &mut self.legacy;
        key_state::confirm(&mut legacy.keys, &mut legacy.sessions, client, index);
    }

    /// Records where an authenticated lookup came from: the legacy client's registration.
    pub(super) fn legacy_record(&mut self, client: PublicKey, from: SocketAddr, now: Instant) {
        if let Some(seen) = self.legacy.registrations.get_mut(&client) {
            seen.endpoint = from;
            seen.at = now;
            let until = deadline(now, self.registry.ttl());
            if until < seen.queued_at {
                // Seen earlier than before (a clock gone back): queue it for the earlier deadline.
                seen.queued_at = until;
                let legacy = &mut self.legacy;
                legacy.registrations_queue.push(until, client);
                let registrations = &legacy.registrations;
                legacy
                    .registrations_queue
                    .compact(registrations.len(), |key, at| {
                        registrations.get(key).is_some_and(|s| s.queued_at == at)
                    });
            }
            return;
        }
        if self.legacy.registrations.len() >= self.config.max_registrations {
            // Only expired registrations can make room here: the other tables need no pass.
            self.purge_legacy_registrations(now, usize::MAX);
            if self.legacy.registrations.len() >= self.config.max_registrations {
                self.legacy.stats.registrations_full += 1;
                return;
            }
        }
        let queued_at = deadline(now, self.registry.ttl());
        let seen = Seen {
            endpoint: from,
            at: now,
            told: BTreeMap::new(),
            queued_at,
        };
        self.legacy.registrations.insert(client, seen);
        self.legacy.registrations_queue.push(queued_at, client);
        debug!(peer = %client, endpoint = %from, "natpunch-go client registered");
    }

    /// Drops expired legacy sessions, replay state and registrations, all of them.
    pub(in crate::server) fn expire_legacy(&mut self, now: Instant, config: LegacyConfig) {
        self.expire_legacy_some(now, config, usize::MAX);
    }

    /// Drops expired legacy sessions, replay state and registrations, looking at no more than
    /// `budget` items that fell due. Returns how many it looked at.
    pub(in crate::server) fn expire_legacy_some(
        &mut self,
        now: Instant,
        config: LegacyConfig,
        budget: usize,
    ) -> usize {
        let legacy = &mut self.legacy;
        let taken = key_state::expire_some(
            &mut legacy.sessions,
            &mut legacy.keys,
            &mut legacy.queues,
            now,
            self.config.clock_tolerance,
            config.session_lifetime,
            budget,
        );
        taken + self.purge_legacy_registrations(now, budget.saturating_sub(taken))
    }

    /// Drops the legacy registrations older than the registration TTL, looking at no more than
    /// `budget` that fell due. Returns how many it looked at.
    fn purge_legacy_registrations(&mut self, now: Instant, budget: usize) -> usize {
        let ttl = self.registry.ttl();
        let registrations = &mut self.legacy.registrations;
        self.legacy.registrations_queue.run(now, budget, |key, at| {
            let Some(seen) = registrations.get_mut(key) else {
                return Verdict::Stale;
            };
            if seen.queued_at != at {
                return Verdict::Stale;
            }
            let until = deadline(seen.at, ttl);
            if until <= now {
                registrations.remove(key);
                Verdict::Expired
            } else {
                seen.queued_at = until;
                Verdict::Alive(until)
            }
        })
    }

    /// The legacy tables' contents, expired or not, for tests to compare.
    #[cfg(test)]
    pub(in crate::server) fn legacy_snapshot(&self) -> String {
        let legacy = &self.legacy;
        let sessions: BTreeMap<_, _> = legacy
            .sessions
            .iter()
            .map(|(i, s)| (*i, (s.client, s.created, s.confirmed)))
            .collect();
        let keys: BTreeMap<_, _> = legacy
            .keys
            .iter()
            .map(|(k, s)| {
                (
                    *k,
                    (s.last_timestamp, s.last_handshake, s.current, s.pending),
                )
            })
            .collect();
        let registrations: BTreeMap<_, _> = legacy
            .registrations
            .iter()
            .map(|(k, s)| (*k, (s.endpoint, s.at, &s.told)))
            .collect();
        format!("{sessions:?} {keys:?} {registrations:?} {:?}", legacy.stats)
    }

    /// The full sweep of the legacy tables: the reference their expiry is tested against.
    #[cfg(test)]
    pub(in crate::server) fn sweep_legacy(&mut self, now: Instant, config: LegacyConfig) {
        let lifetime = config.session_lifetime;
        let legacy = &mut self.legacy;
        legacy
            .sessions
            .retain(|_, s| now.saturating_duration_since(s.created) < lifetime);
        let tolerance = self.config.clock_tolerance;
        key_state::expire(&mut legacy.keys, &legacy.sessions, now, tolerance, lifetime);
        let ttl = self.registry.ttl();
        legacy
            .registrations
            .retain(|_, s| now.saturating_duration_since(s.at) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_support::*;
    use super::super::{LegacyConfig, LegacyConsent};
    use crate::server::ServerConfig;

    #[test]
    fn registrations_and_sessions_expire() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let mut a = Legacy::new(1);
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(a.lookup(&mut w, "198.51.100.1:1", 2).is_some());
        let ttl = w.server.registry().ttl();
        w.advance(ttl);
        assert_eq!(w.server.legacy_endpoint(&key(1).public_key(), w.now), None);
        assert!(
            a.lookup(&mut w, "198.51.100.1:1", 2).is_some(),
            "the session lives on"
        );
        w.advance(LegacyConfig::default().session_lifetime);
        assert_eq!(a.lookup(&mut w, "198.51.100.1:1", 2), None);
        w.server.expire(w.now);
        assert_eq!(w.server.legacy_session_count(), 0);
        assert!(
            a.connect(&mut w, "198.51.100.1:1000"),
            "a new handshake works"
        );
    }

    #[test]
    fn full_tables_refuse_newcomers_and_keep_their_clients() {
        let mut w = World::with(ServerConfig {
            natpunch_go: Some(LegacyConfig {
                consent: LegacyConsent::TrustAll,
                ..LegacyConfig::default()
            }),
            max_sessions: 1,
            max_registrations: 1,
            ..ServerConfig::default()
        });
        let (mut a, mut b) = (Legacy::new(1), Legacy::new(2));
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(a.lookup(&mut w, "198.51.100.1:1", 2).is_some());
        assert!(!b.connect(&mut w, "198.51.100.2:1000"));
        assert_eq!(w.server.legacy_stats().sessions_full, 1);
        w.advance(Duration::from_secs(2));
        assert!(
            a.connect(&mut w, "198.51.100.1:1000"),
            "a re-handshake fits"
        );
        assert!(a.lookup(&mut w, "198.51.100.1:1", 2).is_some());
    }
}
