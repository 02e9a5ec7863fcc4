//! The thin layer over OS calls that the raw UDP path needs beyond what `socket2` offers directly.
//!
//! This is the one module of the client where `unsafe` would be allowed. It currently needs none:
//! `socket2` wraps `setsockopt(SOL_SOCKET, SO_ATTACH_FILTER)` and `nix` wraps `recvfrom` and
//! `poll`, both into plain byte slices. Any call that ever needs raw libc belongs here.
#![allow(unsafe_code)]

use std::io;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::SockaddrStorage;
use socket2::{SockFilter, Socket};

use crate::bpf::Insn;

/// Attaches the classic BPF `program` to `socket` (`SO_ATTACH_FILTER`). From then on the kernel
/// queues only packets the program accepts; packets queued before stay queued.
pub fn attach_filter(socket: &Socket, program: &[Insn]) -> io::Result<()> {
    if program.is_empty() || program.len() > usize::from(u16::MAX) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a BPF program has 1 to 65535 instructions",
        ));
    }
    let filters: Vec<SockFilter> = program
        .iter()
        .map(|insn| SockFilter::new(insn.code, insn.jt, insn.jf, insn.k))
        .collect();
    socket.attach_filter(&filters)
}

/// Receives one datagram into `buf` without waiting and returns its length (the part that fit)
/// and the source IP address the kernel reports. Returns the `WouldBlock` error when nothing is
/// queued.
pub fn recv_from(socket: &Socket, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
    let (len, from) = nix::sys::socket::recvfrom::<SockaddrStorage>(socket.as_raw_fd(), buf)
        .map_err(io::Error::from)?;
    let ip = from.and_then(|addr| {
        if let Some(v4) = addr.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            addr.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    });
    Ok((len, ip))
}

/// Waits until `socket` is readable (or has a pending error) or `timeout` has passed. Returns
/// whether it became ready. An interrupted wait returns `Ok(false)` so the caller re-checks its
/// deadline. Sub-millisecond timeouts are rounded up so a caller never spins.
pub fn wait_readable(socket: &Socket, timeout: Duration) -> io::Result<bool> {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let poll_timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, poll_timeout) {
        Ok(ready) => Ok(ready > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(errno) => Err(io::Error::from(errno)),
    }
}

/// Waits until one of `fds` is readable (or has a pending error) or `timeout` has passed, and
/// returns which are ready (all false on timeout or an interrupted wait).
pub fn wait_any(fds: &[BorrowedFd<'_>], timeout: Duration) -> io::Result<Vec<bool>> {
    let millis = timeout.as_nanos().div_ceil(1_000_000);
    let poll_timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
    let mut polled: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(*fd, PollFlags::POLLIN))
        .collect();
    match nix::poll::poll(&mut polled, poll_timeout) {
        Ok(_) => Ok(polled
            .iter()
            .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
            .collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![false; fds.len()]),
        Err(errno) => Err(io::Error::from(errno)),
    }
}
