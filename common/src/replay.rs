//! The anti-replay window of a session's receiving side (a sliding bitmap, as in RFC 6479).
//!
//! [`ReplayWindow::check`] runs before decryption, so forged packets cost no AEAD work when their
//! counter is stale; [`ReplayWindow::update`] runs only after a packet decrypted, so forged packets
//! never move the window.

/// How many counters behind the highest one seen are still accepted.
pub const WINDOW_SIZE: u64 = 1024;

/// Counters at or above this are never accepted (a session must rekey long before).
pub const REJECT_AFTER_MESSAGES: u64 = 1 << 60;

const WORD_BITS: u64 = 64;
const WORDS: usize = (WINDOW_SIZE / WORD_BITS) as usize;

/// Which counters of the last [`WINDOW_SIZE`] have been received.
#[derive(Debug, Clone, Default)]
pub struct ReplayWindow {
    /// One more than the highest counter accepted; 0 when none was.
    next: u64,
    bitmap: [u64; WORDS],
}

fn slot(counter: u64) -> (usize, u64) {
    let bit = counter % WINDOW_SIZE;
    ((bit / WORD_BITS) as usize, 1 << (bit % WORD_BITS))
}

impl ReplayWindow {
    /// A window that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when `counter` is new: not seen before, not too old, not past the limit.
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - counter > WINDOW_SIZE {
            return false;
        }
        let (word, mask) = slot(counter);
        self.bitmap.get(word).is_some_and(|w| w & mask == 0)
    }

    /// Records `counter` as received; returns false (and changes nothing) if it is not new.
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Clear the slots of the counters skipped over, at most a whole window's worth.
            let skipped = (counter - self.next).min(WINDOW_SIZE);
            for c in counter - skipped..counter {
                let (word, mask) = slot(c);
                if let Some(w) = self.bitmap.get_mut(word) {
                    *w &= !mask;
                }
            }
            self.next = counter + 1;
        }
        let (word, mask) = slot(counter);
        if let Some(w) = self.bitmap.get_mut(word) {
            *w |= mask;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn accepts_each_counter_once_in_any_order() {
        let mut w = ReplayWindow::new();
        for c in [0, 2, 1, 5, 3] {
            assert!(w.update(c), "{c}");
            assert!(!w.update(c), "replayed {c}");
        }
        assert!(w.check(4));
    }

    #[test]
    fn rejects_counters_that_fell_out_of_the_window() {
        let mut w = ReplayWindow::new();
        assert!(w.update(5000));
        assert!(!w.check(5000 - WINDOW_SIZE));
        assert!(w.check(5000 - WINDOW_SIZE + 1));
        assert!(!w.check(REJECT_AFTER_MESSAGES));
    }

    #[test]
    fn a_big_jump_clears_stale_bits() {
        let mut w = ReplayWindow::new();
        assert!(w.update(3));
        assert!(w.update(3 + WINDOW_SIZE * 3));
        assert!(
            w.update(3 + WINDOW_SIZE * 2 + 1),
            "slot of 3 must have been cleared"
        );
    }

    /// The model: a counter is accepted iff it is below the limit, was never accepted, and is
    /// within WINDOW_SIZE of the highest accepted one.
    fn model_accepts(seen: &BTreeSet<u64>, counter: u64) -> bool {
        let highest = seen.iter().next_back().copied();
        counter < REJECT_AFTER_MESSAGES
            && !seen.contains(&counter)
            && highest.is_none_or(|h| counter > h || h - counter < WINDOW_SIZE)
    }

    proptest! {
        #[test]
        fn matches_a_set_model(steps in proptest::collection::vec((0u64..4096, any::<bool>()), 1..400)) {
            let mut window = ReplayWindow::new();
            let mut seen = BTreeSet::new();
            for (delta, jump) in steps {
                // Mostly counters near the top of the window, sometimes far jumps ahead.
                let top = seen.iter().next_back().copied().unwrap_or(0);
                let counter = if jump { top + delta } else { top.saturating_sub(delta / 2) };
                let expected = model_accepts(&seen, counter);
                prop_assert_eq!(window.check(counter), expected, "check {}", counter);
                prop_assert_eq!(window.update(counter), expected, "update {}", counter);
                if expected {
                    seen.insert(counter);
                }
            }
        }
    }
}
