//! Virtual time: a seeded random generator, a clock, and a queue of deliveries ordered by time
//! and then by sequence number, so that every run with the same seed is the same run.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant, SystemTime};

/// A xorshift64* generator: tiny, seeded, and good enough for loss and port choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (zero is replaced, xorshift must not start at zero).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1) ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.next_u64() % (high - low + 1)
    }

    /// True with `percent` per cent probability.
    pub fn chance(&mut self, percent: u64) -> bool {
        percent > 0 && self.next_u64() % 100 < percent
    }

    /// 32 random bytes, to seed a protocol machine.
    pub fn seed(&mut self) -> [u8; 32] {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        seed
    }
}

/// The virtual clock: monotonic and wall time move together from fixed bases.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
    wall_base: SystemTime,
    elapsed: Duration,
}

impl Clock {
    /// A clock at virtual time zero.
    pub fn new() -> Self {
        Self {
            base: Instant::now(),
            wall_base: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            elapsed: Duration::ZERO,
        }
    }

    /// The monotonic time now.
    pub fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// The wall-clock time now.
    pub fn wall(&self) -> SystemTime {
        self.wall_base + self.elapsed
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Moves to `to`; time never goes back.
    pub fn advance_to(&mut self, to: Instant) {
        let target = to.saturating_duration_since(self.base);
        self.elapsed = self.elapsed.max(target);
    }
}

/// Something due at a time, with a sequence number that breaks ties in insertion order.
struct Entry<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Deliveries in the order they fall due.
pub struct Queue<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    seq: u64,
}

impl<T> Queue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::new(),
            seq: 0,
        }
    }

    /// Schedules `item` at `at`.
    pub fn push(&mut self, at: Instant, item: T) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            at,
            seq: self.seq,
            item,
        }));
    }

    /// When the next item is due.
    pub fn next_at(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The next item if it is due at or before `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<T> {
        if self.next_at()? <= now {
            self.heap.pop().map(|Reverse(e)| e.item)
        } else {
            None
        }
    }
}
