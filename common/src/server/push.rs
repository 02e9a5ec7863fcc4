//! Server pushes: what changes about a client's peers, sent to the client unasked.
//!
//! A push about B goes to a watching client A when B's endpoint is first known or moves, or when
//! B's confirmed punch makes A's *peer has yours* for B true. It goes only to A's registration
//! endpoint (the source of A's latest authenticated message) through the session that message
//! came on, and only within that session's budget: at most [`PUSH_WINDOW`] unacknowledged and
//! [`PUSH_RATE`] a second (bursts of [`PUSH_BURST`]). What does not fit is not sent; the client's
//! periodic lookups are the fallback. Every push waits in a queue of at most
//! [`MAX_QUEUED_PUSHES`] datagrams for [`Server::poll_transmit`].

use std::net::SocketAddr;
use std::time::Instant;

use tracing::trace;

use super::limits::Bucket;
use super::Server;
use crate::keys::PublicKey;
use crate::wire::message::{PUSH_DATAGRAM_LEN, PUSH_LEN};
use crate::wire::{Push, Reply};

/// Most pushes of one session that may wait for their acknowledgement.
pub const PUSH_WINDOW: u32 = 8;
/// Pushes a second one session may be sent, however fast it acknowledges.
pub const PUSH_RATE: u32 = 10;
/// The burst of pushes one session may be sent.
pub const PUSH_BURST: u32 = 10;
/// Most pushes queued for [`Server::poll_transmit`]; beyond that they are dropped (and counted).
pub const MAX_QUEUED_PUSHES: usize = 4096;

/// A datagram the server wants sent that is not the reply to the datagram being handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes: an endpoint an authenticated message of its session came from.
    pub destination: SocketAddr,
    /// The whole datagram.
    pub datagram: Vec<u8>,
}

/// The push budget of one session, dropped with it.
#[derive(Debug)]
pub(super) struct PushBudget {
    /// The sequence of the last push sent (0: none yet).
    sent: u32,
    /// The highest sequence acknowledged, never above `sent`.
    acked: u32,
    bucket: Bucket,
}

impl PushBudget {
    /// A budget for a session made at `now`: nothing sent, a full bucket.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            sent: 0,
            acked: 0,
            bucket: Bucket::full(PUSH_BURST, now),
        }
    }

    /// Takes a cumulative acknowledgement; one for a sequence never sent is ignored.
    pub(super) fn ack(&mut self, acked: u32) {
        if acked > self.acked && acked <= self.sent {
            self.acked = acked;
        }
    }

    /// The sequence for one more push, if the window and the bucket have room for it.
    fn take(&mut self, now: Instant) -> Option<u32> {
        if self.sent.saturating_sub(self.acked) >= PUSH_WINDOW || self.sent == u32::MAX {
            return None;
        }
        if !self.bucket.take(PUSH_RATE, PUSH_BURST, now) {
            return None;
        }
        self.sent += 1;
        Some(self.sent)
    }
}

impl Server {
    /// The next datagram queued by [`Server::handle`] for another destination than the sender
    /// (a push), if any. Call it until it gives `None` after handling datagrams.
    pub fn poll_transmit(&mut self) -> Option<super::Transmit> {
        self.transmits.pop_front()
    }

    /// `subject`'s sighting changed (first registration or a new endpoint): pushes it to every
    /// live, watching registration that `subject` lists and that lists it back.
    pub(super) fn push_about(&mut self, subject: PublicKey, now: Instant) {
        for watcher in self.registry.watchers(&subject, now) {
            self.push_to(watcher, subject, now);
        }
    }

    /// What `watcher`'s lookup of `subject` would say about *peer has yours* right now, if
    /// `watcher` watches and may be told about `subject` at all.
    pub(super) fn watched_flag(
        &self,
        watcher: &PublicKey,
        subject: &PublicKey,
        now: Instant,
    ) -> Option<bool> {
        self.registry
            .get(watcher, now)
            .filter(|r| r.watch)
            .and(self.registry.sighting(watcher, subject, now))
            .map(|s| s.peer_has_yours)
    }

    /// Pushes `subject`'s current sighting to `watcher`, within the budget of the session that
    /// `watcher`'s last authenticated message came on, and remembers what `watcher` was told.
    pub(super) fn push_to(&mut self, watcher: PublicKey, subject: PublicKey, now: Instant) {
        if watcher == subject {
            return;
        }
        let Some(registration) = self.registry.get(&watcher, now).filter(|r| r.watch) else {
            return;
        };
        let (destination, index) = (registration.endpoint, registration.session);
        let Some(sighting) = self.registry.sighting(&watcher, &subject, now) else {
            return;
        };
        let lifetime = self.config.session_lifetime;
        let Some(session) = self.sessions.get_mut(&index).filter(|s| {
            s.client == watcher
                && s.confirmed
                && now.saturating_duration_since(s.created) < lifetime
        }) else {
            trace!(peer = %watcher, "no live session to push through");
            return;
        };
        if self.transmits.len() >= MAX_QUEUED_PUSHES {
            self.stats.pushes_over_budget += 1;
            return;
        }
        let Some(sequence) = session.push.take(now) else {
            self.stats.pushes_over_budget += 1;
            return;
        };
        let mut plaintext = Vec::with_capacity(PUSH_LEN);
        Reply::Push(Push {
            sequence,
            peer: subject,
            sighting,
        })
        .emit(&mut plaintext);
        let mut datagram = Vec::with_capacity(PUSH_DATAGRAM_LEN);
        if session.session.seal(&plaintext, &mut datagram).is_err() {
            return;
        }
        self.registry
            .note_given(&watcher, &subject, sighting.endpoint, false, now);
        self.transmits.push_back(super::Transmit {
            destination,
            datagram,
        });
        self.stats.pushes += 1;
        trace!(peer = %watcher, about = %subject, sequence, "push");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::client::{Client, ClientConfig, Event};
    use crate::mac::Mac1Key;
    use crate::noise;
    use crate::server::legacy::test_support::{addr, exchange, key, World};
    use crate::server::ServerConfig;
    use crate::wire::packet::{MAC1_OFFSET, MAC_LEN, NOISE_INIT_LEN};
    use crate::wire::{HandshakeInit, Packet};

    const A: &str = "203.0.113.1:1000";

    fn client(n: u8, peers: &[u8], watch: bool, world: &World) -> Client {
        let config = ClientConfig {
            watch,
            ..ClientConfig::default()
        };
        let peers = peers.iter().map(|&p| key(p).public_key()).collect();
        Client::new(
            key(n),
            world.server.public_key(),
            peers,
            vec![],
            config,
            [n; 32],
        )
    }

    fn drain(world: &mut World) -> Vec<Transmit> {
        std::iter::from_fn(|| world.server.poll_transmit()).collect()
    }

    /// Hands pushes to `client` and returns the events they gave.
    fn deliver(world: &World, client: &mut Client, pushes: &[Transmit]) -> Vec<Event> {
        for push in pushes {
            client.handle_datagram(world.now, &push.datagram);
        }
        std::iter::from_fn(|| client.poll_event()).collect()
    }

    /// A registered and watching 1 at `A`, peer of 2, and an unregistered 2.
    fn pair(watch: bool) -> (World, Client, Client) {
        let mut world = World::with(ServerConfig::default());
        let mut a = client(1, &[2], watch, &world);
        let b = client(2, &[1], true, &world);
        exchange(&mut world, &mut a, A);
        assert!(a.is_registered());
        assert!(drain(&mut world).is_empty());
        (world, a, b)
    }

    /// Makes `b` register again from `from`.
    fn move_to(world: &mut World, b: &mut Client, from: &str) {
        b.refresh();
        exchange(world, b, from);
    }

    #[test]
    fn a_first_registration_is_pushed_to_the_watching_peer_at_its_endpoint() {
        let (mut world, mut a, mut b) = pair(true);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        let pushes = drain(&mut world);
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].destination, addr(A));
        assert_eq!(pushes[0].datagram.len(), PUSH_DATAGRAM_LEN);
        let events = deliver(&world, &mut a, &pushes);
        assert!(matches!(
            events.as_slice(),
            [Event::Resolved { peer, endpoint, peer_has_yours: false, .. }]
                if *peer == key(2).public_key() && *endpoint == addr("198.51.100.2:2000")
        ));
        assert_eq!(world.server.stats().pushes, 1);
        // What 1 was told counts as given, so a lookup by 1 keeps its confirmation.
        let given = world.server.registry().get(&key(1).public_key(), world.now);
        assert_eq!(
            given.and_then(|r| r.given.get(&key(2).public_key()).map(|g| g.endpoint)),
            Some(addr("198.51.100.2:2000"))
        );
    }

    #[test]
    fn no_watch_flag_no_consent_no_push() {
        let (mut world, _a, mut b) = pair(false);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        assert!(drain(&mut world).is_empty());
        let (mut world, _a, _) = pair(true);
        let mut stranger = client(2, &[], true, &world);
        exchange(&mut world, &mut stranger, "198.51.100.2:2000");
        move_to(&mut world, &mut stranger, "198.51.100.2:2001");
        assert!(drain(&mut world).is_empty(), "2 does not list 1");
        assert_eq!(world.server.stats().pushes, 0);
    }

    #[test]
    fn a_refresh_from_the_same_source_pushes_nothing_and_a_move_pushes() {
        let (mut world, mut a, mut b) = pair(true);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        let first = drain(&mut world);
        deliver(&world, &mut a, &first);
        exchange(&mut world, &mut a, A);
        move_to(&mut world, &mut b, "198.51.100.2:2000");
        b.lookup([key(1).public_key()]);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        assert!(drain(&mut world).is_empty());
        move_to(&mut world, &mut b, "198.51.100.2:2999");
        let pushes = drain(&mut world);
        assert_eq!(pushes.len(), 1);
        let events = deliver(&world, &mut a, &pushes);
        assert!(matches!(
            events.as_slice(),
            [Event::Resolved { endpoint, .. }] if *endpoint == addr("198.51.100.2:2999")
        ));
    }

    #[test]
    fn a_confirmed_punch_is_pushed_on_the_transition_only() {
        let (mut world, mut a, mut b) = pair(true);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        let first = drain(&mut world);
        deliver(&world, &mut a, &first);
        exchange(&mut world, &mut a, A);
        // 2 learns 1's endpoint, then confirms a punch towards it, twice.
        b.lookup([key(1).public_key()]);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        assert!(drain(&mut world).is_empty(), "no punch confirmed yet");
        b.lookup_with([(key(1).public_key(), true)]);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        let pushes = drain(&mut world);
        assert_eq!(pushes.len(), 1);
        let events = deliver(&world, &mut a, &pushes);
        assert!(matches!(
            events.as_slice(),
            [Event::Resolved {
                peer_has_yours: true,
                ..
            }]
        ));
        b.lookup_with([(key(1).public_key(), true)]);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        assert!(drain(&mut world).is_empty(), "already true");
    }

    #[test]
    fn a_client_that_never_acks_gets_at_most_the_window() {
        let (mut world, _a, mut b) = pair(true);
        for port in 0..30u16 {
            move_to(&mut world, &mut b, &format!("198.51.100.2:{}", 3000 + port));
            world.advance(Duration::from_secs(1));
        }
        let pushes = drain(&mut world);
        assert_eq!(pushes.len(), PUSH_WINDOW as usize);
        assert!(pushes.iter().all(|p| p.destination == addr(A)));
        assert_eq!(
            world.server.stats().pushes_over_budget,
            30 - u64::from(PUSH_WINDOW)
        );
    }

    #[test]
    fn acks_reopen_the_window_but_the_bucket_still_holds() {
        let (mut world, mut a, mut b) = pair(true);
        let mut received = 0;
        for port in 0..40u16 {
            move_to(&mut world, &mut b, &format!("198.51.100.2:{}", 3000 + port));
            let pushes = drain(&mut world);
            received += pushes.len();
            deliver(&world, &mut a, &pushes);
            exchange(&mut world, &mut a, A);
        }
        assert_eq!(
            received, PUSH_BURST as usize,
            "no time passed: the burst only"
        );
        assert!(world.server.stats().push_acks >= 1);
        world.advance(Duration::from_secs(1));
        move_to(&mut world, &mut b, "198.51.100.2:4000");
        assert_eq!(drain(&mut world).len(), 1, "refilled");
    }

    #[test]
    fn an_ack_for_a_push_never_sent_is_ignored() {
        let mut budget = PushBudget::new(Instant::now());
        budget.ack(5);
        let now = Instant::now();
        let taken: Vec<u32> = std::iter::from_fn(|| budget.take(now)).collect();
        assert_eq!(taken, (1..=PUSH_WINDOW).collect::<Vec<_>>());
        budget.ack(3);
        budget.ack(2);
        assert_eq!(budget.take(now), Some(PUSH_WINDOW + 1));
        assert_eq!(budget.take(now), Some(PUSH_WINDOW + 2));
        assert_eq!(budget.take(now), None, "3 acknowledged, 8 in flight");
    }

    #[test]
    fn a_push_goes_through_the_watchers_latest_session_only() {
        let (mut world, mut a, mut b) = pair(true);
        // 1 handshakes again (say, after a restart of its own): the old session goes.
        let mut a2 = client(1, &[2], true, &world);
        world.advance(Duration::from_secs(1));
        exchange(&mut world, &mut a2, "203.0.113.1:1001");
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        let pushes = drain(&mut world);
        assert_eq!(pushes.len(), 1);
        assert_eq!(pushes[0].destination, addr("203.0.113.1:1001"));
        assert!(deliver(&world, &mut a, &pushes).is_empty(), "old session");
        assert_eq!(deliver(&world, &mut a2, &pushes).len(), 1);
    }

    #[test]
    fn a_push_ack_gets_no_reply() {
        let (mut world, mut a, mut b) = pair(true);
        exchange(&mut world, &mut b, "198.51.100.2:2000");
        let pushes = drain(&mut world);
        deliver(&world, &mut a, &pushes);
        let ack = a.poll_transmit(world.now, world.wall).unwrap();
        assert_eq!(world.send(A, &ack), None);
        assert_eq!(world.server.stats().push_acks, 1);
        // The push also asks for the peer's candidates, once; the ack is not sent again.
        let candidates = a.poll_transmit(world.now, world.wall).unwrap();
        assert!(world.send(A, &candidates).is_some());
        assert_eq!(world.server.stats().candidate_lookups, 1);
        assert_eq!(a.poll_transmit(world.now, world.wall), None, "sent once");
    }

    #[test]
    fn a_version_1_initiation_gets_no_reply_and_leaves_no_state() {
        let mut world = World::with(ServerConfig::default());
        let server = world.server.public_key();
        let mut state =
            noise::initiator_with_prologue(&key(1), &server, [1; 32], b"wgpunch discovery v1")
                .unwrap();
        let timestamp = crate::handshake::unix_nanos(world.wall);
        let noise =
            noise::write_handshake::<NOISE_INIT_LEN>(&mut state, &timestamp.to_be_bytes()).unwrap();
        let mut init = HandshakeInit {
            sender_index: 7,
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let mut datagram = Vec::new();
        init.emit(&mut datagram);
        init.mac1 = Mac1Key::for_server(&server).compute(&datagram[..MAC1_OFFSET]);
        datagram.clear();
        init.emit(&mut datagram);
        assert!(matches!(
            Packet::parse(&datagram),
            Ok(Packet::HandshakeInit(_))
        ));
        assert_eq!(world.send(A, &datagram), None);
        assert_eq!(world.server.stats().bad_handshake, 1);
        assert_eq!(world.server.session_count(), 0);
        assert!(world.server.keys.is_empty());
        assert!(world.server.registry().is_empty());
        assert!(drain(&mut world).is_empty());
    }
}
