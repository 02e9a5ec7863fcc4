//! The client across NATs: two WireGuard peers behind different kinds of NAT (see
//! `wgpunch_e2e::NatWorld`) find each other through the discovery server at 198.51.100.2:51818.
//!
//! For every pair that can connect, both one-shot clients must exit 0 (every endpoint set and a
//! WireGuard handshake seen), each side's `wg show` endpoint for the other must be the public
//! address the other's NAT really uses for that flow (read from the NAT router's conntrack), and a
//! ping must cross the tunnel both ways. A symmetric NAT cannot be punched: both clients must say
//! so (exit 5) instead of claiming success.
//!
//! Continuous clients must follow the network when it changes under them: a NAT that moves to
//! another port range, or to another public address, while a ping keeps running through the
//! tunnel. Timings go to stderr (`--nocapture` shows them), each scenario's figures also as
//! `MEASURE scenario=<id> metric=<name> seconds=<x.xxx>` lines (`scripts/bench-connect` collects
//! them). They are measurements: the budgets only bound how long a scenario waits for something
//! that must happen.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context, Result};
use wgpunch_e2e::{
    expect_ok, measure, EndpointCheck, Internet, NatKind, NatWorld, Output, Peer, Process,
    RunningPing, Server, Site, REMAP_RANGE, SNAT_RANGE,
};

/// `--timeout` of the one-shot clients.
const CLIENT_TIMEOUT_SECS: u64 = 40;

/// The client's default wait for a WireGuard handshake after setting the endpoints.
const HANDSHAKE_WAIT: Duration = Duration::from_secs(15);

/// How long a one-shot client may run before the test gives up on it.
const CLIENT_BUDGET: Duration =
    Duration::from_secs(CLIENT_TIMEOUT_SECS + HANDSHAKE_WAIT.as_secs() + 10);

/// Budget for a ping across the tunnel once the clients are done.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// Exit status: endpoints set, but no WireGuard handshake with some peer.
const EXIT_NO_HANDSHAKE: i32 = 5;

/// Continuous mode: how much later b's client starts than a's.
const LATE_START: Duration = Duration::from_secs(15);

/// Continuous mode: budget for both peers to connect once b's client runs.
const FIND_BUDGET: Duration = Duration::from_secs(60);

/// Continuous mode: budget for both sides to follow a's NAT to its new mapping.
const REMAP_BUDGET: Duration = Duration::from_secs(240);

/// Continuous mode: how long the tunnel carries the running ping between two moves.
const STEADY_BETWEEN_MOVES: Duration = Duration::from_secs(5);

/// Interval between two checks of the network while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Late one-shot client: `--timeout` of both clients.
const LATE_CLIENT_TIMEOUT_SECS: u64 = 60;

/// Late one-shot client: how much later b's client starts than a's.
const LATE_ONE_SHOT_START: Duration = Duration::from_secs(20);

/// Late one-shot client: how long each client may run before the test gives up on it.
const LATE_CLIENT_BUDGET: Duration =
    Duration::from_secs(LATE_CLIENT_TIMEOUT_SECS + HANDSHAKE_WAIT.as_secs() + 10);

/// Budget for the tunnel to answer again after the network changed under running clients.
const RECOVERY_BUDGET: Duration = Duration::from_secs(180);

/// Budget for the other side's endpoint to show the change once the tunnel answers again.
const FOLLOW_BUDGET: Duration = Duration::from_secs(30);

/// A world of two peers at `a` and `b` with the server running.
fn world_with_server(a: Site, b: Site) -> Result<(NatWorld, Server)> {
    let world = NatWorld::build(a, b)?;
    let server = world.start_server()?;
    Ok((world, server))
}

/// Starts a client with `options` on `peer`.
fn start_client(peer: &Peer, options: &[&str], server: &Server) -> Result<Process> {
    peer.client_cmd(options, server)?
        .spawn(&format!("wgpunch-client on {}", peer.name()))
}

/// Runs both one-shot clients at once; returns their outputs and when they were started.
fn run_one_shot(world: &NatWorld, server: &Server) -> Result<(Output, Output, Instant)> {
    let timeout = CLIENT_TIMEOUT_SECS.to_string();
    let options = ["--timeout", timeout.as_str()];
    let started = Instant::now();
    let mut client_a = start_client(world.a(), &options, server)?;
    let mut client_b = start_client(world.b(), &options, server)?;
    let out_a = client_a.wait_timeout(CLIENT_BUDGET)?;
    let out_b = client_b.wait_timeout(CLIENT_BUDGET.saturating_sub(started.elapsed()))?;
    Ok((out_a, out_b, started))
}

/// Fails unless `out` exited with `code`, adding the server's log and the network state.
fn ensure_exit(out: &Output, code: i32, world: &NatWorld, server: &Server) -> Result<()> {
    out.ensure_code(code)
        .with_context(|| format!("{}\n{}", server.log_tail(), world.diagnostics()))
}

/// What explains a failure: the logs of the clients and the server, and the network state.
fn explain(world: &NatWorld, server: &Server, clients: &[String]) -> String {
    let mut text = clients.join("\n");
    text.push_str(&format!("\n{}\n{}", server.log_tail(), world.diagnostics()));
    text
}

/// The unsolicited inbound conntrack entries (the trap) at each peer's NAT, for the timings line.
fn trap_entries(world: &NatWorld) -> Result<String> {
    let mut parts = Vec::new();
    for peer in [world.a(), world.b()] {
        if let Some(nat) = peer.host().nat() {
            parts.push(format!("{} {}", peer.name(), nat.inbound_flows()?.len()));
        }
    }
    Ok(parts.join(", "))
}

/// Calls `check` every [`POLL`] until it succeeds, for at most `timeout`; an error from `check`
/// means "not yet", one from `abort` ends the wait. Returns the value and how long it took; the
/// timeout error carries `check`'s last reason.
fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut abort: impl FnMut() -> Result<()>,
    mut check: impl FnMut() -> Result<T>,
) -> Result<(T, Duration)> {
    let started = Instant::now();
    loop {
        abort()?;
        let last = match check() {
            Ok(value) => return Ok((value, started.elapsed())),
            Err(e) => e,
        };
        if started.elapsed() >= timeout {
            return Err(last.context(format!("timed out after {timeout:?} waiting for {what}")));
        }
        thread::sleep(POLL);
    }
}

/// Runs both one-shot clients and checks the connection: exit 0, endpoints as the NATs map
/// them, ping both ways. Prints the timings under `scenario` and measures `first_ping` and
/// `clients_exit` (from starting the clients) under `id`.
fn check_connects(
    id: &str,
    scenario: &str,
    world: &NatWorld,
    server: &Server,
) -> Result<[EndpointCheck; 2]> {
    let (out_a, out_b, started) = run_one_shot(world, server)?;
    let clients_done = started.elapsed();
    ensure_exit(&out_a, 0, world, server)?;
    ensure_exit(&out_b, 0, world, server)?;
    let logs = [out_a.to_string(), out_b.to_string()];
    let checks = world
        .check_endpoints()
        .with_context(|| explain(world, server, &logs))?;
    world
        .a()
        .ping_until(world.b(), PING_TIMEOUT)
        .with_context(|| explain(world, server, &logs))?;
    let first_ping = started.elapsed();
    world
        .b()
        .ping_until(world.a(), PING_TIMEOUT)
        .with_context(|| explain(world, server, &logs))?;
    eprintln!(
        "{scenario}: clients exited 0 after {clients_done:.1?}; first ping crossed the tunnel \
         {first_ping:.1?} after starting the clients; {}; {}; unsolicited inbound conntrack \
         entries: {}",
        checks[0],
        checks[1],
        trap_entries(world)?
    );
    measure(id, "first_ping", first_ping);
    measure(id, "clients_exit", clients_done);
    Ok(checks)
}

/// Scenario 1, the hard one: neither NAT filters, so a peer's packet that arrives before this
/// side's own went out leaves a conntrack entry that steals the mapping (the conntrack trap).
#[test]
fn masquerade_nats_on_both_sides_connect() {
    let nat = Site::Behind(NatKind::Masquerade);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_connects(
        "masquerade",
        "masquerade/masquerade",
        &world,
        &server,
    ));
}

fn check_eim_remap(world: &NatWorld, server: &Server) -> Result<()> {
    let checks = check_connects("eim_remap", "eim-remap/eim-remap", world, server)?;
    for (check, peer) in checks.iter().zip([world.b(), world.a()]) {
        let port = check.endpoint.port();
        ensure!(
            port != peer.wg().listen_port(),
            "{}'s NAT kept its listen port {port}: {check}",
            peer.name()
        );
        ensure!(
            SNAT_RANGE.contains(&port),
            "{}'s public port {port} is outside {SNAT_RANGE:?}: {check}",
            peer.name()
        );
    }
    Ok(())
}

/// Scenario 2: each NAT maps the WireGuard port to another public port, the same for every
/// destination.
#[test]
fn eim_remap_nats_on_both_sides_connect() {
    let nat = Site::Behind(NatKind::EimRemap);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_eim_remap(&world, &server));
}

/// Scenario 3: both NATs drop unsolicited packets from the internet.
#[test]
fn firewalls_on_both_sides_connect() {
    let nat = Site::Behind(NatKind::Firewall);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_connects(
        "firewall",
        "firewall/firewall",
        &world,
        &server,
    ));
}

/// Scenario 4: one peer on the internet itself.
#[test]
fn public_host_and_masquerade_nat_connect() {
    let (world, server) = expect_ok(world_with_server(
        Site::Public,
        Site::Behind(NatKind::Masquerade),
    ));
    expect_ok(check_connects(
        "public_masquerade",
        "public/masquerade",
        &world,
        &server,
    ));
}

/// Both endpoints as the NATs map them and one ping through the tunnel each way.
fn connected(world: &NatWorld) -> Result<[EndpointCheck; 2]> {
    let checks = world.check_endpoints()?;
    ensure!(
        world.ping_once_both_ways()?,
        "no ping through the tunnel both ways yet ({}; {})",
        checks[0],
        checks[1]
    );
    Ok(checks)
}

fn check_continuous(world: &NatWorld, server: &Server) -> Result<()> {
    let options = ["-c", "--delay", "1"];
    let (a, b) = (world.a(), world.b());
    let mut client_a = start_client(a, &options, server)?;
    let a_started = Instant::now();
    while a_started.elapsed() < LATE_START {
        client_a.ensure_running()?;
        thread::sleep(POLL);
    }
    ensure!(
        a.endpoint_of(b)?.is_none(),
        "a has an endpoint for b before b's client ever ran"
    );

    // (a) b shows up late; a's running client must find it without a restart.
    let mut client_b = start_client(b, &options, server)?;
    let found = wait_for(
        "both continuous clients to connect the peers",
        FIND_BUDGET,
        || {
            client_a.ensure_running()?;
            client_b.ensure_running()
        },
        || connected(world),
    );
    let (checks, found) = found
        .with_context(|| explain(world, server, &[client_a.log_tail(), client_b.log_tail()]))?;
    eprintln!(
        "continuous: b's client started {LATE_START:?} after a's; first ping crossed both ways \
         {found:.1?} after b's client started; {}; {}",
        checks[0], checks[1]
    );
    measure(CONTINUOUS, "first_ping_after_late_start", found);

    // (b) a's NAT moves to another port range and forgets every mapping.
    let nat = a.host().nat().context("a is behind a NAT")?;
    let old = checks[1].endpoint;
    nat.set_port_range(REMAP_RANGE)?;
    nat.flush_conntrack()?;
    let followed = wait_for(
        "both sides to follow a's NAT to its new mapping",
        REMAP_BUDGET,
        || {
            client_a.ensure_running()?;
            client_b.ensure_running()
        },
        || {
            let checks = world.check_endpoints()?;
            let a_public = checks[1].endpoint;
            ensure!(
                REMAP_RANGE.contains(&a_public.port()),
                "b still has a at {a_public} (before the remap: {old})"
            );
            connected(world)
        },
    );
    let (checks, followed) = followed
        .with_context(|| explain(world, server, &[client_a.log_tail(), client_b.log_tail()]))?;
    eprintln!(
        "continuous: a's NAT remapped {old} -> {}; both endpoints followed and a ping crossed \
         both ways {followed:.1?} after the remap; {}",
        checks[1].endpoint, checks[0]
    );
    // Polled, not a running ping: before b follows, this scenario sends nothing through the
    // tunnel but WireGuard's own packets, which is what exposes the conntrack trap.
    measure(CONTINUOUS, "recovery", followed);
    client_a.ensure_running()?;
    client_b.ensure_running()?;
    Ok(())
}

/// Scenario 5's id in `MEASURE` lines.
const CONTINUOUS: &str = "continuous_remap";

/// Scenario 5: continuous clients find a peer whose client starts late, then follow a NAT that
/// changes its mapping, without restarting anything.
#[test]
fn continuous_clients_find_a_late_peer_and_follow_a_remapped_nat() {
    let nat = Site::Behind(NatKind::EimRemap);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_continuous(&world, &server));
}

/// The first line of `text` that says `key` (or every peer) was resolved, if any.
fn claims_resolved<'t>(text: &'t str, key: &str) -> Option<&'t str> {
    text.lines().find(|line| {
        let lower = line.to_lowercase();
        let says_resolved = lower.match_indices("resolved").any(|(i, _)| {
            let before = &lower[..i];
            !["un", "not ", "never "]
                .iter()
                .any(|neg| before.ends_with(neg))
        });
        says_resolved
            && (line.contains(key) || lower.contains("every peer") || lower.contains("all peers"))
    })
}

fn check_symmetric(world: &NatWorld, server: &Server) -> Result<()> {
    let (out_a, out_b, started) = run_one_shot(world, server)?;
    let done = started.elapsed();
    for (out, other) in [(&out_a, world.b()), (&out_b, world.a())] {
        ensure_exit(out, EXIT_NO_HANDSHAKE, world, server)?;
        let key = other.public_key();
        for needle in [key, "no WireGuard handshake", "maps per destination"] {
            ensure!(
                out.stderr.contains(needle),
                "stderr lacks {needle:?}: {out}"
            );
        }
        let everything = format!("{}\n{}", out.stdout, out.stderr);
        if let Some(line) = claims_resolved(&everything, key) {
            bail!(
                "the client claims {} was resolved: {line:?}; {out}",
                other.name()
            );
        }
    }
    let b = world.b();
    let flows = b
        .host()
        .nat()
        .context("b is behind a NAT")?
        .flows_from(b.local_endpoint())?;
    eprintln!(
        "masquerade/symmetric: both clients exited {EXIT_NO_HANDSHAKE} after {done:.1?}; b's \
         symmetric NAT flows from its WireGuard port: {}",
        flows
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    measure("symmetric", "clients_exit", done);
    Ok(())
}

/// Scenario 6: a symmetric NAT gives the peer another port than the server saw, so no handshake
/// can happen; both clients must say so, naming the peer, and exit 5.
#[test]
fn symmetric_nat_against_masquerade_exits_5_naming_the_peer() {
    let (world, server) = expect_ok(world_with_server(
        Site::Behind(NatKind::Masquerade),
        Site::Behind(NatKind::Symmetric),
    ));
    expect_ok(check_symmetric(&world, &server));
}

#[test]
fn claims_resolved_ignores_negations_and_other_peers() {
    let key = "KEY=";
    assert!(claims_resolved("INFO set peer endpoint peer=KEY=", key).is_none());
    assert!(claims_resolved("  2 of 2 peers unresolved:\n  KEY=", key).is_none());
    assert!(claims_resolved("peer KEY= not resolved", key).is_none());
    assert!(claims_resolved("INFO resolved peer=OTHER=", key).is_none());
    assert!(claims_resolved("INFO peer resolved peer=KEY=", key).is_some());
    assert!(claims_resolved("INFO every peer resolved peers=1", key).is_some());
}

/// Fails if either client exited with anything but 0; a client still running, or done with 0,
/// is fine.
fn ensure_no_failure(clients: [&mut Process; 2]) -> Result<()> {
    for client in clients {
        if let Some(status) = client.try_status()? {
            ensure!(
                status.success(),
                "{} exited with {status}; {}",
                client.label(),
                client.log_tail()
            );
        }
    }
    Ok(())
}

fn check_late_second_client(world: &NatWorld, server: &Server) -> Result<()> {
    const ID: &str = "late_second_client";
    let timeout = LATE_CLIENT_TIMEOUT_SECS.to_string();
    let options = ["--timeout", timeout.as_str()];
    let (a, b) = (world.a(), world.b());
    let mut client_a = start_client(a, &options, server)?;
    let a_started = Instant::now();
    let mut ping = a.running_ping(b)?;
    while a_started.elapsed() < LATE_ONE_SHOT_START {
        client_a.ensure_running()?;
        thread::sleep(POLL);
    }
    ensure!(
        a.endpoint_of(b)?.is_none(),
        "a has an endpoint for b before b's client ever ran"
    );

    let b_started_at = SystemTime::now();
    let b_started = Instant::now();
    let mut client_b = start_client(b, &options, server)?;
    // Counted from b's start: a's client has LATE_ONE_SHOT_START less of its budget left.
    let ping_budget = LATE_CLIENT_BUDGET - LATE_ONE_SHOT_START;
    let first_ping = ping
        .wait_reply_after(b_started_at, ping_budget, || {
            ensure_no_failure([&mut client_a, &mut client_b])
        })
        .with_context(|| explain(world, server, &[client_a.log_tail(), client_b.log_tail()]))?;
    drop(ping);

    let out_a = client_a.wait_timeout(LATE_CLIENT_BUDGET.saturating_sub(a_started.elapsed()))?;
    let out_b = client_b.wait_timeout(LATE_CLIENT_BUDGET.saturating_sub(b_started.elapsed()))?;
    let clients_done = b_started.elapsed();
    ensure_exit(&out_a, 0, world, server)?;
    ensure_exit(&out_b, 0, world, server)?;
    let logs = [out_a.to_string(), out_b.to_string()];
    let checks = world
        .check_endpoints()
        .with_context(|| explain(world, server, &logs))?;
    for (from, to) in [(a, b), (b, a)] {
        from.ping_until(to, PING_TIMEOUT)
            .with_context(|| explain(world, server, &logs))?;
    }
    eprintln!(
        "late one-shot client: b's client started {LATE_ONE_SHOT_START:?} after a's; the first \
         ping crossed the tunnel {first_ping:.1?} after b's start; both clients exited 0 \
         {clients_done:.1?} after b's start; {}; {}",
        checks[0], checks[1]
    );
    measure(ID, "first_ping_after_late_start", first_ping);
    measure(ID, "clients_exit_after_late_start", clients_done);
    Ok(())
}

/// Scenario 7: a one-shot client waits for a peer whose client starts 20 s later, behind
/// stateful firewalls; both must exit 0.
#[test]
fn late_second_client() {
    let nat = Site::Behind(NatKind::Firewall);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_late_second_client(&world, &server));
}

/// Continuous clients on both peers, connected, and a ping from a to b running through the tunnel.
struct Running {
    client_a: Process,
    client_b: Process,
    ping: RunningPing,
}

impl Running {
    /// Starts continuous clients (`-c`, default delay) on both peers at once, waits until they
    /// have connected the peers (measured as `first_ping` under `id`), then starts a
    /// [`RunningPing`] a -> b and waits for its first reply.
    fn start(id: &str, world: &NatWorld, server: &Server) -> Result<Self> {
        let (a, b) = (world.a(), world.b());
        let started = Instant::now();
        let mut client_a = start_client(a, &["-c"], server)?;
        let mut client_b = start_client(b, &["-c"], server)?;
        let (checks, _) = wait_for(
            "both continuous clients to connect the peers",
            FIND_BUDGET,
            || {
                client_a.ensure_running()?;
                client_b.ensure_running()
            },
            || connected(world),
        )
        .with_context(|| explain(world, server, &[client_a.log_tail(), client_b.log_tail()]))?;
        let found = started.elapsed();
        let mut ping = a.running_ping(b)?;
        let ping_started = SystemTime::now();
        ping.wait_reply_after(ping_started, PING_TIMEOUT, || {
            client_a.ensure_running()?;
            client_b.ensure_running()
        })?;
        eprintln!(
            "{id}: continuous clients connected the peers {found:.1?} after starting; {}; {}",
            checks[0], checks[1]
        );
        measure(id, "first_ping", found);
        Ok(Self {
            client_a,
            client_b,
            ping,
        })
    }

    /// Waits up to [`RECOVERY_BUDGET`] for the running ping's first reply after `changed_at`;
    /// returns how long after it that was. Both clients must keep running.
    fn recovery(
        &mut self,
        changed_at: SystemTime,
        world: &NatWorld,
        server: &Server,
    ) -> Result<Duration> {
        let Self {
            client_a,
            client_b,
            ping,
        } = self;
        let recovered = ping.wait_reply_after(changed_at, RECOVERY_BUDGET, || {
            client_a.ensure_running()?;
            client_b.ensure_running()
        });
        recovered.with_context(|| {
            format!(
                "the tunnel did not answer again after the change\n{}",
                explain(world, server, &[client_a.log_tail(), client_b.log_tail()])
            )
        })
    }

    /// Waits up to [`FOLLOW_BUDGET`] until `viewer`'s endpoint for `moved` is what `moved`'s NAT
    /// really uses and `follows` accepts it.
    fn followed(
        &mut self,
        world: &NatWorld,
        server: &Server,
        viewer: &Peer,
        moved: &Peer,
        follows: impl Fn(SocketAddrV4) -> Result<()>,
    ) -> Result<EndpointCheck> {
        let Self {
            client_a, client_b, ..
        } = self;
        let what = format!("{}'s endpoint for {}", viewer.name(), moved.name());
        let followed = wait_for(
            &what,
            FOLLOW_BUDGET,
            || {
                client_a.ensure_running()?;
                client_b.ensure_running()
            },
            || {
                let check = world.check_endpoint(viewer, moved)?;
                follows(check.endpoint)?;
                Ok(check)
            },
        );
        let (check, _) = followed
            .with_context(|| explain(world, server, &[client_a.log_tail(), client_b.log_tail()]))?;
        Ok(check)
    }
}

/// Moves `moved`'s NAT to another public address while the ping runs; measures `metric` (the
/// first echo reply after the change) and checks `viewer` follows to the new address.
fn move_public_ip(
    id: &str,
    metric: &str,
    running: &mut Running,
    (world, server): (&NatWorld, &Server),
    (viewer, moved): (&Peer, &Peer),
) -> Result<()> {
    let nat = moved
        .host()
        .nat()
        .context("the peer that moves is behind a NAT")?;
    let old = nat.public_ip();
    let new = nat.change_public_ip()?;
    // Taken once the move is complete (conntrack flushed), so no reply in flight counts.
    let changed_at = SystemTime::now();
    let recovery = running.recovery(changed_at, world, server)?;
    let check = running.followed(world, server, viewer, moved, |endpoint| {
        ensure!(
            *endpoint.ip() == new,
            "{} still has {} at {endpoint} (its NAT moved {old} -> {new})",
            viewer.name(),
            moved.name()
        );
        Ok(())
    })?;
    eprintln!(
        "{id}: {}'s NAT moved {old} -> {new}; the running ping {} -> {} was answered again \
         {recovery:.1?} after the move ({} requests unanswered in all); {check}",
        moved.name(),
        world.a().name(),
        world.b().name(),
        running.ping.missed()
    );
    measure(id, metric, recovery);
    Ok(())
}

fn check_address_change(world: &NatWorld, server: &Server) -> Result<()> {
    const ID: &str = "continuous_address_change";
    let mut running = Running::start(ID, world, server)?;
    let (a, b) = (world.a(), world.b());
    move_public_ip(ID, "recovery", &mut running, (world, server), (b, a))?;
    // Traffic flows steadily again before the next move, as between two real ones: b notices
    // the second move by a steady flow from a that stops.
    thread::sleep(STEADY_BETWEEN_MOVES);
    move_public_ip(
        ID,
        "recovery_peer_moved",
        &mut running,
        (world, server),
        (a, b),
    )?;
    running.client_a.ensure_running()?;
    running.client_b.ensure_running()
}

/// Scenario 8: continuous clients behind stateful firewalls; a's NAT gets a new public address
/// (every mapping gone), later b's does too. The tunnel must answer again within
/// [`RECOVERY_BUDGET`] each time, without restarting anything.
#[test]
fn continuous_address_change() {
    let nat = Site::Behind(NatKind::Firewall);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_address_change(&world, &server));
}

fn check_remap_behind_firewall(world: &NatWorld, server: &Server) -> Result<()> {
    const ID: &str = "continuous_remap_behind_firewall";
    let mut running = Running::start(ID, world, server)?;
    let (a, b) = (world.a(), world.b());
    let nat = a.host().nat().context("a is behind a NAT")?;
    let old = b.endpoint_of(a)?.context("b has an endpoint for a")?;
    nat.set_port_range(REMAP_RANGE)?;
    nat.flush_conntrack()?;
    let changed_at = SystemTime::now();
    let recovery = running.recovery(changed_at, world, server)?;
    let check = running.followed(world, server, b, a, |endpoint| {
        ensure!(
            REMAP_RANGE.contains(&endpoint.port()),
            "b still has a at {endpoint} (before the remap: {old})"
        );
        Ok(())
    })?;
    eprintln!(
        "{ID}: a's NAT remapped {old} -> {}; the running ping a -> b was answered again \
         {recovery:.1?} after the remap ({} requests unanswered in all); {check}",
        check.endpoint,
        running.ping.missed()
    );
    measure(ID, "recovery", recovery);
    running.client_a.ensure_running()?;
    running.client_b.ensure_running()
}

/// Scenario 9: like scenario 5's remap, but both NATs are stateful firewalls mapping into a port
/// range: after a's NAT moves to [`REMAP_RANGE`] and forgets every mapping, neither side lets
/// the other's new packets in until both punch again.
#[test]
fn continuous_remap_behind_firewall() {
    let nat = Site::Behind(NatKind::FirewallRemap);
    let (world, server) = expect_ok(world_with_server(nat, nat));
    expect_ok(check_remap_behind_firewall(&world, &server));
}

fn check_router_moves(internet: &Internet) -> Result<()> {
    let host = internet.nat_host("a", NatKind::EimRemap)?;
    let nat = host.nat().context("a is behind a NAT")?;
    let first = nat.public_ip();
    let [w, x, y, z] = first.octets();
    let gateway = Ipv4Addr::new(w, x, y, z - 1);
    let mut expected = Ipv4Addr::new(w, x, y, z + 1);
    for _ in 0..2 {
        let old = nat.public_ip();
        let new = nat.change_public_ip()?;
        ensure!(new == expected, "moved {old} -> {new}, expected {expected}");
        ensure!(nat.public_ip() == new, "public_ip() still says {old}");
        let rules = nat.ruleset()?;
        ensure!(
            rules.contains(&format!("{new}:40000-40999")) && !rules.contains(&old.to_string()),
            "the ruleset does not name {new} alone: {rules}"
        );
        internet
            .netns()
            .ping_until(&new.to_string(), PING_TIMEOUT)
            .with_context(|| format!("the internet router reaching {new}"))?;
        let stale = internet
            .netns()
            .cmd("ping")?
            .args(["-n", "-c", "1", "-W", "1", &old.to_string()])
            .run()?;
        ensure!(!stale.status.success(), "{old} still answers: {stale}");
        host.netns()
            .ping_until(&gateway.to_string(), PING_TIMEOUT)
            .with_context(|| format!("the host behind {new} reaching the internet router"))?;
        expected = old;
    }
    ensure!(
        nat.public_ip() == first,
        "two moves must come back to {first}"
    );
    Ok(())
}

/// `NatRouter::change_public_ip`: .8k+2 -> .8k+3 -> .8k+2, reachable from the internet router
/// each time, the ruleset naming the new address, the host behind it still online.
#[test]
fn nat_router_moves_to_another_public_address() {
    let internet = expect_ok(Internet::new());
    expect_ok(check_router_moves(&internet));
}
