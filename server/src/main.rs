//! `wgpunch-server`: command line, logging and exit codes around [`wgpunch_server::serve`].

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Parser;
use tracing::{info, warn};
use wgpunch_common::server::{Server, ServerConfig, Via};
use wgpunch_server::cli::Cli;
use wgpunch_server::{allowed, keyfile, serve};

/// Most worker threads, however many cores there are.
const MAX_THREADS: usize = 8;

/// Fewest sockets per listening address: a one-source flood fills one of them.
const MIN_SOCKETS_PER_ADDRESS: usize = 4;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = cli.check() {
        eprintln!("wgpunch-server: {e}");
        return ExitCode::from(2);
    }
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

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_THREADS));
    let per_address = threads.max(MIN_SOCKETS_PER_ADDRESS);
    let mut sockets = Vec::new();
    if cli.listen.is_empty() {
        sockets.extend(bind_any(cli.port, per_address)?);
    } else {
        for &addr in &cli.listen {
            let group = serve::bind_group(addr, per_address)
                .with_context(|| format!("binding UDP {addr}"))?;
            sockets.extend(group);
        }
    }
    for socket in sockets.iter().step_by(per_address) {
        let addr = socket.local_addr().context("reading bound address")?;
        let buffer = socket2::SockRef::from(socket)
            .recv_buffer_size()
            .unwrap_or(0);
        info!(listen = %addr, sockets = per_address, receive_buffer = buffer, "listening");
    }
    let (mapping_sockets, mapping) = bind_mapping(&cli, &sockets)?;
    let mut sockets: Vec<_> = sockets.into_iter().map(|s| (s, Via::Main)).collect();
    sockets.extend(mapping_sockets.into_iter().map(|s| (s, Via::Mapping)));
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
        natpunch_go: cli.natpunch_go(),
        mapping,
        ..ServerConfig::default()
    };
    if let Some(compat) = &config.natpunch_go {
        info!(consent = ?compat.consent, "serving natpunch-go clients too");
    }
    let server = Server::new(key, config, seed);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
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

/// Binds the mapping addresses: the second port on each main socket's address, and
/// --mapping-address. Returns their sockets (one each: they see little traffic) and what clients
/// are told (the second port with an unspecified address: "the one you talk to").
fn bind_mapping(
    cli: &Cli,
    main: &[std::net::UdpSocket],
) -> Result<(Vec<std::net::UdpSocket>, Vec<SocketAddr>)> {
    let mut sockets = Vec::new();
    let mut told = Vec::new();
    if let Some(port) = cli.second_port() {
        let mut addresses: Vec<std::net::IpAddr> = Vec::new();
        for socket in main {
            let ip = socket.local_addr().context("reading bound address")?.ip();
            if !addresses.contains(&ip) {
                addresses.push(ip);
            }
        }
        let mut bound_port = port;
        for ip in addresses {
            let addr = SocketAddr::new(ip, port);
            let group = serve::bind_group(addr, 1).with_context(|| {
                format!("binding the mapping port {addr} (--mapping-port 0 turns it off)")
            })?;
            for socket in group {
                let local = socket.local_addr().context("reading bound address")?;
                bound_port = local.port();
                info!(listen = %local, "answering mapping checks");
                sockets.push(socket);
            }
        }
        told.push(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), bound_port));
    }
    if let Some(addr) = cli.mapping_address {
        let socket = serve::bind_group(addr, 1)
            .with_context(|| format!("binding the mapping address {addr}"))?;
        info!(listen = %addr, "answering mapping checks");
        sockets.extend(socket);
        told.push(addr);
    }
    Ok((sockets, told))
}

/// Binds `[::]:port` (IPv6 and IPv4), falling back to `0.0.0.0:port` where IPv6 is off.
fn bind_any(port: u16, count: usize) -> Result<Vec<std::net::UdpSocket>> {
    let v6 = SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port);
    match serve::bind_group(v6, count) {
        Ok(sockets) => Ok(sockets),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            Err(e).with_context(|| format!("binding UDP port {port}"))
        }
        Err(e) => {
            warn!(error = %e, "IPv6 unavailable, serving IPv4 only");
            let v4 = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
            serve::bind_group(v4, count).with_context(|| format!("binding UDP {v4}"))
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
