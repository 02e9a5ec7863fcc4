//! Latency samples, their percentiles, and the server's memory as the kernel reports it.

use std::fmt;
use std::time::Duration;

/// Latency samples in microseconds.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, latency: Duration) {
        self.0
            .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
    }

    /// Appends the samples of `other`.
    pub fn merge(&mut self, other: Latencies) {
        self.0.extend(other.0);
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// p50, p90, p99 and max, or `None` without samples.
    pub fn summary(&mut self) -> Option<Summary> {
        if self.0.is_empty() {
            return None;
        }
        self.0.sort_unstable();
        let at = |q: f64| {
            // Nearest-rank percentile.
            let rank = (q * self.0.len() as f64).ceil() as usize;
            let index = rank.clamp(1, self.0.len()) - 1;
            self.0.get(index).copied().unwrap_or_default()
        };
        Some(Summary {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: self.0.last().copied().unwrap_or_default(),
        })
    }
}

/// Percentiles of a latency distribution, in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    p50: u32,
    p90: u32,
    p99: u32,
    max: u32,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |us: u32| f64::from(us) / 1000.0;
        write!(
            f,
            "p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.max)
        )
    }
}

/// Prints one latency line, or says there were no samples.
pub fn print_latency(name: &str, latencies: &mut Latencies) {
    let n = latencies.len();
    match latencies.summary() {
        Some(summary) => println!("{name:<22} {summary} ({n} samples)"),
        None => println!("{name:<22} no samples"),
    }
}

/// A rate per second over `elapsed`.
pub fn per_second(count: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// One field of `/proc/<pid>/status` in KiB, e.g. `VmHWM` (peak resident memory) or `VmRSS`.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ, 100 on Linux).
const USER_HZ: f64 = 100.0;

/// CPU time (user + system) a process has used so far, from `/proc/<pid>/stat` (`self` for us).
pub fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces), starting at field 3 (state).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// CPU used by the server and by us since `before` (from [`cpu_now`]), over `elapsed`.
pub fn print_cpu(server_pid: Option<u32>, before: (Option<f64>, Option<f64>), elapsed: Duration) {
    let (server, ours) = cpu_now(server_pid);
    let secs = elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    let show = |now: Option<f64>, then: Option<f64>| match (now, then) {
        (Some(now), Some(then)) => {
            format!(
                "{:.1} s ({:.0}% of a core)",
                now - then,
                (now - then) / secs * 100.0
            )
        }
        _ => "unknown".to_owned(),
    };
    println!(
        "cpu                    server {}, bench {}",
        show(server, before.0),
        show(ours, before.1)
    );
}

/// The CPU seconds used so far by the server (if its pid is known) and by us.
pub fn cpu_now(server_pid: Option<u32>) -> (Option<f64>, Option<f64>) {
    (
        server_pid.and_then(|pid| proc_cpu_secs(&pid.to_string())),
        proc_cpu_secs("self"),
    )
}

/// Prints the server's peak and current resident memory, if its pid is known and readable.
pub fn print_server_memory(pid: Option<u32>) {
    let Some(pid) = pid else {
        println!("server memory          unknown (pass --server-pid)");
        return;
    };
    match (proc_status_kib(pid, "VmHWM"), proc_status_kib(pid, "VmRSS")) {
        (Some(hwm), Some(rss)) => println!(
            "server memory          peak (VmHWM) {:.1} MiB, now (VmRSS) {:.1} MiB",
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        ),
        _ => println!("server memory          /proc/{pid}/status not readable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for us in 1..=100u64 {
            l.record(Duration::from_micros(us));
        }
        let s = l.summary().unwrap();
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50, 90, 99, 100));
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        assert!(proc_cpu_secs("self").is_some());
    }

    #[test]
    fn no_samples_no_summary() {
        assert!(Latencies::default().summary().is_none());
    }
}
