//! Expiry: [`Server::expire`] and [`Server::expire_some`], and the deadline queues that let them
//! drop expired state a little at a time instead of scanning whole tables.
//!
//! Each table that expires keeps one [`ExpiryQueue`] of `(check_at, key)`, earliest first. An item
//! is queued when it is inserted, with the time it would expire if nothing happened to it. Items
//! refreshed since are not queued again: deletion is lazy. When an entry falls due, the table looks
//! at the item under its real rule: gone or queued again since (a stale entry) is skipped, expired
//! is removed, refreshed is queued again at its real deadline. Each item records the `check_at` of
//! its one valid entry, so a live item is never queued twice, and [`ExpiryQueue::compact`] drops
//! stale entries (left by items removed otherwise than by expiry) once they outnumber the table.
//! The rules for what is kept stay with each table; the queues only decide when to look.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::{key_state, Server};

/// Stale entries a queue may hold beyond its table's size before it drops them.
const COMPACT_SLACK: usize = 64;

/// Far enough to stand for "never" when a deadline does not fit in an [`Instant`].
const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a table found when one of its entries fell due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The item is gone or queued again since: nothing to do.
    Stale,
    /// The item had expired and was removed.
    Expired,
    /// The item lives on until this time (later than `now`); the table recorded it as the
    /// item's new `check_at`.
    Alive(Instant),
}

/// A min-queue of `(check_at, key)`.
#[derive(Debug)]
pub(super) struct ExpiryQueue<K> {
    heap: BinaryHeap<Reverse<(Instant, K)>>,
}

impl<K: Ord> Default for ExpiryQueue<K> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
        }
    }
}

impl<K: Ord> ExpiryQueue<K> {
    /// Number of entries, valid or stale.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Queues `key` to be looked at once `at` has come.
    pub(super) fn push(&mut self, at: Instant, key: K) {
        self.heap.push(Reverse((at, key)));
    }

    /// Takes the earliest entry if it is due at `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.heap.peek().is_some_and(|Reverse((at, _))| *at <= now) {
            self.heap.pop().map(|Reverse(entry)| entry)
        } else {
            None
        }
    }

    /// Hands at most `budget` due entries to `check`, queueing again the items it finds alive.
    /// Returns how many entries it took.
    pub(super) fn run(
        &mut self,
        now: Instant,
        budget: usize,
        mut check: impl FnMut(&K, Instant) -> Verdict,
    ) -> usize {
        let mut taken = 0;
        while taken < budget {
            let Some((at, key)) = self.pop_due(now) else {
                break;
            };
            taken += 1;
            if let Verdict::Alive(next) = check(&key, at) {
                self.push(next, key);
            }
        }
        taken
    }

    /// Drops the stale entries once the queue holds more than twice `live` (the table's size) plus
    /// some slack; `valid` says whether an entry is its item's one valid entry. Amortised, this
    /// costs a constant per push.
    pub(super) fn compact(&mut self, live: usize, mut valid: impl FnMut(&K, Instant) -> bool) {
        if self.heap.len() > live.saturating_mul(2).saturating_add(COMPACT_SLACK) {
            self.heap.retain(|Reverse((at, key))| valid(key, *at));
        }
    }
}

/// `start + after`, or a time far enough to mean never when that does not fit.
pub(super) fn deadline(start: Instant, after: Duration) -> Instant {
    start
        .checked_add(after)
        .or_else(|| start.checked_add(FAR))
        .unwrap_or(start)
}

/// `at` if it is later than `now`, else the next instant after `now`: an item found alive is
/// queued again for later, so one pass never takes it twice.
pub(super) fn after(now: Instant, at: Instant) -> Instant {
    if at > now {
        at
    } else {
        now.checked_add(Duration::from_nanos(1)).unwrap_or(now)
    }
}

impl Server {
    /// Drops expired sessions, registrations and replay-protection state, all of it: the work is
    /// proportional to what has expired. [`Server::handle`] also calls it when a table is full.
    /// An IO shell should rather call [`Server::expire_some`] often, which bounds each call.
    pub fn expire(&mut self, now: Instant) {
        self.expire_some(now, usize::MAX);
    }

    /// Drops what has expired, looking at no more than `budget` items that fell due (earliest
    /// first, table by table). Returns how many it looked at: less than `budget` means nothing
    /// due is left. Items are dropped at their deadline or, when budgets fall short, later,
    /// never earlier; enough calls leave exactly what [`Server::expire`] leaves.
    pub fn expire_some(&mut self, now: Instant, budget: usize) -> usize {
        let (tolerance, lifetime) = (self.config.clock_tolerance, self.config.session_lifetime);
        let mut taken = key_state::expire_some(
            &mut self.sessions,
            &mut self.keys,
            &mut self.queues,
            now,
            tolerance,
            lifetime,
            budget,
        );
        taken += self.registry.purge_some(now, budget.saturating_sub(taken));
        taken += self.sources.purge_some(now, budget.saturating_sub(taken));
        taken += self
            .cookie_sources
            .purge_some(now, budget.saturating_sub(taken));
        taken += self
            .legacy_sources
            .purge_some(now, budget.saturating_sub(taken));
        if let Some(config) = self.config.natpunch_go {
            taken += self.expire_legacy_some(now, config, budget.saturating_sub(taken));
        }
        taken
    }

    /// The full sweep that [`Server::expire_some`] does a little at a time, scanning every table:
    /// the reference its tests compare against.
    #[cfg(test)]
    fn sweep(&mut self, now: Instant) {
        let lifetime = self.config.session_lifetime;
        self.sessions
            .retain(|_, s| now.saturating_duration_since(s.created) < lifetime);
        let tolerance = self.config.clock_tolerance;
        key_state::expire(&mut self.keys, &self.sessions, now, tolerance, lifetime);
        self.registry.sweep(now);
        self.sources.sweep(now);
        self.cookie_sources.sweep(now);
        self.legacy_sources.sweep(now);
        if let Some(config) = self.config.natpunch_go {
            self.sweep_legacy(now, config);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// A table of items valid until a deadline that refreshing moves, driven the way the server's
    /// tables drive their queues.
    struct Table {
        items: HashMap<u32, (Instant, Instant)>,
        queue: ExpiryQueue<u32>,
    }

    impl Table {
        fn new() -> Self {
            Self {
                items: HashMap::new(),
                queue: ExpiryQueue::default(),
            }
        }

        /// Inserts or refreshes `key` until `until`.
        fn set(&mut self, key: u32, until: Instant) {
            match self.items.get_mut(&key) {
                Some((deadline, _)) => *deadline = until,
                None => {
                    self.items.insert(key, (until, until));
                    self.queue.push(until, key);
                }
            }
        }

        fn remove(&mut self, key: u32) {
            self.items.remove(&key);
            let items = &self.items;
            self.queue
                .compact(items.len(), |k, at| items.get(k).is_some_and(|i| i.1 == at));
        }

        fn expire_some(&mut self, now: Instant, budget: usize) -> usize {
            let items = &mut self.items;
            self.queue.run(now, budget, |key, at| {
                let Some((deadline, queued_at)) = items.get_mut(key) else {
                    return Verdict::Stale;
                };
                if *queued_at != at {
                    return Verdict::Stale;
                }
                if *deadline <= now {
                    items.remove(key);
                    return Verdict::Expired;
                }
                *queued_at = *deadline;
                Verdict::Alive(*deadline)
            })
        }
    }

    #[test]
    fn removed_items_leave_entries_that_are_skipped() {
        let now = Instant::now();
        let mut t = Table::new();
        t.set(1, now + Duration::from_secs(1));
        t.set(2, now + Duration::from_secs(1));
        t.remove(1);
        t.set(1, now + Duration::from_secs(5));
        assert_eq!(t.queue.len(), 3, "one stale entry for the removed 1");
        assert_eq!(t.expire_some(now + Duration::from_secs(2), 10), 2);
        assert!(t.items.contains_key(&1), "the new 1 is not due");
        assert!(!t.items.contains_key(&2));
        assert_eq!(t.queue.len(), 1);
    }

    #[test]
    fn a_refreshed_item_is_queued_again_at_its_real_deadline() {
        let now = Instant::now();
        let mut t = Table::new();
        t.set(1, now + Duration::from_secs(1));
        t.set(1, now + Duration::from_secs(10));
        assert_eq!(t.queue.len(), 1, "a refresh queues nothing");
        assert_eq!(t.expire_some(now + Duration::from_secs(2), 10), 1);
        assert!(t.items.contains_key(&1));
        assert_eq!(t.queue.len(), 1);
        assert_eq!(
            t.expire_some(now + Duration::from_secs(9), 10),
            0,
            "not due before its real deadline"
        );
        assert_eq!(t.expire_some(now + Duration::from_secs(10), 10), 1);
        assert!(t.items.is_empty());
        assert_eq!(t.queue.len(), 0);
    }

    #[test]
    fn repeated_refreshes_keep_one_entry_per_item() {
        let now = Instant::now();
        let mut t = Table::new();
        for step in 0..1000u64 {
            let at = now + Duration::from_millis(step * 10);
            for key in 0..20 {
                t.set(key, at + Duration::from_secs(1));
            }
            t.expire_some(at, usize::MAX);
            assert!(t.queue.len() <= t.items.len(), "step {step}");
        }
        assert_eq!(t.items.len(), 20);
    }

    #[test]
    fn removals_cannot_grow_the_queue_past_twice_the_table() {
        let now = Instant::now();
        let mut t = Table::new();
        for key in 0..10_000 {
            t.set(key, now + Duration::from_secs(60));
            t.remove(key);
            assert!(t.queue.len() <= 2 * t.items.len() + COMPACT_SLACK + 1);
        }
    }

    #[test]
    fn a_pass_takes_at_most_its_budget() {
        let now = Instant::now();
        let mut t = Table::new();
        for key in 0..100 {
            t.set(key, now + Duration::from_millis(u64::from(key)));
        }
        let later = now + Duration::from_secs(1);
        assert_eq!(t.expire_some(later, 30), 30);
        assert_eq!(t.items.len(), 70);
        assert!((0..30).all(|k| !t.items.contains_key(&k)), "earliest first");
        assert_eq!(t.expire_some(later, 0), 0);
        assert_eq!(t.expire_some(later, 1000), 70);
        assert_eq!(t.expire_some(later, 1000), 0);
        assert!(t.items.is_empty());
    }

    #[test]
    fn deadlines_that_overflow_mean_never() {
        let now = Instant::now();
        assert!(deadline(now, Duration::MAX) > now + Duration::from_secs(3600));
        assert!(after(now, now) > now);
        assert_eq!(
            after(now, now + Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }

    /// The server's expiry, a little at a time, against the full sweep, on random sequences of
    /// native and natpunch-go clients coming and going.
    mod server {
        use std::collections::{BTreeMap, HashMap};

        use proptest::prelude::*;

        use crate::client::{Client, ClientConfig};
        use crate::server::legacy::test_support::{exchange, key, Legacy, World};
        use crate::server::legacy::{LegacyConfig, LegacyConsent};
        use crate::server::{Server, ServerConfig};

        use super::*;

        /// Everything the expiring tables hold, expired or not, and the counters.
        fn snapshot(server: &Server) -> String {
            let sessions: BTreeMap<_, _> = server
                .sessions
                .iter()
                .map(|(i, s)| (*i, (s.client, s.created, s.confirmed, s.committed)))
                .collect();
            let keys: BTreeMap<_, _> = server
                .keys
                .iter()
                .map(|(k, s)| {
                    (
                        *k,
                        (s.last_timestamp, s.last_handshake, s.current, s.pending),
                    )
                })
                .collect();
            format!(
                "{sessions:?} {keys:?} {:?} {:?} {:?} {:?} {:?} {}",
                server.registry.held(),
                server.sources.tracked(),
                server.cookie_sources.tracked(),
                server.legacy_sources.tracked(),
                server.stats,
                server.legacy_snapshot()
            )
        }

        #[derive(Debug, Clone)]
        enum Op {
            /// Native client `n` talks from port `p`.
            Native(u8, u16),
            /// Native client `n` restarts (new state, new handshake).
            Restart(u8),
            /// natpunch-go client `n` handshakes and looks `t` up (7: leaves its session pending).
            Legacy(u8, u8),
            /// natpunch-go client `n` looks `t` up in its session.
            LegacyLookup(u8, u8),
            Advance(u64),
            Expire(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            let advance = prop_oneof![
                Just(1_000u64),
                Just(120_000),
                Just(180_000),
                Just(360_000),
                Just(420_000),
                0..200_000u64,
            ];
            prop_oneof![
                (0..4u8, 1..3u16).prop_map(|(n, p)| Op::Native(n, p)),
                (0..4u8).prop_map(Op::Restart),
                (4..7u8, 0..8u8).prop_map(|(n, t)| Op::Legacy(n, t)),
                (4..7u8, 0..7u8).prop_map(|(n, t)| Op::LegacyLookup(n, t)),
                advance.prop_map(Op::Advance),
                (1..6usize).prop_map(Op::Expire),
            ]
        }

        /// One server and its clients.
        struct Side {
            world: World,
            natives: HashMap<u8, Client>,
            legacies: HashMap<u8, Legacy>,
        }

        impl Side {
            fn apply(&mut self, op: &Op) {
                let world = &mut self.world;
                match *op {
                    Op::Native(n, port) => {
                        let server = world.server.public_key();
                        let client = self.natives.entry(n).or_insert_with(|| {
                            let peers = (0..7).filter(|&p| p != n).map(|p| key(p).public_key());
                            let config = ClientConfig::default();
                            Client::new(key(n), server, peers.collect(), vec![], config, [n; 32])
                        });
                        exchange(world, client, &format!("198.51.100.{n}:{port}"));
                    }
                    Op::Restart(n) => {
                        self.natives.remove(&n);
                    }
                    Op::Legacy(n, target) => {
                        let from = format!("198.51.100.{n}:1000");
                        let client = self.legacies.entry(n).or_insert_with(|| Legacy::new(n));
                        if client.connect(world, &from) && target < 7 {
                            client.lookup(world, &from, target);
                        }
                    }
                    Op::LegacyLookup(n, target) => {
                        if let Some(client) = self.legacies.get_mut(&n) {
                            if client.session.is_some() {
                                client.lookup(world, &format!("198.51.100.{n}:1000"), target);
                            }
                        }
                    }
                    Op::Advance(millis) => world.advance(Duration::from_millis(millis)),
                    Op::Expire(_) => {}
                }
            }
        }

        fn config() -> impl Strategy<Value = ServerConfig> {
            let small_or_not = |small: usize| prop_oneof![Just(small), Just(1 << 20)];
            (
                prop_oneof![Just(0u32), Just(1000)],
                small_or_not(2),
                small_or_not(2),
                small_or_not(3),
                small_or_not(1),
            )
                .prop_map(
                    |(load_threshold, sessions, registrations, keys, sources)| ServerConfig {
                        load_threshold,
                        max_sessions: sessions,
                        max_registrations: registrations,
                        max_keys: keys,
                        max_sources: sources,
                        natpunch_go: Some(LegacyConfig {
                            consent: LegacyConsent::TrustAll,
                            ..LegacyConfig::default()
                        }),
                        ..ServerConfig::default()
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(48))]

            #[test]
            fn expiring_a_little_at_a_time_keeps_what_a_full_sweep_keeps(
                config in config(),
                ops in proptest::collection::vec(op(), 1..40),
            ) {
                let side = || Side {
                    world: World::with(config.clone()),
                    natives: HashMap::new(),
                    legacies: HashMap::new(),
                };
                let (mut a, mut b) = (side(), side());
                b.world.now = a.world.now;
                for op in &ops {
                    a.apply(op);
                    b.apply(op);
                    if let Op::Expire(budget) = *op {
                        let now = a.world.now;
                        loop {
                            let taken = a.world.server.expire_some(now, budget);
                            prop_assert!(taken <= budget);
                            if taken < budget {
                                break;
                            }
                        }
                        b.world.server.sweep(now);
                    }
                    prop_assert_eq!(snapshot(&a.world.server), snapshot(&b.world.server));
                    let server = &a.world.server;
                    prop_assert!(
                        server.queues.len() <= 2 * (server.sessions.len() + server.keys.len()) + 128,
                        "queues bounded by their tables"
                    );
                }
            }
        }
    }
}
