//! The client side of natpunch-go's protocol, as a state machine without IO, for
//! `wgpunch-client --protocol natpunch-go` against a server that speaks only natpunch-go.
//!
//! Same shape as [`crate::client::Client`]: feed it the server's datagrams with
//! [`LegacyClient::handle_datagram`], ask it what to send with [`LegacyClient::poll_transmit`],
//! read what happened with [`LegacyClient::poll_event`], and call `poll_transmit` again no later
//! than [`LegacyClient::poll_timeout`].
//!
//! # One lookup at a time
//!
//! natpunch-go's answer carries neither the target's key nor anything tying it to its lookup, and
//! the server's answer counter is its own. So answers are matched by order: at most one lookup is
//! in flight, and a late answer must never be taken for the answer to a later lookup about another
//! peer. Two rules guarantee that:
//!
//! - a lookup that goes unanswered is sent again (fresh nonce, same target) with backoff, and after
//!   [`LegacyConfig::max_lookup_attempts`] sends the session is dropped and a new handshake made;
//! - a lookup that needed more than one send may still have answers on their way, so once it is
//!   answered the session is not used for another target: the next lookup goes out on a new
//!   session, whose keys no stale answer decrypts under.
//!
//! Answers also pass the session's anti-replay window, so a replayed answer is dropped.
//!
//! # Sessions
//!
//! Every handshake carries the wall clock in nanoseconds, strictly increasing, as natpunch-go's
//! server requires. The client makes a new handshake every [`LegacyConfig::rehandshake_after`]
//! (natpunch-go's five minutes), which also refreshes the endpoint the server records, and when
//! the server stops answering. After each handshake its first lookup is for its own key: the
//! server recorded the source of the initiation (natpunch-go) or of that very lookup
//! (wgpunch-server's compatibility mode, which records nothing from an initiation), so the answer
//! is our public `ip:port` as the server sees it ([`LegacyEvent::Observed`]). A session without
//! other lookups repeats that every [`LegacyConfig::refresh_after`], which keeps us registered
//! with a server that forgets idle clients and keeps our NAT's mapping towards the server alive.
//! A server that does not answer it costs nothing but one empty answer.
//!
//! Datagrams that do not parse, decrypt or fit what is in flight are dropped and change nothing: a
//! forged handshake response is checked against a rebuilt copy of the pending initiation, so it
//! cannot spoil the real one.

use std::collections::VecDeque;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};

use crate::backoff;
use crate::handshake::unix_nanos;
use crate::keys::{PrivateKey, PublicKey};
use crate::noise::{Rng, Seed};

use super::handshake::Initiation;
use super::packet::{parse_from_server, FromServer};
use super::plaintext::LookupRequest;
use super::session::LegacySession;

/// Timings of the natpunch-go client.
#[derive(Debug, Clone)]
pub struct LegacyConfig {
    /// Make a new handshake once a session is this old (natpunch-go's client: five minutes).
    pub rehandshake_after: Duration,
    /// First retransmission delay of a handshake or lookup.
    pub retransmit_initial: Duration,
    /// Longest retransmission delay.
    pub retransmit_max: Duration,
    /// Sends of one lookup without an answer before the session is taken as lost. With the
    /// defaults the last one goes out 3.5 s after the first and the session is dropped at 7.5 s,
    /// within the 10 s natpunch-go's own client waits.
    pub max_lookup_attempts: u32,
    /// After each handshake, first look up our own key to learn the address the server sees.
    pub observe_self: bool,
    /// With `observe_self`, look up our own key again when the session has been this long
    /// without a lookup. wgpunch-server's compatibility mode records a legacy client only from
    /// its lookups and forgets it after its registration TTL (120 s by default), and our NAT
    /// forgets an idle mapping after 30 s; natpunch-go's own server does not mind.
    pub refresh_after: Duration,
}

impl Default for LegacyConfig {
    fn default() -> Self {
        Self {
            rehandshake_after: Duration::from_secs(300),
            retransmit_initial: Duration::from_millis(500),
            retransmit_max: Duration::from_secs(8),
            max_lookup_attempts: 4,
            observe_self: true,
            refresh_after: Duration::from_secs(20),
        }
    }
}

/// What happened, for the IO layer to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LegacyEvent {
    /// A handshake with the server completed; the server has recorded where we are.
    Connected,
    /// The server sees our WireGuard port at this address (the answer to our own key).
    Observed(SocketAddrV4),
    /// The server knows where `peer` is.
    Found {
        /// The peer.
        peer: PublicKey,
        /// The public address and port the server last saw it at.
        endpoint: SocketAddrV4,
    },
    /// The server does not know `peer`.
    NotFound {
        /// The peer.
        peer: PublicKey,
    },
}

/// An initiation waiting for its response. Only what rebuilds it is kept: a response is checked
/// against a fresh copy, so a forged one leaves this untouched.
struct Pending {
    index: u32,
    timestamp: u64,
    /// Rebuilds the initiation's ephemeral key: a secret, kept out of `Debug`.
    seed: Seed,
    next_send: Instant,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pending")
            .field("index", &self.index)
            .field("timestamp", &self.timestamp)
            .field("next_send", &self.next_send)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Established {
    session: LegacySession,
    since: Instant,
    /// When the last lookup went out on it.
    last_lookup: Instant,
    /// A lookup on this session needed more than one send: answers to its earlier sends may
    /// still arrive, so no lookup for another target goes out on it.
    tainted: bool,
}

/// The lookup in flight.
#[derive(Debug, Clone, Copy)]
struct Outstanding {
    target: PublicKey,
    next_send: Instant,
    /// Sends so far.
    attempts: u32,
}

/// The client side of natpunch-go's protocol, for one server.
pub struct LegacyClient {
    private: PrivateKey,
    public: PublicKey,
    server: PublicKey,
    config: LegacyConfig,
    rng: Rng,
    pending: Option<Pending>,
    handshake_attempts: u32,
    session: Option<Established>,
    outstanding: Option<Outstanding>,
    /// Targets to look up, in order, each once.
    queue: VecDeque<PublicKey>,
    last_timestamp: u64,
    events: VecDeque<LegacyEvent>,
}

impl std::fmt::Debug for LegacyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyClient")
            .field("public", &self.public)
            .field("server", &self.server)
            .field("connected", &self.session.is_some())
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

impl LegacyClient {
    /// A client with WireGuard key `private` for the natpunch-go server whose public key is
    /// `server`. `seed` seeds its indexes, jitter and ephemeral keys.
    pub fn new(private: PrivateKey, server: PublicKey, config: LegacyConfig, seed: Seed) -> Self {
        let public = private.public_key();
        Self {
            private,
            public,
            server,
            config,
            rng: Rng::from_seed(seed),
            pending: None,
            handshake_attempts: 0,
            session: None,
            outstanding: None,
            queue: VecDeque::new(),
            last_timestamp: 0,
            events: VecDeque::new(),
        }
    }

    /// Our WireGuard public key: who we are to the server.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// True while a session with the server is established.
    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// True while a handshake or a lookup waits for its answer.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some() || self.outstanding.is_some()
    }

    /// Queues lookups of `peers` (each is asked once; peers already queued or in flight are not
    /// asked twice). Answers come as [`LegacyEvent::Found`] or [`LegacyEvent::NotFound`].
    pub fn lookup(&mut self, peers: impl IntoIterator<Item = PublicKey>) {
        for peer in peers {
            let in_flight = self.outstanding.is_some_and(|o| o.target == peer);
            if !in_flight && !self.queue.contains(&peer) {
                self.queue.push_back(peer);
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<LegacyEvent> {
        self.events.pop_front()
    }

    /// The latest time by which [`LegacyClient::poll_transmit`] must be called again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake = self.pending.as_ref().map(|p| p.next_send);
        let lookup = self.outstanding.map(|o| o.next_send);
        let rehandshake = self
            .session
            .as_ref()
            .map(|s| s.since + self.config.rehandshake_after);
        let refresh = self.refresh_due();
        [handshake, lookup, rehandshake, refresh]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the session, idle, next looks up our own key.
    fn refresh_due(&self) -> Option<Instant> {
        let idle = self.outstanding.is_none() && self.queue.is_empty();
        self.session
            .as_ref()
            .filter(|_| self.config.observe_self && idle)
            .map(|s| s.last_lookup + self.config.refresh_after)
    }

    /// The next datagram to send to the server, if one is due at `now`. `wall` is the real time
    /// for handshake timestamps.
    pub fn poll_transmit(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        if self.session.as_ref().is_some_and(|s| {
            now.saturating_duration_since(s.since) >= self.config.rehandshake_after
        }) {
            debug!("natpunch-go session aged, making a new handshake");
            self.drop_session();
        }
        if self
            .outstanding
            .is_some_and(|o| now >= o.next_send && o.attempts >= self.config.max_lookup_attempts)
        {
            debug!("natpunch-go server stopped answering, making a new handshake");
            self.drop_session();
        }
        let needs_fresh_session = self.outstanding.is_none()
            && !self.queue.is_empty()
            && self.session.as_ref().is_some_and(|s| s.tainted);
        if needs_fresh_session {
            trace!("late answers may be in flight; next lookup on a new session");
            self.drop_session();
        }
        if self.session.is_none() {
            return self.transmit_handshake(now, wall);
        }
        if self.refresh_due().is_some_and(|at| now >= at) {
            self.queue.push_back(self.public);
        }
        self.transmit_lookup(now)
    }

    fn backoff(&mut self, attempts: u32) -> Duration {
        let (initial, max) = (self.config.retransmit_initial, self.config.retransmit_max);
        backoff::delay(initial, max, attempts, &mut self.rng)
    }

    fn transmit_handshake(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        if self.pending.as_ref().is_some_and(|p| now < p.next_send) {
            return None;
        }
        // natpunch-go's server takes an initiation only with a newer timestamp than the last.
        let timestamp = unix_nanos(wall).max(self.last_timestamp.saturating_add(1));
        self.last_timestamp = timestamp;
        let index = self.rng.next_u32();
        let seed = self.rng.seed();
        let (_, datagram) =
            Initiation::start(&self.private, &self.server, index, timestamp, seed).ok()?;
        let attempts = self.handshake_attempts;
        self.handshake_attempts = attempts.saturating_add(1);
        let next_send = now + self.backoff(attempts);
        self.pending = Some(Pending {
            index,
            timestamp,
            seed,
            next_send,
        });
        trace!(attempts, "sending natpunch-go handshake initiation");
        Some(datagram)
    }

    fn transmit_lookup(&mut self, now: Instant) -> Option<Vec<u8>> {
        let outstanding = match self.outstanding {
            Some(o) if now < o.next_send => return None,
            Some(o) => o,
            None => Outstanding {
                target: self.queue.pop_front()?,
                next_send: now,
                attempts: 0,
            },
        };
        let delay = self.backoff(outstanding.attempts);
        let request = LookupRequest {
            client: self.public,
            target: outstanding.target,
        };
        let established = self.session.as_mut()?;
        established.last_lookup = now;
        let Ok(datagram) = established.session.seal_lookup(&request) else {
            // The session ran out of nonces: start over with a new one.
            self.queue.push_front(outstanding.target);
            self.drop_session();
            return None;
        };
        self.outstanding = Some(Outstanding {
            target: outstanding.target,
            next_send: now + delay,
            attempts: outstanding.attempts + 1,
        });
        trace!(peer = %outstanding.target, attempt = outstanding.attempts + 1, "sending natpunch-go lookup");
        Some(datagram)
    }

    /// Forgets the session; the lookup in flight is asked again first on the next one.
    fn drop_session(&mut self) {
        self.session = None;
        if let Some(o) = self.outstanding.take() {
            self.queue.retain(|k| *k != o.target);
            self.queue.push_front(o.target);
        }
    }

    /// Handles a datagram that came from the server's address. Anything that is not a valid
    /// answer to what is in flight is dropped and changes nothing.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        match parse_from_server(datagram) {
            Ok(FromServer::HandshakeResponse(response)) => {
                let Some(pending) = self.pending.as_ref() else {
                    return;
                };
                // Rebuild the initiation (same seed, same bytes) and let it read the response.
                let Ok((initiation, _)) = Initiation::start(
                    &self.private,
                    &self.server,
                    pending.index,
                    pending.timestamp,
                    pending.seed,
                ) else {
                    return;
                };
                match initiation.complete(&response) {
                    Ok(session) => {
                        debug!(index = session.index, "connected to the natpunch-go server");
                        self.pending = None;
                        self.handshake_attempts = 0;
                        self.drop_session();
                        self.session = Some(Established {
                            session,
                            since: now,
                            last_lookup: now,
                            tainted: false,
                        });
                        if self.config.observe_self {
                            let me = self.public;
                            self.queue.retain(|k| *k != me);
                            self.queue.push_front(me);
                        }
                        self.events.push_back(LegacyEvent::Connected);
                    }
                    Err(e) => trace!(error = %e, "dropped a handshake response"),
                }
            }
            Ok(FromServer::Answer(answer)) => {
                let Some(established) = self.session.as_mut() else {
                    return;
                };
                let endpoint = match established.session.open_answer(&answer) {
                    Ok(endpoint) => endpoint,
                    Err(e) => {
                        trace!(error = %e, "dropped an answer");
                        return;
                    }
                };
                let Some(outstanding) = self.outstanding.take() else {
                    trace!("dropped an answer to no lookup in flight");
                    return;
                };
                if outstanding.attempts > 1 {
                    established.tainted = true;
                }
                let peer = outstanding.target;
                self.events.push_back(match endpoint {
                    Some(endpoint) if peer == self.public => LegacyEvent::Observed(endpoint),
                    Some(endpoint) => LegacyEvent::Found { peer, endpoint },
                    None if peer == self.public => return,
                    None => LegacyEvent::NotFound { peer },
                });
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use snow::{Builder, StatelessTransportState};

    /// natpunch-go's server as the wire description tells it, built on snow directly rather than
    /// on this crate's legacy codec, so a mistake shared by client and codec would show here.
    struct Responder {
        private: [u8; 32],
        sessions: HashMap<u32, (PublicKey, StatelessTransportState, u64)>,
        endpoints: HashMap<PublicKey, SocketAddrV4>,
        /// Every datagram answered so far, in order, for replay tests.
        sent: Vec<Vec<u8>>,
        /// Record clients' sources (a server may also refuse to tell a client its own).
        record: bool,
    }

    impl Responder {
        fn new(private: &PrivateKey) -> Self {
            Self {
                private: *private.as_bytes(),
                sessions: HashMap::new(),
                endpoints: HashMap::new(),
                sent: Vec::new(),
                record: true,
            }
        }

        fn handle(&mut self, datagram: &[u8], from: SocketAddrV4) -> Option<Vec<u8>> {
            let reply = match (datagram[0], datagram.len()) {
                (1, 109) => {
                    let mut noise = Builder::new("Noise_IK_25519_ChaChaPoly_BLAKE2s".parse().ok()?)
                        .local_private_key(&self.private)
                        .ok()?
                        .prologue(b"natpunch-go is the best :)")
                        .ok()?
                        .build_responder()
                        .ok()?;
                    let mut payload = [0u8; 64];
                    let len = noise.read_message(&datagram[5..], &mut payload).ok()?;
                    assert_eq!(len, 8, "the timestamp payload");
                    let client = PublicKey(noise.get_remote_static()?.try_into().ok()?);
                    let index = u32::from_be_bytes(datagram[1..5].try_into().ok()?) ^ 0xff;
                    let mut reply = vec![2];
                    reply.extend_from_slice(&index.to_be_bytes());
                    let mut message = [0u8; 48];
                    noise.write_message(&[], &mut message).ok()?;
                    reply.extend_from_slice(&message);
                    let transport = noise.into_stateless_transport_mode().ok()?;
                    self.sessions.insert(index, (client, transport, 0));
                    if self.record {
                        self.endpoints.insert(client, from);
                    }
                    reply
                }
                (3, 93) => {
                    let index = u32::from_be_bytes(datagram[1..5].try_into().ok()?);
                    let nonce = u64::from_be_bytes(datagram[5..13].try_into().ok()?);
                    let (client, transport, _) = self.sessions.get_mut(&index)?;
                    let mut plain = [0u8; 80];
                    let len = transport
                        .read_message(nonce, &datagram[13..], &mut plain)
                        .ok()?;
                    assert_eq!(len, 64);
                    assert_eq!(
                        &plain[..32],
                        client.as_bytes(),
                        "the lookup names its sender"
                    );
                    let target = PublicKey(plain[32..64].try_into().ok()?);
                    let client = *client;
                    let answer: Vec<u8> = match self.endpoints.get(&target) {
                        Some(e) => [&e.ip().octets()[..], &e.port().to_be_bytes()].concat(),
                        None => vec![],
                    };
                    let (_, transport, counter) = self.sessions.get_mut(&index)?;
                    let mut sealed = [0u8; 22];
                    let len = transport
                        .write_message(*counter, &answer, &mut sealed)
                        .ok()?;
                    let mut reply = vec![3];
                    reply.extend_from_slice(&counter.to_be_bytes());
                    reply.extend_from_slice(&sealed[..len]);
                    *counter += 1;
                    if self.record {
                        self.endpoints.insert(client, from);
                    }
                    reply
                }
                _ => return None,
            };
            self.sent.push(reply.clone());
            Some(reply)
        }
    }

    const ME_AT: &str = "198.51.100.7:40001";
    const PEER_10_AT: &str = "203.0.113.5:5000";

    struct Pair {
        client: LegacyClient,
        server: Responder,
        now: Instant,
        wall: SystemTime,
    }

    impl Pair {
        fn new(config: LegacyConfig) -> Self {
            let server_key = PrivateKey::from_bytes([2; 32]);
            let client = LegacyClient::new(
                PrivateKey::from_bytes([1; 32]),
                server_key.public_key(),
                config,
                [7; 32],
            );
            Self {
                client,
                server: Responder::new(&server_key),
                now: Instant::now(),
                wall: SystemTime::now(),
            }
        }

        /// A pair whose client does not look itself up after each handshake.
        fn without_self_lookup() -> Self {
            Self::new(LegacyConfig {
                observe_self: false,
                ..LegacyConfig::default()
            })
        }

        /// The server knows peer 10, at [`PEER_10_AT`].
        fn server_knows_peer_10(&mut self) {
            self.server.endpoints.insert(peer(10), at(PEER_10_AT));
        }

        /// Everything the client sends now, delivered (or dropped when `lose`), replies fed back.
        fn step(&mut self, lose: bool) -> usize {
            let mut sent = 0;
            while let Some(d) = self.client.poll_transmit(self.now, self.wall) {
                sent += 1;
                if lose {
                    continue;
                }
                if let Some(reply) = self.server.handle(&d, ME_AT.parse().unwrap()) {
                    self.client.handle_datagram(self.now, &reply);
                }
            }
            sent
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
            self.wall += by;
        }

        fn run_until_quiet(&mut self) {
            for _ in 0..20 {
                self.step(false);
                if !self.client.is_waiting() {
                    return;
                }
            }
            panic!("still waiting");
        }

        fn events(&mut self) -> Vec<LegacyEvent> {
            std::iter::from_fn(|| self.client.poll_event()).collect()
        }
    }

    fn peer(n: u8) -> PublicKey {
        PrivateKey::from_bytes([n; 32]).public_key()
    }

    fn at(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn handshakes_learns_its_own_address_and_finds_peers_one_at_a_time() {
        let mut pair = Pair::new(LegacyConfig::default());
        pair.server_knows_peer_10();
        pair.client.lookup([peer(10), peer(11), peer(10)]);
        pair.run_until_quiet();
        assert_eq!(
            pair.events(),
            vec![
                LegacyEvent::Connected,
                LegacyEvent::Observed(at(ME_AT)),
                LegacyEvent::Found {
                    peer: peer(10),
                    endpoint: at(PEER_10_AT)
                },
                LegacyEvent::NotFound { peer: peer(11) },
            ]
        );
        assert!(pair.client.is_connected());
        assert_eq!(
            pair.client.poll_timeout(),
            Some(pair.now + Duration::from_secs(20)),
            "idle until it looks itself up again"
        );
    }

    #[test]
    fn never_more_than_one_lookup_in_flight() {
        let mut pair = Pair::without_self_lookup();
        assert_eq!(pair.step(false), 1, "the handshake");
        pair.events();
        pair.client.lookup([peer(10), peer(11), peer(12)]);
        // Nothing delivered: each poll sends at most the one lookup in flight.
        assert_eq!(pair.step(true), 1);
        assert_eq!(pair.step(true), 0);
    }

    #[test]
    fn a_lost_lookup_is_resent_and_a_dead_server_gets_a_new_handshake() {
        let mut pair = Pair::without_self_lookup();
        pair.step(false);
        pair.events();
        pair.client.lookup([peer(10)]);
        let mut sends = 0;
        for _ in 0..4 {
            sends += pair.step(true);
            pair.advance(Duration::from_secs(9));
        }
        assert_eq!(sends, 4, "four sends of the lookup");
        assert!(pair.client.is_connected());
        // The fifth timeout gives up on the session; the handshake then the lookup follow.
        pair.step(false);
        assert_eq!(
            pair.events(),
            vec![
                LegacyEvent::Connected,
                LegacyEvent::NotFound { peer: peer(10) }
            ]
        );
    }

    #[test]
    fn a_late_answer_is_never_taken_for_another_peers() {
        let mut pair = Pair::without_self_lookup();
        pair.server_knows_peer_10();
        pair.step(false);
        pair.events();
        pair.client.lookup([peer(10), peer(11)]);
        // The first send about peer 10 reaches the server but its answer is slow; the client
        // sends again, and both answers arrive.
        let first = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        let slow = pair.server.handle(&first, at(ME_AT)).unwrap();
        pair.advance(Duration::from_secs(1));
        let second = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        let quick = pair.server.handle(&second, at(ME_AT)).unwrap();
        pair.client.handle_datagram(pair.now, &quick);
        // The next lookup is about peer 11 and goes out on a fresh session...
        let next = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        assert_eq!(next.len(), 109, "a new handshake first");
        let response = pair.server.handle(&next, at(ME_AT)).unwrap();
        pair.client.handle_datagram(pair.now, &response);
        let lookup = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        assert_eq!(lookup.len(), 93);
        // ...so the slow answer (peer 10's address) does not decrypt there.
        pair.client.handle_datagram(pair.now, &slow);
        let answer = pair.server.handle(&lookup, at(ME_AT)).unwrap();
        pair.client.handle_datagram(pair.now, &answer);
        let endpoint = at(PEER_10_AT);
        assert_eq!(
            pair.events(),
            vec![
                LegacyEvent::Found {
                    peer: peer(10),
                    endpoint
                },
                LegacyEvent::Connected,
                LegacyEvent::NotFound { peer: peer(11) },
            ]
        );
    }

    #[test]
    fn replays_garbage_and_forgeries_change_nothing() {
        let mut pair = Pair::without_self_lookup();
        pair.server_knows_peer_10();
        // A forged response while the handshake is pending does not spoil it.
        let init = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        let mut forged = vec![2u8; 53];
        forged[5..37].copy_from_slice(peer(3).as_bytes());
        pair.client.handle_datagram(pair.now, &forged);
        let response = pair.server.handle(&init, at(ME_AT)).unwrap();
        pair.client.handle_datagram(pair.now, &response);
        assert_eq!(pair.events(), vec![LegacyEvent::Connected]);

        pair.client.lookup([peer(10)]);
        pair.step(false);
        assert_eq!(pair.events().len(), 1);
        let answer = pair.server.sent.last().unwrap().clone();
        pair.client.lookup([peer(11)]);
        let lookup = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        // The first answer again, garbage, a bit flip, our own lookup reflected, a replayed
        // response: all dropped, and the lookup in flight still gets its real answer.
        let mut flipped = answer.clone();
        flipped[12] ^= 1;
        for bad in [
            answer,
            vec![],
            vec![3],
            vec![3; 25],
            vec![3; 31],
            flipped,
            lookup.clone(),
            response,
            vec![0xff; 1500],
        ] {
            pair.client.handle_datagram(pair.now, &bad);
        }
        assert!(pair.events().is_empty());
        assert!(pair.client.is_waiting());
        let real = pair.server.handle(&lookup, at(ME_AT)).unwrap();
        pair.client.handle_datagram(pair.now, &real);
        assert_eq!(
            pair.events(),
            vec![LegacyEvent::NotFound { peer: peer(11) }]
        );
    }

    #[test]
    fn rehandshakes_every_five_minutes_with_a_newer_timestamp_even_if_the_clock_stands_still() {
        let mut pair = Pair::new(LegacyConfig::default());
        pair.step(false);
        pair.events();
        let first = pair.client.last_timestamp;
        pair.now += Duration::from_secs(300);
        let again = pair.client.poll_transmit(pair.now, pair.wall).unwrap();
        assert_eq!(again.len(), 109);
        assert!(!pair.client.is_connected());
        assert_eq!(pair.client.last_timestamp, first + 1);
        let response = pair.server.handle(&again, at(ME_AT)).unwrap();
        pair.client.handle_datagram(pair.now, &response);
        assert_eq!(pair.events(), vec![LegacyEvent::Connected]);
    }

    #[test]
    fn an_idle_session_looks_itself_up_to_stay_registered() {
        let mut pair = Pair::new(LegacyConfig::default());
        pair.run_until_quiet();
        assert_eq!(pair.events().len(), 2, "connected, observed");
        let due = pair.now + Duration::from_secs(20);
        assert_eq!(pair.client.poll_timeout(), Some(due));
        pair.advance(Duration::from_secs(19));
        assert_eq!(pair.step(false), 0);
        pair.advance(Duration::from_secs(1));
        assert_eq!(pair.step(false), 1);
        assert_eq!(pair.events(), vec![LegacyEvent::Observed(at(ME_AT))]);
        // Lookups of peers count as activity too.
        pair.advance(Duration::from_secs(10));
        pair.client.lookup([peer(10)]);
        pair.step(false);
        pair.advance(Duration::from_secs(10));
        assert_eq!(pair.step(false), 0);
    }

    #[test]
    fn an_empty_answer_about_ourselves_is_no_event() {
        let mut pair = Pair::new(LegacyConfig::default());
        pair.server.record = false;
        pair.client.lookup([peer(10)]);
        pair.run_until_quiet();
        assert_eq!(
            pair.events(),
            vec![
                LegacyEvent::Connected,
                LegacyEvent::NotFound { peer: peer(10) }
            ]
        );
    }

    #[test]
    fn the_pending_handshake_seed_stays_out_of_debug() {
        let server = PrivateKey::from_bytes([2; 32]).public_key();
        let private = PrivateKey::from_bytes([1; 32]);
        let mut client = LegacyClient::new(private, server, LegacyConfig::default(), [3; 32]);
        assert!(client
            .poll_transmit(Instant::now(), SystemTime::now())
            .is_some());
        let pending = client.pending.as_ref().expect("a handshake is pending");
        let text = format!("{pending:?}");
        assert!(!text.contains(&format!("{:?}", pending.seed)), "{text}");
    }
}
