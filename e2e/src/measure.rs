//! Figures for the record: besides its human sentence, a scenario prints each figure it measured
//! as one machine-readable line on stderr, which `scripts/bench-connect` collects:
//!
//! ```text
//! MEASURE scenario=masquerade metric=first_ping seconds=3.204
//! ```
//!
//! These are measurements, not assertions: a scenario's budgets only bound how long it waits.

use std::time::Duration;

/// The first word of a measurement line.
pub const MEASURE_PREFIX: &str = "MEASURE";

/// `MEASURE scenario=<scenario> metric=<metric> seconds=<x.xxx>`.
///
/// # Panics
///
/// If `scenario` or `metric` is empty or holds anything but ASCII letters, digits, `_` and `-`
/// (a name that would break the line's format is a bug in the test).
pub fn measure_line(scenario: &str, metric: &str, elapsed: Duration) -> String {
    for (what, name) in [("scenario", scenario), ("metric", metric)] {
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{what} name {name:?} must be a word of [A-Za-z0-9_-]"
        );
    }
    format!(
        "{MEASURE_PREFIX} scenario={scenario} metric={metric} seconds={:.3}",
        elapsed.as_secs_f64()
    )
}

/// Prints [`measure_line`] on stderr (one `eprintln!`, so parallel tests never split a line).
pub fn measure(scenario: &str, metric: &str, elapsed: Duration) {
    eprintln!("{}", measure_line(scenario, metric, elapsed));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_line_has_three_fields_and_millisecond_seconds() {
        assert_eq!(
            measure_line("masquerade", "first_ping", Duration::from_micros(3_204_499)),
            "MEASURE scenario=masquerade metric=first_ping seconds=3.204"
        );
        assert_eq!(
            measure_line("a-b", "recovery", Duration::from_secs(105)),
            "MEASURE scenario=a-b metric=recovery seconds=105.000"
        );
    }

    #[test]
    #[should_panic(expected = "must be a word")]
    fn measure_line_refuses_a_name_with_a_space() {
        measure_line("masquerade nat", "first_ping", Duration::ZERO);
    }
}
