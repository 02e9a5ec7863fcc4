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

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};

use crate::handshake::unix_nanos;
use crate::keys::PublicKey;
use crate::legacy::packet::{parse_from_client, FromClient, HandshakeInit, Lookup};
use crate::legacy::{Accepted, LegacySession};
use crate::wire::endpoint::canonical;
use crate::wire::Sighting;

use super::limits::{Bucket, LoadMeter};
use super::Server;

/// Who may find a natpunch-go client (which declares no peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LegacyConsent {
    /// Every client the allowed-keys list admits may find a legacy client: the operator vouched
    /// for all of them. Without an allowed-keys list, legacy datagrams are dropped (fail closed).
    AllowedKeys,
    /// Every client that completes a handshake may find any legacy client: natpunch-go's own
    /// behaviour, for an operator who says so explicitly.
    TrustAll,
}

/// How the server serves natpunch-go clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyConfig {
    /// Who may find a legacy client.
    pub consent: LegacyConsent,
    /// How long a legacy session may be used after its handshake (natpunch-go clients
    /// re-handshake every 5 minutes, so this is longer than that).
    pub session_lifetime: Duration,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            consent: LegacyConsent::AllowedKeys,
            session_lifetime: Duration::from_secs(360),
        }
    }
}

/// Exact counts of what the server did with natpunch-go datagrams.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegacyStats {
    /// Dropped: a legacy type byte with the wrong length, or a server-to-client type.
    pub malformed: u64,
    /// Dropped: initiation that Noise rejected, or whose static key is of low order.
    pub bad_handshake: u64,
    /// Dropped: a key not on the allowed list, or any legacy datagram when consent needs an
    /// allowed-keys list and there is none.
    pub not_allowed: u64,
    /// Dropped: over the per-key handshake rate, or under load over the per-source rate.
    pub rate_limited: u64,
    /// Dropped: initiation whose timestamp is outside the clock tolerance.
    pub stale_timestamp: u64,
    /// Dropped: initiation whose timestamp is not newer than the last accepted for its key.
    pub replayed_initiation: u64,
    /// Dropped: no room for another session or another key.
    pub sessions_full: u64,
    /// Handshakes answered.
    pub handshakes: u64,
    /// Dropped: lookup for no live session.
    pub unknown_session: u64,
    /// Dropped: lookup that was replayed or did not decrypt.
    pub bad_transport: u64,
    /// Dropped: lookup naming another client key than the session's.
    pub wrong_client_key: u64,
    /// Lookups whose sender could not be recorded: the registration table was full.
    pub registrations_full: u64,
    /// Lookups answered (found or not).
    pub lookups: u64,
    /// Lookups answered with an endpoint.
    pub found: u64,
}

#[derive(Debug)]
struct Entry {
    session: LegacySession,
    client: PublicKey,
    created: Instant,
    confirmed: bool,
}

#[derive(Debug, Default)]
struct KeyState {
    last_timestamp: u64,
    last_handshake: Option<Instant>,
    current: Option<u32>,
    pending: Option<u32>,
    handshakes: Option<Bucket>,
}

/// A legacy client's registration.
#[derive(Debug, Clone)]
struct Seen {
    /// Where its last authenticated lookup came from.
    endpoint: SocketAddr,
    /// When.
    at: Instant,
    /// The endpoints it was given, by target (at most `max_peers_per_client`): natpunch-go sets
    /// a found endpoint with a persistent keepalive, so it is sending towards it from then on.
    told: BTreeMap<PublicKey, SocketAddr>,
}

/// The server's natpunch-go state: sessions by index, replay state by key, and where each
/// legacy client was last seen. Empty while compatibility is off.
#[derive(Debug, Default)]
pub(super) struct LegacyState {
    sessions: HashMap<u32, Entry>,
    keys: HashMap<PublicKey, KeyState>,
    registrations: HashMap<PublicKey, Seen>,
    stats: LegacyStats,
}

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

    fn legacy_registration(&self, key: &PublicKey, now: Instant) -> Option<&Seen> {
        let ttl = self.registry.ttl();
        self.legacy
            .registrations
            .get(key)
            .filter(|s| now.saturating_duration_since(s.at) < ttl)
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

    fn legacy_initiation(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        init: &HandshakeInit,
        config: LegacyConfig,
    ) -> Option<Vec<u8>> {
        // No mac1 and no cookie exist in this format: under load the per-source rate is the only
        // gate before the Diffie-Hellman.
        let load = self.load.get_or_insert_with(|| LoadMeter::new(now));
        load.note(now);
        if load.is_over(self.config.load_threshold) && !self.sources.allow(from, now) {
            self.legacy.stats.rate_limited += 1;
            return None;
        }
        let Ok(accepted) = Accepted::read(&self.private, init, self.rng.seed()) else {
            self.legacy.stats.bad_handshake += 1;
            return None;
        };
        let client = accepted.client;
        if !client.is_contributory_with(&self.private) {
            self.legacy.stats.bad_handshake += 1;
            return None;
        }
        if self
            .config
            .allowed_keys
            .as_ref()
            .is_some_and(|allowed| !allowed.contains(&client))
        {
            self.legacy.stats.not_allowed += 1;
            return None;
        }
        let tolerance = u64::try_from(self.config.clock_tolerance.as_nanos()).unwrap_or(u64::MAX);
        if unix_nanos(wall).abs_diff(accepted.timestamp) > tolerance {
            self.legacy.stats.stale_timestamp += 1;
            debug!(peer = %client, "natpunch-go initiation timestamp outside clock tolerance");
            return None;
        }
        let known = self.legacy.keys.get(&client);
        if known.is_some_and(|k| accepted.timestamp <= k.last_timestamp) {
            self.legacy.stats.replayed_initiation += 1;
            return None;
        }
        let (key_rate, key_burst) = (self.config.key_rate, self.config.key_burst);
        if let Some(state) = self.legacy.keys.get_mut(&client) {
            let bucket = state
                .handshakes
                .get_or_insert_with(|| Bucket::full(key_burst, now));
            if !bucket.take(key_rate, key_burst, now) {
                self.legacy.stats.rate_limited += 1;
                return None;
            }
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
        let index = if self.legacy.sessions.contains_key(&accepted.index) {
            (0..16)
                .map(|_| self.rng.next_u32())
                .find(|i| !self.legacy.sessions.contains_key(i))?
        } else {
            accepted.index
        };
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
        self.legacy.stats.handshakes += 1;
        debug!(peer = %client, index, "natpunch-go handshake answered");
        Some(response)
    }

    fn legacy_is_full(&self, new_key: bool, replaces_own: bool) -> bool {
        let sessions_full = self.legacy.sessions.len() >= self.config.max_sessions && !replaces_own;
        let keys_full = new_key && self.legacy.keys.len() >= self.config.max_keys;
        sessions_full || keys_full
    }

    fn legacy_lookup(
        &mut self,
        now: Instant,
        from: SocketAddr,
        lookup: &Lookup,
        config: LegacyConfig,
    ) -> Option<Vec<u8>> {
        let Some(entry) = self.legacy.sessions.get_mut(&lookup.index) else {
            self.legacy.stats.unknown_session += 1;
            return None;
        };
        if now.saturating_duration_since(entry.created) >= config.session_lifetime {
            self.legacy.stats.unknown_session += 1;
            return None;
        }
        let Ok(request) = entry.session.open_lookup(lookup) else {
            self.legacy.stats.bad_transport += 1;
            return None;
        };
        let client = entry.client;
        if request.client != client {
            self.legacy.stats.wrong_client_key += 1;
            return None;
        }
        if !entry.confirmed {
            entry.confirmed = true;
            self.legacy_confirm(client, lookup.index);
        }
        self.legacy_record(client, from, now, config);
        self.legacy.stats.lookups += 1;
        let found = self.legacy_find(&client, &request.target, now);
        let v4 = match found.map(canonical) {
            Some(SocketAddr::V4(v4)) => Some(v4),
            // natpunch-go answers carry IPv4 only: an IPv6 endpoint looks like an unknown one.
            Some(SocketAddr::V6(_)) | None => None::<SocketAddrV4>,
        };
        if let Some(endpoint) = v4 {
            self.legacy.stats.found += 1;
            let max = self.config.max_peers_per_client;
            if let Some(seen) = self.legacy.registrations.get_mut(&client) {
                if seen.told.len() < max || seen.told.contains_key(&request.target) {
                    seen.told.insert(request.target, SocketAddr::V4(endpoint));
                }
            }
        }
        let entry = self.legacy.sessions.get_mut(&lookup.index)?;
        let answer = entry.session.seal_answer(v4).ok()?;
        trace!(peer = %client, found = v4.is_some(), "natpunch-go answer");
        Some(answer)
    }

    /// Makes session `index` the key's current one, dropping the one it replaces.
    fn legacy_confirm(&mut self, client: PublicKey, index: u32) {
        let state = self.legacy.keys.entry(client).or_default();
        if state.pending == Some(index) {
            state.pending = None;
        }
        if let Some(old) = state.current.replace(index) {
            if old != index {
                self.legacy.sessions.remove(&old);
            }
        }
    }

    /// Records where an authenticated lookup came from: the legacy client's registration.
    fn legacy_record(
        &mut self,
        client: PublicKey,
        from: SocketAddr,
        now: Instant,
        config: LegacyConfig,
    ) {
        if let Some(seen) = self.legacy.registrations.get_mut(&client) {
            seen.endpoint = from;
            seen.at = now;
            return;
        }
        if self.legacy.registrations.len() >= self.config.max_registrations {
            self.expire_legacy(now, config);
            if self.legacy.registrations.len() >= self.config.max_registrations {
                self.legacy.stats.registrations_full += 1;
                return;
            }
        }
        let seen = Seen {
            endpoint: from,
            at: now,
            told: BTreeMap::new(),
        };
        self.legacy.registrations.insert(client, seen);
        debug!(peer = %client, endpoint = %from, "natpunch-go client registered");
    }

    /// Where `target` is, for the legacy client `asker`: a native client only if its own peer
    /// list names the asker, a legacy client always (the operator's consent).
    fn legacy_find(
        &self,
        asker: &PublicKey,
        target: &PublicKey,
        now: Instant,
    ) -> Option<SocketAddr> {
        let native = self
            .registry
            .get(target, now)
            .filter(|r| r.peers.contains(asker))
            .map(|r| r.endpoint);
        native.or_else(|| self.legacy_registration(target, now).map(|s| s.endpoint))
    }

    /// A native lookup: the native registry first, then (with compatibility on) a legacy client
    /// that the live native asker lists among its peers.
    pub(super) fn lookup_any(
        &mut self,
        asker: &PublicKey,
        target: &PublicKey,
        punched: bool,
        now: Instant,
    ) -> Option<Sighting> {
        if let Some(sighting) = self.registry.lookup(asker, target, punched, now) {
            return Some(sighting);
        }
        self.config.natpunch_go?;
        let asking = self.registry.get(asker, now)?;
        if !asking.peers.contains(target) {
            return None;
        }
        let seen = self.legacy_registration(target, now)?;
        let age = now.saturating_duration_since(seen.at).as_secs();
        Some(Sighting {
            endpoint: seen.endpoint,
            age_secs: u32::try_from(age).unwrap_or(u32::MAX),
            // A legacy client never confirms a punch; once it was given the asker's current
            // endpoint it keeps sending WireGuard keepalives there, which opens its NAT the same way.
            peer_has_yours: seen.told.get(asker) == Some(&asking.endpoint),
        })
    }

    /// Drops expired legacy sessions, replay state and registrations.
    pub(super) fn expire_legacy(&mut self, now: Instant, config: LegacyConfig) {
        let lifetime = config.session_lifetime;
        let legacy = &mut self.legacy;
        legacy
            .sessions
            .retain(|_, s| now.saturating_duration_since(s.created) < lifetime);
        let sessions = &legacy.sessions;
        // A key's last timestamp must outlive any initiation that could still pass the clock check.
        let keep_timestamps = self.config.clock_tolerance * 2 + lifetime;
        legacy.keys.retain(|_, k| {
            k.current = k.current.filter(|i| sessions.contains_key(i));
            k.pending = k.pending.filter(|i| sessions.contains_key(i));
            k.current.is_some()
                || k.pending.is_some()
                || k.last_handshake
                    .is_some_and(|t| now.saturating_duration_since(t) < keep_timestamps)
        });
        let ttl = self.registry.ttl();
        legacy
            .registrations
            .retain(|_, s| now.saturating_duration_since(s.at) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientConfig, Event};
    use crate::keys::PrivateKey;
    use crate::legacy::packet::{parse_from_server, FromServer, ANSWER_EMPTY_LEN};
    use crate::legacy::{Initiation, LookupRequest};
    use crate::server::ServerConfig;

    const WALL: u64 = 1_800_000_000;

    fn key(n: u8) -> PrivateKey {
        PrivateKey::from_bytes([n; 32])
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    struct World {
        server: Server,
        now: Instant,
        wall: SystemTime,
    }

    impl World {
        fn new(consent: LegacyConsent, allowed: Option<&[u8]>) -> Self {
            Self::with(ServerConfig {
                natpunch_go: Some(LegacyConfig {
                    consent,
                    ..LegacyConfig::default()
                }),
                allowed_keys: allowed.map(|a| a.iter().map(|&n| key(n).public_key()).collect()),
                ..ServerConfig::default()
            })
        }

        fn with(config: ServerConfig) -> Self {
            Self {
                server: Server::new(key(100), config, [9; 32]),
                now: Instant::now(),
                wall: SystemTime::UNIX_EPOCH + Duration::from_secs(WALL),
            }
        }

        fn send(&mut self, from: &str, datagram: &[u8]) -> Option<Vec<u8>> {
            let reply = self
                .server
                .handle(self.now, self.wall, addr(from), datagram);
            if let Some(r) = &reply {
                assert!(r.len() <= datagram.len(), "amplified");
            }
            reply
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.wall += by;
        }

        fn nanos(&self) -> u64 {
            unix_nanos(self.wall)
        }
    }

    /// A legacy client built from the codec (the golden tests check the codec independently).
    struct Legacy {
        key: PrivateKey,
        session: Option<LegacySession>,
    }

    impl Legacy {
        fn new(n: u8) -> Self {
            Self {
                key: key(n),
                session: None,
            }
        }

        fn initiation(&self, world: &World, index: u32, timestamp: u64) -> (Initiation, Vec<u8>) {
            Initiation::start(
                &self.key,
                &world.server.public_key(),
                index,
                timestamp,
                [index as u8; 32],
            )
            .unwrap()
        }

        fn connect(&mut self, world: &mut World, from: &str) -> bool {
            let timestamp = world.nanos();
            let (pending, init) = self.initiation(world, 7, timestamp);
            let Some(response) = world.send(from, &init) else {
                return false;
            };
            let Ok(FromServer::HandshakeResponse(response)) = parse_from_server(&response) else {
                panic!("not a response")
            };
            self.session = Some(pending.complete(&response).unwrap());
            true
        }

        fn lookup_datagram(&mut self, target: u8) -> Vec<u8> {
            let request = LookupRequest {
                client: self.key.public_key(),
                target: key(target).public_key(),
            };
            self.session
                .as_mut()
                .unwrap()
                .seal_lookup(&request)
                .unwrap()
        }

        /// Looks `target` up; `None` when the server stayed silent.
        fn lookup(
            &mut self,
            world: &mut World,
            from: &str,
            target: u8,
        ) -> Option<Option<SocketAddrV4>> {
            let datagram = self.lookup_datagram(target);
            let answer = world.send(from, &datagram)?;
            let Ok(FromServer::Answer(answer)) = parse_from_server(&answer) else {
                panic!("not an answer")
            };
            Some(self.session.as_mut().unwrap().open_answer(&answer).unwrap())
        }
    }

    fn native(world: &mut World, n: u8, from: &str, peers: &[u8]) -> Client {
        let mut client = Client::new(
            key(n),
            world.server.public_key(),
            peers.iter().map(|&p| key(p).public_key()).collect(),
            vec![],
            ClientConfig::default(),
            [n; 32],
        );
        exchange(world, &mut client, from);
        assert!(client.is_registered());
        client
    }

    fn exchange(world: &mut World, client: &mut Client, from: &str) -> Vec<Event> {
        let mut events = Vec::new();
        for _ in 0..10 {
            while let Some(datagram) = client.poll_transmit(world.now, world.wall) {
                if let Some(reply) = world.send(from, &datagram) {
                    client.handle_datagram(world.now, &reply);
                }
            }
            while let Some(event) = client.poll_event() {
                events.push(event);
            }
        }
        events
    }

    fn resolved(events: &[Event], peer: u8) -> Option<SocketAddr> {
        events.iter().find_map(|e| match e {
            Event::Resolved {
                peer: p, endpoint, ..
            } if *p == key(peer).public_key() => Some(*endpoint),
            _ => None,
        })
    }

    fn has_yours(events: &[Event], peer: u8) -> Option<bool> {
        events.iter().find_map(|e| match e {
            Event::Resolved {
                peer: p,
                peer_has_yours,
                ..
            } if *p == key(peer).public_key() => Some(*peer_has_yours),
            _ => None,
        })
    }

    #[test]
    fn legacy_clients_find_each_other_once_each_has_looked_something_up() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let (mut a, mut b) = (Legacy::new(1), Legacy::new(2));
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(b.connect(&mut w, "198.51.100.2:2000"));
        assert_eq!(a.lookup(&mut w, "198.51.100.1:51820", 2), Some(None));
        assert_eq!(
            b.lookup(&mut w, "198.51.100.2:51821", 1),
            Some(Some("198.51.100.1:51820".parse().unwrap())),
            "the endpoint is the lookup's source"
        );
        assert_eq!(
            a.lookup(&mut w, "198.51.100.1:51820", 2),
            Some(Some("198.51.100.2:51821".parse().unwrap()))
        );
        let stats = w.server.legacy_stats();
        assert_eq!((stats.handshakes, stats.lookups, stats.found), (2, 3, 2));
    }

    #[test]
    fn the_endpoint_comes_only_from_an_authenticated_lookup() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let mut a = Legacy::new(1);
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(w.server.legacy_endpoint(&key(1).public_key(), w.now), None);
        let mut forged = a.lookup_datagram(2);
        forged[20] ^= 1;
        assert_eq!(w.send("192.0.2.66:66", &forged), None);
        assert_eq!(w.server.legacy_endpoint(&key(1).public_key(), w.now), None);
        assert!(a.lookup(&mut w, "198.51.100.1:51820", 2).is_some());
        assert_eq!(
            w.server.legacy_endpoint(&key(1).public_key(), w.now),
            Some(addr("198.51.100.1:51820"))
        );
    }

    #[test]
    fn without_an_allowed_list_the_default_consent_fails_closed() {
        let mut w = World::new(LegacyConsent::AllowedKeys, None);
        let mut a = Legacy::new(1);
        assert!(!a.connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(w.server.legacy_stats().not_allowed, 1);
        assert_eq!(w.server.legacy_session_count(), 0);
    }

    #[test]
    fn the_allowed_list_applies_to_legacy_keys() {
        let mut w = World::new(LegacyConsent::AllowedKeys, Some(&[1, 2]));
        assert!(Legacy::new(1).connect(&mut w, "198.51.100.1:1000"));
        assert!(!Legacy::new(3).connect(&mut w, "198.51.100.3:1000"));
        assert_eq!(w.server.legacy_stats().not_allowed, 1);
        assert_eq!(w.server.legacy_session_count(), 1);
    }

    #[test]
    fn compatibility_off_drops_legacy_datagrams() {
        let mut w = World::with(ServerConfig::default());
        assert!(!Legacy::new(1).connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(w.server.stats().malformed, 1);
        assert_eq!(w.server.legacy_stats(), &LegacyStats::default());
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
    fn replayed_lookups_and_foreign_client_keys_are_dropped() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let mut a = Legacy::new(1);
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        let lookup = a.lookup_datagram(2);
        assert!(w.send("198.51.100.1:1", &lookup).is_some());
        assert_eq!(w.send("198.51.100.1:2", &lookup), None, "replayed");
        assert_eq!(w.server.legacy_stats().bad_transport, 1);
        assert_eq!(
            w.server.legacy_endpoint(&key(1).public_key(), w.now),
            Some(addr("198.51.100.1:1")),
            "a replay moves nothing"
        );
        // A lookup that names another client key, in a's own session.
        let request = LookupRequest {
            client: key(5).public_key(),
            target: key(2).public_key(),
        };
        let session = a.session.as_mut().unwrap();
        let foreign = session.seal_lookup(&request).unwrap();
        assert_eq!(w.send("198.51.100.1:3", &foreign), None);
        assert_eq!(w.server.legacy_stats().wrong_client_key, 1);
        assert_eq!(w.server.legacy_endpoint(&key(5).public_key(), w.now), None);
        assert_eq!(
            w.server.legacy_endpoint(&key(1).public_key(), w.now),
            Some(addr("198.51.100.1:1"))
        );
        // An unknown index.
        let mut unknown = a.lookup_datagram(2);
        unknown[1] ^= 0xff;
        assert_eq!(w.send("198.51.100.1:4", &unknown), None);
        assert_eq!(w.server.legacy_stats().unknown_session, 1);
    }

    #[test]
    fn ipv6_endpoints_and_unknown_keys_give_the_same_empty_answer() {
        let mut w = World::new(LegacyConsent::TrustAll, None);
        let (mut a, mut b) = (Legacy::new(1), Legacy::new(2));
        assert!(a.connect(&mut w, "198.51.100.1:1000"));
        assert!(b.connect(&mut w, "[2001:db8::2]:2000"));
        assert!(b.lookup(&mut w, "[2001:db8::2]:51820", 1).is_some());
        assert!(w
            .server
            .legacy_endpoint(&key(2).public_key(), w.now)
            .is_some());
        let v6 = w.send("198.51.100.1:1", &a.lookup_datagram(2)).unwrap();
        let unknown = w.send("198.51.100.1:1", &a.lookup_datagram(9)).unwrap();
        assert_eq!(v6.len(), ANSWER_EMPTY_LEN);
        assert_eq!(unknown.len(), ANSWER_EMPTY_LEN);
    }

    #[test]
    fn a_native_client_is_found_by_a_legacy_one_only_if_it_lists_it() {
        let mut w = World::new(LegacyConsent::AllowedKeys, Some(&[1, 2, 3]));
        let _n = native(&mut w, 2, "203.0.113.2:2000", &[1]);
        let _m = native(&mut w, 3, "203.0.113.3:3000", &[]);
        let mut l = Legacy::new(1);
        assert!(l.connect(&mut w, "198.51.100.1:1000"));
        assert_eq!(
            l.lookup(&mut w, "198.51.100.1:51820", 2),
            Some(Some("203.0.113.2:2000".parse().unwrap()))
        );
        assert_eq!(l.lookup(&mut w, "198.51.100.1:51820", 3), Some(None));
    }

    #[test]
    fn a_legacy_client_is_found_by_a_native_one_that_lists_it() {
        let mut w = World::new(LegacyConsent::AllowedKeys, Some(&[1, 2, 3]));
        let mut l = Legacy::new(1);
        assert!(l.connect(&mut w, "198.51.100.1:1000"));
        assert!(l.lookup(&mut w, "198.51.100.1:51820", 2).is_some());
        let mut n = native(&mut w, 2, "203.0.113.2:2000", &[1]);
        n.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut n, "203.0.113.2:2000");
        assert_eq!(resolved(&events, 1), Some(addr("198.51.100.1:51820")));
        assert_eq!(
            has_yours(&events, 1),
            Some(false),
            "L has not been told N's endpoint"
        );
        // L learns N's endpoint (natpunch-go then keeps sending keepalives there): N may go.
        assert_eq!(
            l.lookup(&mut w, "198.51.100.1:51820", 2),
            Some(Some("203.0.113.2:2000".parse().unwrap()))
        );
        n.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut n, "203.0.113.2:2000");
        assert_eq!(has_yours(&events, 1), Some(true));
        // N moves: what L was told is stale.
        n.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut n, "203.0.113.2:2999");
        assert_eq!(has_yours(&events, 1), Some(false));
        // A native client that does not list it learns nothing.
        let mut m = native(&mut w, 3, "203.0.113.3:3000", &[]);
        m.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut m, "203.0.113.3:3000");
        assert_eq!(resolved(&events, 1), None, "{events:?}");
    }

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
