//! Background processes, stopped by pid on drop (SIGTERM, then SIGKILL).
//!
//! What a process prints goes to two files in a private temporary directory, so a chatty daemon can
//! never block on a full pipe and its log can be read at any time. When a test panics, every
//! process still owned dumps the tail of its log on drop, labelled, so a failure explains itself.

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::{quote_output, Output, POLL_INTERVAL};
use crate::netns::NsInner;
use crate::tempdir::TempDir;

/// How long a process gets to exit after SIGTERM before it is sent SIGKILL.
pub const TERM_GRACE: Duration = Duration::from_secs(3);

/// Lines of a process's stderr shown in error messages and panic dumps.
const LOG_TAIL_LINES: usize = 40;

/// A running (or finished) child process.
pub struct Process {
    label: String,
    command: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _logs: TempDir,
    // Keeps the namespace the process runs in until the process is gone.
    _netns: Option<Arc<NsInner>>,
}

impl Process {
    pub(crate) fn spawn(
        label: &str,
        command_line: String,
        mut command: Command,
        netns: Option<Arc<NsInner>>,
    ) -> Result<Self> {
        let logs = TempDir::new(&format!("log-{}", sanitize(label)))?;
        let stdout_path = logs.join("stdout");
        let stderr_path = logs.join("stderr");
        let stdout = File::create(&stdout_path)
            .with_context(|| format!("creating {}", stdout_path.display()))?;
        let stderr = File::create(&stderr_path)
            .with_context(|| format!("creating {}", stderr_path.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {label}: `{command_line}`"))?;
        Ok(Self {
            label: label.to_owned(),
            command: command_line,
            child,
            status: None,
            stdout_path,
            stderr_path,
            _logs: logs,
            _netns: netns,
        })
    }

    /// The name given at spawn time.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The process id (the program itself: `ip netns exec` and `setpriv` exec in place).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything printed on stdout so far.
    pub fn stdout(&self) -> String {
        fs::read(&self.stdout_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Everything printed on stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last lines of stderr (and of stdout, if it printed anything there), labelled, for
    /// error messages.
    pub fn log_tail(&self) -> String {
        let mut text = format!(
            "{} (`{}`) stderr: {}",
            self.label,
            self.command,
            quote_output(&tail(&self.stderr(), LOG_TAIL_LINES))
        );
        let stdout = self.stdout();
        if !stdout.trim().is_empty() {
            text.push_str(&format!(
                "; stdout: {}",
                quote_output(&tail(&stdout, LOG_TAIL_LINES))
            ));
        }
        text
    }

    /// The exit status if it has exited, without waiting.
    pub fn try_status(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .with_context(|| format!("checking whether {} exited", self.label))?;
        }
        Ok(self.status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> Result<bool> {
        Ok(self.try_status()?.is_none())
    }

    /// Fails with the log tail if the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_status()? {
            bail!(
                "{} exited early with {status}; {}",
                self.label,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit on its own. On timeout the process keeps
    /// running (drop stops it) and the error says what it printed.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Output> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.try_status()?.is_some() {
                return Ok(self.output());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {timeout:?}; stdout: {}; {}",
                    self.label,
                    quote_output(&self.stdout()),
                    self.log_tail()
                );
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// Stops the process: SIGTERM, up to [`TERM_GRACE`] to exit, then SIGKILL.
    pub fn stop(&mut self) -> Result<Output> {
        if self.try_status()?.is_none() {
            let pid = Pid::from_raw(self.child.id() as i32);
            // The child is not reaped yet, so the pid is still ours.
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + TERM_GRACE;
            while self.try_status()?.is_none() && Instant::now() < deadline {
                thread::sleep(POLL_INTERVAL);
            }
            if self.try_status()?.is_none() {
                let _ = kill(pid, Signal::SIGKILL);
                let status = self
                    .child
                    .wait()
                    .with_context(|| format!("waiting for {} after SIGKILL", self.label))?;
                self.status = Some(status);
            }
        }
        Ok(self.output())
    }

    fn output(&self) -> Output {
        Output {
            command: self.command.clone(),
            status: self.status.expect("output() after exit"),
            stdout: self.stdout(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("e2e cleanup: stopping {}: {e:#}", self.label);
        }
        if thread::panicking() {
            eprintln!("e2e: {}", self.log_tail());
        }
    }
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("label", &self.label)
            .field("pid", &self.child.id())
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let skip = lines.len().saturating_sub(n);
    let mut out = String::new();
    if skip > 0 {
        out.push_str(&format!("[{skip} earlier lines]\n"));
    }
    out.push_str(&lines[skip..].join("\n"));
    out
}

fn sanitize(label: &str) -> String {
    label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::Cmd;

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "[1 earlier lines]\nb\nc");
        assert_eq!(tail("a\n", 5), "a");
    }

    #[test]
    fn stop_terminates_and_drop_reaps() {
        let mut p = Cmd::new("/bin/sleep")
            .unwrap()
            .arg("30")
            .spawn("sleeper")
            .unwrap();
        assert!(p.is_running().unwrap());
        let started = Instant::now();
        let out = p.stop().unwrap();
        assert!(started.elapsed() < TERM_GRACE);
        assert_eq!(out.code(), None, "killed by SIGTERM");
    }

    #[test]
    fn stop_escalates_to_sigkill_when_sigterm_is_ignored() {
        let mut p = Cmd::new("/bin/sh")
            .unwrap()
            .args([
                "-c",
                "trap '' TERM; echo ready; while :; do sleep 0.1; done",
            ])
            .spawn("stubborn")
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !p.stdout().contains("ready") && Instant::now() < deadline {
            thread::sleep(POLL_INTERVAL);
        }
        let out = p.stop().unwrap();
        assert_eq!(out.code(), None, "killed by SIGKILL");
    }

    #[test]
    fn wait_timeout_returns_output_or_explains() {
        let mut p = Cmd::new("/bin/sh")
            .unwrap()
            .args(["-c", "echo hi; echo oops >&2; exit 4"])
            .spawn("quick")
            .unwrap();
        let out = p.wait_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(out.code(), Some(4));
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "oops\n");

        let mut slow = Cmd::new("/bin/sleep")
            .unwrap()
            .arg("30")
            .spawn("slow")
            .unwrap();
        let err = slow.wait_timeout(Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("slow did not exit"), "{err}");
    }
}
