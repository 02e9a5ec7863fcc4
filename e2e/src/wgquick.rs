//! Interfaces brought up by `wg-quick up FILE` inside a namespace, and the `wireguard-go` daemons
//! wg-quick starts for them when the kernel has no WireGuard module.
//!
//! wg-quick's `wireguard-go` forks into the background, so no [`Process`](crate::Process) owns
//! it: [`WgQuick`] finds it by its command line (`wireguard-go IFACE`, and interface names are
//! unique, see [`global_ifname`](crate::global_ifname)) and stops it by pid on drop.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::cmd::Cmd;
use crate::netns::Netns;
use crate::process::TERM_GRACE;
use crate::wg::socket_path;

/// An interface brought up by `wg-quick up FILE` in a namespace. Dropping it runs `wg-quick
/// down FILE`, then stops any `wireguard-go` left for the interface (SIGTERM, then SIGKILL) and
/// removes its UAPI socket, also when a test panics.
#[derive(Debug)]
pub struct WgQuick {
    ns: Netns,
    name: String,
    conf: PathBuf,
}

impl WgQuick {
    /// `wg-quick up CONF` in `ns`. The interface is named after the file (`wg0.conf`: `wg0`).
    /// Fails if wg-quick warns that the file is readable by others.
    pub fn up(ns: &Netns, conf: &Path) -> Result<Self> {
        let name = conf
            .file_stem()
            .and_then(OsStr::to_str)
            .with_context(|| format!("no interface name in {}", conf.display()))?
            .to_owned();
        // From here on, drop cleans up whatever `wg-quick up` got to start.
        let iface = Self {
            ns: ns.clone(),
            name,
            conf: conf.to_owned(),
        };
        let out = iface
            .wg_quick("up")?
            .run_ok()
            .with_context(|| format!("bringing up {} in {}", iface.name, ns.name()))?;
        ensure!(
            !out.stderr.contains("accessible"),
            "wg-quick warns about the file's permissions: {out}"
        );
        Ok(iface)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace it lives in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// `wg show NAME what` (`endpoints`, `dump`, ...), raw.
    pub fn show(&self, what: &str) -> Result<String> {
        Ok(self.ns.run("wg", ["show", &self.name, what])?.stdout)
    }

    fn wg_quick(&self, verb: &str) -> Result<Cmd> {
        Ok(self
            .ns
            .cmd("wg-quick")?
            .args([OsStr::new(verb), self.conf.as_os_str()])
            // With LOG_LEVEL set, the daemon would keep the command's output pipes open.
            .env("LOG_LEVEL", ""))
    }
}

impl Drop for WgQuick {
    fn drop(&mut self) {
        if socket_path(&self.name).exists() {
            let down = self.wg_quick("down").and_then(|c| c.run_ok());
            if let Err(e) = down {
                eprintln!("e2e cleanup: wg-quick down {}: {e:#}", self.name);
            }
        }
        for pid in wireguard_go_pids(&self.name) {
            stop_pid(pid, &self.name);
        }
        let socket = socket_path(&self.name);
        if socket.exists() {
            if let Err(e) = fs::remove_file(&socket) {
                eprintln!("e2e cleanup: removing {}: {e}", socket.display());
            }
        }
    }
}

/// The pids of the running `wireguard-go IFACE` processes.
pub fn wireguard_go_pids(iface: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            // A zombie's command line reads empty, so it never matches.
            let cmdline = fs::read(entry.path().join("cmdline")).ok()?;
            is_wireguard_go_for(&cmdline, iface).then_some(pid)
        })
        .collect()
}

/// Whether a `/proc/PID/cmdline` is `[/path/]wireguard-go IFACE ...`.
fn is_wireguard_go_for(cmdline: &[u8], iface: &str) -> bool {
    let mut argv = cmdline.split(|b| *b == 0);
    let program = argv
        .next()
        .and_then(|p| Path::new(OsStr::from_bytes(p)).file_name());
    program == Some(OsStr::new("wireguard-go")) && argv.next() == Some(iface.as_bytes())
}

/// Whether process `pid` is gone: no `/proc` entry, or a zombie waiting for init to reap it.
fn is_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// SIGTERM, up to [`TERM_GRACE`] to exit, then SIGKILL and as long again.
fn stop_pid(pid: i32, iface: &str) {
    for signal in [Signal::SIGTERM, Signal::SIGKILL] {
        let _ = kill(Pid::from_raw(pid), signal);
        let deadline = Instant::now() + TERM_GRACE;
        while !is_gone(pid) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if is_gone(pid) {
            return;
        }
    }
    eprintln!("e2e cleanup: wireguard-go {iface} (pid {pid}) survived SIGKILL");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wireguard_go_is_recognised_by_program_and_interface() {
        assert!(is_wireguard_go_for(b"wireguard-go\0wg1n2\0", "wg1n2"));
        assert!(is_wireguard_go_for(
            b"/usr/bin/wireguard-go\0wg1n2\0",
            "wg1n2"
        ));
        assert!(!is_wireguard_go_for(b"wireguard-go\0wg1n23\0", "wg1n2"));
        assert!(!is_wireguard_go_for(b"wg\0wg1n2\0", "wg1n2"));
        assert!(!is_wireguard_go_for(b"", "wg1n2"));
    }

    #[test]
    fn this_process_is_not_gone_and_a_missing_one_is() {
        assert!(!is_gone(std::process::id() as i32));
        assert!(is_gone(i32::MAX));
    }
}
