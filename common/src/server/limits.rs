//! Load protection: a meter of initiations per second, and token buckets per source network.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::wire::endpoint::canonical;

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
}

/// What a source is counted as: an IPv4 address, or the /64 an IPv6 address is in (one host
/// usually holds a whole /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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

/// Token buckets per source, in a table of bounded size that fails closed: when it is full of
/// busy sources, a new source is refused rather than an old one forgotten.
#[derive(Debug)]
pub struct SourceLimiter {
    buckets: HashMap<SourceKey, Bucket>,
    rate: u32,
    burst: u32,
    capacity: usize,
}

impl SourceLimiter {
    /// A limiter of `rate` per second with bursts of `burst`, for at most `capacity` sources.
    pub fn new(rate: u32, burst: u32, capacity: usize) -> Self {
        Self {
            buckets: HashMap::new(),
            rate,
            burst,
            capacity,
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

    /// Takes a token for `source`; false when it has none, or when the table is full.
    pub fn allow(&mut self, source: SocketAddr, now: Instant) -> bool {
        let key = SourceKey::of(source);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            self.purge(now);
            if self.buckets.len() >= self.capacity {
                return false;
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        self.buckets
            .entry(key)
            .or_insert_with(|| Bucket::full(burst, now))
            .take(rate, burst, now)
    }

    /// Forgets sources whose buckets have filled up again: they are indistinguishable from new.
    pub fn purge(&mut self, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        self.buckets.retain(|_, b| !b.is_full(rate, burst, now));
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
}
