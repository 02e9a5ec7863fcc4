//! Who is registered where: the server's table of observed endpoints and declared peers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::keys::PublicKey;
use crate::wire::Sighting;

/// One client's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Where the client's last authenticated message came from.
    pub endpoint: SocketAddr,
    /// When that was.
    pub seen: Instant,
    /// The WireGuard peers the client declared.
    pub peers: BTreeSet<PublicKey>,
    /// The local addresses the client declared.
    pub local_addrs: Vec<SocketAddr>,
    /// For each peer this client was told about: the endpoint it was told, and when it last
    /// confirmed a punch towards that endpoint.
    pub given: BTreeMap<PublicKey, Given>,
}

/// What a client was told about one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Given {
    /// The peer's endpoint as told.
    pub endpoint: SocketAddr,
    /// When the client last said it punched its NAT open towards that endpoint.
    pub punched_at: Option<Instant>,
}

/// How long a punch confirmation counts: a punch keeps a NAT mapping open for about 30 s on
/// Linux, and clients confirm again every lookup, at least every 10 s.
pub const PUNCH_VALID: Duration = Duration::from_secs(20);

/// The table of registrations, each valid for `ttl` after its client was last seen.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<PublicKey, Registration>,
    ttl: Duration,
    capacity: usize,
}

impl Registry {
    /// An empty table holding at most `capacity` registrations.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            ttl,
            capacity,
        }
    }

    /// How long a registration lives without being refreshed.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Number of registrations held, live or not yet purged.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no registration is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn live(&self, key: &PublicKey, now: Instant) -> Option<&Registration> {
        self.entries
            .get(key)
            .filter(|r| now.saturating_duration_since(r.seen) < self.ttl)
    }

    /// The live registration of `key`.
    pub fn get(&self, key: &PublicKey, now: Instant) -> Option<&Registration> {
        self.live(key, now)
    }

    /// Records a complete registration. Returns false when the table is full and `key` is new:
    /// existing registrations are never pushed out by new ones.
    pub fn register(&mut self, key: PublicKey, registration: Registration, now: Instant) -> bool {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.purge(now);
            if self.entries.len() >= self.capacity {
                return false;
            }
        }
        let mut registration = registration;
        if let Some(old) = self.entries.remove(&key) {
            // What this client was told stays true across a refresh, for peers it still lists.
            registration.given = old
                .given
                .into_iter()
                .filter(|(k, _)| registration.peers.contains(k))
                .collect();
        }
        self.entries.insert(key, registration);
        true
    }

    /// Notes that `key` was just seen at `endpoint`, if it has a live registration.
    pub fn touch(&mut self, key: &PublicKey, endpoint: SocketAddr, now: Instant) {
        if self.live(key, now).is_some() {
            if let Some(r) = self.entries.get_mut(key) {
                r.endpoint = endpoint;
                r.seen = now;
            }
        }
    }

    /// Where `target` is, if both `requester` and `target` are live and list each other as peers.
    /// `punched` says the requester just punched towards the endpoint it was last given for
    /// `target`. Remembers what the requester was told. Unknown, expired and not-consenting targets
    /// all give `None`, so the answers look alike.
    pub fn lookup(
        &mut self,
        requester: &PublicKey,
        target: &PublicKey,
        punched: bool,
        now: Instant,
    ) -> Option<Sighting> {
        let asker = self.live(requester, now)?;
        let found = self.live(target, now)?;
        if !asker.peers.contains(target) || !found.peers.contains(requester) {
            return None;
        }
        let age = now.saturating_duration_since(found.seen).as_secs();
        let sighting = Sighting {
            endpoint: found.endpoint,
            age_secs: u32::try_from(age).unwrap_or(u32::MAX),
            peer_has_yours: found.given.get(requester).is_some_and(|g| {
                g.endpoint == asker.endpoint
                    && g.punched_at
                        .is_some_and(|t| now.saturating_duration_since(t) < PUNCH_VALID)
            }),
        };
        if let Some(asker) = self.entries.get_mut(requester) {
            let given = asker.given.entry(*target).or_insert(Given {
                endpoint: sighting.endpoint,
                punched_at: None,
            });
            if given.endpoint != sighting.endpoint {
                // The target moved: a punch towards its old endpoint says nothing about the new one.
                *given = Given {
                    endpoint: sighting.endpoint,
                    punched_at: None,
                };
            } else if punched {
                given.punched_at = Some(now);
            }
        }
        Some(sighting)
    }

    /// Drops every registration that has expired.
    pub fn purge(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries
            .retain(|_, r| now.saturating_duration_since(r.seen) < ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn registration(endpoint: &str, now: Instant, peers: &[u8]) -> Registration {
        Registration {
            endpoint: endpoint.parse().unwrap(),
            seen: now,
            peers: peers.iter().map(|&n| key(n)).collect(),
            local_addrs: vec![],
            given: BTreeMap::new(),
        }
    }

    #[test]
    fn answers_only_mutual_peers() {
        let now = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(60), 10);
        assert!(reg.register(key(1), registration("198.51.100.1:1", now, &[2, 3]), now));
        assert!(reg.register(key(2), registration("198.51.100.2:2", now, &[1]), now));
        assert!(reg.register(key(3), registration("198.51.100.3:3", now, &[]), now));
        assert_eq!(
            reg.lookup(&key(1), &key(2), false, now).map(|s| s.endpoint),
            Some("198.51.100.2:2".parse().unwrap())
        );
        assert_eq!(
            reg.lookup(&key(1), &key(3), false, now),
            None,
            "3 does not list 1"
        );
        assert_eq!(
            reg.lookup(&key(3), &key(1), false, now),
            None,
            "3 does not list 1"
        );
        assert_eq!(
            reg.lookup(&key(4), &key(1), false, now),
            None,
            "4 is not registered"
        );
    }

    #[test]
    fn the_flag_says_the_peer_confirmed_a_punch_towards_the_askers_current_endpoint() {
        let now = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(60), 10);
        reg.register(key(1), registration("198.51.100.1:1", now, &[2]), now);
        reg.register(key(2), registration("198.51.100.2:2", now, &[1]), now);
        assert!(
            !reg.lookup(&key(1), &key(2), false, now)
                .unwrap()
                .peer_has_yours,
            "2 has not asked"
        );
        assert!(
            !reg.lookup(&key(2), &key(1), false, now)
                .unwrap()
                .peer_has_yours,
            "1 has not punched"
        );
        assert!(
            !reg.lookup(&key(1), &key(2), true, now)
                .unwrap()
                .peer_has_yours,
            "2 was told but has not punched"
        );
        assert!(
            reg.lookup(&key(2), &key(1), true, now)
                .unwrap()
                .peer_has_yours,
            "1 punched towards 2"
        );
        assert!(
            reg.lookup(&key(1), &key(2), true, now)
                .unwrap()
                .peer_has_yours,
            "2 punched towards 1"
        );
        // Confirmations go stale.
        let later = now + PUNCH_VALID;
        reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), later);
        reg.touch(&key(2), "198.51.100.2:2".parse().unwrap(), later);
        assert!(
            !reg.lookup(&key(1), &key(2), false, later)
                .unwrap()
                .peer_has_yours
        );
        // 1 punches again; then 1's mapping changes: 2's punch went to the old endpoint.
        reg.lookup(&key(1), &key(2), true, later);
        assert!(
            reg.lookup(&key(2), &key(1), true, later)
                .unwrap()
                .peer_has_yours,
            "1 confirmed at `later`"
        );
        reg.touch(&key(1), "198.51.100.1:9".parse().unwrap(), later);
        assert!(
            !reg.lookup(&key(1), &key(2), true, later)
                .unwrap()
                .peer_has_yours,
            "2 was told the old endpoint"
        );
        // 2 asks: it learns the new endpoint; its confirmation was for the old one and is dropped.
        assert!(
            reg.lookup(&key(2), &key(1), true, later)
                .unwrap()
                .peer_has_yours,
            "1 did punch towards 2"
        );
        assert!(
            !reg.lookup(&key(1), &key(2), true, later)
                .unwrap()
                .peer_has_yours,
            "2 has not punched the new one"
        );
        // 2 punches towards the new endpoint and says so.
        reg.lookup(&key(2), &key(1), true, later);
        assert!(
            reg.lookup(&key(1), &key(2), true, later)
                .unwrap()
                .peer_has_yours
        );
        // A refreshed registration keeps what its client was told.
        reg.register(key(2), registration("198.51.100.2:2", later, &[1]), later);
        assert!(
            reg.lookup(&key(1), &key(2), true, later)
                .unwrap()
                .peer_has_yours
        );
    }

    #[test]
    fn entries_expire_and_touch_refreshes() {
        let start = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut reg = Registry::new(ttl, 10);
        reg.register(key(1), registration("198.51.100.1:1", start, &[2]), start);
        reg.register(key(2), registration("198.51.100.2:2", start, &[1]), start);
        let later = start + Duration::from_secs(50);
        reg.touch(&key(2), "198.51.100.2:9".parse().unwrap(), later);
        reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), later);
        let sighting = reg
            .lookup(&key(1), &key(2), false, later + Duration::from_secs(5))
            .unwrap();
        assert_eq!(sighting.endpoint, "198.51.100.2:9".parse().unwrap());
        assert_eq!(sighting.age_secs, 5);
        assert_eq!(reg.lookup(&key(1), &key(2), false, later + ttl), None);
        reg.purge(later + ttl);
        assert!(reg.is_empty());
        reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), later + ttl);
        assert!(reg.is_empty(), "touch never creates a registration");
    }

    #[test]
    fn a_full_table_keeps_its_entries() {
        let now = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(60), 1);
        assert!(reg.register(key(1), registration("198.51.100.1:1", now, &[]), now));
        assert!(!reg.register(key(2), registration("198.51.100.2:2", now, &[]), now));
        assert!(
            reg.register(key(1), registration("198.51.100.1:2", now, &[]), now),
            "updates still fit"
        );
        assert!(reg.get(&key(1), now).is_some());
    }
}
