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
    use crate::client::{Client, ClientConfig, Event};
    use crate::server::legacy::test_support::{exchange, key, World};
    use crate::server::ServerConfig;
    use proptest::prelude::*;

    fn client(n: u8, peers: &[u8], local: &[&str], world: &World) -> Client {
        Client::new(
            key(n),
            world.server.public_key(),
            peers.iter().map(|&p| key(p).public_key()).collect(),
            addrs(local),
            ClientConfig::default(),
            [n; 32],
        )
    }

    /// What `client` is told about `peer`'s candidates, asked for now.
    fn ask(world: &mut World, client: &mut Client, from: &str, peer: u8) -> Option<Event> {
        client.fetch_candidates(key(peer).public_key());
        exchange(world, client, from)
            .into_iter()
            .find(|e| matches!(e, Event::Candidates { .. }))
    }

    fn told(known: bool, same_public: bool, candidates: &[&str]) -> Option<Event> {
        Some(Event::Candidates {
            peer: key(2).public_key(),
            known,
            same_public,
            hard_nat: false,
            candidates: addrs(candidates),
        })
    }

    #[test]
    fn consenting_peers_get_the_trimmed_candidates_and_whether_they_share_an_address() {
        let mut world = World::with(ServerConfig::default());
        let mut a = client(1, &[2], &["10.0.0.1:51820"], &world);
        let mut b = client(
            2,
            &[1],
            &["10.0.0.2:51820", "127.0.0.1:51820", "[2001:db8::2]:51820"],
            &world,
        );
        exchange(&mut world, &mut a, "203.0.113.1:51820");
        exchange(&mut world, &mut b, "203.0.113.1:1024");
        assert_eq!(
            ask(&mut world, &mut a, "203.0.113.1:51820", 2),
            told(true, true, &["10.0.0.2:51820", "[2001:db8::2]:51820"])
        );
        assert_eq!(world.server.stats().candidates_trimmed, 1);
        // Seen from another public address, the same candidates come without the flag.
        assert_eq!(
            ask(&mut world, &mut a, "198.51.100.9:4000", 2),
            told(true, false, &["10.0.0.2:51820", "[2001:db8::2]:51820"])
        );
    }

    #[test]
    fn a_peer_that_does_not_list_the_asker_tells_nothing() {
        let mut world = World::with(ServerConfig::default());
        let mut a = client(1, &[2], &["10.0.0.1:51820"], &world);
        let mut b = client(2, &[3], &["10.0.0.2:51820"], &world);
        exchange(&mut world, &mut a, "203.0.113.1:51820");
        exchange(&mut world, &mut b, "203.0.113.1:1024");
        assert_eq!(
            ask(&mut world, &mut a, "203.0.113.1:51820", 2),
            told(false, false, &[])
        );
        // Nor does a peer that is not registered at all: the answers look alike.
        let mut c = client(3, &[4], &[], &world);
        exchange(&mut world, &mut c, "192.0.2.3:3");
        c.fetch_candidates(key(4).public_key());
        let events = exchange(&mut world, &mut c, "192.0.2.3:3");
        assert!(events.contains(&Event::Candidates {
            peer: key(4).public_key(),
            known: false,
            same_public: false,
            hard_nat: false,
            candidates: vec![],
        }));
    }

    /// Hands the last push the server queued to `a` (at 203.0.113.1:51820) and returns what a's
    /// next exchange with the server brings.
    fn after_last_push(world: &mut World, a: &mut Client) -> Vec<Event> {
        let push = std::iter::from_fn(|| world.server.poll_transmit())
            .last()
            .unwrap();
        a.handle_datagram(world.now, &push.datagram);
        exchange(world, a, "203.0.113.1:51820")
    }

    #[test]
    fn new_candidates_are_pushed_to_watching_peers_and_the_same_ones_are_not() {
        let mut world = World::with(ServerConfig::default());
        let mut a = client(1, &[2], &[], &world);
        let mut b = client(2, &[1], &["10.0.0.2:51820"], &world);
        exchange(&mut world, &mut a, "203.0.113.1:51820");
        exchange(&mut world, &mut b, "198.51.100.2:51820");
        let first = world.server.stats().pushes;
        assert_eq!(first, 1, "the first registration");
        b.refresh();
        exchange(&mut world, &mut b, "198.51.100.2:51820");
        assert_eq!(world.server.stats().pushes, first, "nothing changed");
        b.set_local_addrs(addrs(&["10.9.0.2:51820"]));
        exchange(&mut world, &mut b, "198.51.100.2:51820");
        assert_eq!(world.server.stats().pushes, first + 1, "new candidates");
        // The push makes a ask for the candidates again, and it hears the new ones.
        let events = after_last_push(&mut world, &mut a);
        assert!(events.contains(&Event::Candidates {
            peer: key(2).public_key(),
            known: true,
            same_public: false,
            hard_nat: false,
            candidates: addrs(&["10.9.0.2:51820"]),
        }));
        // A NAT that maps per destination, once declared, is pushed and told the same way.
        b.set_hard_nat(true);
        exchange(&mut world, &mut b, "198.51.100.2:51820");
        assert_eq!(world.server.stats().pushes, first + 2, "a new NAT flag");
        let events = after_last_push(&mut world, &mut a);
        assert!(events.contains(&Event::Candidates {
            peer: key(2).public_key(),
            known: true,
            same_public: false,
            hard_nat: true,
            candidates: addrs(&["10.9.0.2:51820"]),
        }));
    }

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
