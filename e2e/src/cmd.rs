//! Running commands with a deadline and capturing what they print.
//!
//! Every external program the test bed runs goes through [`Cmd`]: the program is resolved to an
//! absolute path up front (so `ip netns exec` and `setpriv` never depend on `PATH`), the run has a
//! timeout, and every error names the full command line and what it printed on stderr.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::netns::NsInner;
use crate::prereq::tool;
use crate::process::Process;

/// How long a [`Cmd`] may run unless told otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// Interval at which running children are polled for exit.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A command line to run, optionally inside a network namespace and as user `nobody`.
#[derive(Clone)]
pub struct Cmd {
    netns: Option<Arc<NsInner>>,
    as_nobody: bool,
    program: PathBuf,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    /// A command running `program` (a bare name is looked up now, see [`tool`]).
    pub fn new(program: impl AsRef<OsStr>) -> Result<Self> {
        let program = program.as_ref();
        let program = if program.to_string_lossy().contains('/') {
            PathBuf::from(program)
        } else {
            tool(&program.to_string_lossy())?
        };
        Ok(Self {
            netns: None,
            as_nobody: false,
            program,
            args: Vec::new(),
            envs: Vec::new(),
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    pub(crate) fn in_netns(mut self, ns: Arc<NsInner>) -> Self {
        self.netns = Some(ns);
        self
    }

    /// Runs the program through `setpriv` as `nobody:nogroup`, no groups, no inheritable caps.
    pub fn as_nobody(mut self) -> Self {
        self.as_nobody = true;
        self
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the program.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Bytes fed to the program's standard input (otherwise it reads from `/dev/null`).
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// The deadline for [`Cmd::run`] and [`Cmd::run_ok`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The full argument vector actually executed, wrappers included.
    pub fn argv(&self) -> Result<Vec<OsString>> {
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(ns) = &self.netns {
            argv.push(tool("ip")?.into());
            argv.extend(["netns", "exec"].map(OsString::from));
            argv.push(ns.name.clone().into());
        }
        if self.as_nobody {
            argv.push(tool("setpriv")?.into());
            argv.extend(
                [
                    "--reuid=nobody",
                    "--regid=nogroup",
                    "--clear-groups",
                    "--inh-caps=-all",
                ]
                .map(OsString::from),
            );
        }
        argv.push(self.program.clone().into());
        argv.extend(self.args.iter().cloned());
        Ok(argv)
    }

    /// The command line as one shell-like string, for messages.
    pub fn display(&self) -> String {
        match self.argv() {
            Ok(argv) => shell_words(&argv),
            Err(_) => shell_words(
                &std::iter::once(self.program.clone().into_os_string())
                    .chain(self.args.iter().cloned())
                    .collect::<Vec<_>>(),
            ),
        }
    }

    fn command(&self) -> Result<Command> {
        let argv = self.argv()?;
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        for (k, v) in &self.envs {
            command.env(k, v);
        }
        Ok(command)
    }

    /// Runs to completion (bounded by the timeout) and returns whatever the exit status.
    pub fn run(&self) -> Result<Output> {
        let line = self.display();
        let mut command = self.command()?;
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .with_context(|| format!("starting `{line}`"))?;

        let writer = match (child.stdin.take(), self.stdin.clone()) {
            (Some(mut pipe), Some(input)) => Some(thread::spawn(move || {
                // A program that exits without reading its input is not an error here.
                let _ = pipe.write_all(&input);
            })),
            _ => None,
        };
        let stdout = reader(child.stdout.take());
        let stderr = reader(child.stderr.take());

        let deadline = Instant::now() + self.timeout;
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for `{line}`"))?
            {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(POLL_INTERVAL);
        };
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        let stdout = join_reader(stdout);
        let stderr = join_reader(stderr);
        match status {
            Some(status) => Ok(Output {
                command: line,
                status,
                stdout,
                stderr,
            }),
            None => bail!(
                "`{line}` did not finish within {:?} and was killed; stderr: {}",
                self.timeout,
                quote_output(&stderr)
            ),
        }
    }

    /// Runs to completion and fails unless the exit status is 0.
    pub fn run_ok(&self) -> Result<Output> {
        let output = self.run()?;
        output.ensure_success()?;
        Ok(output)
    }

    /// Starts the program in the background; see [`Process`].
    pub fn spawn(&self, label: &str) -> Result<Process> {
        Process::spawn(label, self.display(), self.command()?, self.netns.clone())
    }
}

impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Standard input may carry a private key: show only the command line.
        f.debug_struct("Cmd")
            .field("command", &self.display())
            .finish_non_exhaustive()
    }
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
}

fn join_reader(handle: Option<thread::JoinHandle<Vec<u8>>>) -> String {
    handle
        .and_then(|h| h.join().ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// What a finished command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub command: String,
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Output {
    /// The exit code, `None` when killed by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Fails, naming the command and its output, unless the exit status is 0.
    pub fn ensure_success(&self) -> Result<()> {
        if !self.status.success() {
            bail!("{self}");
        }
        Ok(())
    }

    /// Fails, naming the command and its output, unless the exit code is `expected`.
    pub fn ensure_code(&self, expected: i32) -> Result<()> {
        if self.code() != Some(expected) {
            bail!("expected exit code {expected}: {self}");
        }
        Ok(())
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}; stdout: {}; stderr: {}",
            self.command,
            self.status,
            quote_output(&self.stdout),
            quote_output(&self.stderr)
        )
    }
}

/// Output for an error message: trimmed, `(empty)` when there is none.
pub(crate) fn quote_output(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        "(empty)".to_owned()
    } else {
        format!("\n---\n{text}\n---")
    }
}

/// Joins arguments into a string that reads like the shell command.
fn shell_words(argv: &[OsString]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%[]".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quotes_only_what_needs_it() {
        let argv = ["ip", "-n", "ns 1", "it's", ""].map(OsString::from);
        assert_eq!(shell_words(&argv), r"ip -n 'ns 1' 'it'\''s' ''");
    }

    #[test]
    fn run_captures_stdout_stderr_and_code() {
        let out = Cmd::new("/bin/sh")
            .unwrap()
            .args(["-c", "echo out; echo err >&2; exit 3"])
            .run()
            .unwrap();
        assert_eq!(out.code(), Some(3));
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        let err = out.ensure_success().unwrap_err().to_string();
        assert!(err.contains("/bin/sh -c"), "{err}");
        assert!(err.contains("err"), "{err}");
    }

    #[test]
    fn run_feeds_stdin() {
        let out = Cmd::new("/bin/cat")
            .unwrap()
            .stdin("hello")
            .run_ok()
            .unwrap();
        assert_eq!(out.stdout, "hello");
    }

    #[test]
    fn run_kills_a_command_past_its_timeout() {
        let started = Instant::now();
        let err = Cmd::new("/bin/sleep")
            .unwrap()
            .arg("10")
            .timeout(Duration::from_millis(200))
            .run()
            .unwrap_err()
            .to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.contains("/bin/sleep 10"), "{err}");
        assert!(err.contains("did not finish"), "{err}");
    }
}
