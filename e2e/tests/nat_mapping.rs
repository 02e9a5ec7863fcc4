//! NAT mapping detection: a client on each kind of site of the test bed asks the server's main
//! port, its second port and its second address where they see its WireGuard port, and says in
//! plain words what kind of NAT it is behind, within its first second. The NAT routers are real nftables NATs; the
//! symmetric one gives every destination its own port, so only it shows the second port another
//! mapping.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{
    expect_ok, measure, server_addr, wait_until, Internet, NatKind, Netns, Peer, Process, Server,
    WgKeys, HOST_IF, SERVER_IP,
};

/// How long a client may take to say what it is behind.
const DETECTION_BUDGET: Duration = Duration::from_secs(10);

/// Another address of the server's host (on the server site's /29), given as its mapping address.
const SECOND_ADDRESS: &str = "198.51.100.3";

/// The line the client logs, and what it must say for each kind of site.
const DETECTED: &str = "this host is behind";

fn detect() -> Result<()> {
    let internet = Internet::new()?;
    let server_ns = Netns::new("server")?;
    let ip = internet.attach(&server_ns, HOST_IF)?;
    ensure!(ip == SERVER_IP, "the server is the first site, {SERVER_IP}");
    // A second address of the server's host answers mapping checks too.
    server_ns.addr_add(HOST_IF, &format!("{SECOND_ADDRESS}/29"))?;
    let second = format!("{SECOND_ADDRESS}:{}", server_addr().port());
    let server = Server::start_with_args(
        &server_ns,
        &[server_addr()],
        &["--mapping-address", second.as_str()],
    )?;
    let sites: [(&str, Option<NatKind>, &str); 5] = [
        ("public", None, "no NAT"),
        (
            "masq",
            Some(NatKind::Masquerade),
            "one mapping for every destination, keeping our port",
        ),
        (
            "fw",
            Some(NatKind::Firewall),
            "one mapping for every destination, keeping our port",
        ),
        (
            "remap",
            Some(NatKind::EimRemap),
            "one mapping for every destination, on another port",
        ),
        ("sym", Some(NatKind::Symmetric), "a symmetric NAT"),
    ];
    // A peer that never registers keeps each one-shot client running while it checks.
    let absent = WgKeys::generate()?;
    let mut peers = Vec::new();
    for (i, (name, kind, expected)) in (0u8..).zip(sites) {
        let host = match kind {
            None => internet.public_host(name)?,
            Some(kind) => internet.nat_host(name, kind)?,
        };
        let peer = Peer::start(name, host, std::net::Ipv4Addr::new(192, 0, 2, 1 + i))?;
        peer.wg().add_peer(absent.public(), &["192.0.2.200/32"])?;
        peers.push((peer, expected));
    }
    // All clients start at once, so the time until the last one has said it bounds each one's.
    let started = Instant::now();
    let mut running: Vec<(Peer, Process, &str)> = Vec::new();
    for (peer, expected) in peers {
        let client = peer
            .client_cmd(&["--timeout", "30"], &server)?
            .spawn(&format!("wgpunch-client on {}", peer.name()))?;
        running.push((peer, client, expected));
    }
    for (peer, client, expected) in &mut running {
        let line = wait_until(
            &format!("{} to say what NAT it is behind", peer.name()),
            DETECTION_BUDGET,
            || {
                client.ensure_running()?;
                Ok(client
                    .stderr()
                    .lines()
                    .find(|l| l.contains(DETECTED))
                    .map(str::to_owned))
            },
        )
        .with_context(|| format!("{}\n{}", client.log_tail(), server.log_tail()))?;
        eprintln!("{}: {line}", peer.name());
        ensure!(
            line.contains(*expected),
            "{} ({}) says {line:?}, expected {expected:?}",
            peer.name(),
            peer.host().describe()
        );
        ensure!(
            line.contains(&format!("{SECOND_ADDRESS}:")) && !line.contains("did not answer"),
            "{} did not hear from both mapping addresses: {line:?}",
            peer.name()
        );
    }
    let all = started.elapsed();
    eprintln!("every client said what NAT it is behind within {all:.2?} of starting them");
    measure("nat_mapping", "all_detected", all);
    Ok(())
}

#[test]
fn each_client_says_what_kind_of_nat_it_is_behind() {
    expect_ok(detect());
}

/// Two peers each behind a symmetric NAT: both clients learn from their mapping checks that
/// their NAT gives each destination its own port, tell the server, hear the same of the other,
/// and exit 5 at once, naming the cause, instead of waiting out the handshake timeout.
fn symmetric_pair() -> Result<()> {
    let internet = Internet::new()?;
    let server_ns = Netns::new("server")?;
    internet.attach(&server_ns, HOST_IF)?;
    let server = Server::start(&server_ns, &[server_addr()])?;
    let a = Peer::start(
        "a",
        internet.nat_host("a", NatKind::Symmetric)?,
        std::net::Ipv4Addr::new(192, 0, 2, 1),
    )?;
    let b = Peer::start(
        "b",
        internet.nat_host("b", NatKind::Symmetric)?,
        std::net::Ipv4Addr::new(192, 0, 2, 2),
    )?;
    a.add_peer(&b)?;
    b.add_peer(&a)?;
    let started = Instant::now();
    let mut clients = [&a, &b]
        .iter()
        .map(|p| {
            p.client_cmd(&["--timeout", "30"], &server)?
                .spawn(&format!("wgpunch-client on {}", p.name()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut outs = Vec::new();
    for client in &mut clients {
        outs.push(client.wait_timeout(Duration::from_secs(45))?);
    }
    let exited = started.elapsed();
    let logs = || {
        let logs: Vec<String> = outs.iter().map(ToString::to_string).collect();
        format!("{}\n{}", logs.join("\n"), server.log_tail())
    };
    for out in &outs {
        out.ensure_code(5)
            .with_context(|| format!("a symmetric pair has no direct path\n{}", logs()))?;
        ensure!(
            out.stderr
                .contains("both give each destination its own port")
                && out.stderr.contains("a symmetric NAT"),
            "the client does not say why: {out}\n{}",
            logs()
        );
    }
    eprintln!("a symmetric pair: both clients exited 5 after {exited:.2?}");
    measure("symmetric_pair", "clients_exit", exited);
    Ok(())
}

#[test]
fn a_symmetric_pair_knows_at_once_that_no_direct_path_exists() {
    expect_ok(symmetric_pair());
}
