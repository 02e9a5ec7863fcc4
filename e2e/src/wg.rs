//! WireGuard through `wireguard-go` and `wg`: keys, interfaces, and `wg show` parsed.
//!
//! `wireguard-go -f NAME` runs in the foreground inside a namespace; its TUN device lives in that
//! namespace, but its UAPI socket is `/var/run/wireguard/NAME.sock` in the one shared file system,
//! which is why interface names are unique across all tests ([`global_ifname`]). For the same
//! reason `wg` (and any userspace backend) reaches a `wireguard-go` interface by name from every
//! namespace, and `wg show all` lists the interfaces of all running tests: never use it.
//! `wireguard-go` logs to stdout, not stderr.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::Cmd;
use crate::ids::{global_ifname, random_u64};
use crate::netns::{with_log_if_running, Netns};
use crate::prereq::tool;
use crate::process::Process;
use crate::tempdir::{write_secret_file, TempDir};
use crate::wait::wait_until;

/// Where `wireguard-go` puts its UAPI sockets.
pub const UAPI_DIR: &str = "/var/run/wireguard";

/// How long `wireguard-go` may take to create its UAPI socket.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// A WireGuard key pair from `wg genkey` / `wg pubkey`, base64. The private half never appears
/// in `Debug` output.
#[derive(Clone)]
pub struct WgKeys {
    private: String,
    public: String,
}

impl WgKeys {
    /// Generates a key pair with `wg genkey` and `wg pubkey`.
    pub fn generate() -> Result<Self> {
        let private = Cmd::new("wg")?
            .arg("genkey")
            .run_ok()?
            .stdout
            .trim()
            .to_owned();
        let public = public_key_of(&private)?;
        Ok(Self { private, public })
    }

    /// The private key, base64, as `wg genkey` prints it.
    pub fn private(&self) -> &str {
        &self.private
    }

    /// The public key, base64.
    pub fn public(&self) -> &str {
        &self.public
    }
}

impl fmt::Debug for WgKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// The public key of a base64 private key, through `wg pubkey`.
pub fn public_key_of(private: &str) -> Result<String> {
    let out = Cmd::new("wg")?
        .arg("pubkey")
        .stdin(format!("{}\n", private.trim()))
        .run_ok()?;
    Ok(out.stdout.trim().to_owned())
}

/// A random listen port in 20000..60000, distinct from every other one handed out in this
/// process.
pub fn random_listen_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let port = 20000 + (random_u64() % 40000) as u16;
        if used.insert(port) {
            return port;
        }
    }
}

/// A userspace WireGuard interface inside a namespace. Dropping it stops `wireguard-go`, which
/// removes the interface and its socket (a socket left by a killed daemon is removed too).
pub struct WgInterface {
    ns: Netns,
    name: String,
    keys: WgKeys,
    listen_port: u16,
    process: Process,
    _dir: TempDir,
    /// The directory of a `wireguard-go` run as `nobody`, holding its socket.
    _uapi: Option<TempDir>,
}

impl WgInterface {
    /// Starts `wireguard-go` in `ns`, gives it fresh keys and `listen_port` (random when `None`),
    /// adds `address` (`192.0.2.1/24`) and brings it up. No peers yet.
    pub fn start(ns: &Netns, address: &str, listen_port: Option<u16>) -> Result<Self> {
        let name = global_ifname()?;
        let process = ns
            .cmd("wireguard-go")?
            .args(["-f", &name])
            .env("LOG_LEVEL", "verbose")
            // Also silences the banner claiming this kernel has WireGuard, printed even when
            // it has not.
            .env("WG_PROCESS_FOREGROUND", "1")
            .spawn(&format!("wireguard-go {name} in {}", ns.label()))?;
        let socket = socket_path(&name);
        let iface = Self::started(ns, name, listen_port, process, &socket, None)?;
        iface.set_up(address)?;
        Ok(iface)
    }

    /// Like [`WgInterface::start`], but `wireguard-go` runs as `nobody` holding only
    /// CAP_NET_ADMIN, so its UAPI socket belongs to `nobody`: what a deployment that runs
    /// userspace WireGuard and the client as one unprivileged user looks like.
    ///
    /// `wireguard-go` can only put its socket in [`UAPI_DIR`], which is root's: it runs in a
    /// mount namespace of its own where a directory of `nobody`'s is mounted there, and
    /// `UAPI_DIR/NAME.sock` is a symbolic link to the socket in that directory.
    pub fn start_as_nobody(ns: &Netns, address: &str, listen_port: Option<u16>) -> Result<Self> {
        let name = global_ifname()?;
        let sockets = TempDir::new(&format!("{name}-uapi"))?;
        sockets.chown_to_nobody()?;
        std::fs::create_dir_all(UAPI_DIR).with_context(|| format!("creating {UAPI_DIR}"))?;
        // Looked up here, so that a missing `mount` fails naming its package.
        let mount = tool("mount")?;
        let process = ns
            .cmd("unshare")?
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            // /dev/net/tun may be root's alone (mode 0600, as on some CI machines); CAP_NET_ADMIN
            // does not pass file permissions, so this namespace gets a node of its own that
            // anyone may open, as Debian ships it (0666).
            .arg(
                r#""$1" --bind "$2" "$3" && mknod -m 666 "$2/.tun" c 10 200 && "$1" --bind "$2/.tun" /dev/net/tun && shift 3 && exec "$@""#,
            )
            .arg("sh")
            .arg(&mount)
            .arg(sockets.path())
            .arg(UAPI_DIR)
            .args([
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                "--inh-caps=-all,+net_admin",
                "--ambient-caps=-all,+net_admin",
                "--bounding-set=-all,+net_admin",
                "--",
                "wireguard-go",
                "-f",
                &name,
            ])
            .env("LOG_LEVEL", "verbose")
            .env("WG_PROCESS_FOREGROUND", "1")
            .spawn(&format!("wireguard-go {name} as nobody in {}", ns.label()))?;
        let socket = sockets.join(&format!("{name}.sock"));
        let link = socket_path(&name);
        let iface = Self::started(ns, name, listen_port, process, &socket, Some(sockets))?;
        std::os::unix::fs::symlink(&socket, &link)
            .with_context(|| format!("linking {} to {}", link.display(), socket.display()))?;
        iface.set_up(address)?;
        Ok(iface)
    }

    /// Waits for `socket` of the started `process` and makes up its keys and listen port; nothing
    /// is set on the interface yet.
    fn started(
        ns: &Netns,
        name: String,
        listen_port: Option<u16>,
        mut process: Process,
        socket: &Path,
        uapi: Option<TempDir>,
    ) -> Result<Self> {
        let listen_port = listen_port.unwrap_or_else(random_listen_port);
        let dir = TempDir::new(&format!("{name}-keys"))?;
        let created = wait_until(
            &format!("wireguard-go to create {}", socket.display()),
            STARTUP_TIMEOUT,
            || {
                process.ensure_running()?;
                Ok(socket.exists().then_some(()))
            },
        );
        with_log_if_running(created, &mut process)?;

        let keys = WgKeys::generate()?;
        let iface = Self {
            ns: ns.clone(),
            name,
            keys,
            listen_port,
            process,
            _dir: dir,
            _uapi: uapi,
        };
        Ok(iface)
    }

    /// Sets the keys and listen port, adds `address` and brings the link up.
    fn set_up(&self, address: &str) -> Result<()> {
        let key_file = self._dir.join("private.key");
        write_secret_file(&key_file, &format!("{}\n", self.keys.private()))?;
        self.wg_set(&[
            "private-key".as_ref(),
            key_file.as_os_str(),
            "listen-port".as_ref(),
            self.listen_port.to_string().as_ref(),
        ])?;
        self.ns.addr_add(&self.name, address)?;
        self.ns.link_up(&self.name)?;
        Ok(())
    }

    /// The interface name (`wg<pid>n<n>`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace it lives in.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }

    /// Its public key, base64.
    pub fn public_key(&self) -> &str {
        self.keys.public()
    }

    /// Its key pair.
    pub fn keys(&self) -> &WgKeys {
        &self.keys
    }

    /// Its UDP listen port.
    pub fn listen_port(&self) -> u16 {
        self.listen_port
    }

    /// The `wireguard-go` process (for its log).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// `wg set NAME args...` inside the namespace.
    pub fn wg_set<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Result<()> {
        self.ns
            .cmd("wg")?
            .args(["set", &self.name])
            .args(args)
            .run_ok()
            .with_context(|| format!("configuring WireGuard interface {}", self.name))?;
        Ok(())
    }

    /// Adds a peer with its allowed IPs and no endpoint.
    pub fn add_peer(&self, public_key: &str, allowed_ips: &[&str]) -> Result<()> {
        self.wg_set(&["peer", public_key, "allowed-ips", &allowed_ips.join(",")])
    }

    /// Sets a peer's endpoint by hand.
    pub fn set_endpoint(&self, public_key: &str, endpoint: SocketAddr) -> Result<()> {
        self.wg_set(&["peer", public_key, "endpoint", &endpoint.to_string()])
    }

    /// `wg show NAME [what]`, raw.
    pub fn show(&self, what: Option<&str>) -> Result<String> {
        let out = self
            .ns
            .cmd("wg")?
            .args(["show", &self.name])
            .args(what)
            .run_ok()?;
        Ok(out.stdout)
    }

    /// Every peer's endpoint (`None` when it has none), by public key.
    pub fn endpoints(&self) -> Result<BTreeMap<String, Option<SocketAddr>>> {
        parse_endpoints(&self.show(Some("endpoints"))?)
    }

    /// One peer's endpoint; an error if the peer is unknown.
    pub fn endpoint(&self, public_key: &str) -> Result<Option<SocketAddr>> {
        self.endpoints()?
            .remove(public_key)
            .ok_or_else(|| anyhow!("{} has no peer {public_key}", self.name))
    }

    /// Every peer's latest handshake (`None` when there was none), by public key.
    pub fn latest_handshakes(&self) -> Result<BTreeMap<String, Option<SystemTime>>> {
        parse_latest_handshakes(&self.show(Some("latest-handshakes"))?)
    }

    /// Every peer's persistent keepalive interval in seconds (`None` when off), by public key.
    pub fn persistent_keepalives(&self) -> Result<BTreeMap<String, Option<u16>>> {
        parse_persistent_keepalives(&self.show(Some("persistent-keepalive"))?)
    }

    /// Waits until the handshake with `public_key` has happened and returns its time.
    pub fn wait_handshake(&self, public_key: &str, timeout: Duration) -> Result<SystemTime> {
        wait_until(
            &format!("a handshake between {} and peer {public_key}", self.name),
            timeout,
            || Ok(self.latest_handshakes()?.get(public_key).copied().flatten()),
        )
    }
}

impl Drop for WgInterface {
    fn drop(&mut self) {
        let _ = self.process.stop();
        let socket = socket_path(&self.name);
        // Not `exists()`: that follows a link, and a link to a removed socket must go too.
        if std::fs::symlink_metadata(&socket).is_ok() {
            if let Err(e) = std::fs::remove_file(&socket) {
                eprintln!("e2e cleanup: removing {}: {e}", socket.display());
            }
        }
    }
}

impl fmt::Debug for WgInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WgInterface")
            .field("name", &self.name)
            .field("netns", &self.ns)
            .field("public_key", &self.keys.public)
            .field("listen_port", &self.listen_port)
            .finish_non_exhaustive()
    }
}

/// `/var/run/wireguard/NAME.sock`.
pub fn socket_path(name: &str) -> PathBuf {
    PathBuf::from(UAPI_DIR).join(format!("{name}.sock"))
}

/// Splits `wg show NAME <field>` output into (public key, value) pairs.
fn key_value_lines(text: &str) -> Result<Vec<(&str, &str)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut parts = line.split('\t');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(key), Some(value), None) if !key.is_empty() => Ok((key, value.trim())),
                _ => bail!("unexpected `wg show` line {line:?}"),
            }
        })
        .collect()
}

/// Parses `wg show NAME endpoints`: `<key>\t<ip:port>` or `<key>\t(none)`.
pub fn parse_endpoints(text: &str) -> Result<BTreeMap<String, Option<SocketAddr>>> {
    key_value_lines(text)?
        .into_iter()
        .map(|(key, value)| {
            let endpoint = match value {
                "(none)" => None,
                v => Some(
                    v.parse()
                        .with_context(|| format!("endpoint {v:?} of peer {key}"))?,
                ),
            };
            Ok((key.to_owned(), endpoint))
        })
        .collect()
}

/// Parses `wg show NAME latest-handshakes`: `<key>\t<unix seconds>`, 0 for never.
pub fn parse_latest_handshakes(text: &str) -> Result<BTreeMap<String, Option<SystemTime>>> {
    key_value_lines(text)?
        .into_iter()
        .map(|(key, value)| {
            let secs: u64 = value
                .parse()
                .with_context(|| format!("handshake time {value:?} of peer {key}"))?;
            let time = (secs != 0).then(|| UNIX_EPOCH + Duration::from_secs(secs));
            Ok((key.to_owned(), time))
        })
        .collect()
}

/// Parses `wg show NAME persistent-keepalive`: `<key>\t<seconds>` or `<key>\toff`.
pub fn parse_persistent_keepalives(text: &str) -> Result<BTreeMap<String, Option<u16>>> {
    key_value_lines(text)?
        .into_iter()
        .map(|(key, value)| {
            let interval = match value {
                "off" => None,
                v => Some(
                    v.parse()
                        .with_context(|| format!("keepalive {v:?} of peer {key}"))?,
                ),
            };
            Ok((key.to_owned(), interval))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";
    const K2: &str = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0=";

    #[test]
    fn endpoints_parse_v4_v6_and_none() {
        let text = format!("{K1}\t198.51.100.3:40000\n{K2}\t(none)\nk3\t[2001:db8::3]:51820\n");
        let map = parse_endpoints(&text).unwrap();
        assert_eq!(map[K1], Some("198.51.100.3:40000".parse().unwrap()));
        assert_eq!(map[K2], None);
        assert_eq!(map["k3"], Some("[2001:db8::3]:51820".parse().unwrap()));
    }

    #[test]
    fn latest_handshakes_parse_zero_as_never() {
        let text = format!("{K1}\t1700000000\n{K2}\t0\n");
        let map = parse_latest_handshakes(&text).unwrap();
        assert_eq!(
            map[K1],
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(map[K2], None);
    }

    #[test]
    fn persistent_keepalives_parse_off() {
        let map = parse_persistent_keepalives(&format!("{K1}\t25\n{K2}\toff\n")).unwrap();
        assert_eq!(map[K1], Some(25));
        assert_eq!(map[K2], None);
    }

    #[test]
    fn empty_output_means_no_peers() {
        assert!(parse_endpoints("").unwrap().is_empty());
        assert!(parse_latest_handshakes("\n").unwrap().is_empty());
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse_endpoints("just-a-key\n").is_err());
        assert!(parse_endpoints(&format!("{K1}\tnot-an-endpoint\n")).is_err());
        assert!(parse_latest_handshakes(&format!("{K1}\tsoon\n")).is_err());
        assert!(parse_endpoints(&format!("{K1}\ta\tb\n")).is_err());
    }

    #[test]
    fn random_listen_ports_are_distinct_and_in_range() {
        let ports: HashSet<u16> = (0..200).map(|_| random_listen_port()).collect();
        assert_eq!(ports.len(), 200);
        assert!(ports.iter().all(|p| (20000..60000).contains(p)));
    }

    #[test]
    fn keys_debug_hides_the_private_key() {
        let keys = WgKeys {
            private: "PRIVATE".into(),
            public: "PUBLIC".into(),
        };
        let shown = format!("{keys:?}");
        assert!(
            shown.contains("PUBLIC") && !shown.contains("PRIVATE"),
            "{shown}"
        );
    }
}
