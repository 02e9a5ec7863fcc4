//! Path candidates: peers that share a NAT connect over their LAN, and dual-stack peers over
//! IPv6, through the candidates the server hands out and the probes the clients send between
//! their WireGuard ports.
//!
//! Every scenario runs real `wireguard-go` peers and the real server on a
//! [`wgpunch_e2e::Internet`]. The NAT routers do not hairpin, so two peers behind one NAT that
//! used each other's public address would never hear each other: only the LAN path works. The
//! IPv6 scenarios put each peer behind its own IPv4 NAT and an IPv6 stateful firewall, so the
//! IPv6 path needs both sides' probes to open the firewalls, as the punches do for IPv4. Each
//! scenario asserts the endpoint `wg show` reports and a ping through the tunnel, and measures
//! the time from starting the clients to the first ping crossing it (`MEASURE` lines, collected
//! by `scripts/bench-connect --suite candidates`). Also here: the same-NAT pair without
//! candidates (it must not connect), three hosts on port 51820 behind one NAT, an IPv6-only
//! pair, and a laptop whose host moves to another LAN under a continuous client.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, ensure, Context, Result};
use wgpunch_e2e::{
    expect_ok, measure, server_addr, Internet, NatKind, Netns, Output, Peer, Process, Server,
    HOST_IF, SERVER_IP,
};

/// `--timeout` of the one-shot clients.
const CLIENT_TIMEOUT_SECS: u64 = 30;

/// How long a one-shot client may run before the test gives up on it.
const CLIENT_BUDGET: Duration = Duration::from_secs(CLIENT_TIMEOUT_SECS + 15 + 10);

/// Budget for a ping across the tunnel once the clients run.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The tunnel address of peer `i`.
fn tunnel_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 1 + i)
}

/// The discovery server's namespace on `internet`, with the server running.
struct ServerSite {
    // Field order is drop order: the server process before its namespace.
    server: Server,
    _ns: Netns,
}

impl ServerSite {
    fn start(internet: &Internet) -> Result<Self> {
        let ns = Netns::new("server")?;
        let ip = internet.attach(&ns, HOST_IF)?;
        ensure!(ip == SERVER_IP, "the server is the first site, {SERVER_IP}");
        let server = Server::start(&ns, &[server_addr()])?;
        Ok(Self { server, _ns: ns })
    }
}

/// Makes every peer list every other one.
fn mesh(peers: &[&Peer]) -> Result<()> {
    for a in peers {
        for b in peers {
            if a.public_key() != b.public_key() {
                a.add_peer(b)?;
            }
        }
    }
    Ok(())
}

/// Starts a client with `options` on `peer`.
fn start_client(peer: &Peer, options: &[&str], server: &Server) -> Result<Process> {
    peer.client_cmd(options, server)?
        .spawn(&format!("wgpunch-client on {}", peer.name()))
}

/// Starts one-shot clients on every peer at once.
fn start_one_shot(peers: &[&Peer], options: &[&str], server: &Server) -> Result<Vec<Process>> {
    let timeout = CLIENT_TIMEOUT_SECS.to_string();
    let mut all = vec!["--timeout", timeout.as_str()];
    all.extend_from_slice(options);
    peers
        .iter()
        .map(|p| start_client(p, &all, server))
        .collect()
}

/// The clients' outputs and `explain()`, for failure messages.
fn report(outs: &[Output], explain: &dyn Fn() -> String) -> String {
    let logs: Vec<String> = outs.iter().map(ToString::to_string).collect();
    format!("{}\n{}", logs.join("\n"), explain())
}

/// Waits for every client; fails unless each exits 0.
fn ensure_all_exit_0(clients: &mut [Process], explain: &dyn Fn() -> String) -> Result<Vec<Output>> {
    let started = Instant::now();
    let mut outs = Vec::new();
    for client in clients.iter_mut() {
        let out = client.wait_timeout(CLIENT_BUDGET.saturating_sub(started.elapsed()))?;
        outs.push(out);
    }
    for out in &outs {
        out.ensure_success()
            .with_context(|| report(&outs, explain))?;
    }
    Ok(outs)
}

/// `viewer`'s endpoint for `peer`, as `wg show` reports it.
fn endpoint(viewer: &Peer, peer: &Peer) -> Result<SocketAddr> {
    viewer
        .wg()
        .endpoint(peer.public_key())?
        .ok_or_else(|| anyhow!("{} has no endpoint for {}", viewer.name(), peer.name()))
}

/// Fails unless `viewer`'s endpoint for `peer` is `expected`.
fn ensure_endpoint(viewer: &Peer, peer: &Peer, expected: SocketAddr) -> Result<()> {
    let got = endpoint(viewer, peer)?;
    ensure!(
        got == expected,
        "{} has {} at {got}, expected {expected}",
        viewer.name(),
        peer.name()
    );
    Ok(())
}

/// `wg show` of every peer, for failure messages.
fn diagnostics(peers: &[&Peer], server: &Server) -> String {
    let mut text = server.log_tail();
    for peer in peers {
        match peer.wg().show(None) {
            Ok(show) => text.push_str(&format!("\n{} wg show:\n{show}", peer.describe())),
            Err(e) => text.push_str(&format!("\n{} wg show failed: {e:#}", peer.describe())),
        }
    }
    text
}

/// Peers `a` and `b` on one LAN behind a firewalling NAT that does not hairpin.
fn lan_pair(internet: &Internet) -> Result<(Peer, Peer)> {
    let mut lan = internet.shared_nat("home-nat", NatKind::Firewall, &["a", "b"])?;
    let b_host = lan.pop().ok_or_else(|| anyhow!("no host b"))?;
    let a_host = lan.pop().ok_or_else(|| anyhow!("no host a"))?;
    Ok((
        Peer::start("a", a_host, tunnel_ip(0))?,
        Peer::start("b", b_host, tunnel_ip(1))?,
    ))
}

/// Two peers behind one NAT that does not hairpin, and a third behind another NAT. The two
/// connect over their LAN (each one's endpoint for the other is the other's LAN address and
/// WireGuard port), the third over the public paths; every pair pings.
fn same_nat() -> Result<()> {
    let internet = Internet::new()?;
    let site = ServerSite::start(&internet)?;
    let (a, b) = lan_pair(&internet)?;
    let c = Peer::start(
        "c",
        internet.nat_host("c", NatKind::Firewall)?,
        tunnel_ip(2),
    )?;
    let peers = [&a, &b, &c];
    mesh(&peers)?;
    let server = &site.server;
    let explain = || diagnostics(&peers, server);

    let started = Instant::now();
    let mut clients = start_one_shot(&peers, &[], server)?;
    a.ping_until(&b, PING_TIMEOUT)
        .with_context(|| format!("a cannot ping b over their LAN\n{}", explain()))?;
    let first_ping = started.elapsed();
    let outs = ensure_all_exit_0(&mut clients, &explain)?;
    let clients_exit = started.elapsed();
    let logs = || report(&outs, &explain);
    ensure_endpoint(&a, &b, SocketAddr::from(b.local_endpoint())).with_context(logs)?;
    ensure_endpoint(&b, &a, SocketAddr::from(a.local_endpoint())).with_context(logs)?;
    b.ping_until(&a, PING_TIMEOUT).with_context(logs)?;
    let nat_ip = a.host().public_ip();
    for lan_peer in [&a, &b] {
        let seen = endpoint(&c, lan_peer).with_context(logs)?;
        ensure!(
            seen.ip() == IpAddr::V4(nat_ip),
            "c has {} at {seen}, expected the NAT's public address {nat_ip}\n{}",
            lan_peer.name(),
            logs()
        );
        let towards_c = endpoint(lan_peer, &c).with_context(logs)?;
        ensure!(
            towards_c.ip() == IpAddr::V4(c.host().public_ip()),
            "{} has c at {towards_c}, expected c's NAT {}\n{}",
            lan_peer.name(),
            c.host().public_ip(),
            logs()
        );
        c.ping_until(lan_peer, PING_TIMEOUT).with_context(logs)?;
    }
    eprintln!(
        "same NAT, no hairpin: a pinged b over the LAN {first_ping:.2?} after starting the \
         clients; all three exited 0 after {clients_exit:.1?}"
    );
    measure("same_nat", "first_ping", first_ping);
    measure("same_nat", "clients_exit", clients_exit);
    Ok(())
}

#[test]
fn peers_behind_one_nat_connect_over_their_lan() {
    expect_ok(same_nat());
}

/// The same two peers with no candidates registered (`--deny-candidates 0.0.0.0/0,::/0`), as
/// before candidates existed: each is given the other's public address, which the NAT does not
/// hairpin, so no handshake follows and both exit 5. This shows the test bed does not hairpin, so
/// the scenario above passes only through the LAN path.
fn same_nat_public_only() -> Result<()> {
    let internet = Internet::new()?;
    let site = ServerSite::start(&internet)?;
    let (a, b) = lan_pair(&internet)?;
    let peers = [&a, &b];
    mesh(&peers)?;
    let server = &site.server;
    let started = Instant::now();
    let mut clients = start_one_shot(&peers, &["--deny-candidates", "0.0.0.0/0,::/0"], server)?;
    let mut outs = Vec::new();
    for client in &mut clients {
        outs.push(client.wait_timeout(CLIENT_BUDGET.saturating_sub(started.elapsed()))?);
    }
    let clients_exit = started.elapsed();
    for out in &outs {
        out.ensure_code(5).with_context(|| {
            format!(
                "without candidates, peers behind one NAT that does not hairpin must not connect\n{}",
                diagnostics(&peers, server)
            )
        })?;
    }
    eprintln!("same NAT, public endpoints only: both exited 5 after {clients_exit:.1?}");
    measure("same_nat_public_only", "clients_exit", clients_exit);
    Ok(())
}

#[test]
fn without_candidates_peers_behind_one_nat_find_no_path() {
    expect_ok(same_nat_public_only());
}

/// Two dual-stack peers, each behind its own IPv4 NAT and IPv6 stateful firewall. With the
/// default `--family auto` they connect over IPv6 (each one's endpoint is the other's global
/// IPv6 address); with `--family 4` over IPv4 through their NATs.
fn dual_stack(options: &[&str], over_ipv6: bool, id: &str) -> Result<()> {
    let internet = Internet::dual_stack()?;
    let site = ServerSite::start(&internet)?;
    let a_host = internet.nat_host("a", NatKind::Firewall)?;
    let b_host = internet.nat_host("b", NatKind::Firewall)?;
    let a = Peer::start("a", a_host, tunnel_ip(0))?;
    let b = Peer::start("b", b_host, tunnel_ip(1))?;
    let peers = [&a, &b];
    mesh(&peers)?;
    let server = &site.server;
    let explain = || diagnostics(&peers, server);

    let started = Instant::now();
    let mut clients = start_one_shot(&peers, options, server)?;
    a.ping_until(&b, PING_TIMEOUT)
        .with_context(|| format!("a cannot ping b\n{}", explain()))?;
    let first_ping = started.elapsed();
    let outs = ensure_all_exit_0(&mut clients, &explain)?;
    let logs = || report(&outs, &explain);
    for (viewer, peer) in [(&a, &b), (&b, &a)] {
        let seen = endpoint(viewer, peer).with_context(logs)?;
        let expected_ip = if over_ipv6 {
            IpAddr::V6(
                peer.host()
                    .ipv6()
                    .ok_or_else(|| anyhow!("{} has no IPv6 address", peer.name()))?,
            )
        } else {
            IpAddr::V4(peer.host().public_ip())
        };
        ensure!(
            seen.ip() == expected_ip,
            "{} has {} at {seen}, expected an endpoint at {expected_ip}\n{}",
            viewer.name(),
            peer.name(),
            logs()
        );
        if over_ipv6 {
            ensure!(
                seen.port() == peer.wg().listen_port(),
                "{} has {} at {seen}, not at its WireGuard port\n{}",
                viewer.name(),
                peer.name(),
                logs()
            );
        }
    }
    b.ping_until(&a, PING_TIMEOUT).with_context(logs)?;
    eprintln!(
        "dual stack {options:?}: a pinged b over IPv{} {first_ping:.2?} after starting the clients",
        if over_ipv6 { 6 } else { 4 }
    );
    measure(id, "first_ping", first_ping);
    Ok(())
}

#[test]
fn dual_stack_peers_connect_over_ipv6() {
    expect_ok(dual_stack(&[], true, "dual_stack"));
}

#[test]
fn family_4_keeps_dual_stack_peers_on_ipv4() {
    expect_ok(dual_stack(&["--family", "4"], false, "dual_stack_family_4"));
}

/// Three hosts behind one NAT, all with WireGuard on port 51820 (the NAT keeps the port for one
/// of them and remaps the others), and a fourth on the internet. The three connect among
/// themselves over the LAN at port 51820; the fourth sees them at three different ports of the
/// NAT's public address; every pair pings.
fn three_on_51820() -> Result<()> {
    let internet = Internet::new()?;
    let site = ServerSite::start(&internet)?;
    let lan = internet.shared_nat("home-nat", NatKind::Masquerade, &["h1", "h2", "h3"])?;
    let mut home = Vec::new();
    for (i, host) in (0u8..).zip(lan) {
        home.push(Peer::start_on_port(
            &format!("h{}", i + 1),
            host,
            tunnel_ip(i),
            51820,
        )?);
    }
    let d = Peer::start("d", internet.public_host("d")?, tunnel_ip(3))?;
    let mut peers: Vec<&Peer> = home.iter().collect();
    peers.push(&d);
    mesh(&peers)?;
    let server = &site.server;
    let explain = || diagnostics(&peers, server);

    let started = Instant::now();
    let mut clients = start_one_shot(&peers, &[], server)?;
    let outs = ensure_all_exit_0(&mut clients, &explain)?;
    let clients_exit = started.elapsed();
    let logs = || report(&outs, &explain);
    for a in &home {
        for b in &home {
            if a.name() != b.name() {
                ensure_endpoint(a, b, SocketAddr::from(b.local_endpoint())).with_context(logs)?;
            }
        }
    }
    let nat_ip = IpAddr::V4(home[0].host().public_ip());
    let mut ports = BTreeSet::new();
    for h in &home {
        let seen = endpoint(&d, h).with_context(logs)?;
        ensure!(
            seen.ip() == nat_ip,
            "d has {} at {seen}, expected the NAT's {nat_ip}\n{}",
            h.name(),
            logs()
        );
        ports.insert(seen.port());
    }
    ensure!(
        ports.len() == 3,
        "d has the three hosts at ports {ports:?} of the NAT, expected three different ones\n{}",
        logs()
    );
    for (i, a) in home.iter().enumerate() {
        for b in home.iter().skip(i + 1) {
            a.ping_until(b, PING_TIMEOUT).with_context(logs)?;
        }
        d.ping_until(a, PING_TIMEOUT).with_context(logs)?;
    }
    eprintln!("three hosts on port 51820 behind one NAT and one outside: all exited 0 after {clients_exit:.1?}");
    measure("three_on_51820", "clients_exit", clients_exit);
    Ok(())
}

#[test]
fn three_hosts_behind_one_nat_on_port_51820_connect_with_each_other_and_outside() {
    expect_ok(three_on_51820());
}

/// Two peers with IPv6 only, each behind a stateful firewall, talking to the server over IPv6:
/// they connect at each other's global address and WireGuard port.
fn ipv6_only() -> Result<()> {
    let internet = Internet::dual_stack()?;
    let ns = Netns::new("server")?;
    let ip = internet.attach(&ns, HOST_IF)?;
    let server_v6 = internet
        .site_ipv6(ip)
        .ok_or_else(|| anyhow!("the server's site has no IPv6 address"))?;
    let server_at = SocketAddr::new(IpAddr::V6(server_v6), server_addr().port());
    let server = Server::start(&ns, &[server_at])?;
    let a = Peer::start(
        "a",
        internet.nat_host("a", NatKind::Firewall)?,
        tunnel_ip(0),
    )?;
    let b = Peer::start(
        "b",
        internet.nat_host("b", NatKind::Firewall)?,
        tunnel_ip(1),
    )?;
    let peers = [&a, &b];
    for peer in peers {
        peer.netns()
            .run("ip", ["-4", "addr", "flush", "dev", HOST_IF])?;
    }
    mesh(&peers)?;
    let explain = || diagnostics(&peers, &server);

    let started = Instant::now();
    // The server listens on its IPv6 address only: the clients talk to it there.
    let mut clients = start_one_shot(&peers, &[], &server)?;
    a.ping_until(&b, PING_TIMEOUT)
        .with_context(|| format!("a cannot ping b over IPv6\n{}", explain()))?;
    let first_ping = started.elapsed();
    let outs = ensure_all_exit_0(&mut clients, &explain)?;
    let logs = || report(&outs, &explain);
    for (viewer, peer) in [(&a, &b), (&b, &a)] {
        let v6: Ipv6Addr = peer
            .host()
            .ipv6()
            .ok_or_else(|| anyhow!("{} has no IPv6 address", peer.name()))?;
        let expected = SocketAddr::new(IpAddr::V6(v6), peer.wg().listen_port());
        ensure_endpoint(viewer, peer, expected).with_context(logs)?;
    }
    b.ping_until(&a, PING_TIMEOUT).with_context(logs)?;
    eprintln!("IPv6 only: a pinged b {first_ping:.2?} after starting the clients");
    measure("ipv6_only", "first_ping", first_ping);
    Ok(())
}

#[test]
fn ipv6_only_peers_behind_firewalls_connect() {
    expect_ok(ipv6_only());
}

/// A laptop moving: two continuous clients, each behind its NAT, are connected; then one
/// peer's host leaves its LAN for another (its link goes down, a new interface with a new
/// address behind a new NAT comes up). Its client follows the address change and the tunnel
/// comes back; the other peer's endpoint for it is the new NAT's address.
fn laptop_moves() -> Result<()> {
    let internet = Internet::new()?;
    let site = ServerSite::start(&internet)?;
    let mut a = Peer::start(
        "a",
        internet.nat_host("a", NatKind::Firewall)?,
        tunnel_ip(0),
    )?;
    let b = Peer::start(
        "b",
        internet.nat_host("b", NatKind::Firewall)?,
        tunnel_ip(1),
    )?;
    mesh(&[&a, &b])?;
    let server = &site.server;
    let mut clients = vec![
        start_client(&a, &["--continuous"], server)?,
        start_client(&b, &["--continuous"], server)?,
    ];
    let logs = |clients: &[Process], peers: &[&Peer]| {
        let mut text: Vec<String> = clients.iter().map(|c| c.log_tail()).collect();
        text.push(diagnostics(peers, server));
        text.join("\n")
    };
    a.ping_until(&b, PING_TIMEOUT).with_context(|| {
        format!(
            "a cannot ping b before moving\n{}",
            logs(&clients, &[&a, &b])
        )
    })?;

    // b pings a every 200 ms throughout: the first reply after the move is when it came back.
    let mut ping = b.running_ping(&a)?;
    a.move_to(&internet, "cafe-nat", NatKind::Firewall, "eth1")?;
    let moved = SystemTime::now();
    let back = ping
        .wait_reply_after(moved, PING_TIMEOUT, || {
            for client in clients.iter_mut() {
                client.ensure_running()?;
            }
            Ok(())
        })
        .with_context(|| {
            format!(
                "the tunnel did not come back after a moved\n{}",
                logs(&clients, &[&a, &b])
            )
        })?;
    drop(ping);
    let new_nat = IpAddr::V4(a.host().public_ip());
    let seen = endpoint(&b, &a)?;
    ensure!(
        seen.ip() == new_nat,
        "b has a at {seen}, expected the new NAT {new_nat}\n{}",
        logs(&clients, &[&a, &b])
    );
    b.ping_until(&a, PING_TIMEOUT)?;
    ensure!(
        clients[0].stderr().contains("local addresses changed"),
        "a's client never noticed its new address\n{}",
        clients[0].log_tail()
    );
    for client in &mut clients {
        ensure!(
            client.is_running()?,
            "a continuous client exited\n{}",
            client.log_tail()
        );
    }
    eprintln!("laptop moved to a new LAN: the tunnel was back after {back:.2?}");
    measure("laptop_moves", "back", back);
    Ok(())
}

#[test]
fn a_laptop_that_moves_to_another_lan_comes_back() {
    expect_ok(laptop_moves());
}
