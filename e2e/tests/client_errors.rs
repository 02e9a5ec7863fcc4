//! Each way the client cannot start gives exit status 1 and one line that says what is wrong.
//!
//! Every test runs inside its own namespace with a wireguard-go interface and no route anywhere,
//! so nothing (not even a DNS query) leaves it.

use anyhow::{ensure, Result};
use wgpunch_e2e::{client_binary, expect_ok, Netns, Output, WgInterface, WgKeys};

/// A server address inside the documentation range; nothing answers there.
const SERVER: &str = "198.51.100.1:51818";

struct Host {
    ns: Netns,
    wg: WgInterface,
    server_key: WgKeys,
}

fn host() -> Result<Host> {
    let ns = Netns::new("err")?;
    let wg = WgInterface::start(&ns, "192.0.2.1/24", None)?;
    let peer = WgKeys::generate()?;
    wg.add_peer(peer.public(), &["192.0.2.2/32"])?;
    Ok(Host {
        ns,
        wg,
        server_key: WgKeys::generate()?,
    })
}

/// Runs the client in the host's namespace, optionally wrapped in `setpriv` with `setpriv_args`.
fn client(
    host: &Host,
    setpriv_args: &[&str],
    iface: &str,
    server: &str,
    key: &str,
) -> Result<Output> {
    let binary = client_binary()?;
    let binary = binary.to_string_lossy();
    let cmd = if setpriv_args.is_empty() {
        host.ns.cmd(&binary)?
    } else {
        host.ns
            .cmd("setpriv")?
            .args(setpriv_args)
            .arg("--")
            .arg(binary.as_ref())
    };
    cmd.args(["--timeout", "5", iface, server, key]).run()
}

fn ensure_one_line_error(out: &Output, needle: &str) -> Result<()> {
    out.ensure_code(1)?;
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("wgpunch-client:"))
        .collect();
    ensure!(lines.len() == 1, "expected one error line, got: {out}");
    ensure!(
        lines[0].contains(needle),
        "error line does not mention {needle:?}: {out}"
    );
    Ok(())
}

#[test]
fn a_malformed_server_key_is_a_usage_error_that_names_it() {
    let h = expect_ok(host());
    let out = expect_ok(client(&h, &[], h.wg.name(), SERVER, "not-a-key"));
    expect_ok(out.ensure_code(2));
    let first = out.stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error:") && first.contains("SERVER_PUBKEY"),
        "the first line does not name SERVER_PUBKEY: {out}"
    );
}

#[test]
fn an_unresolvable_server_name_is_named() {
    let h = expect_ok(host());
    let out = expect_ok(client(
        &h,
        &[],
        h.wg.name(),
        "no-such-host.invalid:51818",
        h.server_key.public(),
    ));
    expect_ok(ensure_one_line_error(&out, "no-such-host.invalid"));
    let out = expect_ok(client(
        &h,
        &[],
        h.wg.name(),
        "198.51.100.1",
        h.server_key.public(),
    ));
    expect_ok(ensure_one_line_error(&out, "HOST:PORT"));
}

#[test]
fn reading_the_interface_without_privileges_names_cap_net_admin() {
    let h = expect_ok(host());
    let nobody = [
        "--reuid=nobody",
        "--regid=nogroup",
        "--clear-groups",
        "--inh-caps=-all",
    ];
    let out = expect_ok(client(
        &h,
        &nobody,
        h.wg.name(),
        SERVER,
        h.server_key.public(),
    ));
    expect_ok(ensure_one_line_error(&out, "CAP_NET_ADMIN"));
}

#[test]
fn opening_raw_sockets_without_cap_net_raw_names_it() {
    let h = expect_ok(host());
    // Still root, with every capability but CAP_NET_RAW.
    let no_raw = ["--inh-caps=-net_raw", "--bounding-set=-net_raw"];
    // Give the namespace a route to the server so the client gets as far as the raw socket.
    expect_ok(h.ns.ip(["link", "add", "v0", "type", "veth", "peer", "name", "v1"]));
    expect_ok(h.ns.addr_add("v0", "198.51.100.2/24"));
    expect_ok(h.ns.link_up("v0"));
    expect_ok(h.ns.link_up("v1"));
    let out = expect_ok(client(
        &h,
        &no_raw,
        h.wg.name(),
        SERVER,
        h.server_key.public(),
    ));
    expect_ok(ensure_one_line_error(&out, "CAP_NET_RAW"));
}

#[test]
fn an_interface_without_a_private_key_is_named() {
    let h = expect_ok(host());
    expect_ok(wgpunch_e2e::tool("wg").and_then(|wg| {
        wgpunch_e2e::Cmd::new(&wg).and_then(|c| {
            c.args(["set", h.wg.name(), "private-key", "/dev/null"])
                .run()
        })
    }));
    let out = expect_ok(client(&h, &[], h.wg.name(), SERVER, h.server_key.public()));
    expect_ok(ensure_one_line_error(&out, "private key"));
}
