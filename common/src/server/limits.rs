//! Load protection: a meter of initiations per second, and token buckets per source network.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::endpoint::canonical;

use super::expiry::{after, deadline, ExpiryQueue, Verdict};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(burst));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn is_full(&self, rate: u32, burst: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * f64::from(rate) >= f64::from(burst)
    }

    /// About when the bucket will be full again if no token is taken: a little early rather than
    /// late (rounding), so whoever checks then must check [`Bucket::is_full`] too.
    fn full_at(&self, rate: u32, burst: u32) -> Instant {
        let missing = f64::from(burst) - self.tokens;
        if missing <= 0.0 {
            return self.last;
        }
        let wait = Duration::try_from_secs_f64(missing / f64::from(rate)).unwrap_or(Duration::MAX);
        let wait = wait.saturating_sub(Duration::from_micros(1));
        deadline(self.last, wait)
    }
}

/// A bucket in a [`SourceLimiter`] and when its one entry in the expiry queue falls due.
#[derive(Debug, Clone, Copy)]
struct Slot {
    bucket: Bucket,
    queued_at: Instant,
}

/// What a source is counted as: an IPv4 address, or the /64 an IPv6 address is in (one host
/// usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKey {
    /// An IPv4 address.
    V4(u32),
    /// The upper 64 bits of an IPv6 address.
    V6(u64),
}

impl SourceKey {
    /// The key of `source`.
    pub fn of(source: SocketAddr) -> Self {
        match canonical(source).ip() {
            IpAddr::V4(v4) => SourceKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => SourceKey::V6((u128::from(v6) >> 64) as u64),
        }
    }
}

/// Least time between two purges that a new source in a full table can cause: a flood of new
/// sources must not make every datagram scan the table.
const PURGE_EVERY: Duration = Duration::from_millis(100);

/// Token buckets per source, in a table of bounded size. When it is full of busy sources, a new
/// source is not tracked and an old one is never forgotten; whether an untracked source is then
/// refused (fails closed) or allowed (fails open) is the limiter's choice.
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: HashMap<SourceKey, Slot>,
    queue: ExpiryQueue<SourceKey>,
    rate: u32,
    burst: u32,
    capacity: usize,
    fail_open: bool,
    last_purge: Option<Instant>,
}

impl SourceLimiter {
    /// A limiter of `rate` per second with bursts of `burst`, for at most `capacity` sources,
    /// that refuses new sources while its table is full.
    pub fn new(rate: u32, burst: u32, capacity: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            queue: ExpiryQueue::default(),
            rate,
            burst,
            capacity,
            fail_open: false,
            last_purge: None,
        }
    }

    /// Like [`SourceLimiter::new`], but allows new sources while its table is full: for answers
    /// that cost little and prove nothing, where refusing strangers would lock out everyone new.
    pub fn failing_open(rate: u32, burst: u32, capacity: usize) -> Self {
        Self {
            fail_open: true,
            ..Self::new(rate, burst, capacity)
        }
    }

    /// Number of sources tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Takes a token for `source`; false when it has none. A new source while the table is full
    /// is refused, or allowed untracked when the limiter fails open.
    pub fn allow(&mut self, source: SocketAddr, now: Instant) -> bool {
        let key = SourceKey::of(source);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            let purged_lately = self
                .last_purge
                .is_some_and(|at| now.saturating_duration_since(at) < PURGE_EVERY);
            if !purged_lately {
                self.purge(now);
            }
            if self.buckets.len() >= self.capacity {
                return self.fail_open;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        if let Some(slot) = self.buckets.get_mut(&key) {
            // Queued already: a bucket only fills later for a token taken.
            return slot.bucket.take(rate, burst, now);
        }
        let mut bucket = Bucket::full(burst, now);
        let allowed = bucket.take(rate, burst, now);
        let queued_at = bucket.full_at(rate, burst);
        self.queue.push(queued_at, key);
        self.buckets.insert(key, Slot { bucket, queued_at });
        allowed
    }

    /// Forgets sources whose buckets have filled up again: they are indistinguishable from new.
    /// The work is proportional to the buckets that fell due.
    pub fn purge(&mut self, now: Instant) {
        self.last_purge = Some(now);
        self.purge_some(now, usize::MAX);
    }

    /// Forgets sources whose buckets have filled up again, looking at no more than `budget` that
    /// fell due. Returns how many it looked at: less than `budget` means nothing due is left.
    pub fn purge_some(&mut self, now: Instant, budget: usize) -> usize {
        let (buckets, rate, burst) = (&mut self.buckets, self.rate, self.burst);
        self.queue.run(now, budget, |key, at| {
            let Some(slot) = buckets.get_mut(key) else {
                return Verdict::Stale;
            };
            if slot.queued_at != at {
                return Verdict::Stale;
            }
            if slot.bucket.is_full(rate, burst, now) {
                buckets.remove(key);
                return Verdict::Expired;
            }
            let until = after(now, slot.bucket.full_at(rate, burst));
            slot.queued_at = until;
            Verdict::Alive(until)
        })
    }

    /// Forgets sources whose buckets have filled up again by scanning the table: the reference
    /// [`SourceLimiter::purge`] is tested against.
    #[cfg(test)]
    pub(super) fn sweep(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .retain(|_, s| !s.bucket.is_full(rate, burst, now));
    }

    /// The sources tracked, for tests to compare.
    #[cfg(test)]
    pub(super) fn tracked(&self) -> std::collections::BTreeSet<SourceKey> {
        self.buckets.keys().copied().collect()
    }
}

/// Counts initiations over the last whole second.
#[derive(Debug)]
pub struct LoadMeter {
    window_start: Instant,
    current: u32,
    previous: u32,
}

impl LoadMeter {
    /// A meter that has seen nothing.
    pub fn new(now: Instant) -> Self {
        Self {
            window_start: now,
            current: 0,
            previous: 0,
        }
    }

    /// Counts one initiation at `now`.
    pub fn note(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_secs(2) {
            self.previous = 0;
            self.current = 0;
            self.window_start = now;
        } else if elapsed >= Duration::from_secs(1) {
            self.previous = self.current;
            self.current = 0;
            self.window_start += Duration::from_secs(1);
        }
        self.current = self.current.saturating_add(1);
    }

    /// True when more than `threshold` initiations arrived in the last second or the current one.
    pub fn is_over(&self, threshold: u32) -> bool {
        self.current.max(self.previous) > threshold
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let now = Instant::now();
        let mut limiter = SourceLimiter::new(10, 5, 100);
        let source: SocketAddr = "198.51.100.7:1".parse().unwrap();
        assert_eq!((0..10).filter(|_| limiter.allow(source, now)).count(), 5);
        assert!(
            limiter.allow(source, now + Duration::from_millis(100)),
            "one token after 100 ms"
        );
        assert!(!limiter.allow(source, now + Duration::from_millis(100)));
        assert!(
            limiter.allow("198.51.100.8:1".parse().unwrap(), now),
            "other sources have their own"
        );
    }

    #[test]
    fn an_ipv6_64_is_one_source() {
        let now = Instant::now();
        let mut limiter = SourceLimiter::new(1, 1, 100);
        assert!(limiter.allow("[2001:db8:1:2::1]:1".parse().unwrap(), now));
        assert!(
            !limiter.allow("[2001:db8:1:2::ffff]:9".parse().unwrap(), now),
            "same /64"
        );
        assert!(
            limiter.allow("[2001:db8:1:3::1]:1".parse().unwrap(), now),
            "another /64"
        );
    }

    #[test]
    fn a_full_table_refuses_new_sources_until_old_ones_cool_down() {
        let now = Instant::now();
        let mut limiter = SourceLimiter::new(1, 2, 2);
        assert!(limiter.allow("198.51.100.1:1".parse().unwrap(), now));
        assert!(limiter.allow("198.51.100.2:1".parse().unwrap(), now));
        assert!(
            !limiter.allow("198.51.100.3:1".parse().unwrap(), now),
            "fails closed"
        );
        assert_eq!(limiter.len(), 2);
        assert!(
            limiter.allow(
                "198.51.100.3:1".parse().unwrap(),
                now + Duration::from_secs(2)
            ),
            "after refill"
        );
    }

    #[test]
    fn a_full_table_failing_open_lets_strangers_through_untracked() {
        let now = Instant::now();
        let mut limiter = SourceLimiter::failing_open(1, 1, 2);
        let busy: SocketAddr = "198.51.100.1:1".parse().unwrap();
        assert!(limiter.allow(busy, now));
        assert!(limiter.allow("198.51.100.2:1".parse().unwrap(), now));
        for n in 3..10u8 {
            let stranger = SocketAddr::new([198, 51, 100, n].into(), 1);
            assert!(limiter.allow(stranger, now), "fails open");
        }
        assert_eq!(limiter.len(), 2, "strangers are not tracked");
        assert!(
            !limiter.allow(busy, now),
            "tracked sources keep their limit"
        );
    }

    #[test]
    fn new_sources_in_a_full_table_purge_it_at_most_every_100_ms() {
        let now = Instant::now();
        let mut limiter = SourceLimiter::new(1, 1, 1);
        assert!(limiter.allow("198.51.100.1:1".parse().unwrap(), now));
        let stranger: SocketAddr = "198.51.100.2:1".parse().unwrap();
        assert!(!limiter.allow(stranger, now));
        // The first source has refilled after 1 s, but the purge that would drop it waits.
        let later = now + Duration::from_secs(1);
        limiter.last_purge = Some(later - Duration::from_millis(50));
        assert!(!limiter.allow(stranger, later), "purged 50 ms ago");
        assert!(
            limiter.allow(stranger, later + Duration::from_millis(60)),
            "purged again after 100 ms"
        );
    }

    #[test]
    fn the_meter_counts_the_last_second() {
        let now = Instant::now();
        let mut meter = LoadMeter::new(now);
        for _ in 0..11 {
            meter.note(now);
        }
        assert!(meter.is_over(10));
        meter.note(now + Duration::from_millis(1500));
        assert!(meter.is_over(10), "the previous second still counts");
        meter.note(now + Duration::from_secs(4));
        assert!(!meter.is_over(10));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allow(u8),
        Advance(u64),
        Expire(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..6u8).prop_map(Op::Allow),
            1 => prop_oneof![Just(100u64), Just(1), 0..3_000u64].prop_map(Op::Advance),
            1 => (1..5usize).prop_map(Op::Expire),
        ]
    }

    proptest! {
        #[test]
        fn purging_a_little_at_a_time_keeps_what_a_sweep_keeps(
            ops in proptest::collection::vec(op(), 1..120),
            (rate, burst, capacity) in (0..12u32, 0..6u32, 1..8usize),
            fail_open in any::<bool>(),
        ) {
            let make = || {
                if fail_open {
                    SourceLimiter::failing_open(rate, burst, capacity)
                } else {
                    SourceLimiter::new(rate, burst, capacity)
                }
            };
            let (mut a, mut b) = (make(), make());
            let mut now = Instant::now();
            for op in ops {
                match op {
                    Op::Allow(n) => {
                        let source = SocketAddr::new([198, 51, 100, n].into(), 1);
                        prop_assert_eq!(a.allow(source, now), b.allow(source, now));
                    }
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
                        prop_assert_eq!(a.tracked(), b.tracked());
                    }
                }
                prop_assert_eq!(a.queue.len(), a.len(), "one entry per source");
            }
        }
    }
}
