//! Who is registered where: the server's table of observed endpoints and declared peers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::keys::PublicKey;
use crate::wire::{CandidatesReply, CandidatesRequest, Sighting};

use super::expiry::{deadline, ExpiryQueue, Verdict};

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
    /// The client declared that its NAT maps each destination to its own port.
    pub hard_nat: bool,
    /// For each peer this client was told about: the endpoint it was told, and when it last
    /// confirmed a punch towards that endpoint.
    pub given: BTreeMap<PublicKey, Given>,
    /// The client asked to be pushed what changes about its peers.
    pub watch: bool,
    /// The index of the session that the client's last authenticated message came on: pushes
    /// go through it, to `endpoint`, and nowhere else.
    pub session: u32,
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

/// A registration and when its one entry in the expiry queue falls due.
#[derive(Debug)]
struct Entry {
    registration: Registration,
    queued_at: Instant,
}

/// The table of registrations, each valid for `ttl` after its client was last seen.
#[derive(Debug)]
pub struct Registry {
    entries: HashMap<PublicKey, Entry>,
    queue: ExpiryQueue<PublicKey>,
    ttl: Duration,
    capacity: usize,
}

impl Registry {
    /// An empty table holding at most `capacity` registrations.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            queue: ExpiryQueue::default(),
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
            .map(|e| &e.registration)
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
        let until = deadline(registration.seen, self.ttl);
        let queued_at = match self.entries.remove(&key) {
            Some(old) => {
                // What this client was told stays true across a refresh, for peers it still lists.
                registration.given = old
                    .registration
                    .given
                    .into_iter()
                    .filter(|(k, _)| registration.peers.contains(k))
                    .collect();
                old.queued_at
            }
            None => {
                self.queue.push(until, key);
                until
            }
        };
        let queued_at = if until < queued_at {
            // Seen earlier than before (a clock gone back): queue it for the earlier deadline.
            self.queue.push(until, key);
            self.compact();
            until
        } else {
            queued_at
        };
        self.entries.insert(
            key,
            Entry {
                registration,
                queued_at,
            },
        );
        true
    }

    /// Notes that `key` was just seen at `endpoint` through session `session`, if it has a live
    /// registration. Returns true when that moved the registration to a new endpoint.
    pub fn touch(
        &mut self,
        key: &PublicKey,
        endpoint: SocketAddr,
        session: u32,
        now: Instant,
    ) -> bool {
        let mut moved = false;
        if self.live(key, now).is_some() {
            if let Some(e) = self.entries.get_mut(key) {
                moved = e.registration.endpoint != endpoint;
                e.registration.endpoint = endpoint;
                e.registration.session = session;
                e.registration.seen = now;
                let until = deadline(now, self.ttl);
                if until < e.queued_at {
                    self.queue.push(until, *key);
                    e.queued_at = until;
                    self.compact();
                }
            }
        }
        moved
    }

    /// The live registrations that watch `subject`: its peers that list it back and asked for
    /// pushes. The work is bounded by `subject`'s peer count.
    pub fn watchers(&self, subject: &PublicKey, now: Instant) -> Vec<PublicKey> {
        let Some(found) = self.live(subject, now) else {
            return Vec::new();
        };
        found
            .peers
            .iter()
            .filter(|&peer| {
                peer != subject
                    && self
                        .live(peer, now)
                        .is_some_and(|r| r.watch && r.peers.contains(subject))
            })
            .copied()
            .collect()
    }

    /// What a lookup by `requester` for `target` would answer right now, without remembering
    /// anything: `None` unless both are live and list each other.
    pub fn sighting(
        &self,
        requester: &PublicKey,
        target: &PublicKey,
        now: Instant,
    ) -> Option<Sighting> {
        let asker = self.live(requester, now)?;
        let found = self.live(target, now)?;
        if !asker.peers.contains(target) || !found.peers.contains(requester) {
            return None;
        }
        let age = now.saturating_duration_since(found.seen).as_secs();
        Some(Sighting {
            endpoint: found.endpoint,
            age_secs: u32::try_from(age).unwrap_or(u32::MAX),
            peer_has_yours: found.given.get(requester).is_some_and(|g| {
                g.endpoint == asker.endpoint
                    && g.punched_at
                        .is_some_and(|t| now.saturating_duration_since(t) < PUNCH_VALID)
            }),
        })
    }

    /// The candidates of the peer `request` asks about, under the same mutual consent as
    /// [`Registry::sighting`]: nothing (and no flag) unless both are live and list each other.
    pub fn candidates(
        &self,
        requester: &PublicKey,
        request: CandidatesRequest,
        now: Instant,
    ) -> CandidatesReply {
        let mut reply = CandidatesReply {
            request_id: request.request_id,
            peer: request.peer,
            known: false,
            same_public: false,
            hard_nat: false,
            candidates: Vec::new(),
        };
        if self.sighting(requester, &request.peer, now).is_some() {
            if let (Some(asker), Some(found)) =
                (self.live(requester, now), self.live(&request.peer, now))
            {
                reply.known = true;
                reply.same_public = asker.endpoint.ip() == found.endpoint.ip();
                reply.hard_nat = found.hard_nat;
                reply.candidates = found.local_addrs.clone();
            }
        }
        reply
    }

    /// Remembers that `requester` was told `endpoint` for `target`, and with `punched` that it
    /// just confirmed a punch towards the endpoint it had been told before.
    pub fn note_given(
        &mut self,
        requester: &PublicKey,
        target: &PublicKey,
        endpoint: SocketAddr,
        punched: bool,
        now: Instant,
    ) {
        if let Some(asker) = self.entries.get_mut(requester) {
            let given = asker.registration.given.entry(*target).or_insert(Given {
                endpoint,
                punched_at: None,
            });
            if given.endpoint != endpoint {
                // The target moved: a punch towards its old endpoint says nothing about the new one.
                *given = Given {
                    endpoint,
                    punched_at: None,
                };
            } else if punched {
                given.punched_at = Some(now);
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
        let sighting = self.sighting(requester, target, now)?;
        self.note_given(requester, target, sighting.endpoint, punched, now);
        Some(sighting)
    }

    /// Drops the expiry queue's stale entries once they pile up.
    fn compact(&mut self) {
        let entries = &self.entries;
        self.queue.compact(entries.len(), |key, at| {
            entries.get(key).is_some_and(|e| e.queued_at == at)
        });
    }

    /// Drops every registration that has expired; the work is proportional to what expired.
    pub fn purge(&mut self, now: Instant) {
        self.purge_some(now, usize::MAX);
    }

    /// Drops expired registrations, looking at no more than `budget` that fell due. Returns how
    /// many it looked at: less than `budget` means nothing due is left.
    pub fn purge_some(&mut self, now: Instant, budget: usize) -> usize {
        let (entries, ttl) = (&mut self.entries, self.ttl);
        self.queue.run(now, budget, |key, at| {
            let Some(entry) = entries.get_mut(key) else {
                return Verdict::Stale;
            };
            if entry.queued_at != at {
                return Verdict::Stale;
            }
            let until = deadline(entry.registration.seen, ttl);
            if until <= now {
                entries.remove(key);
                Verdict::Expired
            } else {
                entry.queued_at = until;
                Verdict::Alive(until)
            }
        })
    }

    /// Drops every expired registration by scanning the table: the reference [`Registry::purge`]
    /// is tested against.
    #[cfg(test)]
    pub(super) fn sweep(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.registration.seen) < ttl);
    }

    /// The registrations held, expired or not, for tests to compare.
    #[cfg(test)]
    pub(super) fn held(&self) -> BTreeMap<PublicKey, &Registration> {
        self.entries
            .iter()
            .map(|(k, e)| (*k, &e.registration))
            .collect()
    }

    /// Number of expiry queue entries, valid or stale.
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
            hard_nat: false,
            given: BTreeMap::new(),
            watch: true,
            session: 0,
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
        reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), 0, later);
        reg.touch(&key(2), "198.51.100.2:2".parse().unwrap(), 0, later);
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
        reg.touch(&key(1), "198.51.100.1:9".parse().unwrap(), 0, later);
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
    fn touch_says_when_the_endpoint_moved() {
        let now = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(60), 10);
        reg.register(key(1), registration("198.51.100.1:1", now, &[]), now);
        assert!(!reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), 5, now));
        assert_eq!(reg.get(&key(1), now).map(|r| r.session), Some(5));
        assert!(reg.touch(&key(1), "198.51.100.1:2".parse().unwrap(), 6, now));
        assert!(
            !reg.touch(&key(2), "198.51.100.2:2".parse().unwrap(), 6, now),
            "not registered"
        );
    }

    #[test]
    fn watchers_are_the_consenting_peers_that_asked_for_pushes() {
        let now = Instant::now();
        let mut reg = Registry::new(Duration::from_secs(60), 10);
        reg.register(
            key(1),
            registration("198.51.100.1:1", now, &[2, 3, 4, 5, 1]),
            now,
        );
        reg.register(key(2), registration("198.51.100.2:2", now, &[1]), now);
        reg.register(key(3), registration("198.51.100.3:3", now, &[]), now);
        let mut quiet = registration("198.51.100.4:4", now, &[1]);
        quiet.watch = false;
        reg.register(key(4), quiet, now);
        // 5 is not registered; 1 lists itself, which never counts.
        assert_eq!(reg.watchers(&key(1), now), vec![key(2)]);
        assert_eq!(reg.watchers(&key(9), now), vec![]);
    }

    #[test]
    fn entries_expire_and_touch_refreshes() {
        let start = Instant::now();
        let ttl = Duration::from_secs(60);
        let mut reg = Registry::new(ttl, 10);
        reg.register(key(1), registration("198.51.100.1:1", start, &[2]), start);
        reg.register(key(2), registration("198.51.100.2:2", start, &[1]), start);
        let later = start + Duration::from_secs(50);
        reg.touch(&key(2), "198.51.100.2:9".parse().unwrap(), 0, later);
        reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), 0, later);
        let sighting = reg
            .lookup(&key(1), &key(2), false, later + Duration::from_secs(5))
            .unwrap();
        assert_eq!(sighting.endpoint, "198.51.100.2:9".parse().unwrap());
        assert_eq!(sighting.age_secs, 5);
        assert_eq!(reg.lookup(&key(1), &key(2), false, later + ttl), None);
        reg.purge(later + ttl);
        assert!(reg.is_empty());
        reg.touch(&key(1), "198.51.100.1:1".parse().unwrap(), 0, later + ttl);
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

    #[derive(Debug, Clone)]
    enum Op {
        Register(u8),
        Touch(u8),
        Lookup(u8, u8),
        Advance(u64),
        Expire(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..6u8).prop_map(Op::Register),
            (0..6u8).prop_map(Op::Touch),
            (0..6u8, 0..6u8).prop_map(|(a, b)| Op::Lookup(a, b)),
            prop_oneof![Just(60_000u64), Just(1), 0..70_000u64].prop_map(Op::Advance),
            (1..5usize).prop_map(Op::Expire),
        ]
    }

    proptest! {
        #[test]
        fn purging_a_little_at_a_time_keeps_what_a_sweep_keeps(
            ops in proptest::collection::vec(op(), 1..80)
        ) {
            let mut now = Instant::now();
            let ttl = Duration::from_secs(60);
            let (mut a, mut b) = (Registry::new(ttl, 4), Registry::new(ttl, 4));
            for op in ops {
                match op {
                    Op::Register(n) => {
                        let endpoint = format!("198.51.100.{n}:1");
                        let r = registration(&endpoint, now, &[(n + 1) % 6]);
                        prop_assert_eq!(
                            a.register(key(n), r.clone(), now),
                            b.register(key(n), r, now)
                        );
                    }
                    Op::Touch(n) => {
                        let endpoint = SocketAddr::new([198, 51, 100, n].into(), 2);
                        a.touch(&key(n), endpoint, 0, now);
                        b.touch(&key(n), endpoint, 0, now);
                    }
                    Op::Lookup(x, y) => prop_assert_eq!(
                        a.lookup(&key(x), &key(y), true, now),
                        b.lookup(&key(x), &key(y), true, now)
                    ),
                    Op::Advance(millis) => now += Duration::from_millis(millis),
                    Op::Expire(budget) => {
                        loop {
                            let taken = a.purge_some(now, budget);
                            prop_assert!(taken <= budget);
                            if taken < budget {
                                break;
                            }
                        }
                        b.sweep(now);
                        prop_assert_eq!(a.held(), b.held());
                    }
                }
                prop_assert_eq!(a.queued(), a.len(), "one entry per registration");
            }
        }
    }
}
