//! The flood scenario: one socket floods the server while a legitimate client on another socket
//! connects, registers and resolves its partner; how long that takes is the figure of interest.
//!
//! Two kinds of flood: real handshake initiations from throw-away keys (each costs the server its
//! Diffie-Hellman work before it can tell the client is of no interest), or random bytes of the
//! same length (dropped by the codec). The datagrams are prepared before the flood starts, so the
//! sending rate is not limited by our own Diffie-Hellman work; past the prepared pool they repeat
//! (repeated initiations are replays, which the server still has to decrypt to notice).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _, Result};
use tokio::net::UdpSocket;
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::{PrivateKey, PublicKey};
use wgpunch_common::noise::Seed;
use wgpunch_common::wire::packet::HANDSHAKE_INIT_LEN;

use crate::identity::{flood_identity, flood_ip, noise_bytes};
use crate::stats::cpu_now;

/// Most distinct datagrams prepared before a flood.
const POOL_MAX: u64 = 50_000;

/// Identity indexes of the partner and the two legitimate clients (far from the pool's).
const PARTNER: u64 = u64::MAX;
const BASELINE_CLIENT: u64 = u64::MAX - 1;
const FLOODED_CLIENT: u64 = u64::MAX - 2;

/// How long the flood runs before the legitimate client starts.
const HEAD_START: Duration = Duration::from_secs(1);

/// What the flood sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodKind {
    /// Valid handshake initiations from fresh keys.
    Handshakes,
    /// Random bytes of a handshake initiation's length.
    Garbage,
}

/// What the flood scenario is asked to do.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// The server's address (loopback).
    pub server: SocketAddr,
    /// The server's public key.
    pub server_key: PublicKey,
    /// What to send.
    pub kind: FloodKind,
    /// Datagrams per second; 0 sends as fast as the socket takes them.
    pub rate: u64,
    /// How long the flood lasts.
    pub duration: Duration,
    /// The server's process id, to measure its CPU time during the flood.
    pub server_pid: Option<u32>,
}

/// How a legitimate client fared.
#[derive(Debug, Default)]
pub struct Resolution {
    /// Handshake initiations it sent.
    pub initiations: u32,
    /// From its start to Connected.
    pub connected_after: Option<Duration>,
    /// From its start to Registered (with the right observed address).
    pub registered_after: Option<Duration>,
    /// From its start to Resolved with the partner's right endpoint.
    pub resolved_after: Option<Duration>,
    /// Answers that were wrong (observed address, endpoint) or Unknown.
    pub errors: u32,
}

/// What happened.
#[derive(Debug)]
pub struct FloodOutcome {
    /// Distinct datagrams prepared.
    pub pool: u64,
    /// Time spent preparing them.
    pub pool_build: Duration,
    /// Datagrams sent.
    pub sent: u64,
    /// Time the flood ran.
    pub flood_elapsed: Duration,
    /// The server's and our CPU seconds when the flood started.
    pub cpu_before: (Option<f64>, Option<f64>),
    /// The legitimate client with no flood, for comparison.
    pub baseline: Resolution,
    /// The legitimate client during the flood.
    pub flooded: Resolution,
}

/// Runs the scenario: partner registers, a baseline client resolves it with no flood, then the
/// flood starts and another client resolves it during the flood.
pub async fn run(config: &FloodConfig) -> Result<FloodOutcome> {
    let limit = config.duration.saturating_sub(HEAD_START);
    if limit.is_zero() {
        bail!("--duration must be longer than {} s", HEAD_START.as_secs());
    }
    let partner_id = flood_identity(PARTNER);
    let baseline_id = flood_identity(BASELINE_CLIENT);
    let flooded_id = flood_identity(FLOODED_CLIENT);
    let partner_socket = bind(config.server, 3).await?;
    let partner_addr = partner_socket
        .local_addr()
        .context("reading a socket's address")?;
    let peers = vec![baseline_id.0.public_key(), flooded_id.0.public_key()];
    let partner = resolve(config, partner_id, peers, &partner_socket, None, limit).await?;
    if partner.registered_after.is_none() {
        bail!("the partner client could not register with the server (no flood yet)");
    }
    let target = Some((partner_id_public(), partner_addr));
    let socket = bind(config.server, 2).await?;
    let baseline = resolve(
        config,
        baseline_id,
        partner_public_list(),
        &socket,
        target,
        limit,
    )
    .await?;
    drop(socket);

    let started = Instant::now();
    let pool = build_pool(config);
    let pool_build = started.elapsed();
    let pool_len = pool.len() as u64;
    let flood_socket = std::net::UdpSocket::bind(SocketAddr::new(flood_ip(1), 0))
        .context("binding the flood socket")?;
    flood_socket
        .connect(config.server)
        .context("connecting the flood socket")?;
    let (rate, duration) = (config.rate, config.duration);
    let cpu_before = cpu_now(config.server_pid);
    let flooder = std::thread::spawn(move || flood(&flood_socket, &pool, rate, duration));
    tokio::time::sleep(HEAD_START).await;
    let socket = bind(config.server, 4).await?;
    let flooded = resolve(
        config,
        flooded_id,
        partner_public_list(),
        &socket,
        target,
        limit,
    )
    .await?;
    let (sent, flood_elapsed) = flooder
        .join()
        .map_err(|_| anyhow::anyhow!("the flood thread panicked"))?;
    Ok(FloodOutcome {
        pool: pool_len,
        pool_build,
        sent,
        flood_elapsed,
        cpu_before,
        baseline,
        flooded,
    })
}

fn partner_id_public() -> PublicKey {
    flood_identity(PARTNER).0.public_key()
}

fn partner_public_list() -> Vec<PublicKey> {
    vec![partner_id_public()]
}

async fn bind(server: SocketAddr, host: u8) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(flood_ip(host), 0))
        .await
        .with_context(|| format!("binding a UDP socket on {}", flood_ip(host)))?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("connecting a UDP socket to {server}"))?;
    Ok(socket)
}

fn build_pool(config: &FloodConfig) -> Vec<Vec<u8>> {
    let wanted = if config.rate == 0 {
        POOL_MAX
    } else {
        config
            .rate
            .saturating_mul(config.duration.as_secs().max(1))
            .min(POOL_MAX)
    };
    let (now, wall) = (Instant::now(), SystemTime::now());
    (0..wanted)
        .filter_map(|i| match config.kind {
            FloodKind::Handshakes => {
                let (key, seed) = flood_identity(i);
                let mut client = Client::new(
                    key,
                    config.server_key,
                    vec![],
                    vec![],
                    ClientConfig::default(),
                    seed,
                );
                client.poll_transmit(now, wall)
            }
            FloodKind::Garbage => {
                let mut datagram = Vec::with_capacity(HANDSHAKE_INIT_LEN);
                for part in 0.. {
                    if datagram.len() >= HANDSHAKE_INIT_LEN {
                        break;
                    }
                    datagram.extend_from_slice(&noise_bytes(i << 8 | part));
                }
                datagram.truncate(HANDSHAKE_INIT_LEN);
                Some(datagram)
            }
        })
        .collect()
}

/// Sends the pool round and round for `duration`, at `rate` per second (0: flat out).
fn flood(
    socket: &std::net::UdpSocket,
    pool: &[Vec<u8>],
    rate: u64,
    duration: Duration,
) -> (u64, Duration) {
    let start = Instant::now();
    let mut sent = 0u64;
    if pool.is_empty() {
        return (0, Duration::ZERO);
    }
    loop {
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return (sent, elapsed);
        }
        let due = if rate == 0 {
            sent + 256
        } else {
            (rate as f64 * elapsed.as_secs_f64()) as u64
        };
        if sent >= due {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        while sent < due {
            let datagram = pool
                .get((sent % pool.len() as u64) as usize)
                .map_or(&[][..], Vec::as_slice);
            // Errors (a full buffer, ICMP from a stopped server) only mean this one is lost.
            let _ = socket.send(datagram);
            sent += 1;
        }
    }
}

/// Drives one client until it registered (`target` None) or resolved `target`, or `limit` passed.
async fn resolve(
    config: &FloodConfig,
    (key, seed): (PrivateKey, Seed),
    peers: Vec<PublicKey>,
    socket: &UdpSocket,
    target: Option<(PublicKey, SocketAddr)>,
    limit: Duration,
) -> Result<Resolution> {
    let local = socket.local_addr().context("reading a socket's address")?;
    let mut client = Client::new(
        key,
        config.server_key,
        peers,
        vec![],
        ClientConfig::default(),
        seed,
    );
    let start = Instant::now();
    let deadline = start + limit;
    let mut result = Resolution::default();
    let mut buf = [0u8; 2048];
    loop {
        let (now, wall) = (Instant::now(), SystemTime::now());
        while let Some(datagram) = client.poll_transmit(now, wall) {
            if !client.is_connected() {
                result.initiations += 1;
            }
            socket
                .send(&datagram)
                .await
                .context("sending to the server")?;
        }
        let wake = client.poll_timeout().map_or(deadline, |t| t.min(deadline));
        tokio::select! {
            received = socket.recv(&mut buf) => {
                if let Ok(len) = received {
                    client.handle_datagram(Instant::now(), buf.get(..len).unwrap_or_default());
                }
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        while let Some(event) = client.poll_event() {
            let at = start.elapsed();
            match event {
                Event::Candidates { .. } | Event::Mapping(_) => {}
                Event::Connected => {
                    result.connected_after.get_or_insert(at);
                }
                Event::Registered { observed, .. } if observed == local => {
                    result.registered_after.get_or_insert(at);
                    match target {
                        Some((peer, _)) => client.lookup([peer]),
                        None => return Ok(result),
                    }
                }
                Event::Resolved { peer, endpoint, .. } if Some((peer, endpoint)) == target => {
                    result.resolved_after = Some(at);
                    return Ok(result);
                }
                Event::Unknown { peer } => {
                    result.errors += 1;
                    client.lookup([peer]);
                }
                Event::Registered { .. } | Event::Resolved { .. } => result.errors += 1,
            }
        }
        if Instant::now() >= deadline {
            return Ok(result);
        }
    }
}
