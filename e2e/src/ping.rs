//! A ping that keeps running (`ping -D -n -O -i 0.2`) in a namespace, for measuring when a tunnel
//! answers again after the network changed under it.
//!
//! `-D` prefixes every line with the wall-clock time it was printed (`[1796190743.241008]`), so
//! the time of each echo reply is read back from the log after the fact; `-O` adds a line for
//! every request that got no answer before the next was sent.

use std::net::Ipv4Addr;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::process::Process;

/// Interval between two echo requests of a [`RunningPing`].
pub const RUNNING_PING_INTERVAL: Duration = Duration::from_millis(200);

/// Interval between two reads of the log while waiting for a reply.
const READ_INTERVAL: Duration = Duration::from_millis(50);

/// `ping -D -n -O -i 0.2 TARGET` running in the background until dropped.
#[derive(Debug)]
pub struct RunningPing {
    target: Ipv4Addr,
    process: Process,
}

impl RunningPing {
    /// Starts pinging `target` from `ns`.
    pub fn start(ns: &Netns, target: Ipv4Addr) -> Result<Self> {
        let interval = format!("{:.1}", RUNNING_PING_INTERVAL.as_secs_f64());
        let process = ns
            .cmd("ping")?
            .args(["-D", "-n", "-O", "-i", &interval])
            .arg(target.to_string())
            .spawn(&format!("ping {target} in {}", ns.label()))?;
        Ok(Self { target, process })
    }

    /// The address it pings.
    pub fn target(&self) -> Ipv4Addr {
        self.target
    }

    /// The times of every echo reply so far, in order.
    pub fn replies(&self) -> Vec<SystemTime> {
        parse_ping_replies(&self.process.stdout())
    }

    /// The time of the first echo reply after `after`, if there was one yet.
    pub fn first_reply_after(&self, after: SystemTime) -> Option<SystemTime> {
        first_reply_after(&self.process.stdout(), after)
    }

    /// How many requests got no answer in time so far (`-O` lines).
    pub fn missed(&self) -> usize {
        self.process
            .stdout()
            .lines()
            .filter(|l| l.contains("no answer yet"))
            .count()
    }

    /// Waits up to `timeout` (counted from `after`) for an echo reply after `after`; returns how
    /// long after `after` it came. An error from `abort` (a client that died) ends the wait, as
    /// does ping exiting.
    pub fn wait_reply_after(
        &mut self,
        after: SystemTime,
        timeout: Duration,
        mut abort: impl FnMut() -> Result<()>,
    ) -> Result<Duration> {
        loop {
            if let Some(reply) = self.first_reply_after(after) {
                return Ok(reply.duration_since(after).unwrap_or_default());
            }
            let waited = SystemTime::now().duration_since(after).unwrap_or_default();
            if waited >= timeout {
                bail!(
                    "no echo reply from {} within {timeout:?} ({} requests unanswered so far); {}",
                    self.target,
                    self.missed(),
                    self.process.log_tail()
                );
            }
            abort()?;
            self.process
                .ensure_running()
                .with_context(|| format!("pinging {}", self.target))?;
            thread::sleep(READ_INTERVAL);
        }
    }
}

/// The times of the echo replies in `ping -D` output: lines `[SECS.MICROS] N bytes from ...`.
/// Other lines (the banner, `-O`'s `no answer yet`, errors) are skipped.
pub fn parse_ping_replies(text: &str) -> Vec<SystemTime> {
    text.lines().filter_map(reply_time).collect()
}

/// The time of the first echo reply after `after` in `ping -D` output.
pub fn first_reply_after(text: &str, after: SystemTime) -> Option<SystemTime> {
    text.lines().filter_map(reply_time).find(|t| *t > after)
}

fn reply_time(line: &str) -> Option<SystemTime> {
    let (stamp, rest) = line.strip_prefix('[')?.split_once(']')?;
    if !rest.contains(" bytes from ") {
        return None;
    }
    let (secs, fraction) = stamp.split_once('.').unwrap_or((stamp, ""));
    let secs: u64 = secs.parse().ok()?;
    let nanos = match fraction {
        "" => 0,
        f if f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{f:0<9}").parse::<u32>().ok()?
        }
        _ => return None,
    };
    Some(UNIX_EPOCH + Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "PING 192.0.2.2 (192.0.2.2) 56(84) bytes of data.\n\
        [1796190743.241008] 64 bytes from 192.0.2.2: icmp_seq=1 ttl=64 time=0.256 ms\n\
        [1796190743.445025] no answer yet for icmp_seq=2\n\
        [1796190743.649005] no answer yet for icmp_seq=3\n\
        [1796190745.853054] 64 bytes from 192.0.2.2: icmp_seq=4 ttl=64 time=1.5 ms\n\
        [1796190746.0569] 64 bytes from 192.0.2.2: icmp_seq=5 ttl=64 time=0.051 ms\n";

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::new(secs, micros * 1000)
    }

    #[test]
    fn replies_are_read_from_their_timestamps_and_misses_skipped() {
        assert_eq!(
            parse_ping_replies(LOG),
            [
                at(1796190743, 241008),
                at(1796190745, 853054),
                at(1796190746, 56900)
            ]
        );
    }

    #[test]
    fn first_reply_after_skips_replies_up_to_the_instant() {
        assert_eq!(
            first_reply_after(LOG, at(1796190743, 241008)),
            Some(at(1796190745, 853054))
        );
        assert_eq!(
            first_reply_after(LOG, UNIX_EPOCH),
            Some(at(1796190743, 241008))
        );
        assert_eq!(first_reply_after(LOG, at(1796190746, 56900)), None);
    }

    #[test]
    fn malformed_stamps_are_not_replies() {
        for line in [
            "[x.1] 64 bytes from 192.0.2.2",
            "[12.1234567890] 64 bytes from 192.0.2.2",
            "12.5 64 bytes from 192.0.2.2",
            "[12.5 64 bytes from 192.0.2.2",
        ] {
            assert!(parse_ping_replies(line).is_empty(), "{line}");
        }
    }
}
