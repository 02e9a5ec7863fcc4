//! `wgpunch-demo`: two WireGuard peers, alice and bob, each behind its own masquerading NAT, find
//! each other through a wgpunch discovery server on a simulated internet and connect directly.
//!
//! Everything runs in network namespaces on this machine (see `wgpunch_e2e::NatWorld`) and is
//! removed again when the demo ends, also on failure and on Ctrl-C or SIGTERM. Run it as root
//! through `scripts/demo`, which builds the release binaries first; `WGPUNCH_PROFILE=release`
//! makes it use them.
//!
//! Exit status: 0 the peers connected; 1 something failed (the message says what); 130
//! interrupted.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use wgpunch_e2e::{
    require_test_bed, server_addr, EndpointCheck, NatKind, NatWorld, Output, Peer, Process, Server,
    Site,
};

/// `--timeout` of the one-shot clients.
const CLIENT_TIMEOUT_SECS: u64 = 40;

/// How long a client may run before the demo gives up on it: its timeout, its default wait for
/// the WireGuard handshake (15 s), and some slack.
const CLIENT_BUDGET: Duration = Duration::from_secs(CLIENT_TIMEOUT_SECS + 15 + 10);

/// Budget for the first ping through the tunnel in each direction.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// How often waits look at whether the demo was interrupted.
const TICK: Duration = Duration::from_millis(200);

/// Lines of each client's log shown.
const CLIENT_LOG_LINES: usize = 12;

/// Set once SIGINT, SIGTERM or SIGHUP arrived.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let signals = termination_signals();
    if let Err(e) = signals.thread_block() {
        eprintln!("wgpunch-demo: cannot block termination signals: {e}");
        return ExitCode::FAILURE;
    }
    // Threads started from here on inherit the blocked mask; only this one takes the signals.
    // Children get a clean mask from std, so Process::stop can still end them with SIGTERM.
    thread::spawn(move || watch_signals(signals));

    // Every namespace, process and file of the demo is owned inside `run` and dropped (removed)
    // before it returns, also when it fails or panics.
    let outcome = thread::spawn(run).join();
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(_)) if INTERRUPTED.load(Ordering::SeqCst) => {
            eprintln!("wgpunch-demo: interrupted; everything the demo set up has been removed");
            ExitCode::from(130)
        }
        Ok(Err(e)) => {
            eprintln!("\nwgpunch-demo: FAILED: {e:?}");
            eprintln!("wgpunch-demo: everything the demo set up has been removed");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "wgpunch-demo: FAILED with an internal error (see the panic above); everything \
                 the demo set up has been removed"
            );
            ExitCode::FAILURE
        }
    }
}

fn termination_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

/// Waits for termination signals and raises [`INTERRUPTED`]; the demo notices at its next step.
fn watch_signals(signals: SigSet) {
    while let Ok(signal) = signals.wait() {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("wgpunch-demo: {signal}: still cleaning up, one moment");
        } else {
            eprintln!("\nwgpunch-demo: {signal}: stopping and cleaning up");
        }
    }
}

/// Fails once the demo was interrupted.
fn checkpoint() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn run() -> Result<()> {
    require_test_bed()?;
    println!(
        "wgpunch demo: two WireGuard peers, alice and bob, each behind its own NAT, find each \
         other\nthrough a discovery server on a simulated internet and connect directly.\n\
         Everything runs in network namespaces on this machine and is removed at the end.\n"
    );

    let nat = Site::Behind(NatKind::Masquerade);
    let world = NatWorld::build_named(("alice", nat), ("bob", nat))
        .context("building the network namespaces")?;
    print_network(&world);
    checkpoint()?;

    let server = world
        .start_server()
        .context("starting wgpunch-server (as user nobody)")?;
    println!(
        "\nStarted wgpunch-server on {}, public key {}.",
        server_addr(),
        server.public_key()
    );
    checkpoint()?;

    println!(
        "Running wgpunch-client on alice and bob at the same time (one-shot, --timeout \
         {CLIENT_TIMEOUT_SECS}) ..."
    );
    let started = Instant::now();
    let outputs = run_clients(&world, &server)?;
    for ((peer, out), took) in [world.a(), world.b()].iter().zip(&outputs.0).zip(outputs.1) {
        print_client(peer, out, took);
    }
    for (peer, out) in [world.a(), world.b()].iter().zip(&outputs.0) {
        if out.code() != Some(0) {
            bail!(
                "{}'s client did not connect its peer: exit status {} ({})\n{}",
                peer.name(),
                out.status,
                meaning(out.code()),
                world.diagnostics()
            );
        }
    }

    print_endpoints(&world)?;
    print_mappings(&world)?;
    let checks = world.check_endpoints().with_context(|| {
        format!(
            "the endpoints WireGuard uses are not the ones the NATs map\n{}",
            world.diagnostics()
        )
    })?;

    println!("\nPing through the tunnel:");
    let (alice, bob) = (world.a(), world.b());
    let took = ping(alice, bob)?;
    let first_ping = started.elapsed();
    println!(
        "  {} {} -> {} {}: answered after {took:.1?}",
        alice.name(),
        alice.tunnel_ip(),
        bob.name(),
        bob.tunnel_ip()
    );
    let took = ping(bob, alice)?;
    println!(
        "  {} {} -> {} {}: answered after {took:.1?}",
        bob.name(),
        bob.tunnel_ip(),
        alice.name(),
        alice.tunnel_ip()
    );

    print_summary(&world, &checks, first_ping);
    println!("\nCleaning up: stopping every process and deleting the namespaces.");
    Ok(())
}

fn print_network(world: &NatWorld) {
    println!("The network (198.51.100.0/24 plays the internet, 203.0.113.0/24 the home LANs):");
    println!("  internet router   one routed link per site");
    println!("  discovery server  {}", server_addr());
    for peer in [world.a(), world.b()] {
        let nat = peer
            .host()
            .nat()
            .map(|n| format!(", {}", n.kind()))
            .unwrap_or_default();
        println!(
            "  {:<17} {}{nat}; WireGuard {} on port {}, tunnel address {}",
            peer.name(),
            peer.host().describe(),
            peer.wg().name(),
            peer.wg().listen_port(),
            peer.tunnel_ip()
        );
    }
}

/// Runs both clients at once; returns their outputs and how long each ran.
fn run_clients(world: &NatWorld, server: &Server) -> Result<([Output; 2], [Duration; 2])> {
    let timeout = CLIENT_TIMEOUT_SECS.to_string();
    let options = ["--timeout", timeout.as_str()];
    let started = Instant::now();
    let mut clients = Vec::new();
    for peer in [world.a(), world.b()] {
        clients.push(
            peer.client_cmd(&options, server)?
                .spawn(&format!("wgpunch-client on {}", peer.name()))?,
        );
    }
    let mut outputs = Vec::new();
    let mut took = Vec::new();
    for client in &mut clients {
        outputs.push(wait_exit(client, started + CLIENT_BUDGET)?);
        took.push(started.elapsed());
    }
    let outputs: [Output; 2] = outputs
        .try_into()
        .map_err(|_| anyhow!("expected two clients"))?;
    let took: [Duration; 2] = took
        .try_into()
        .map_err(|_| anyhow!("expected two clients"))?;
    Ok((outputs, took))
}

/// Waits for `process` to exit by `deadline`, giving up early when interrupted.
fn wait_exit(process: &mut Process, deadline: Instant) -> Result<Output> {
    loop {
        checkpoint()?;
        if process.try_status()?.is_some() || Instant::now() >= deadline {
            return process.wait_timeout(Duration::ZERO);
        }
        thread::sleep(TICK);
    }
}

fn meaning(code: Option<i32>) -> &'static str {
    match code {
        Some(0) => "every peer connected",
        Some(1) => "an error",
        Some(2) => "a usage error",
        Some(3) => "the server could not give some peer",
        Some(4) => "the server never answered",
        Some(5) => "endpoints set, but no WireGuard handshake",
        _ => "killed",
    }
}

fn print_client(peer: &Peer, out: &Output, took: Duration) {
    println!(
        "\n{}'s client exited with {} ({}) after {took:.1?}; its log:",
        peer.name(),
        out.code().map_or("a signal".to_owned(), |c| c.to_string()),
        meaning(out.code())
    );
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .collect();
    let skip = lines.len().saturating_sub(CLIENT_LOG_LINES);
    if skip > 0 {
        println!("  [{skip} earlier lines]");
    }
    for line in &lines[skip..] {
        println!("  {}", strip_ansi(line));
    }
}

fn print_endpoints(world: &NatWorld) -> Result<()> {
    println!("\nWhat WireGuard now uses (`wg show IFACE endpoints`, peer key and endpoint):");
    for peer in [world.a(), world.b()] {
        println!("  {}$ wg show {} endpoints", peer.name(), peer.wg().name());
        for line in peer.wg().show(Some("endpoints"))?.lines() {
            println!("    {}", line.replace('\t', "  "));
        }
    }
    Ok(())
}

fn print_mappings(world: &NatWorld) -> Result<()> {
    println!("\nThe NAT mappings of the WireGuard ports (`conntrack -L` on each NAT router):");
    for peer in [world.a(), world.b()] {
        let Some(nat) = peer.host().nat() else {
            continue;
        };
        println!("  {}'s NAT {}:", peer.name(), nat.public_ip());
        for flow in nat.flows_from(peer.local_endpoint())? {
            println!("    {flow}");
        }
    }
    Ok(())
}

/// Pings through the tunnel until answered, within [`PING_TIMEOUT`].
fn ping(from: &Peer, to: &Peer) -> Result<Duration> {
    let started = Instant::now();
    loop {
        checkpoint()?;
        if from.ping_once(to)? {
            return Ok(started.elapsed());
        }
        if started.elapsed() >= PING_TIMEOUT {
            bail!(
                "no ping from {} to {} ({}) through the tunnel within {PING_TIMEOUT:?}",
                from.name(),
                to.name(),
                to.tunnel_ip()
            );
        }
        thread::sleep(TICK);
    }
}

fn print_summary(world: &NatWorld, checks: &[EndpointCheck; 2], first_ping: Duration) {
    let (alice, bob) = (world.a(), world.b());
    // checks[0] is alice's view of bob, checks[1] bob's view of alice.
    let (bob_public, alice_public) = (checks[0].endpoint, checks[1].endpoint);
    println!("\nWhat happened:");
    println!(
        "  {} and {} found each other through the discovery server at {}.",
        alice.describe(),
        bob.describe(),
        server_addr()
    );
    println!(
        "  Each client registered from its WireGuard port, so the server saw the public \
         addresses\n  the NATs give those ports: {} at {alice_public} and {} at {bob_public}.",
        alice.name(),
        bob.name()
    );
    println!(
        "  Each NAT uses that same address for every destination, so each client set it as \
         the other's\n  endpoint, and WireGuard connected directly between the two NATs, with \
         no relay."
    );
    println!(
        "  The first ping crossed the tunnel {:.1} s after the clients started.",
        first_ping.as_secs_f64()
    );
}

/// Removes terminal colour codes from a log line.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_keeps_the_text() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m set"),
            "2026  INFO set"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
