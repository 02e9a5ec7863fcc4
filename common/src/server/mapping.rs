//! The server's mapping addresses: a second port (maybe a second address) that answers only
//! observe requests of confirmed sessions, with the source it saw. A client compares that with
//! what the main address saw to tell how its NAT maps it. Nothing that arrives here registers,
//! moves or refreshes a client, and nothing is sent but an answer no larger than its request to
//! the source of an authenticated message.

use std::net::SocketAddr;
use std::time::Instant;

use crate::wire::{ObserveReply, Packet, Reply, Request};

use super::Server;

impl Server {
    /// A datagram at a mapping address: an observe request of a confirmed session is answered
    /// with its source; everything else is dropped.
    pub(super) fn handle_mapping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        let Ok(Packet::Transport(message)) = Packet::parse(datagram) else {
            self.stats.mapping_refused += 1;
            return None;
        };
        let lifetime = self.config.session_lifetime;
        let entry = self
            .sessions
            .get_mut(&message.receiver_index)
            .filter(|e| e.confirmed && now.saturating_duration_since(e.created) < lifetime);
        let Some(entry) = entry else {
            self.stats.mapping_refused += 1;
            return None;
        };
        let Ok(len) = entry.session.open(&message, &mut self.plaintext[..]) else {
            self.stats.bad_transport += 1;
            return None;
        };
        let Ok(Request::Observe(request)) = Request::parse(self.plaintext.get(..len)?) else {
            self.stats.mapping_refused += 1;
            return None;
        };
        self.stats.observes += 1;
        let reply = Reply::Observed(ObserveReply {
            request_id: request.request_id,
            observed: from,
            alternates: Vec::new(),
        });
        let mut plaintext = Vec::with_capacity(datagram.len());
        reply.emit(&mut plaintext);
        let mut out = Vec::with_capacity(datagram.len());
        entry.session.seal(&plaintext, &mut out).ok()?;
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::legacy::test_support::{addr, exchange, key, World};
    use super::super::{ServerConfig, Via};
    use crate::client::{Client, ClientConfig, Event};
    use crate::mapping::{MappingReport, NatMapping};
    use crate::wire::packet::TYPE_TRANSPORT;

    const SERVER: &str = "198.51.100.2:51818";
    const SECOND: &str = "198.51.100.2:51819";

    fn world() -> World {
        World::with(ServerConfig {
            mapping: vec![addr("0.0.0.0:51819")],
            ..ServerConfig::default()
        })
    }

    fn registered(world: &mut World, from: &str) -> Client {
        let mut client = Client::new(
            key(1),
            world.server.public_key(),
            vec![key(2).public_key()],
            vec![],
            ClientConfig::default(),
            [1; 32],
        );
        exchange(world, &mut client, from);
        assert!(client.is_registered());
        client
    }

    /// Runs the check: the main address hears `client` from `from`, the second port from
    /// `second_from`; returns the report.
    fn check(
        world: &mut World,
        client: &mut Client,
        from: &str,
        second_from: &str,
    ) -> MappingReport {
        client.check_mapping(addr(SERVER));
        exchange(world, client, from);
        for _ in 0..3 {
            while let Some((to, datagram)) = client.poll_mapping_transmit(world.now) {
                assert_eq!(to, addr(SECOND), "the unspecified address is the server's");
                let reply = world.server.handle_via(
                    world.now,
                    world.wall,
                    addr(second_from),
                    Via::Mapping,
                    &datagram,
                );
                if let Some(reply) = reply {
                    assert!(reply.len() <= datagram.len());
                    client.handle_datagram(world.now, &reply);
                }
            }
            world.now += crate::mapping::MAPPING_INTERVAL;
            client.finish_mapping(world.now);
        }
        std::iter::from_fn(|| client.poll_event())
            .find_map(|e| match e {
                Event::Mapping(report) => Some(report),
                _ => None,
            })
            .expect("the check reports")
    }

    #[test]
    fn the_second_port_tells_an_endpoint_independent_nat_from_a_symmetric_one() {
        let local = addr("192.168.1.20:51820");
        let mut w = world();
        let mut client = registered(&mut w, "203.0.113.7:51820");
        let same = check(
            &mut w,
            &mut client,
            "203.0.113.7:51820",
            "203.0.113.7:51820",
        );
        assert_eq!(
            same.classify(local, addr(SERVER)),
            NatMapping::EndpointIndependent {
                port_preserved: true
            }
        );
        let symmetric = check(
            &mut w,
            &mut client,
            "203.0.113.7:51820",
            "203.0.113.7:40007",
        );
        assert_eq!(
            symmetric.classify(local, addr(SERVER)),
            NatMapping::EndpointDependent
        );
        assert_eq!(w.server.stats().observes, 4);
    }

    #[test]
    fn nothing_at_the_second_port_moves_a_registration() {
        let mut w = world();
        let mut client = registered(&mut w, "203.0.113.7:51820");
        check(
            &mut w,
            &mut client,
            "203.0.113.7:51820",
            "203.0.113.7:40007",
        );
        // The peer sees us where the main address saw us, not where the second port did.
        let mut peer = Client::new(
            key(2),
            w.server.public_key(),
            vec![key(1).public_key()],
            vec![],
            ClientConfig::default(),
            [2; 32],
        );
        exchange(&mut w, &mut peer, "198.51.100.77:51820");
        peer.lookup([key(1).public_key()]);
        let events = exchange(&mut w, &mut peer, "198.51.100.77:51820");
        assert_eq!(
            super::super::legacy::test_support::resolved(&events, 1),
            Some(addr("203.0.113.7:51820"))
        );
    }

    #[test]
    fn the_second_port_answers_nothing_but_observe_requests_of_confirmed_sessions() {
        let mut w = world();
        let mut client = Client::new(
            key(1),
            w.server.public_key(),
            vec![],
            vec![],
            ClientConfig::default(),
            [1; 32],
        );
        // A handshake initiation, then a registration, sent to the second port: both dropped.
        let init = client.poll_transmit(w.now, w.wall).unwrap();
        let refused = |w: &mut World, datagram: &[u8]| {
            w.server
                .handle_via(w.now, w.wall, addr("203.0.113.7:1"), Via::Mapping, datagram)
                .is_none()
        };
        assert!(refused(&mut w, &init));
        let response = w.send("203.0.113.7:51820", &init).unwrap();
        client.handle_datagram(w.now, &response);
        let register = client.poll_transmit(w.now, w.wall).unwrap();
        assert_eq!(register[0], TYPE_TRANSPORT);
        assert!(
            refused(&mut w, &register),
            "nor a session not confirmed yet"
        );
        assert!(refused(&mut w, b"\x14garbage"));
        assert!(refused(&mut w, &[]));
        assert_eq!(w.server.stats().registrations, 0);
        // Confirmed and registered at the main address, a lookup at the second port is dropped.
        let reply = w.send("203.0.113.7:51820", &register).unwrap();
        client.handle_datagram(w.now, &reply);
        assert!(client.is_registered());
        client.lookup([key(2).public_key()]);
        let lookup = client.poll_transmit(w.now, w.wall).unwrap();
        assert!(refused(&mut w, &lookup), "a lookup is not answered there");
        assert_eq!(w.server.stats().mapping_refused, 5);
        assert_eq!(w.server.stats().lookups, 0);
    }
}
