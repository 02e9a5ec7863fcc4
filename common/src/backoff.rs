//! Retransmission delays: exponential backoff with jitter, shared by both clients.

use std::time::Duration;

use crate::noise::Rng;

/// The delay before the retransmission that follows `attempts` sends: `initial` doubled per
/// attempt (at most 16 doublings), capped at `max`, then moved by a random jitter of up to a
/// quarter either way so that clients that started together spread out.
pub(crate) fn delay(initial: Duration, max: Duration, attempts: u32, rng: &mut Rng) -> Duration {
    let base = initial.saturating_mul(1 << attempts.min(16)).min(max);
    let quarter = base / 4;
    let jitter_ns = u64::try_from(quarter.as_nanos())
        .unwrap_or(0)
        .saturating_mul(2);
    let offset = if jitter_ns == 0 {
        0
    } else {
        rng.next_u64() % jitter_ns
    };
    base - quarter + Duration::from_nanos(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INITIAL: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(8);

    fn within_a_quarter_of(delay: Duration, base: Duration) -> bool {
        delay >= base - base / 4 && delay < base + base / 4
    }

    #[test]
    fn doubles_per_attempt_until_the_cap() {
        let mut rng = Rng::from_seed([1; 32]);
        for (attempts, base) in [
            (0, 500),
            (1, 1000),
            (2, 2000),
            (4, 8000),
            (9, 8000),
            (99, 8000),
        ] {
            let d = delay(INITIAL, MAX, attempts, &mut rng);
            assert!(
                within_a_quarter_of(d, Duration::from_millis(base)),
                "attempt {attempts}: {d:?}"
            );
        }
    }

    #[test]
    fn jitter_spreads_clients_that_start_together() {
        let delays: Vec<Duration> = (0..8u8)
            .map(|seed| delay(INITIAL, MAX, 3, &mut Rng::from_seed([seed; 32])))
            .collect();
        assert!(delays.iter().any(|d| *d != delays[0]));
    }

    #[test]
    fn a_zero_delay_stays_zero() {
        let mut rng = Rng::from_seed([1; 32]);
        assert_eq!(delay(Duration::ZERO, MAX, 3, &mut rng), Duration::ZERO);
    }
}
