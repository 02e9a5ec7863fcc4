//! The client registers from the WireGuard listen port and sets endpoints on a real (userspace)
//! WireGuard interface.
//!
//! Topology, no NAT: one switch, the server at 198.51.100.1 running as `nobody`, hosts `a`
//! (198.51.100.2) and `b` (198.51.100.3), each with a `wireguard-go` interface (192.0.2.1/24 and
//! 192.0.2.2/24, random listen ports) that lists the other as a peer without an endpoint.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{client_cmd, expect_ok, global_ifname, Lan, Netns, Output, Process, Server};

/// The client's default persistent keepalive.
const DEFAULT_KEEPALIVE: u16 = 25;

/// Slack on top of a client's own `--timeout` before the test gives up on it.
const CLIENT_SLACK: Duration = Duration::from_secs(10);

/// Budget for a ping across the tunnel once the endpoints are set.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Starts `wgpunch-client OPTIONS IFACE 198.51.100.1:51818 PUBKEY` in `ns`.
fn start_client(ns: &Netns, options: &[&str], iface: &str, server_key: &str) -> Result<Process> {
    client_cmd(ns, options, iface, Lan::server_addr(), server_key)?
        .spawn(&format!("wgpunch-client in {}", ns.label()))
}

/// Fails unless `out` exited with `code`, attaching the server's log when there is one.
fn ensure_exit(out: &Output, code: i32, server: Option<&Server>) -> Result<()> {
    let result = out.ensure_code(code);
    match server {
        Some(server) => result.with_context(|| server.log_tail()),
        None => result,
    }
}

fn check_discovery(lan: &Lan, server: &Server) -> Result<()> {
    let key = server.public_key();
    let started = Instant::now();
    let mut client_a = start_client(&lan.a, &["--timeout", "20"], lan.wg_a.name(), key)?;
    let mut client_b = start_client(&lan.b, &["--timeout", "20"], lan.wg_b.name(), key)?;
    let budget = Duration::from_secs(20) + CLIENT_SLACK;
    let out_a = client_a.wait_timeout(budget)?;
    let out_b = client_b.wait_timeout(budget)?;
    let resolved_after = started.elapsed();
    ensure_exit(&out_a, 0, Some(server))?;
    ensure_exit(&out_b, 0, Some(server))?;

    lan.ensure_endpoints(DEFAULT_KEEPALIVE)?;

    lan.ping_a_to_b(PING_TIMEOUT)?;
    let first_ping = started.elapsed();
    lan.ping_b_to_a(PING_TIMEOUT)?;
    eprintln!(
        "discovery: both clients resolved after {resolved_after:?}; \
         first ping through the tunnel {first_ping:?} after starting the clients"
    );

    lan.wg_a
        .wait_handshake(lan.wg_b.public_key(), Duration::from_secs(5))?;
    lan.wg_b
        .wait_handshake(lan.wg_a.public_key(), Duration::from_secs(5))?;
    Ok(())
}

#[test]
fn clients_register_from_the_listen_port_and_set_each_others_endpoints() {
    let lan = expect_ok(Lan::build());
    let server = expect_ok(Server::start(&lan.server, &[Lan::server_addr()]));
    expect_ok(check_discovery(&lan, &server));
}

fn check_no_server(lan: &Lan, server_key: &str) -> Result<()> {
    let started = Instant::now();
    let mut client = start_client(&lan.a, &["--timeout", "3"], lan.wg_a.name(), server_key)?;
    let out = client.wait_timeout(Duration::from_secs(3) + CLIENT_SLACK)?;
    eprintln!("no server: client gave up after {:?}", started.elapsed());
    ensure_exit(&out, 4, None)?;
    let stderr = out.stderr.to_lowercase();
    ensure!(
        stderr.contains(&Lan::server_addr().to_string()) || stderr.contains("server"),
        "stderr does not mention the server: {out}"
    );
    Ok(())
}

#[test]
fn client_exits_4_when_the_server_never_answers() {
    // The server's namespace and address exist, but nothing listens on port 51818.
    let lan = expect_ok(Lan::build());
    let unused_server_key = expect_ok(wgpunch_e2e::WgKeys::generate());
    expect_ok(check_no_server(&lan, unused_server_key.public()));
}

fn check_missing_interface(lan: &Lan, server: &Server) -> Result<()> {
    let missing = global_ifname()?;
    let mut client = start_client(&lan.a, &["--timeout", "5"], &missing, server.public_key())?;
    let out = client.wait_timeout(Duration::from_secs(5) + CLIENT_SLACK)?;
    ensure_exit(&out, 1, Some(server))?;
    ensure!(
        out.stderr.contains(&missing),
        "stderr does not name interface {missing}: {out}"
    );
    Ok(())
}

#[test]
fn client_exits_1_naming_an_interface_that_does_not_exist() {
    let lan = expect_ok(Lan::build());
    let server = expect_ok(Server::start(&lan.server, &[Lan::server_addr()]));
    expect_ok(check_missing_interface(&lan, &server));
}

fn check_unregistered_peer(lan: &Lan, server: &Server) -> Result<()> {
    let started = Instant::now();
    let mut client = start_client(
        &lan.a,
        &["--timeout", "4"],
        lan.wg_a.name(),
        server.public_key(),
    )?;
    let out = client.wait_timeout(Duration::from_secs(4) + CLIENT_SLACK)?;
    eprintln!(
        "unregistered peer: client gave up after {:?}",
        started.elapsed()
    );
    ensure_exit(&out, 3, Some(server))?;
    let b_key = lan.wg_b.public_key();
    ensure!(
        out.stdout.contains(b_key) || out.stderr.contains(b_key),
        "neither stdout nor stderr names b's public key {b_key}: {out}"
    );
    let endpoint = lan.wg_a.endpoint(b_key)?;
    ensure!(
        endpoint.is_none(),
        "a's endpoint for the unregistered b is {endpoint:?}, expected none"
    );
    Ok(())
}

#[test]
fn client_exits_3_naming_a_peer_that_never_registers() {
    // b's client is never run, so the server never learns b's endpoint.
    let lan = expect_ok(Lan::build());
    let server = expect_ok(Server::start(&lan.server, &[Lan::server_addr()]));
    expect_ok(check_unregistered_peer(&lan, &server));
}
