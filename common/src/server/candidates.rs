//! What the server keeps of the local addresses a client declares, before it hands them to the
//! client's consenting peers as candidates.

use std::net::SocketAddr;

use crate::addr::is_unusable;
use crate::wire::candidates::MAX_CANDIDATES;
use crate::wire::endpoint::canonical;

/// The declared addresses worth passing on, in the client's order: no unspecified, loopback,
/// link-local, multicast or broadcast address, no port 0, no repeats, at most
/// [`MAX_CANDIDATES`]. Peers check them again; this keeps junk out of every answer.
pub fn trim(declared: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut kept: Vec<SocketAddr> = Vec::with_capacity(declared.len().min(MAX_CANDIDATES));
    for addr in declared.into_iter().map(canonical) {
        if kept.len() >= MAX_CANDIDATES {
            break;
        }
        if addr.port() == 0 || is_unusable(addr.ip()) || kept.contains(&addr) {
            continue;
        }
        kept.push(addr);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn junk_and_repeats_are_dropped() {
        let declared = addrs(&[
            "10.0.0.2:51820",
            "127.0.0.1:51820",
            "[::1]:51820",
            "[fe80::1]:51820",
            "224.0.0.1:51820",
            "0.0.0.0:51820",
            "10.0.0.2:51820",
            "[::ffff:10.0.0.2]:51820",
            "10.0.0.3:0",
            "[2001:db8::2]:51820",
        ]);
        assert_eq!(
            trim(declared),
            addrs(&["10.0.0.2:51820", "[2001:db8::2]:51820"])
        );
    }

    proptest! {
        #[test]
        fn what_is_kept_is_bounded_and_usable(
            declared in proptest::collection::vec((any::<std::net::IpAddr>(), any::<u16>()), 0..40)
        ) {
            let declared: Vec<SocketAddr> =
                declared.into_iter().map(|(ip, port)| SocketAddr::new(ip, port)).collect();
            let kept = trim(declared.clone());
            prop_assert!(kept.len() <= MAX_CANDIDATES);
            for (i, addr) in kept.iter().enumerate() {
                prop_assert!(addr.port() != 0 && !is_unusable(addr.ip()));
                prop_assert!(!kept[..i].contains(addr));
                prop_assert!(declared.iter().any(|d| canonical(*d) == *addr));
            }
        }
    }
}
