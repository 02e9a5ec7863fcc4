//! `wgpunch-bench`: a load generator for the wgpunch discovery server that verifies every answer.
//! Loopback only; every loop is bounded in count and time.

mod flood;
mod identity;
mod idle;
mod load;
mod stats;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use wgpunch_common::keys::PublicKey;

use crate::flood::{FloodConfig, FloodKind, FloodOutcome, Resolution};
use crate::identity::MAX_SOCKETS;
use crate::idle::IdleConfig;
use crate::load::LoadConfig;
use crate::stats::{cpu_now, per_second, print_cpu, print_latency, print_server_memory};

/// Load generator for wgpunch-server, on loopback only.
///
/// Load mode (default): N clients in pairs (client 2i and 2i+1 list each other as peers), each with
/// its own UDP socket on its own 127.1.x.y address, handshake, register and look each other up K
/// times. Every registration's observed address must be the client's socket address and every
/// answer the partner's; anything else counts as an error. S sockets are in use at once (S/2 pairs
/// in flight); each pair gets fresh sockets. Start the server with a long --registration-ttl, as
/// finished pairs stay registered.
///
/// Idle mode (--idle SECS): N clients in pairs on S shared sockets register, then stay idle for
/// SECS (a registration refresh every 20 s, a new handshake every 120 s, as idle clients do);
/// reports the server's CPU time over the idle window per client, and the pushes the clients got.
///
/// Flood mode (--flood-handshakes or --flood-garbage): one socket floods the server while a
/// legitimate client connects, registers and resolves its partner; reports how long that took, with
/// and without the flood.
///
/// Exit status: 0 every answer verified (load) or the flooded client resolved (flood); 1 errors or
/// failure; 2 usage error.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Cli {
    /// The server's address; must be a loopback address (127.0.0.0/8 or ::1).
    #[arg(long, value_name = "ADDR:PORT")]
    server: SocketAddr,

    /// The server's public key (base64), as printed by `wgpunch-server --print-public-key`.
    #[arg(long, value_name = "BASE64")]
    server_key: PublicKey,

    /// The server's process id, to report its peak memory (VmHWM from /proc/PID/status).
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,

    /// Number of clients (even, at least 2).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    clients: u64,

    /// Lookup answers each client waits for.
    #[arg(long, value_name = "K", default_value_t = 1)]
    lookups_per_client: u32,

    /// Sockets in use at once (even; S/2 pairs in flight). Default: min(N, 1000).
    #[arg(long, value_name = "S")]
    sockets: Option<usize>,

    /// Stop the load after this many seconds, finished or not.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    duration_limit: u64,

    /// Give up on one pair after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pair_timeout: u64,

    /// Flood with real handshake initiations from fresh keys at RATE per second (0: flat out)
    /// instead of running the load.
    #[arg(long, value_name = "RATE", conflicts_with = "flood_garbage")]
    flood_handshakes: Option<u64>,

    /// Flood with random bytes of an initiation's length at RATE per second (0: flat out) instead
    /// of running the load.
    #[arg(long, value_name = "RATE")]
    flood_garbage: Option<u64>,

    /// Idle mode: once every client is registered, stay idle this many seconds and measure the
    /// server's CPU time meanwhile (S defaults to 64 sockets shared by the clients).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    idle: Option<u64>,

    /// Idle mode: the clients do not ask the server to push their peers' changes (protocol
    /// v2's watch flag off), to compare.
    #[arg(long, requires = "idle")]
    no_watch: bool,

    /// How long a flood lasts (at least 2 s).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(2..=600))]
    duration: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("wgpunch-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the chosen mode; true when everything checked out.
fn run(cli: &Cli) -> Result<bool> {
    if !cli.server.ip().is_loopback() {
        bail!(
            "--server must be a loopback address, not {}",
            cli.server.ip()
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let flood = match (cli.flood_handshakes, cli.flood_garbage) {
        (Some(rate), _) => Some((FloodKind::Handshakes, rate)),
        (None, Some(rate)) => Some((FloodKind::Garbage, rate)),
        (None, None) => None,
    };
    if let Some(idle) = cli.idle {
        return run_idle(cli, &runtime, Duration::from_secs(idle));
    }
    match flood {
        Some((kind, rate)) => {
            let config = FloodConfig {
                server: cli.server,
                server_key: cli.server_key,
                kind,
                rate,
                duration: Duration::from_secs(cli.duration),
                server_pid: cli.server_pid,
            };
            let outcome = runtime.block_on(flood::run(&config))?;
            print_flood(&config, &outcome, cli.server_pid);
            Ok(outcome.flooded.resolved_after.is_some() && outcome.flooded.errors == 0)
        }
        None => run_load(cli, &runtime),
    }
}

fn run_load(cli: &Cli, runtime: &tokio::runtime::Runtime) -> Result<bool> {
    if cli.clients < 2 || cli.clients & 1 == 1 {
        bail!("--clients must be even and at least 2");
    }
    let sockets = cli
        .sockets
        .unwrap_or_else(|| usize::try_from(cli.clients.min(1000)).unwrap_or(1000));
    if sockets < 2 || sockets & 1 == 1 || sockets > MAX_SOCKETS {
        bail!("--sockets must be even, from 2 to {MAX_SOCKETS}");
    }
    let start = Instant::now();
    let cpu_before = cpu_now(cli.server_pid);
    let config = LoadConfig {
        server: cli.server,
        server_key: cli.server_key,
        clients: cli.clients,
        lookups: cli.lookups_per_client,
        sockets,
        deadline: start + Duration::from_secs(cli.duration_limit),
        pair_timeout: Duration::from_secs(cli.pair_timeout),
    };
    let mut outcome = runtime.block_on(load::run(&config))?;
    let elapsed = start.elapsed();
    let rate = |n: u64| per_second(n, elapsed);
    println!(
        "load                   {} clients, {} sockets at once, {} lookups each, {:.1} s",
        cli.clients,
        sockets,
        cli.lookups_per_client,
        elapsed.as_secs_f64()
    );
    println!(
        "pairs                  {} finished, {} timed out, {} not started",
        outcome.finished_pairs, outcome.timed_out_pairs, outcome.skipped_pairs
    );
    println!(
        "handshakes             {} ({:.0}/s)",
        outcome.handshakes,
        rate(outcome.handshakes)
    );
    println!(
        "registrations          {} verified ({:.0}/s)",
        outcome.registrations,
        rate(outcome.registrations)
    );
    println!(
        "lookups                {} asked, {} answers verified ({:.0}/s)",
        outcome.lookups_sent,
        outcome.verified_answers,
        rate(outcome.verified_answers)
    );
    println!(
        "errors                 {} (wrong observed {}, wrong endpoint {}, unknown {}, timed-out pairs {})",
        outcome.errors(),
        outcome.wrong_observed,
        outcome.wrong_endpoint,
        outcome.unknown,
        outcome.timed_out_pairs
    );
    print_latency("handshake->Connected", &mut outcome.handshake_latency);
    print_latency("lookup->answer", &mut outcome.lookup_latency);
    print_cpu(cli.server_pid, cpu_before, elapsed);
    print_server_memory(cli.server_pid);
    let expected = cli.clients * u64::from(cli.lookups_per_client);
    Ok(outcome.errors() == 0
        && outcome.skipped_pairs == 0
        && outcome.verified_answers == expected
        && outcome.registrations == cli.clients)
}

fn run_idle(cli: &Cli, runtime: &tokio::runtime::Runtime, idle: Duration) -> Result<bool> {
    if cli.clients < 2 || cli.clients & 1 == 1 {
        bail!("--clients must be even and at least 2");
    }
    let sockets = cli.sockets.unwrap_or(64);
    if sockets == 0 || sockets > MAX_SOCKETS {
        bail!("--sockets must be from 1 to {MAX_SOCKETS}");
    }
    let config = IdleConfig {
        server: cli.server,
        server_key: cli.server_key,
        clients: cli.clients,
        sockets,
        watch: !cli.no_watch,
        ramp_limit: Duration::from_secs(cli.duration_limit),
        idle,
    };
    let mut cpu_before = (None, None);
    let mut idle_start = Instant::now();
    let outcome = runtime.block_on(idle::run(&config, || {
        cpu_before = cpu_now(cli.server_pid);
        idle_start = Instant::now();
    }))?;
    let elapsed = idle_start.elapsed();
    let (server_after, _) = cpu_now(cli.server_pid);
    println!(
        "idle                   {} clients on {} sockets, watch {}, registered {} in {:.1} s, idle {:.1} s",
        cli.clients,
        sockets,
        if config.watch { "on" } else { "off" },
        outcome.registered,
        outcome.ramp.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!(
        "idle traffic           {} sent, {} received ({:.0}/s), {} refreshes, {} rekeys, {} answers or pushes",
        outcome.sent,
        outcome.received,
        per_second(outcome.received, elapsed),
        outcome.refreshes,
        outcome.rekeys,
        outcome.resolved
    );
    match (server_after, cpu_before.0) {
        (Some(after), Some(before)) => {
            let cpu = after - before;
            let per_client_second =
                cpu / (outcome.registered.max(1) as f64 * elapsed.as_secs_f64().max(1e-9));
            println!(
                "idle server cpu        {cpu:.2} s ({:.1}% of a core): {:.2} µs per idle client per second",
                cpu / elapsed.as_secs_f64().max(1e-9) * 100.0,
                per_client_second * 1e6
            );
        }
        _ => println!("idle server cpu        unknown (pass --server-pid)"),
    }
    print_server_memory(cli.server_pid);
    Ok(outcome.registered == cli.clients)
}

fn print_flood(config: &FloodConfig, outcome: &FloodOutcome, server_pid: Option<u32>) {
    let kind = match config.kind {
        FloodKind::Handshakes => "handshake initiations (fresh keys)",
        FloodKind::Garbage => "random bytes",
    };
    let rate = if config.rate == 0 {
        "flat out".to_owned()
    } else {
        format!("at {}/s", config.rate)
    };
    println!(
        "flood                  {kind}, {rate}, {} s",
        config.duration.as_secs()
    );
    println!(
        "flood pool             {} distinct datagrams, prepared in {:.1} s",
        outcome.pool,
        outcome.pool_build.as_secs_f64()
    );
    println!(
        "flood sent             {} datagrams in {:.1} s ({:.0}/s)",
        outcome.sent,
        outcome.flood_elapsed.as_secs_f64(),
        per_second(outcome.sent, outcome.flood_elapsed)
    );
    print_cpu(server_pid, outcome.cpu_before, outcome.flood_elapsed);
    print_resolution("legit client, no flood", &outcome.baseline);
    print_resolution("legit client, flooded", &outcome.flooded);
    print_server_memory(server_pid);
}

fn print_resolution(name: &str, r: &Resolution) {
    let ms = |d: Option<Duration>| {
        d.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0),
        )
    };
    let verdict = if r.resolved_after.is_some() {
        "resolved"
    } else {
        "FAILED to resolve"
    };
    println!(
        "{name:<22} {verdict}: connected {}, registered {}, resolved {} ({} initiations, {} errors)",
        ms(r.connected_after),
        ms(r.registered_after),
        ms(r.resolved_after),
        r.initiations,
        r.errors
    );
}
