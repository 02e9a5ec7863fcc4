//! `wgpunch-client --protocol natpunch-go` against a server that speaks only natpunch-go's bytes:
//! `natpunch-go-server` (`e2e/src/bin/natpunch-go-server.rs`), written from the wire description
//! with `snow` and sharing no code with wgpunch.
//!
//! - On a LAN without NAT: both clients exit 0, `wg show` has each peer at the other's address
//!   and WireGuard listen port with the default keepalive, a ping crosses the tunnel both ways, and
//!   the server recorded each client at its WireGuard port (the raw socket's source port).
//! - Behind two port-preserving masquerading NATs, the case where natpunch-go's own client falls
//!   into the conntrack trap: the timed barrier lets both clients exit 0, each endpoint is the
//!   mapping the other's NAT really uses (read from its conntrack), and a ping crosses both ways.
//! - Halfway through a migration, behind the same NATs: `wgpunch-server --compat natpunch-go`, one
//!   client still on `--protocol natpunch-go`, the other already native. Same checks.
//! - A wrong `SERVER_PUBKEY`: the natpunch-go server ignores the client, which exits 4 naming it.
//! - One peer behind a symmetric NAT: no timed barrier helps; both clients exit 5 naming the other.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use wgpunch_e2e::{
    client_cmd, expect_ok, server_addr, EndpointCheck, Lan, NatKind, NatWorld, Netns, Output,
    Process, Server, ServerFiles, Site, TempDir, WgKeys, SERVER_PORT,
};

/// The test server's binary.
const NATPUNCH_GO_SERVER: &str = "natpunch-go-server";

/// `--timeout` of the one-shot clients.
const CLIENT_TIMEOUT_SECS: u64 = 30;

/// How long a client may run: its timeout, the default 15 s wait for a WireGuard handshake, slack.
const CLIENT_BUDGET: Duration = Duration::from_secs(CLIENT_TIMEOUT_SECS + 15 + 10);

/// How long the server may take to bind its socket.
const SERVER_STARTUP: Duration = Duration::from_secs(10);

/// Budget for a ping across the tunnel once the clients are done.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// The client's default persistent keepalive.
const DEFAULT_KEEPALIVE: u16 = 25;

/// The independent natpunch-go server, running as `nobody`.
struct NatpunchGoServer {
    process: Process,
    keys: WgKeys,
    _dir: TempDir,
}

impl NatpunchGoServer {
    /// Starts `natpunch-go-server PORT KEY_FILE` in `ns` and waits until it listens and has
    /// printed the public key that `wg pubkey` gives for its private key.
    fn start(ns: &Netns, port: u16) -> Result<Self> {
        let ServerFiles {
            dir,
            program,
            keys,
            key_file,
        } = ServerFiles::stage(NATPUNCH_GO_SERVER, "natpunch-go")?;
        let mut process = ns
            .cmd(program.to_str().context("non-UTF-8 temporary path")?)?
            .as_nobody()
            .arg(port.to_string())
            .arg(&key_file)
            .spawn(&format!("natpunch-go-server in {}", ns.label()))?;
        ns.wait_udp_listen(port, SERVER_STARTUP, &mut process)?;
        let expected = format!("public key: {}", keys.public());
        wgpunch_e2e::wait_until(
            "natpunch-go-server to print its public key",
            SERVER_STARTUP,
            || {
                process.ensure_running()?;
                Ok(process.stdout().contains(&expected).then_some(()))
            },
        )
        .with_context(|| process.log_tail())?;
        Ok(Self {
            process,
            keys,
            _dir: dir,
        })
    }

    /// Starts it in `world`'s server namespace, on the port of [`server_addr`].
    fn start_in(world: &NatWorld) -> Result<Self> {
        Self::start(world.server_netns(), server_addr().port())
    }

    fn public_key(&self) -> &str {
        self.keys.public()
    }

    /// Every source the server recorded for `key`, in order, with what it came from
    /// (`initiation` or `lookup`).
    fn recorded(&self, key: &str) -> Vec<(SocketAddr, String)> {
        let prefix = format!("recorded {key} at ");
        self.process
            .stderr()
            .lines()
            .filter_map(|line| line.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (addr, what) = rest.split_once(' ')?;
                Some((addr.parse().ok()?, what.trim_matches(['(', ')']).to_owned()))
            })
            .collect()
    }

    fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Starts `wgpunch-client --protocol PROTOCOL --timeout 30 IFACE SERVER PUBKEY` in `ns`.
fn start_client_speaking(
    protocol: &str,
    ns: &Netns,
    iface: &str,
    server: SocketAddr,
    key: &str,
) -> Result<Process> {
    let timeout = CLIENT_TIMEOUT_SECS.to_string();
    client_cmd(
        ns,
        &["--protocol", protocol, "--timeout", &timeout],
        iface,
        server,
        key,
    )?
    .spawn(&format!(
        "wgpunch-client --protocol {protocol} in {}",
        ns.label()
    ))
}

/// Runs two `--protocol natpunch-go` clients at once until both exit; returns their outputs and
/// how long that took.
fn run_both(
    a: (&Netns, &str),
    b: (&Netns, &str),
    server: SocketAddr,
    key: &str,
) -> Result<(Output, Output, Duration)> {
    run_speaking(["natpunch-go", "natpunch-go"], a, b, server, key)
}

/// Runs two clients at once, a speaking `protocols[0]` and b `protocols[1]`, until both exit;
/// returns their outputs and how long that took.
fn run_speaking(
    [protocol_a, protocol_b]: [&str; 2],
    (a, a_iface): (&Netns, &str),
    (b, b_iface): (&Netns, &str),
    server: SocketAddr,
    key: &str,
) -> Result<(Output, Output, Duration)> {
    let started = Instant::now();
    let mut client_a = start_client_speaking(protocol_a, a, a_iface, server, key)?;
    let mut client_b = start_client_speaking(protocol_b, b, b_iface, server, key)?;
    let out_a = client_a.wait_timeout(CLIENT_BUDGET)?;
    let out_b = client_b.wait_timeout(CLIENT_BUDGET.saturating_sub(started.elapsed()))?;
    Ok((out_a, out_b, started.elapsed()))
}

fn check_lan(lan: &Lan, server: &NatpunchGoServer) -> Result<()> {
    let (out_a, out_b, took) = run_both(
        (&lan.a, lan.wg_a.name()),
        (&lan.b, lan.wg_b.name()),
        Lan::server_addr(),
        server.public_key(),
    )?;
    out_a.ensure_code(0).with_context(|| server.log_tail())?;
    out_b.ensure_code(0).with_context(|| server.log_tail())?;

    for (wg, own) in [
        (&lan.wg_a, lan.a_endpoint()?),
        (&lan.wg_b, lan.b_endpoint()?),
    ] {
        // The server saw the client at its WireGuard port, from the handshake on.
        let recorded = server.recorded(wg.public_key());
        ensure!(
            recorded.first() == Some(&(own, "initiation".to_owned())),
            "the server recorded {} as {recorded:?}, expected {own} from the initiation on; {}",
            wg.name(),
            server.log_tail()
        );
        ensure!(
            recorded.iter().all(|(at, _)| *at == own),
            "the server recorded {} at other sources too: {recorded:?}",
            wg.name()
        );
    }
    lan.ensure_endpoints(DEFAULT_KEEPALIVE)?;
    lan.ping_a_to_b(PING_TIMEOUT)?;
    lan.ping_b_to_a(PING_TIMEOUT)?;
    eprintln!("natpunch-go on a LAN: both clients exited 0 after {took:?}");
    Ok(())
}

#[test]
fn clients_resolve_each_other_through_a_natpunch_go_server() {
    let lan = expect_ok(Lan::build());
    let server = expect_ok(NatpunchGoServer::start(&lan.server, SERVER_PORT));
    expect_ok(check_lan(&lan, &server));
}

/// a behind a port-preserving masquerading NAT, b behind a NAT of kind `b_nat`.
fn behind_nats(b_nat: NatKind) -> NatWorld {
    expect_ok(NatWorld::build(
        Site::Behind(NatKind::Masquerade),
        Site::Behind(b_nat),
    ))
}

/// Fails unless both clients exited 0, each peer's endpoint is the mapping the other's NAT really
/// uses, and a ping crosses the tunnel both ways; errors carry `server_log` and the world's
/// diagnostics.
fn ensure_met(
    world: &NatWorld,
    out_a: &Output,
    out_b: &Output,
    server_log: impl Fn() -> String,
) -> Result<[EndpointCheck; 2]> {
    let (a, b) = (world.a(), world.b());
    let explain = || format!("{}\n{}", server_log(), world.diagnostics());
    out_a.ensure_code(0).with_context(explain)?;
    out_b.ensure_code(0).with_context(explain)?;
    let checks = world.check_endpoints().with_context(explain)?;
    a.ping_until(b, PING_TIMEOUT).with_context(explain)?;
    b.ping_until(a, PING_TIMEOUT).with_context(explain)?;
    Ok(checks)
}

fn check_behind_nats(world: &NatWorld, server: &NatpunchGoServer) -> Result<()> {
    let (a, b) = (world.a(), world.b());
    let (out_a, out_b, took) = run_both(
        (a.netns(), a.wg().name()),
        (b.netns(), b.wg().name()),
        server_addr(),
        server.public_key(),
    )?;
    let checks = ensure_met(world, &out_a, &out_b, || server.log_tail())?;
    eprintln!(
        "natpunch-go behind two masquerading NATs: both clients exited 0 after {took:?}; {}; {}",
        checks[0], checks[1]
    );
    Ok(())
}

#[test]
fn the_timed_barrier_gets_through_two_masquerading_nats() {
    let world = behind_nats(NatKind::Masquerade);
    let server = expect_ok(NatpunchGoServer::start_in(&world));
    expect_ok(check_behind_nats(&world, &server));
}

fn check_wrong_key(lan: &Lan, server: &NatpunchGoServer) -> Result<()> {
    let wrong = WgKeys::generate()?;
    let mut client = client_cmd(
        &lan.a,
        &["--protocol", "natpunch-go", "--timeout", "3"],
        lan.wg_a.name(),
        Lan::server_addr(),
        wrong.public(),
    )?
    .spawn("wgpunch-client --protocol natpunch-go with a wrong server key")?;
    let out = client.wait_timeout(Duration::from_secs(3 + 10))?;
    out.ensure_code(4).with_context(|| server.log_tail())?;
    ensure!(
        out.stderr.contains("natpunch-go server"),
        "stderr does not say a natpunch-go server was expected: {out}"
    );
    ensure!(
        server.recorded(lan.wg_a.public_key()).is_empty(),
        "the server recorded a client that used another server's key; {}",
        server.log_tail()
    );
    Ok(())
}

#[test]
fn a_wrong_server_key_gets_exit_4() {
    let lan = expect_ok(Lan::build());
    let server = expect_ok(NatpunchGoServer::start(&lan.server, SERVER_PORT));
    expect_ok(check_wrong_key(&lan, &server));
}

/// Starts `wgpunch-server --compat natpunch-go --allowed-keys FILE` in the world's server
/// namespace, FILE listing both peers.
fn start_compat_server(world: &NatWorld) -> Result<(Server, TempDir)> {
    let dir = TempDir::new("allowed")?;
    dir.chown_to_nobody()?;
    let file = dir.join("allowed-keys");
    std::fs::write(
        &file,
        format!(
            "# both peers of the test\n{}\n{}\n",
            world.a().public_key(),
            world.b().public_key()
        ),
    )
    .with_context(|| format!("writing {}", file.display()))?;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644))
        .with_context(|| format!("making {} readable", file.display()))?;
    let file = file.to_str().context("non-UTF-8 temporary path")?;
    let args = ["--compat", "natpunch-go", "--allowed-keys", file];
    let server = Server::start_with_args(world.server_netns(), &[server_addr()], &args)?;
    Ok((server, dir))
}

fn check_mixed(world: &NatWorld, server: &Server) -> Result<()> {
    let (a, b) = (world.a(), world.b());
    let (out_a, out_b, took) = run_speaking(
        ["natpunch-go", "native"],
        (a.netns(), a.wg().name()),
        (b.netns(), b.wg().name()),
        server_addr(),
        server.public_key(),
    )?;
    let checks = ensure_met(world, &out_a, &out_b, || server.log_tail())?;
    eprintln!(
        "natpunch-go and native clients through wgpunch-server --compat natpunch-go: both exited 0 \
         after {took:?}; {}; {}",
        checks[0], checks[1]
    );
    Ok(())
}

#[test]
fn a_natpunch_go_client_and_a_native_one_meet_through_wgpunch_server_in_compat_mode() {
    let world = behind_nats(NatKind::Masquerade);
    let (server, _allowed) = expect_ok(start_compat_server(&world));
    expect_ok(check_mixed(&world, &server));
}

fn check_symmetric(world: &NatWorld, server: &NatpunchGoServer) -> Result<()> {
    let (a, b) = (world.a(), world.b());
    let (out_a, out_b, took) = run_both(
        (a.netns(), a.wg().name()),
        (b.netns(), b.wg().name()),
        server_addr(),
        server.public_key(),
    )?;
    for (out, other) in [(&out_a, b), (&out_b, a)] {
        out.ensure_code(5)
            .with_context(|| format!("{}\n{}", server.log_tail(), world.diagnostics()))?;
        for needle in [other.public_key(), "no WireGuard handshake"] {
            ensure!(
                out.stderr.contains(needle),
                "stderr lacks {needle:?}: {out}"
            );
        }
    }
    eprintln!("natpunch-go with a symmetric NAT: both clients exited 5 after {took:?}");
    Ok(())
}

#[test]
fn a_symmetric_nat_gets_exit_5_not_a_claimed_success() {
    let world = behind_nats(NatKind::Symmetric);
    let server = expect_ok(NatpunchGoServer::start_in(&world));
    expect_ok(check_symmetric(&world, &server));
}
