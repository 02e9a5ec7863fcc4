//! Talking UDP to the discovery server from the WireGuard listen port, which WireGuard has bound.
//!
//! A raw `IPPROTO_UDP` socket can send a datagram with any source port and sees a copy of every
//! incoming UDP datagram, so the client can register from the very port (and so through the very
//! NAT mapping) that WireGuard uses, and read the server's replies, without binding that port.
//! A BPF filter ([`crate::bpf`]) keeps the host's other UDP traffic out of the socket, and every
//! packet that gets through is parsed ([`crate::packet`]) and checked again here.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use wgpunch_common::wire::endpoint::canonical;

use crate::packet::{self, PacketError};
use crate::{bpf, sys};

/// Size of the buffer a raw packet is received into: the largest IPv4 packet, and for IPv6 the
/// largest UDP datagram without jumbograms.
const RECV_BUF_LEN: usize = u16::MAX as usize + 1;
/// Most packets [`RawUdp::open`] discards while draining, so a flood cannot keep it looping.
const DRAIN_LIMIT: usize = 100_000;

/// Errors of the raw UDP path.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// Opening a raw socket was refused: the process lacks CAP_NET_RAW.
    #[error("opening a raw socket needs CAP_NET_RAW (run as root or grant the capability)")]
    NeedCapNetRaw,
    /// Any other socket error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error the OS returned.
        #[source]
        source: io::Error,
    },
}

impl RawError {
    /// Wraps an OS error with what was being done.
    pub(crate) fn io(what: &'static str) -> impl FnOnce(io::Error) -> RawError {
        move |source| RawError::Io { what, source }
    }
}

/// A raw UDP "socket" that sends datagrams to one server from a chosen local UDP port (the
/// WireGuard listen port, which is already bound by WireGuard itself) and receives the server's
/// replies to that port, without binding the port.
#[derive(Debug)]
pub struct RawUdp {
    /// The raw socket, non-blocking, bound to the source address, connected to the server's
    /// address and filtered by the BPF program.
    socket: Socket,
    /// An unconnected raw socket that only sends (its filter drops everything): NAT-opening
    /// punches towards peers.
    punch_socket: Socket,
    /// Source address and port of what is sent.
    local: SocketAddr,
    /// The server.
    server: SocketAddr,
    /// The server's mapping addresses, heard as well as the server (same family only).
    mapping: Vec<SocketAddr>,
    /// Packets that passed the kernel filter but were rejected here.
    dropped: AtomicU64,
}

impl RawUdp {
    /// Opens raw sockets for talking to `server` from `local_port`. The source IP is the one the
    /// kernel routes from (found by connecting an ordinary UDP socket to `server` and reading its
    /// local address; nothing is sent on it). The sockets are bound to no address, so they keep
    /// working when the host's addresses change: [`RawUdp::refresh_source`] then finds the new
    /// source. Works for IPv4 and IPv6 servers; an IPv4-mapped IPv6 server address is used as
    /// the IPv4 address it maps. After attaching the BPF filter, drains (discards) anything queued
    /// on the socket before the filter was attached.
    pub fn open(server: SocketAddr, local_port: u16) -> Result<RawUdp, RawError> {
        // Raw IPv6 sockets cannot reach IPv4 hosts: use a mapped address's IPv4 form.
        let server = canonical(server);
        let local = route_source(server, local_port)?;
        let (domain, program) = match server {
            SocketAddr::V4(s) => (
                Domain::IPV4,
                bpf::ipv4_program(*s.ip(), s.port(), local_port),
            ),
            SocketAddr::V6(s) => (
                Domain::IPV6,
                bpf::ipv6_program(*s.ip(), s.port(), local_port),
            ),
        };
        let socket = open_raw(domain)?;
        sys::attach_filter(&socket, &program)
            .map_err(RawError::io("attaching the BPF filter to the raw socket"))?;
        socket
            .set_nonblocking(true)
            .map_err(RawError::io("making the raw socket non-blocking"))?;
        let punch_socket = open_raw(domain)?;
        sys::attach_filter(&punch_socket, &bpf::drop_all_program())
            .map_err(RawError::io("attaching the BPF filter to the punch socket"))?;
        let raw = RawUdp {
            socket,
            punch_socket,
            local,
            server,
            mapping: Vec::new(),
            dropped: AtomicU64::new(0),
        };
        raw.drain()?;
        tracing::debug!(server = %server, local = %local, "raw UDP socket open");
        Ok(raw)
    }

    /// Finds the source address towards the server again (after the host's addresses changed)
    /// and returns it. Datagrams leave from it from now on.
    pub fn refresh_source(&mut self) -> Result<SocketAddr, RawError> {
        self.local = route_source(self.server, self.local.port())?;
        Ok(self.local)
    }

    /// The socket the server's replies arrive on, for `poll`.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.socket)
    }

    /// The local address packets are sent from (source IP chosen by routing + local_port).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server address.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// How many packets got through the kernel filter but were rejected after parsing (malformed,
    /// truncated, from elsewhere, or too long for the caller's buffer).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends one UDP datagram with `payload` to the server from local_port.
    pub fn send(&self, payload: &[u8]) -> Result<(), RawError> {
        self.send_to(self.server, payload)
    }

    /// Hears the server's mapping addresses `mapping` as well as the server (those of another
    /// family than the server's are left out): re-attaches the kernel filter, which needs no
    /// privilege. Returns the addresses now heard.
    pub fn hear_also(&mut self, mapping: &[SocketAddr]) -> Result<&[SocketAddr], RawError> {
        let mut heard: Vec<SocketAddr> = Vec::new();
        for addr in mapping.iter().map(|a| canonical(*a)) {
            if addr.is_ipv4() == self.server.is_ipv4()
                && addr != self.server
                && !heard.contains(&addr)
                && heard.len() + 1 < bpf::MAX_SOURCES
            {
                heard.push(addr);
            }
        }
        if heard == self.mapping {
            return Ok(&self.mapping);
        }
        let all = std::iter::once(self.server).chain(heard.iter().copied());
        let port = self.local.port();
        let program = match self.server {
            SocketAddr::V4(_) => bpf::ipv4_sources_program(
                &all.filter_map(|a| match a {
                    SocketAddr::V4(v4) => Some((*v4.ip(), v4.port())),
                    SocketAddr::V6(_) => None,
                })
                .collect::<Vec<_>>(),
                port,
            ),
            SocketAddr::V6(_) => bpf::ipv6_sources_program(
                &all.filter_map(|a| match a {
                    SocketAddr::V6(v6) => Some((*v6.ip(), v6.port())),
                    SocketAddr::V4(_) => None,
                })
                .collect::<Vec<_>>(),
                port,
            ),
        };
        sys::attach_filter(&self.socket, &program)
            .map_err(RawError::io("attaching the BPF filter to the raw socket"))?;
        self.mapping = heard;
        Ok(&self.mapping)
    }

    /// The server's mapping addresses heard besides the server.
    pub fn heard(&self) -> &[SocketAddr] {
        &self.mapping
    }

    /// Sends one UDP datagram with `payload` to `to` (the server, or one of its mapping
    /// addresses) from local_port.
    pub fn send_to(&self, to: SocketAddr, payload: &[u8]) -> Result<(), RawError> {
        let to = canonical(to);
        let datagram = packet::emit_udp(self.local, to, payload).map_err(|e| RawError::Io {
            what: "building the UDP datagram",
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let sent = self
            .socket
            .send_to(&datagram, &raw_addr(to))
            .map_err(RawError::io("sending to the server through the raw socket"))?;
        if sent != datagram.len() {
            return Err(RawError::Io {
                what: "sending to the server through the raw socket",
                source: io::Error::new(io::ErrorKind::WriteZero, "datagram sent only in part"),
            });
        }
        Ok(())
    }

    /// Sends an empty UDP datagram from local_port to `peer` with the IP TTL (IPv6 hop limit)
    /// `ttl`, so that it opens the mappings of our own NAT and firewall towards `peer` but expires
    /// on the way, before it reaches the peer's NAT. The peer's NAT then sees the peer's WireGuard
    /// packets to us as replies, and ours sees the peer's as replies too.
    pub fn punch(&self, peer: SocketAddr, ttl: u8) -> Result<(), RawError> {
        let peer = canonical(peer);
        let datagram = packet::emit_udp(self.local, peer, &[]).map_err(|e| RawError::Io {
            what: "building the punch datagram",
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let set_ttl = match peer {
            SocketAddr::V4(_) => self.punch_socket.set_ttl_v4(u32::from(ttl)),
            SocketAddr::V6(_) => self.punch_socket.set_unicast_hops_v6(u32::from(ttl)),
        };
        set_ttl.map_err(RawError::io("setting the punch TTL"))?;
        self.punch_socket
            .send_to(&datagram, &raw_addr(peer))
            .map_err(RawError::io("sending a punch through the raw socket"))?;
        Ok(())
    }

    /// Waits at most `timeout` for one datagram from the server (source ip AND port must equal the
    /// server's, destination port must equal local_port: checked both by the BPF filter and again in
    /// userspace after parsing), copies its UDP payload into `buf` and returns its length; Ok(None)
    /// on timeout. Anything else received (garbage, other sources, truncated packets) is silently
    /// skipped while the remaining time keeps counting down (never loops busily, never returns early
    /// with an error for bad packets). Payloads longer than `buf` are dropped.
    pub fn recv(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>, RawError> {
        let start = Instant::now();
        loop {
            if let Some(len) = self.try_recv(buf)? {
                return Ok(Some(len));
            }
            let remaining = timeout.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return Ok(None);
            }
            sys::wait_readable(&self.socket, remaining)
                .map_err(RawError::io("waiting for the raw socket"))?;
        }
    }

    /// Like [`RawUdp::recv`] but without waiting: the first acceptable datagram already queued,
    /// or Ok(None) once the queue holds no more.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Option<usize>, RawError> {
        let mut scratch = vec![0u8; RECV_BUF_LEN];
        for _ in 0..DRAIN_LIMIT {
            match sys::recv_from(&self.socket, &mut scratch) {
                Ok((len, from)) => {
                    let data = scratch.get(..len).unwrap_or_default();
                    match self.check(data, from) {
                        Ok(payload) => match buf.get_mut(..payload.len()) {
                            Some(dest) => {
                                dest.copy_from_slice(payload);
                                return Ok(Some(payload.len()));
                            }
                            None => self.drop_packet("payload longer than the buffer"),
                        },
                        Err(reason) => self.drop_packet(reason),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_icmp_error(&e) => {
                    tracing::debug!(server = %self.server, error = %e, "ignoring an ICMP error");
                }
                Err(e) => return Err(RawError::io("receiving from the raw socket")(e)),
            }
        }
        Ok(None)
    }

    /// Parses one received packet and returns its payload if it is from the server to local_port.
    fn check<'a>(&self, data: &'a [u8], from: Option<IpAddr>) -> Result<&'a [u8], &'static str> {
        let (source, destination, udp) = match self.server {
            SocketAddr::V4(_) => {
                let packet = packet::parse_ipv4_udp(data).map_err(reason)?;
                let destination = Some(IpAddr::V4(packet.destination));
                (Some(IpAddr::V4(packet.source)), destination, packet.udp)
            }
            // The data starts at the UDP header; the source comes from recvfrom.
            SocketAddr::V6(_) => (from, None, packet::parse_udp(data).map_err(reason)?),
        };
        let heard = |addr: &SocketAddr| source == Some(addr.ip()) && udp.source_port == addr.port();
        if !heard(&self.server) && !self.mapping.iter().any(heard) {
            return Err("not from the server");
        }
        if destination.is_some_and(|d| d != self.local.ip())
            || udp.destination_port != self.local.port()
        {
            return Err("not to the local port");
        }
        Ok(udp.payload)
    }

    /// Counts and traces a packet that got through the kernel filter but is not delivered.
    fn drop_packet(&self, reason: &'static str) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(server = %self.server, reason, "dropping a received packet");
    }

    /// Discards whatever was queued on the socket before the filter was attached.
    fn drain(&self) -> Result<(), RawError> {
        let mut scratch = [0u8; 64];
        for _ in 0..DRAIN_LIMIT {
            match sys::recv_from(&self.socket, &mut scratch) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted || is_icmp_error(&e) => {}
                Err(e) => return Err(RawError::io("draining the raw socket")(e)),
            }
        }
        Ok(())
    }
}

/// The static reason for a parse error, for the trace log.
pub(crate) fn reason(e: PacketError) -> &'static str {
    match e {
        PacketError::PayloadTooLong => "payload too long",
        PacketError::MixedFamilies => "mixed address families",
        PacketError::Truncated => "truncated",
        PacketError::NotIpv4 => "not IPv4",
        PacketError::BadHeaderLength => "bad IPv4 header length",
        PacketError::NotUdp => "not UDP",
        PacketError::Fragment => "fragment",
        PacketError::LengthMismatch => "lengths do not match",
    }
}

/// Whether `e` is an error the kernel reports on a raw socket because an ICMP error arrived for
/// some UDP datagram (ours or anyone's from this address). It is about an earlier packet, so a
/// receive goes on waiting.
pub(crate) fn is_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::ENOPROTOOPT
                | libc::EPROTO
                | libc::EACCES
                | libc::EMSGSIZE
        )
    )
}

/// The address to send from: the source IP the kernel routes from towards `server`, found by
/// connecting (never sending on) an ordinary UDP socket, with `local_port`.
pub(crate) fn route_source(server: SocketAddr, local_port: u16) -> Result<SocketAddr, RawError> {
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe =
        UdpSocket::bind(any).map_err(RawError::io("opening a UDP socket to find the route"))?;
    probe
        .connect(server)
        .map_err(RawError::io("finding the route to the server"))?;
    let local = probe
        .local_addr()
        .map_err(RawError::io("reading the source address of the route"))?;
    Ok(match local {
        SocketAddr::V4(l) => SocketAddr::V4(SocketAddrV4::new(*l.ip(), local_port)),
        SocketAddr::V6(l) => {
            SocketAddr::V6(SocketAddrV6::new(*l.ip(), local_port, 0, l.scope_id()))
        }
    })
}

/// `addr` with port 0, as raw sockets want it.
pub(crate) fn raw_addr(addr: SocketAddr) -> SockAddr {
    let mut addr = addr;
    addr.set_port(0);
    SockAddr::from(addr)
}

/// Opens a raw UDP socket, naming the missing capability when that is the reason it fails.
pub(crate) fn open_raw(domain: Domain) -> Result<Socket, RawError> {
    Socket::new(domain, Type::RAW, Some(Protocol::UDP)).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM | libc::EACCES) => RawError::NeedCapNetRaw,
        _ => RawError::Io {
            what: "opening a raw UDP socket",
            source: e,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_servers_are_used_as_ipv4() {
        let v4 = Ipv4Addr::new(192, 0, 2, 1);
        let mapped = SocketAddr::from((v4.to_ipv6_mapped(), 443));
        assert_eq!(canonical(mapped), SocketAddr::from((v4, 443)));
        let v6 = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 443));
        assert_eq!(canonical(v6), v6);
    }

    #[test]
    fn raw_addresses_have_port_zero_and_keep_the_scope() {
        let a = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 51820, 0, 3));
        let raw = raw_addr(a).as_socket_ipv6();
        assert_eq!(raw.map(|r| (r.port(), r.scope_id())), Some((0, 3)));
    }

    #[test]
    fn icmp_errors_are_told_apart_from_real_failures() {
        assert!(is_icmp_error(&io::Error::from_raw_os_error(
            libc::ECONNREFUSED
        )));
        assert!(!is_icmp_error(&io::Error::from_raw_os_error(libc::EBADF)));
        assert!(!is_icmp_error(&io::Error::from(io::ErrorKind::WouldBlock)));
    }
}
