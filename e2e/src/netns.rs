//! Network namespaces, veth pairs, addresses, routes and a bridge acting as a switch.
//!
//! A [`Netns`] is a cheap handle; the namespace is deleted (`ip netns del`) when the last handle
//! and the last [`Process`](crate::Process) running inside it are dropped, so namespaces always
//! outlive what runs in them, whatever the drop order in a test.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::cmd::{Cmd, Output};
use crate::ids::netns_name;
use crate::prereq::{require_test_bed, tool};
use crate::process::Process;

/// The owner of one namespace: deletes it on drop.
pub(crate) struct NsInner {
    pub(crate) name: String,
}

impl Drop for NsInner {
    fn drop(&mut self) {
        let result = Cmd::new("ip").and_then(|c| c.args(["netns", "del", &self.name]).run_ok());
        if let Err(e) = result {
            eprintln!("e2e cleanup: deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// A network namespace `wgpe-<pid>-<n>-<label>` with `lo` up.
#[derive(Clone)]
pub struct Netns {
    inner: Arc<NsInner>,
    label: String,
}

impl Netns {
    /// Creates the namespace and brings up its loopback interface.
    pub fn new(label: &str) -> Result<Self> {
        require_test_bed()?;
        let name = netns_name(label);
        Cmd::new("ip")?.args(["netns", "add", &name]).run_ok()?;
        // From here on, dropping `ns` deletes the namespace, also on the error path below.
        let ns = Self {
            inner: Arc::new(NsInner { name }),
            label: label.to_owned(),
        };
        ns.ip(["link", "set", "lo", "up"])?;
        // Interfaces made or moved here later start IPv6 without duplicate address detection:
        // their link-local addresses are usable at once, as the nodad global ones are.
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
        Ok(ns)
    }

    /// The namespace's name as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The short label given at creation (`"server"`, `"a"`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// A command run inside the namespace (`ip netns exec NAME program ...`).
    pub fn cmd(&self, program: &str) -> Result<Cmd> {
        Ok(Cmd::new(program)?.in_netns(self.inner.clone()))
    }

    /// Runs `program args...` inside the namespace and fails unless it exits 0.
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd(program)?.args(args).run_ok()
    }

    /// Starts `program args...` in the background inside the namespace.
    pub fn spawn<I, S>(&self, label: &str, program: &str, args: I) -> Result<Process>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd(program)?.args(args).spawn(label)
    }

    /// `ip -n NAME args...`, which must succeed.
    pub fn ip<I, S>(&self, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::new("ip")?
            .args(["-n", self.name()])
            .args(args)
            .run_ok()
    }

    /// Adds an address (`198.51.100.1/24`, `2001:db8::1/64`) to `dev`. IPv6 addresses skip
    /// duplicate address detection so they are usable at once.
    pub fn addr_add(&self, dev: &str, cidr: &str) -> Result<()> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        self.ip(args)
            .with_context(|| format!("adding {cidr} to {dev} in {}", self.name()))?;
        Ok(())
    }

    /// Brings `dev` up.
    pub fn link_up(&self, dev: &str) -> Result<()> {
        self.ip(["link", "set", dev, "up"])?;
        Ok(())
    }

    /// Adds a route: `route_add("default", "198.51.100.1")`.
    pub fn route_add(&self, destination: &str, via: &str) -> Result<()> {
        let family = if via.contains(':') { "-6" } else { "-4" };
        self.ip([family, "route", "add", destination, "via", via])?;
        Ok(())
    }

    /// Sets a sysctl inside the namespace: `sysctl("net.ipv4.ip_forward", "1")`.
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.cmd("sh")?
            .args(["-c", "printf '%s\\n' \"$1\" > \"$2\"", "sh", value, &path])
            .run_ok()
            .with_context(|| format!("setting {key}={value} in {}", self.name()))?;
        Ok(())
    }

    /// Loads an nftables ruleset (`nft -f -`) inside the namespace.
    pub fn nft(&self, ruleset: &str) -> Result<()> {
        self.cmd("nft")?
            .args(["-f", "-"])
            .stdin(ruleset)
            .run_ok()
            .with_context(|| format!("loading nftables rules in {}", self.name()))?;
        Ok(())
    }

    /// Creates a veth pair: `here` in this namespace, `there` in `other`, both up.
    pub fn veth(&self, here: &str, other: &Netns, there: &str) -> Result<()> {
        self.ip([
            "link",
            "add",
            here,
            "type",
            "veth",
            "peer",
            "name",
            there,
            "netns",
            other.name(),
        ])?;
        self.link_up(here)?;
        other.link_up(there)?;
        Ok(())
    }

    /// Pings `target` once a round (`ping -c 1 -W 2`) until it answers or `timeout` has passed.
    /// Returns how long it took.
    pub fn ping_until(&self, target: &str, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let out = self
                .cmd("ping")?
                .args(["-n", "-c", "1", "-W", "2", target])
                .timeout(Duration::from_secs(5))
                .run()?;
            if out.status.success() {
                return Ok(started.elapsed());
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "no ping reply from {target} in namespace {} within {timeout:?} \
                     ({attempts} attempts); last: {out}",
                    self.name()
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until something listens on UDP `port` in this namespace (`ss -Hlun`).
    pub fn wait_udp_listen(
        &self,
        port: u16,
        timeout: Duration,
        process: &mut Process,
    ) -> Result<()> {
        let filter = format!("sport = :{port}");
        let result = crate::wait::wait_until(
            &format!("a UDP socket on port {port} in namespace {}", self.name()),
            timeout,
            || {
                process.ensure_running()?;
                let out = self.run("ss", ["-Hlun", &filter])?;
                Ok((!out.stdout.trim().is_empty()).then_some(()))
            },
        );
        with_log_if_running(result, process)
    }
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Netns").field(&self.inner.name).finish()
    }
}

/// A switch: a namespace holding the bridge `br0`, with one veth port per attached host.
#[derive(Debug)]
pub struct Switch {
    ns: Netns,
    ports: AtomicU32,
}

impl Switch {
    /// Creates the switch namespace and its bridge.
    pub fn new(label: &str) -> Result<Self> {
        let ns = Netns::new(label)?;
        ns.ip(["link", "add", "br0", "type", "bridge"])?;
        ns.link_up("br0")?;
        Ok(Self {
            ns,
            ports: AtomicU32::new(0),
        })
    }

    /// The switch's own namespace.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Plugs `host` in: a veth `port<N>` on the bridge, `ifname` in `host`, up, with `addrs`.
    pub fn attach(&self, host: &Netns, ifname: &str, addrs: &[&str]) -> Result<()> {
        let port = format!("port{}", self.ports.fetch_add(1, Ordering::Relaxed));
        self.ns
            .veth(&port, host, ifname)
            .with_context(|| format!("plugging {} into switch {}", host.name(), self.ns.name()))?;
        self.ns.ip(["link", "set", &port, "master", "br0"])?;
        for addr in addrs {
            host.addr_add(ifname, addr)?;
        }
        Ok(())
    }
}

/// Adds the process's log to an error if it is still running (an early exit already says it).
pub(crate) fn with_log_if_running<T>(result: Result<T>, process: &mut Process) -> Result<T> {
    result.map_err(|e| {
        if process.is_running().unwrap_or(false) {
            e.context(process.log_tail())
        } else {
            e
        }
    })
}

/// Whether a namespace of this name exists (for cleanup checks).
pub fn netns_exists(name: &str) -> Result<bool> {
    let out = Cmd::new(tool("ip")?)?.args(["netns", "list"]).run_ok()?;
    Ok(out
        .stdout
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name)))
}
