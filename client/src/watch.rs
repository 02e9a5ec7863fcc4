//! A wake-up when the host's addresses or links change: a `NETLINK_ROUTE` socket subscribed to
//! the kernel's address and link notifications.
//!
//! The messages themselves are not parsed: any of them only means "read the addresses again"
//! ([`crate::addrs::read`]), and the agent ignores a list that did not change. So a burst of
//! notifications (DHCP renewing, a Wi-Fi roam) costs a few cheap re-reads and nothing more.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};

/// Most messages one [`AddressWatch::drain`] reads, so a flood cannot keep it looping.
const DRAIN_LIMIT: usize = 1024;

/// The multicast groups of address and link changes (`RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`,
/// `RTMGRP_IPV6_IFADDR`).
const GROUPS: u32 =
    (libc::RTMGRP_LINK | libc::RTMGRP_IPV4_IFADDR | libc::RTMGRP_IPV6_IFADDR) as u32;

/// The subscribed netlink socket, non-blocking.
#[derive(Debug)]
pub struct AddressWatch {
    socket: OwnedFd,
}

impl AddressWatch {
    /// Subscribes to address and link changes. Needs no privilege.
    pub fn open() -> io::Result<Self> {
        let socket = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        bind(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            &NetlinkAddr::new(0, GROUPS),
        )?;
        Ok(Self { socket })
    }

    /// The socket, for `poll`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
    }

    /// Reads every queued notification and returns whether there was any. A receive buffer that
    /// overflowed (`ENOBUFS`: notifications were lost) counts as a change too.
    pub fn drain(&self) -> io::Result<bool> {
        let mut buf = [0u8; 8192];
        let mut changed = false;
        for _ in 0..DRAIN_LIMIT {
            match recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                &mut buf,
                MsgFlags::empty(),
            ) {
                Ok(_) | Err(Errno::ENOBUFS) => changed = true,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_watch_has_nothing_queued() {
        let watch = AddressWatch::open().expect("netlink route sockets need no privilege");
        assert!(!watch.drain().unwrap());
    }
}
