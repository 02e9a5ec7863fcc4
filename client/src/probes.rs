//! Probes to and from peers' candidate addresses, sent and heard on the WireGuard port through
//! raw sockets, one per address family.
//!
//! A probe goes from the WireGuard listen port, so a peer that answers it has shown that its
//! WireGuard port and ours reach each other on that path. The sockets are bound to no address, so
//! they keep working when the host moves to another network; the source of each probe is the
//! address the kernel routes from towards its destination. The kernel filter
//! ([`crate::bpf::ipv4_probe_program`]) lets through only datagrams to the WireGuard port that
//! start with [`PROBE_MAGIC`]; WireGuard itself gets a copy of each and drops it as garbage.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd as _, BorrowedFd};

use socket2::{Domain, Socket};
use wgpunch_common::wire::endpoint::canonical;
use wgpunch_common::wire::probe::{PROBE_LEN, PROBE_MAGIC};

use crate::packet;
use crate::raw::{is_icmp_error, open_raw, raw_addr, reason, route_source, RawError};
use crate::{bpf, sys};

/// Most packets one [`ProbeSockets::recv`] looks at per socket, so a flood cannot keep it looping.
const RECV_LIMIT: usize = 64;
/// Big enough for an IPv4 header with options, the UDP header and a probe, with room to tell a
/// too-long datagram apart.
const RECV_BUF_LEN: usize = 60 + packet::UDP_HEADER_LEN + PROBE_LEN + 1;

/// One probe heard on the WireGuard port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardProbe {
    /// Who sent it, as its IP header says.
    pub from: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// The raw sockets of both families.
#[derive(Debug)]
pub struct ProbeSockets {
    /// The WireGuard listen port probes are sent from and heard on.
    port: u16,
    /// IPv4, when the host has it.
    v4: Option<Socket>,
    /// IPv6, when the host has it.
    v6: Option<Socket>,
}

impl ProbeSockets {
    /// Opens the sockets for `port`. A family the host lacks (IPv6 disabled) is left out; no
    /// family at all is an error. Needs CAP_NET_RAW.
    pub fn open(port: u16) -> Result<Self, RawError> {
        let v4 = open_family(Domain::IPV4, bpf::ipv4_probe_program(port, PROBE_MAGIC));
        let v6 = open_family(Domain::IPV6, bpf::ipv6_probe_program(port, PROBE_MAGIC));
        match (v4, v6) {
            (Err(e), Err(_)) => Err(e),
            (v4, v6) => {
                if let Err(e) = &v6 {
                    tracing::debug!(error = %e, "no IPv6 probe socket; probing over IPv4 only");
                }
                Ok(Self {
                    port,
                    v4: v4.ok(),
                    v6: v6.ok(),
                })
            }
        }
    }

    /// The sockets, for `poll`.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        self.v4.iter().chain(self.v6.iter()).map(|s| s.as_fd())
    }

    /// Sends `payload` from the WireGuard port to `to`, from the address that routes there.
    pub fn send(&self, to: SocketAddr, payload: &[u8]) -> Result<(), RawError> {
        let to = canonical(to);
        let socket = match to {
            SocketAddr::V4(_) => self.v4.as_ref(),
            SocketAddr::V6(_) => self.v6.as_ref(),
        }
        .ok_or(RawError::Io {
            what: "probing a candidate",
            source: io::Error::new(
                io::ErrorKind::Unsupported,
                "this host has no raw socket of that address family",
            ),
        })?;
        let from = route_source(to, self.port)?;
        let datagram = packet::emit_udp(from, to, payload).map_err(|e| RawError::Io {
            what: "building a probe",
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        socket
            .send_to(&datagram, &raw_addr(to))
            .map_err(RawError::io("sending a probe"))?;
        Ok(())
    }

    /// Every probe queued on either socket, without waiting. Anything else that got through the
    /// kernel filter (a truncated or malformed packet) is dropped.
    pub fn recv(&self) -> Result<Vec<HeardProbe>, RawError> {
        let mut heard = Vec::new();
        let mut buf = [0u8; RECV_BUF_LEN];
        for (socket, v4) in [(&self.v4, true), (&self.v6, false)] {
            let Some(socket) = socket else { continue };
            for _ in 0..RECV_LIMIT {
                match sys::recv_from(socket, &mut buf) {
                    Ok((len, from)) => {
                        let data = buf.get(..len).unwrap_or_default();
                        match self.check(data, from, v4) {
                            Ok(probe) => heard.push(probe),
                            Err(why) => tracing::trace!(reason = why, "dropping a received probe"),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted || is_icmp_error(&e) => {}
                    Err(e) => return Err(RawError::io("receiving a probe")(e)),
                }
            }
        }
        Ok(heard)
    }

    /// Parses one received packet: a datagram to the WireGuard port.
    fn check(
        &self,
        data: &[u8],
        from: Option<IpAddr>,
        v4: bool,
    ) -> Result<HeardProbe, &'static str> {
        let (source, udp) = if v4 {
            let packet = packet::parse_ipv4_udp(data).map_err(reason)?;
            (IpAddr::V4(packet.source), packet.udp)
        } else {
            let udp = packet::parse_udp(data).map_err(reason)?;
            (from.ok_or("no source address")?, udp)
        };
        if udp.destination_port != self.port {
            return Err("not to the WireGuard port");
        }
        if udp.payload.len() != PROBE_LEN {
            return Err("not the length of a probe");
        }
        Ok(HeardProbe {
            from: SocketAddr::new(source, udp.source_port),
            payload: udp.payload.to_vec(),
        })
    }
}

/// Opens one family's raw socket with its filter, non-blocking, and drains what was queued before
/// the filter was attached.
fn open_family(domain: Domain, program: Vec<bpf::Insn>) -> Result<Socket, RawError> {
    let socket = open_raw(domain)?;
    sys::attach_filter(&socket, &program).map_err(RawError::io("attaching the probe filter"))?;
    socket
        .set_nonblocking(true)
        .map_err(RawError::io("making the probe socket non-blocking"))?;
    let mut scratch = [0u8; 64];
    for _ in 0..100_000 {
        match sys::recv_from(&socket, &mut scratch) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted || is_icmp_error(&e) => {}
            Err(e) => return Err(RawError::io("draining the probe socket")(e)),
        }
    }
    Ok(socket)
}
