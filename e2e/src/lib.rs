//! Network-namespace test bed for wgpunch end-to-end tests.
//!
//! Builds topologies out of network namespaces ([`Netns`]), veth pairs and bridges ([`Switch`])
//! (the plainest, two WireGuard peers and a server's namespace on one switch, is [`Lan`]),
//! runs processes inside them ([`Process`]), drives userspace WireGuard ([`WgInterface`], or
//! [`WgQuick`] from a configuration file) and the binaries under test ([`Server`], [`client_cmd`],
//! `scripts/mesh` and the directory it generates: [`MeshDir`]), keeps a ping running through a
//! tunnel ([`RunningPing`]) and prints what it measured ([`measure`]). Everything it creates
//! carries this process's id and a counter in its name (`wgpe-<pid>-<n>-…`, `wg<pid>n<n>`), so
//! tests run in parallel, and everything is removed again by its own name or pid on drop, also
//! when a test panics: processes get SIGTERM then SIGKILL, namespaces are deleted after the last
//! process in them.
//!
//! Every wait is bounded and names what it waited for; every command error names the command line
//! and its stderr. A missing prerequisite (root, `ip`, `wg`, `wireguard-go`, ...) is an error that
//! names the Debian package, never a skipped test.
//!
//! ```no_run
//! use std::time::Duration;
//! use wgpunch_e2e::{Netns, Switch, WgInterface};
//!
//! # fn main() -> anyhow::Result<()> {
//! let switch = Switch::new("sw")?;
//! let a = Netns::new("a")?;
//! switch.attach(&a, "eth0", &["198.51.100.2/24"])?;
//! let wg = WgInterface::start(&a, "192.0.2.1/24", None)?;
//! let rtt = a.ping_until("198.51.100.2", Duration::from_secs(5))?;
//! # Ok(()) }
//! ```

mod bins;
mod cmd;
mod ids;
mod lan;
mod measure;
mod mesh;
mod mesh_check;
mod nat;
mod netns;
mod ping;
mod prereq;
mod process;
mod tempdir;
mod wait;
mod wg;
mod wgpunch;
mod wgquick;

pub use bins::{bin_dir, binary, client_binary, server_binary, workspace_root, CLIENT, SERVER};
pub use cmd::{Cmd, Output, DEFAULT_TIMEOUT};
pub use ids::{global_ifname, netns_name, unique_suffix, IFNAME_MAX};
pub use lan::{Lan, LAN_A_IP, LAN_B_IP, LAN_SERVER_IP};
pub use measure::{measure, measure_line, MEASURE_PREFIX};
pub use mesh::{env_vars, mesh_ok, mesh_script, run_mesh, sections, MeshDir, MeshNode, Section};
pub use mesh_check::{check_mesh, ensure_env_matches_client, ensure_no_private_key, ExpectedMesh};
pub use nat::{
    nat_ruleset, parse_conntrack, server_addr, EndpointCheck, Flow, Host, Internet, NatKind,
    NatRouter, NatWorld, Peer, Site, HOST_IF, LAN_IF, REMAP_RANGE, SERVER_IP, SNAT_RANGE, WAN_IF,
};
pub use netns::{netns_exists, Netns, Switch};
pub use ping::{first_reply_after, parse_ping_replies, RunningPing, RUNNING_PING_INTERVAL};
pub use prereq::{effective_uid, package_of, require_test_bed, tool};
pub use process::{Process, TERM_GRACE};
pub use tempdir::{chown_to_nobody, nobody_ids, write_secret_file, TempDir};
pub use wait::wait_until;
pub use wg::{
    parse_endpoints, parse_latest_handshakes, parse_persistent_keepalives, public_key_of,
    random_listen_port, socket_path, WgInterface, WgKeys, UAPI_DIR,
};
pub use wgpunch::{client_cmd, Server, ServerFiles, SERVER_PORT};
pub use wgquick::{wireguard_go_pids, WgQuick};

/// Unwraps a check's result, panicking with the whole error chain.
///
/// Call it while the fixture is still alive (`expect_ok(check(&fixture))`): the panic makes
/// every [`Process`] dropped afterwards print the tail of its log, so the failure explains itself.
#[track_caller]
pub fn expect_ok<T>(result: anyhow::Result<T>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{e:?}"),
    }
}
