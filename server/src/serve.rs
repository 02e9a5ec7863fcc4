//! The IO shell: UDP sockets, the clock and a timer around the sans-IO [`Server`].

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState, BATCH_SIZE};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{debug, info, warn};
use wgpunch_common::server::legacy::LegacyStats;
use wgpunch_common::server::{Server, Stats, Via};

/// How often expired state is dropped, a bounded amount at a time.
const EXPIRE_EVERY: Duration = Duration::from_millis(100);

/// Most items that fell due one expiry step looks at. Each step holds the server lock, so every
/// socket waits for it: about 2 µs an item at a million registrations, so a few milliseconds.
const EXPIRE_CHUNK: usize = 1_000;

/// Most time a round of expiry steps takes (the lock is let go between steps): a tenth of the
/// server's time at most, which still drops tens of thousands of items a second.
const EXPIRE_SLICE: Duration = Duration::from_millis(10);

/// An expiry pass longer than this is logged (at debug level).
const SLOW_EXPIRY: Duration = Duration::from_millis(20);

/// How often counters are logged (when they changed).
const STATS_EVERY: Duration = Duration::from_secs(60);

/// Receive buffer asked of the kernel for each socket.
const RECV_SOCKET_BUFFER: usize = 8 << 20;

/// Room for one datagram; anything longer is truncated and then dropped by the codec.
const DATAGRAM_ROOM: usize = 2048;

/// Binds `count` UDP sockets (at least one) to `addr` with `SO_REUSEPORT`: `[::]:port` as
/// dual-stack sockets that also take IPv4, any other address as given. Port 0 picks one free
/// port for the whole group.
///
/// The kernel hashes each source address and port to one socket of the group, so a flood from
/// one source fills one socket's queue while the others keep serving everyone else.
pub fn bind_group(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    // A plain bind first: it fails while anything holds the port, including another server of
    // the same user, which would otherwise join the group and silently take a share of clients.
    let probe = open(addr, false)?;
    let bound = probe.local_addr()?;
    drop(probe);
    (0..count.max(1)).map(|_| open(bound, true)).collect()
}

fn open(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::UdpSocket> {
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
    // Only sockets of the same effective user may join a group.
    socket.set_reuse_port(reuse_port)?;
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Serves on `sockets` until `shutdown` completes, then returns the final counters. Each socket
/// says which of the server's addresses it is: a listen address ([`Via::Main`]) or a mapping
/// address ([`Via::Mapping`]).
///
/// Each socket gets its own task, which reads up to a batch of datagrams per system call
/// (`recvmmsg`) and handles the whole batch under one lock of the shared [`Server`]. On a
/// multi-threaded runtime the sockets are served in parallel.
pub async fn serve(
    server: Server,
    sockets: Vec<(std::net::UdpSocket, Via)>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<Stats> {
    let server = Arc::new(Mutex::new(server));
    let mut tasks = tokio::task::JoinSet::new();
    for (socket, via) in sockets {
        let state = UdpSocketState::new((&socket).into())?;
        let socket = UdpSocket::from_std(socket)?;
        tasks.spawn(receive_loop(Arc::clone(&server), socket, state, via));
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

/// A datagram to send and where it goes: a reply back to its sender, from the address the
/// request was sent to, or a push to a watching client, from whatever source address the kernel
/// picks (the core does not keep the address each client sent to; on a host with one address,
/// or a server bound to one, that is the same address).
struct Reply {
    to: SocketAddr,
    from_ip: Option<IpAddr>,
    datagram: Vec<u8>,
}

async fn receive_loop(
    server: Arc<Mutex<Server>>,
    socket: UdpSocket,
    state: UdpSocketState,
    via: Via,
) -> io::Result<()> {
    // With UDP GRO the kernel may coalesce datagrams of one flow into a buffer, `stride` apart.
    let room = DATAGRAM_ROOM * state.gro_segments().max(1);
    // Allocated one by one (not cloned) so that pages nothing was written to cost no memory.
    let mut buffers: Vec<Vec<u8>> = (0..BATCH_SIZE).map(|_| vec![0u8; room]).collect();
    let mut meta = vec![RecvMeta::default(); BATCH_SIZE];
    let mut replies = Vec::new();
    // The core names IPv4 clients by their IPv4 address; a dual-stack socket sends to them at the
    // IPv4-mapped address.
    let dual_stack = socket.local_addr()?.is_ipv6();
    loop {
        socket.readable().await?;
        let received = {
            let mut slices: Vec<IoSliceMut<'_>> =
                buffers.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            socket.try_io(Interest::READABLE, || {
                state.recv((&socket).into(), &mut slices, &mut meta)
            })
        };
        let count = match received {
            Ok(count) => count,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // ICMP errors from earlier replies surface here on some systems; they are not fatal.
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        {
            let mut server = lock(&server);
            // Read the clock under the lock, so the core never sees time run backwards between
            // the batches of different sockets.
            let (now, wall) = (Instant::now(), SystemTime::now());
            for (meta, buffer) in meta.iter().zip(&buffers).take(count) {
                let filled = buffer.get(..meta.len).unwrap_or_default();
                for datagram in segments(filled, meta.stride) {
                    if let Some(reply) = server.handle_via(now, wall, meta.addr, via, datagram) {
                        replies.push(Reply {
                            to: meta.addr,
                            from_ip: meta.dst_ip,
                            datagram: reply,
                        });
                    }
                }
            }
            // Pushes the batch triggered, to watching clients (bounded by the core's queue).
            while let Some(push) = server.poll_transmit() {
                replies.push(Reply {
                    to: socket_destination(push.destination, dual_stack),
                    from_ip: None,
                    datagram: push.datagram,
                });
            }
        }
        for reply in replies.drain(..) {
            let transmit = Transmit {
                destination: reply.to,
                ecn: None,
                contents: &reply.datagram,
                segment_size: None,
                src_ip: reply.from_ip,
            };
            // A full send buffer loses this reply like the network could; the client retries.
            if let Err(e) = state.try_send((&socket).into(), &transmit) {
                debug!(error = %e, "sending reply failed");
            }
        }
    }
}

/// `destination` as the socket wants it: IPv4 as IPv4-mapped IPv6 on a dual-stack socket.
fn socket_destination(destination: SocketAddr, dual_stack: bool) -> SocketAddr {
    match destination {
        SocketAddr::V4(v4) if dual_stack => {
            SocketAddr::new(IpAddr::V6(v4.ip().to_ipv6_mapped()), v4.port())
        }
        other => other,
    }
}

/// The datagrams in a received buffer: one, or several `stride` apart when the kernel coalesced
/// them (GRO). An empty datagram is still one datagram.
fn segments(filled: &[u8], stride: usize) -> impl Iterator<Item = &[u8]> {
    let empty = filled.is_empty().then_some(filled);
    filled.chunks(stride.max(1)).chain(empty)
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Drops what has expired in steps of at most [`EXPIRE_CHUNK`] items, each under the lock, until
/// nothing due is left or [`EXPIRE_SLICE`] is spent. Returns the longest a step held the lock.
async fn expire_round(server: &Mutex<Server>) -> Duration {
    let (mut longest, mut spent) = (Duration::ZERO, Duration::ZERO);
    loop {
        let (taken, took) = {
            let mut server = lock(server);
            let started = Instant::now();
            let taken = server.expire_some(started, EXPIRE_CHUNK);
            (taken, started.elapsed())
        };
        longest = longest.max(took);
        spent += took;
        if taken < EXPIRE_CHUNK || spent >= EXPIRE_SLICE {
            return longest;
        }
        tokio::task::yield_now().await;
    }
}

async fn housekeeping(server: Arc<Mutex<Server>>) -> io::Result<()> {
    let mut expire = tokio::time::interval(EXPIRE_EVERY);
    expire.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log = Instant::now();
    let mut logged = Stats::default();
    let mut logged_legacy = LegacyStats::default();
    loop {
        expire.tick().await;
        let expiry = expire_round(&server).await;
        let (stats, legacy, registrations, sessions) = {
            let server = lock(&server);
            (
                server.stats().clone(),
                server.legacy_stats().clone(),
                server.registry().len(),
                server.session_count(),
            )
        };
        // Every socket waits while an expiry step runs; say so when one gets long.
        if expiry >= SLOW_EXPIRY {
            debug!(
                millis = expiry.as_millis(),
                registrations, "expiry held the server for a while"
            );
        }
        if last_log.elapsed() >= STATS_EVERY && (stats != logged || legacy != logged_legacy) {
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
                pushes = stats.pushes,
                pushes_over_budget = stats.pushes_over_budget,
                push_acks = stats.push_acks,
                "status"
            );
            if stats.sessions_full > logged.sessions_full {
                warn!("session or key table full: new clients are being refused");
            }
            if stats.cookie_replies > logged.cookie_replies {
                warn!("under load: initiations must prove their source address with a cookie");
            }
            if legacy != logged_legacy {
                let dropped = legacy.malformed
                    + legacy.bad_handshake
                    + legacy.stale_timestamp
                    + legacy.replayed_initiation
                    + legacy.unknown_session
                    + legacy.bad_transport
                    + legacy.wrong_client_key;
                info!(
                    handshakes = legacy.handshakes,
                    lookups = legacy.lookups,
                    found = legacy.found,
                    dropped,
                    not_allowed = legacy.not_allowed,
                    rate_limited = legacy.rate_limited,
                    "natpunch-go status"
                );
                if legacy.sessions_full + legacy.registrations_full
                    > logged_legacy.sessions_full + logged_legacy.registrations_full
                {
                    warn!("natpunch-go session, key or registration table full");
                }
            }
            logged = stats;
            logged_legacy = legacy;
            last_log = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_splits_into_its_datagrams() {
        let buffer = [1, 1, 2, 2, 3];
        let parts: Vec<&[u8]> = segments(&buffer, 2).collect();
        assert_eq!(parts, [&[1, 1][..], &[2, 2], &[3]]);
        assert_eq!(segments(&buffer, 5).count(), 1);
    }

    #[test]
    fn pushes_to_ipv4_clients_go_to_the_mapped_address_on_a_dual_stack_socket() {
        let v4: SocketAddr = "198.51.100.1:5".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.51.100.1]:5".parse().unwrap();
        assert_eq!(socket_destination(v4, true), mapped);
        assert_eq!(socket_destination(v4, false), v4);
        let v6: SocketAddr = "[2001:db8::1]:5".parse().unwrap();
        assert_eq!(socket_destination(v6, true), v6);
    }

    #[test]
    fn an_empty_datagram_is_still_handled() {
        let parts: Vec<&[u8]> = segments(&[], 0).collect();
        assert_eq!(parts, [&[][..]]);
    }

    #[test]
    fn a_second_server_cannot_join_a_group() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let taken = group[0].local_addr().unwrap();
        let err = bind_group(taken, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn a_group_shares_one_port() {
        let group = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let ports: Vec<u16> = group
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect();
        assert_eq!(ports.len(), 3);
        assert!(ports.iter().all(|&p| p == ports[0] && p != 0), "{ports:?}");
    }
}
