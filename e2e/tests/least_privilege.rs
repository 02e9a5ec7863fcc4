//! The client runs holding only CAP_NET_RAW and CAP_NET_ADMIN, and gives up CAP_NET_RAW once its
//! raw sockets are open.
//!
//! Topology as in `discovery.rs`: one switch, the server (as `nobody`) at 198.51.100.1, hosts `a`
//! and `b` with wireguard-go interfaces. The client on `a` runs with those two capabilities only,
//! twice:
//! - as `nobody`, next to a wireguard-go that also runs as `nobody` (with CAP_NET_ADMIN alone), so
//!   that its UAPI socket is `nobody`'s: no root anywhere on `a`'s side;
//! - as uid 0 stripped of every other capability, next to a wireguard-go run by root, whose UAPI
//!   socket is root's with mode 0700 (wireguard-go drops its socket if its owner or mode changes):
//!   the setup of the systemd units.
//!
//! With kernel WireGuard the two capabilities suffice for any user; this machine has no kernel
//! WireGuard to show it.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{
    client_binary, client_cmd, expect_ok, nobody_ids, wait_until, Lan, Server, WgInterface,
};

/// CAP_NET_ADMIN and CAP_NET_RAW, as bits of /proc/PID/status's capability masks.
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

/// A line of /proc/PID/status, without its name.
fn status_field(pid: u32, field: &str) -> Result<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the client's status")?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} line"))?;
    Ok(line.trim().to_owned())
}

fn capabilities(pid: u32, field: &str) -> Result<u64> {
    let hex = status_field(pid, field)?;
    Ok(u64::from_str_radix(&hex, 16)?)
}

/// Who the client on `a` (and `a`'s wireguard-go) runs as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RunAs {
    /// `nobody`, with wireguard-go as `nobody` too.
    Nobody,
    /// uid 0 without any other capability, with wireguard-go as root.
    StrippedRoot,
}

fn check(run_as: RunAs) -> Result<()> {
    let lan = Lan::build_with(match run_as {
        RunAs::Nobody => WgInterface::start_as_nobody,
        RunAs::StrippedRoot => WgInterface::start,
    })?;
    let (a, wg_a, wg_b) = (&lan.a, &lan.wg_a, &lan.wg_b);
    let server_addr = Lan::server_addr();
    let server = Server::start(&lan.server, &[server_addr])?;
    let key = server.public_key();

    let binary = client_binary()?;
    let mut client_a = a
        .cmd("setpriv")?
        .args(match run_as {
            RunAs::Nobody => &["--reuid=nobody", "--regid=nogroup", "--clear-groups"][..],
            RunAs::StrippedRoot => &[][..],
        })
        .args([
            "--inh-caps=-all,+net_raw,+net_admin",
            "--ambient-caps=-all,+net_raw,+net_admin",
            "--bounding-set=-all,+net_raw,+net_admin",
            "--",
        ])
        .arg(binary.as_os_str())
        .args([
            "-c",
            "--delay",
            "1",
            wg_a.name(),
            &server_addr.to_string(),
            key,
        ])
        .spawn("wgpunch-client with two capabilities in a")?;
    let mut client_b = client_cmd(&lan.b, &["--timeout", "20"], wg_b.name(), server_addr, key)?
        .spawn("wgpunch-client in b")?;

    let b_expected = lan.b_endpoint()?;
    wait_until(
        "the unprivileged client to set b's endpoint",
        Duration::from_secs(20),
        || {
            client_a.ensure_running()?;
            Ok((wg_a.endpoint(wg_b.public_key())? == Some(b_expected)).then_some(()))
        },
    )
    .with_context(|| format!("{}\n{}", client_a.log_tail(), server.log_tail()))?;

    let pid = client_a.pid();
    let uid = match run_as {
        RunAs::Nobody => nobody_ids()?.0,
        RunAs::StrippedRoot => 0,
    };
    let uids = status_field(pid, "Uid:")?;
    ensure!(
        uids.split_whitespace().all(|u| u == uid.to_string()),
        "the client runs as uids {uids}, not {uid}"
    );
    for field in ["CapEff:", "CapPrm:"] {
        let caps = capabilities(pid, field)?;
        ensure!(
            caps & CAP_NET_RAW == 0,
            "{field} still holds CAP_NET_RAW: {caps:#x}"
        );
        ensure!(
            caps & CAP_NET_ADMIN != 0,
            "{field} lost CAP_NET_ADMIN: {caps:#x}"
        );
        ensure!(
            caps & !(CAP_NET_ADMIN | CAP_NET_RAW) == 0,
            "{field} holds more than it needs: {caps:#x}"
        );
    }
    let out_b = client_b.wait_timeout(Duration::from_secs(30))?;
    out_b.ensure_code(0)?;
    lan.ping_a_to_b(Duration::from_secs(15))?;
    Ok(())
}

#[test]
fn a_non_root_client_with_two_capabilities_drives_its_users_wireguard_go() {
    expect_ok(check(RunAs::Nobody));
}

#[test]
fn a_root_client_stripped_to_two_capabilities_works_and_gives_up_net_raw() {
    expect_ok(check(RunAs::StrippedRoot));
}
