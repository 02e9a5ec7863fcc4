//! Bounded waiting.

use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Interval between two checks of a condition.
pub const WAIT_INTERVAL: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Some` or `timeout` passes; the timeout error names `what` was
/// awaited. An error from `check` ends the wait at once.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(WAIT_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_names_what_it_waited_for() {
        let err = wait_until("the moon", Duration::from_millis(60), || Ok(None::<()>)).unwrap_err();
        assert_eq!(err.to_string(), "timed out after 60ms waiting for the moon");
        let mut n = 0;
        let v = wait_until("three calls", Duration::from_secs(5), || {
            n += 1;
            Ok((n == 3).then_some(n))
        })
        .unwrap();
        assert_eq!(v, 3);
    }
}
