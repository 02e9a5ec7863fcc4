//! The IO shell: UDP sockets, the clock and a timer around the sans-IO [`Server`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tokio::net::UdpSocket;
use tracing::{debug, info, warn};
use wgpunch_common::server::{Server, Stats};

/// How often expired state is dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(5);

/// How often counters are logged (when they changed).
const STATS_EVERY: Duration = Duration::from_secs(60);

/// Receive buffer asked of the kernel for each socket.
const RECV_SOCKET_BUFFER: usize = 8 << 20;

/// Largest datagram read; anything longer is truncated and then dropped by the codec.
const RECV_BUFFER: usize = 2048;

/// Binds a UDP socket: `[::]:port` as a dual-stack socket that also takes IPv4, any other address
/// as given.
pub fn bind(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V6(v6) = addr {
        if v6.ip().is_unspecified() {
            socket.set_only_v6(false)?;
        }
    }
    // Room for bursts and floods while the server works: the kernel grants up to
    // net.core.rmem_max (doubled); ask for more than that and take what comes.
    if let Err(e) = socket.set_recv_buffer_size(RECV_SOCKET_BUFFER) {
        debug!(error = %e, "could not enlarge the receive buffer");
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves on `sockets` until `shutdown` completes, then returns the final counters.
pub async fn serve(
    server: Server,
    sockets: Vec<std::net::UdpSocket>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let server = Arc::new(Mutex::new(server));
    let mut tasks = tokio::task::JoinSet::new();
    for socket in sockets {
        let socket = UdpSocket::from_std(socket)?;
        tasks.spawn(receive_loop(Arc::clone(&server), socket));
    }
    tasks.spawn(housekeeping(Arc::clone(&server)));
    tokio::select! {
        () = shutdown => debug!("shutting down"),
        Some(result) = tasks.join_next() => {
            // Loops run for ever; one that ends has failed.
            match result {
                Ok(Err(e)) => return Err(e),
                Ok(Ok(())) => {}
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
    tasks.abort_all();
    let stats = lock(&server).stats().clone();
    Ok(stats)
}

fn lock(server: &Mutex<Server>) -> std::sync::MutexGuard<'_, Server> {
    // No code path panics while holding the lock, but a poisoned lock still holds sound state.
    server.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn receive_loop(server: Arc<Mutex<Server>>, socket: UdpSocket) -> io::Result<()> {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let (len, from) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            // ICMP errors from earlier replies surface here on some systems; they are not fatal.
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let reply = {
            let datagram = buf.get(..len).unwrap_or_default();
            lock(&server).handle(Instant::now(), SystemTime::now(), from, datagram)
        };
        if let Some(reply) = reply {
            if let Err(e) = socket.send_to(&reply, from).await {
                debug!(error = %e, "sending reply failed");
            }
        }
    }
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

async fn housekeeping(server: Arc<Mutex<Server>>) -> io::Result<()> {
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    let mut last_log = Instant::now();
    let mut logged = Stats::default();
    loop {
        expire.tick().await;
        let (stats, registrations, sessions) = {
            let mut server = lock(&server);
            server.expire(Instant::now());
            (
                server.stats().clone(),
                server.registry().len(),
                server.session_count(),
            )
        };
        if last_log.elapsed() >= STATS_EVERY && stats != logged {
            let dropped = stats.malformed
                + stats.bad_mac1
                + stats.bad_handshake
                + stats.unknown_session
                + stats.bad_transport
                + stats.bad_request
                + stats.stale_timestamp
                + stats.replayed_initiation;
            info!(
                registrations,
                sessions,
                handshakes = stats.handshakes,
                lookups = stats.lookups,
                dropped,
                not_allowed = stats.not_allowed,
                cookie_replies = stats.cookie_replies,
                rate_limited = stats.rate_limited,
                "status"
            );
            if stats.sessions_full > logged.sessions_full {
                warn!("session or key table full: new clients are being refused");
            }
            if stats.cookie_replies > logged.cookie_replies {
                warn!("under load: initiations must prove their source address with a cookie");
            }
            logged = stats;
            last_log = Instant::now();
        }
    }
}
