//! `wgpunch-server`: command line, logging and exit codes around [`wgpunch_server::serve`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use tracing::{info, warn};
use wgpunch_common::server::{Server, ServerConfig};
use wgpunch_server::{allowed, keyfile, serve};

/// The UDP port served when none is given.
const DEFAULT_PORT: u16 = 51818;

/// wgpunch discovery server: tells WireGuard peers behind NATs where to find each other.
///
/// Clients authenticate with their WireGuard keys (Noise IK); the server records the public
/// address and port it sees each client's registration come from, and answers a client's lookup
/// for a peer only when both list each other as WireGuard peers. It needs no privileges.
///
/// Exit status: 0 after a clean shutdown (SIGINT or SIGTERM), 1 on an error, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about,
    after_help = "Example:\n  wgpunch-server --key-file /var/lib/wgpunch/server.key 51818"
)]
struct Cli {
    /// UDP port to listen on, on every IPv6 and IPv4 address.
    #[arg(value_name = "PORT", default_value_t = DEFAULT_PORT, conflicts_with = "listen")]
    port: u16,

    /// Listen on this address and port instead (repeat for several), e.g. 0.0.0.0:51818 or [::1]:51818.
    #[arg(short, long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,

    /// The server's private key, in WireGuard's base64 form (`wg genkey`). Created with mode 0600
    /// if missing; refused if other users can read it. Default: $STATE_DIRECTORY/server.key under
    /// systemd, else ./wgpunch-server.key.
    #[arg(short, long, value_name = "PATH", env = "WGPUNCH_KEY_FILE")]
    key_file: Option<PathBuf>,

    /// Print the server's public key (creating the key file if missing) and exit.
    #[arg(long)]
    print_public_key: bool,

    /// Serve only the WireGuard public keys listed in this file (one per line, `#` comments).
    /// Other keys get silence and leave no state on the server. Default: any key may register;
    /// lookups are answered only between peers that list each other.
    #[arg(long, value_name = "FILE", env = "WGPUNCH_ALLOWED_KEYS")]
    allowed_keys: Option<PathBuf>,

    /// Seconds a registration stays valid after its client was last heard from.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(10..=3600))]
    registration_ttl: u64,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long,
        value_name = "FILTER",
        env = "WGPUNCH_LOG",
        default_value = "info"
    )]
    log: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgpunch-server: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn key_path(cli: &Cli) -> PathBuf {
    if let Some(path) = &cli.key_file {
        return path.clone();
    }
    match std::env::var_os("STATE_DIRECTORY") {
        // systemd may list several directories separated by colons; the first is ours.
        Some(dirs) => PathBuf::from(dirs.to_string_lossy().split(':').next().unwrap_or("."))
            .join("server.key"),
        None => PathBuf::from("wgpunch-server.key"),
    }
}

fn run(cli: Cli) -> Result<()> {
    let path = key_path(&cli);
    let (key, created) = keyfile::load_or_create(&path)?;
    if created {
        info!(path = %path.display(), "created a new server key");
    }
    let public = key.public_key();
    if cli.print_public_key {
        println!("{public}");
        return Ok(());
    }

    let sockets = if cli.listen.is_empty() {
        vec![bind_any(cli.port)?]
    } else {
        cli.listen
            .iter()
            .map(|&addr| serve::bind(addr).with_context(|| format!("binding UDP {addr}")))
            .collect::<Result<Vec<_>>>()?
    };
    for socket in &sockets {
        let addr = socket.local_addr().context("reading bound address")?;
        let buffer = socket2::SockRef::from(socket)
            .recv_buffer_size()
            .unwrap_or(0);
        info!(listen = %addr, receive_buffer = buffer, "listening");
    }
    info!(public_key = %public, "wgpunch-server ready");

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("OS random generator failed: {e}"))?;
    let allowed_keys = match &cli.allowed_keys {
        Some(path) => {
            let keys = allowed::load(path)?;
            info!(path = %path.display(), keys = keys.len(), "serving only the allowed keys");
            Some(keys)
        }
        None => None,
    };
    let config = ServerConfig {
        registration_ttl: Duration::from_secs(cli.registration_ttl),
        allowed_keys,
        ..ServerConfig::default()
    };
    let server = Server::new(key, config, seed);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let stats = runtime.block_on(serve::serve(server, sockets, shutdown_signal()))?;
    info!(
        handshakes = stats.handshakes,
        lookups = stats.lookups,
        registrations = stats.registrations,
        "stopped"
    );
    Ok(())
}

/// Binds `[::]:port` (IPv6 and IPv4), falling back to `0.0.0.0:port` where IPv6 is off.
fn bind_any(port: u16) -> Result<std::net::UdpSocket> {
    let v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match serve::bind(v6) {
        Ok(socket) => Ok(socket),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(e).with_context(|| format!("binding UDP port {port}"))
        }
        Err(e) => {
            warn!(error = %e, "IPv6 unavailable, serving IPv4 only");
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            serve::bind(v4).with_context(|| format!("binding UDP {v4}"))
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the default disposition still ends the process.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
