//! The client runs holding only CAP_NET_RAW and CAP_NET_ADMIN, and gives up CAP_NET_RAW once its
//! raw sockets are open.
//!
//! Topology as in `discovery.rs`: one switch, the server (as `nobody`) at 198.51.100.1, hosts `a`
//! and `b` with wireguard-go interfaces. wireguard-go makes its UAPI socket root's, mode 0700, and
//! drops it if its attributes change, so a userspace interface can only be reached as uid 0: the
//! client on `a` runs as uid 0 stripped of every capability but those two (the socket's owner
//! needs no CAP_DAC_OVERRIDE). With kernel WireGuard the same two capabilities suffice for any
//! user; this machine has no kernel WireGuard to show it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{
    client_binary, client_cmd, expect_ok, wait_until, Netns, Server, Switch, WgInterface,
    SERVER_PORT,
};

/// CAP_NET_ADMIN and CAP_NET_RAW, as bits of /proc/PID/status's capability masks.
const CAP_NET_ADMIN: u64 = 1 << 12;
const CAP_NET_RAW: u64 = 1 << 13;

fn capabilities(pid: u32, field: &str) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("reading the client's status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} line"))?;
    let hex = line
        .split_whitespace()
        .nth(1)
        .context("empty capability line")?;
    Ok(u64::from_str_radix(hex, 16)?)
}

fn check() -> Result<()> {
    let switch = Switch::new("sw")?;
    let server_ns = Netns::new("server")?;
    let a = Netns::new("a")?;
    let b = Netns::new("b")?;
    switch.attach(&server_ns, "eth0", &["198.51.100.1/24"])?;
    switch.attach(&a, "eth0", &["198.51.100.2/24"])?;
    switch.attach(&b, "eth0", &["198.51.100.3/24"])?;
    let wg_a = WgInterface::start(&a, "192.0.2.1/24", None)?;
    let wg_b = WgInterface::start(&b, "192.0.2.2/24", None)?;
    wg_a.add_peer(wg_b.public_key(), &["192.0.2.2/32"])?;
    wg_b.add_peer(wg_a.public_key(), &["192.0.2.1/32"])?;
    let server_addr = SocketAddr::new("198.51.100.1".parse()?, SERVER_PORT);
    let server = Server::start(&server_ns, &[server_addr])?;
    let key = server.public_key();

    let binary = client_binary()?;
    let mut client_a = a
        .cmd("setpriv")?
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
    let mut client_b = client_cmd(&b, &["--timeout", "20"], wg_b.name(), server_addr, key)?
        .spawn("wgpunch-client in b")?;

    let b_expected: SocketAddr = format!("198.51.100.3:{}", wg_b.listen_port()).parse()?;
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
    a.ping_until("192.0.2.2", Duration::from_secs(15))
        .context("ping a -> b through the tunnel")?;
    Ok(())
}

#[test]
fn the_client_works_with_two_capabilities_and_gives_up_net_raw() {
    expect_ok(check());
}
