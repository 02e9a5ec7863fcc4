//! The client's protocol state machine.
//!
//! Feed it the server's datagrams with [`Client::handle_datagram`], ask it what to send with
//! [`Client::poll_transmit`] (every datagram goes to the server), read what happened with
//! [`Client::poll_event`], and call `poll_transmit` again no later than [`Client::poll_timeout`].
//! It handshakes, registers (and refreshes the registration before it expires), looks up the peers
//! it is asked about, retransmits with exponential backoff and jitter, and starts a new handshake
//! when a session ages or the server stops answering. With [`ClientConfig::watch`] the server
//! also pushes what changes about our peers; a push gives the same [`Event::Resolved`] a lookup
//! answer gives, and is acknowledged (cumulatively, fire-and-forget) at the next `poll_transmit`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};

use crate::backoff;
use crate::cookie::{self, Cookie};
use crate::handshake::{unix_nanos, Initiation};
use crate::keys::{PrivateKey, PublicKey};
use crate::mapping::{MappingCheck, MappingReport};
use crate::noise::{Rng, Seed};
use crate::session::Session;
use crate::wire::message::{MAX_KEYS_PER_LOOKUP, MAX_KEYS_PER_PART, MAX_LOCAL_ADDRS};
use crate::wire::packet::MAX_PLAINTEXT_LEN;
use crate::wire::{
    CandidatesReply, CandidatesRequest, Lookup, ObserveReply, ObserveRequest, Packet, Push,
    PushAck, Register, Reply, Request,
};

/// Sends of a candidates request before it is given up (an older server never answers one);
/// unlike other requests, its silence does not end the session.
const CANDIDATE_ATTEMPTS: u32 = 3;

/// How long a cookie from the server is used (the server changes its secret every 120 s).
const COOKIE_USE_FOR: Duration = Duration::from_secs(110);

/// Timings of the client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Start a new handshake once a session is this old (the server keeps sessions 180 s).
    pub rekey_after: Duration,
    /// First retransmission delay of a handshake or request.
    pub retransmit_initial: Duration,
    /// Longest retransmission delay.
    pub retransmit_max: Duration,
    /// Sends of one request without an answer before the session is taken as lost.
    pub max_request_attempts: u32,
    /// Longest time between registration refreshes. The refresh also keeps our NAT's mapping
    /// towards the server alive while WireGuard is quiet; Linux drops an idle one after 30 s.
    pub refresh_max: Duration,
    /// Ask the server to push what changes about our peers (the register's watch flag, set on
    /// every part). Lookups still work as the fallback either way.
    pub watch: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            rekey_after: Duration::from_secs(120),
            retransmit_initial: Duration::from_millis(500),
            retransmit_max: Duration::from_secs(8),
            max_request_attempts: 4,
            refresh_max: Duration::from_secs(20),
            watch: true,
        }
    }
}

/// What happened, for the IO layer to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A handshake with the server completed.
    Connected,
    /// The server holds our whole registration; it saw us at `observed`.
    Registered {
        /// Our public address and port as the server sees them.
        observed: SocketAddr,
        /// How long the registration lasts without a refresh.
        ttl: Duration,
    },
    /// The server told where a peer is.
    Resolved {
        /// The peer.
        peer: PublicKey,
        /// Its public address and port.
        endpoint: SocketAddr,
        /// How long ago the server saw it there.
        age: Duration,
        /// The peer was already told our current endpoint: both sides can now open their NATs
        /// towards each other without either side's packets arriving unannounced.
        peer_has_yours: bool,
    },
    /// The server cannot tell where a peer is (not registered, expired or not consenting).
    Unknown {
        /// The peer.
        peer: PublicKey,
    },
    /// The server told a peer's candidates: the local addresses it registered. Asked for by
    /// itself the first time a peer is resolved and after every push about it (a push follows
    /// a change), or by [`Client::fetch_candidates`].
    Candidates {
        /// The peer.
        peer: PublicKey,
        /// The peer is registered and consents; false also when the server did not answer.
        known: bool,
        /// The server sees both of us at one public IP address.
        same_public: bool,
        /// The peer declared a NAT that maps each destination to its own port.
        hard_nat: bool,
        /// Its candidates, as the server gave them (the agent checks them).
        candidates: Vec<SocketAddr>,
    },
    /// The check that [`Client::check_mapping`] asked for is over: where the server's addresses
    /// saw us.
    Mapping(MappingReport),
}

#[derive(Debug)]
struct PendingHandshake {
    initiation: Initiation,
    next_send: Instant,
    attempts: u32,
}

#[derive(Debug)]
struct Outstanding {
    request: Request,
    next_send: Instant,
    attempts: u32,
}

#[derive(Debug, Default)]
struct Registration {
    generation: u32,
    /// Parts of the current generation not yet acknowledged.
    unacked: BTreeSet<u8>,
    /// When the last complete registration was acknowledged, and for how long it lasts.
    done: Option<(Instant, Duration)>,
    /// True while the parts of `generation` are queued or in flight.
    in_progress: bool,
    /// [`Client::refresh`] asked for a new registration at the next `poll_transmit`.
    requested: bool,
}

/// Pushes received in the current session.
#[derive(Debug, Default)]
struct Pushes {
    /// The highest push sequence received.
    seen: u32,
    /// When the first push not yet acknowledged came.
    ack_due: Option<Instant>,
}

/// The client side of the protocol, for one server.
pub struct Client {
    private: PrivateKey,
    server: PublicKey,
    peers: Vec<PublicKey>,
    local_addrs: Vec<SocketAddr>,
    config: ClientConfig,
    rng: Rng,
    handshake: Option<PendingHandshake>,
    handshake_backoff: u32,
    session: Option<(Session, Instant)>,
    outstanding: BTreeMap<u32, Outstanding>,
    next_request_id: u32,
    registration: Registration,
    /// Peers to look up, each with whether we punched towards it since the last lookup.
    wanted: BTreeMap<PublicKey, bool>,
    last_timestamp: u64,
    /// The server's last cookie and when it came: under load, initiations carry its mac2.
    cookie: Option<(Cookie, Instant)>,
    events: VecDeque<Event>,
    plaintext: Box<[u8; MAX_PLAINTEXT_LEN]>,
    pushes: Pushes,
    /// Peers whose candidates are to be asked for at the next `poll_transmit`.
    candidates_wanted: BTreeSet<PublicKey>,
    /// Peers whose candidates the server has told in this session.
    candidates_known: BTreeSet<PublicKey>,
    /// Peers pushed about while their candidates were being asked for: the answer may predate
    /// the change, so they are asked for again once it comes.
    candidates_stale: BTreeSet<PublicKey>,
    /// A mapping check to start once registered: the server's main address.
    mapping_wanted: Option<SocketAddr>,
    /// We declare that our NAT maps each destination to its own port.
    hard_nat: bool,
    /// The mapping check under way: the server's address and the main request's id until it
    /// answers, then the check itself.
    mapping: Option<Mapping>,
}

/// A mapping check under way.
#[derive(Debug)]
enum Mapping {
    /// Waiting for the main address's answer to this request.
    Asked { server: SocketAddr, request_id: u32 },
    /// Asking the mapping addresses of the server at `server`.
    Checking {
        server: SocketAddr,
        check: MappingCheck,
    },
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("public", &self.private.public_key())
            .field("server", &self.server)
            .field("connected", &self.session.is_some())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with WireGuard key `private`, for the server `server`, declaring `peers` and
    /// `local_addrs` when it registers. `seed` seeds its indexes, ids, jitter and ephemeral keys.
    pub fn new(
        private: PrivateKey,
        server: PublicKey,
        peers: Vec<PublicKey>,
        local_addrs: Vec<SocketAddr>,
        config: ClientConfig,
        seed: Seed,
    ) -> Self {
        let mut rng = Rng::from_seed(seed);
        let next_request_id = rng.next_u32();
        let mut local_addrs = local_addrs;
        local_addrs.truncate(MAX_LOCAL_ADDRS);
        Self {
            private,
            server,
            peers,
            local_addrs,
            config,
            rng,
            handshake: None,
            handshake_backoff: 0,
            session: None,
            outstanding: BTreeMap::new(),
            next_request_id,
            registration: Registration::default(),
            wanted: BTreeMap::new(),
            last_timestamp: 0,
            cookie: None,
            events: VecDeque::new(),
            plaintext: Box::new([0; MAX_PLAINTEXT_LEN]),
            pushes: Pushes::default(),
            candidates_wanted: BTreeSet::new(),
            candidates_known: BTreeSet::new(),
            candidates_stale: BTreeSet::new(),
            mapping_wanted: None,
            hard_nat: false,
            mapping: None,
        }
    }

    /// Our WireGuard public key: who we are to the server.
    pub fn public_key(&self) -> PublicKey {
        self.private.public_key()
    }

    /// True while a session with the server is established.
    pub fn is_connected(&self) -> bool {
        self.session.is_some()
    }

    /// True while a registration asked for since the last one completed has not been
    /// acknowledged (after [`Client::set_hard_nat`] or [`Client::set_local_addrs`] changed what
    /// we declare, or [`Client::refresh`]).
    pub fn is_reregistering(&self) -> bool {
        self.registration.done.is_some()
            && (self.registration.requested || self.registration.in_progress)
    }

    /// True once the server has acknowledged our whole current registration.
    pub fn is_registered(&self) -> bool {
        self.registration.done.is_some() && !self.registration.in_progress
    }

    /// Asks for the endpoints of `peers`; answers come as [`Event::Resolved`] or
    /// [`Event::Unknown`], once we are registered (the server answers only registered clients).
    pub fn lookup(&mut self, peers: impl IntoIterator<Item = PublicKey>) {
        self.lookup_with(peers.into_iter().map(|p| (p, false)));
    }

    /// Like [`Client::lookup`], with each peer saying whether we just punched our NAT open towards
    /// the endpoint the server last gave us for it (the server passes that on to the peer).
    pub fn lookup_with(&mut self, peers: impl IntoIterator<Item = (PublicKey, bool)>) {
        // A lookup in flight answers for a peer, unless this one confirms a punch it did not.
        let asked: BTreeMap<PublicKey, bool> = self.outstanding_lookups().collect();
        for (peer, punched) in peers {
            if asked
                .get(&peer)
                .is_none_or(|&confirmed| punched && !confirmed)
            {
                let entry = self.wanted.entry(peer).or_insert(false);
                *entry |= punched;
            }
        }
    }

    /// Asks for the candidates of `peer` (one of our declared peers), unless that is in flight
    /// already; the answer comes as [`Event::Candidates`].
    pub fn fetch_candidates(&mut self, peer: PublicKey) {
        if self.peers.contains(&peer) && !self.candidates_pending(&peer) {
            self.candidates_wanted.insert(peer);
        }
    }

    /// Asks the server, at `server` (its main address), and then its mapping addresses where they
    /// see us, once registered; the answer comes as [`Event::Mapping`]. A check under way starts
    /// over.
    pub fn check_mapping(&mut self, server: SocketAddr) {
        if let Some(Mapping::Asked { request_id, .. }) = self.mapping.take() {
            self.outstanding.remove(&request_id);
        }
        self.mapping_wanted = Some(server);
    }

    /// The next observe request to one of the server's mapping addresses, if one is due: where it
    /// goes, and the datagram. Sent alongside [`Client::poll_transmit`], from the same port.
    pub fn poll_mapping_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        self.finish_mapping(now);
        let Some(Mapping::Checking { check, .. }) = self.mapping.as_mut() else {
            return None;
        };
        let (to, request_id) = check.due(now)?;
        let mut plaintext = Vec::new();
        Request::Observe(ObserveRequest { request_id })
            .emit(&mut plaintext)
            .ok()?;
        let (session, _) = self.session.as_mut()?;
        let mut datagram = Vec::new();
        session.seal(&plaintext, &mut datagram).ok()?;
        Some((to, datagram))
    }

    /// Reports a check whose every mapping address answered or ran out of time (as
    /// [`Event::Mapping`]); also done by `poll_transmit` and when an answer comes.
    pub fn finish_mapping(&mut self, now: Instant) {
        if let Some(Mapping::Checking { check, .. }) = &self.mapping {
            if let Some(report) = check.finished(now) {
                self.mapping = None;
                self.events.push_back(Event::Mapping(report));
            }
        }
    }

    /// True while the candidates of `peer` are asked for and not answered yet.
    pub fn candidates_pending(&self, peer: &PublicKey) -> bool {
        self.candidates_wanted.contains(peer)
            || self
                .outstanding
                .values()
                .any(|o| matches!(&o.request, Request::Candidates(c) if c.peer == *peer))
    }

    /// Declares (or no longer) that our NAT maps each destination to its own port, as a mapping
    /// check found; a change registers anew at once. Only for a server that answered the check:
    /// an older one refuses registrations with the flag.
    pub fn set_hard_nat(&mut self, hard_nat: bool) {
        if hard_nat != self.hard_nat {
            self.hard_nat = hard_nat;
            self.register_again();
        }
    }

    /// Replaces the local addresses we declare; a change registers anew at once.
    pub fn set_local_addrs(&mut self, local_addrs: Vec<SocketAddr>) {
        let mut local_addrs = local_addrs;
        local_addrs.truncate(MAX_LOCAL_ADDRS);
        if local_addrs != self.local_addrs {
            self.local_addrs = local_addrs;
            self.register_again();
        }
    }

    /// What we declare changed: register anew at once, dropping a registration in flight (it
    /// carries the old declaration).
    fn register_again(&mut self) {
        self.registration.requested = true;
        if self.registration.in_progress {
            self.registration.in_progress = false;
            self.outstanding
                .retain(|_, o| !matches!(o.request, Request::Register(_)));
        }
    }

    /// The local addresses we declare.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Registers again at the next [`Client::poll_transmit`], so that the server sees our current
    /// NAT mapping at once (for example after the network changed). Does nothing while a
    /// registration is in progress.
    pub fn refresh(&mut self) {
        if !self.registration.in_progress {
            self.registration.requested = true;
        }
    }

    /// True while a request or handshake waits for its answer.
    pub fn is_waiting(&self) -> bool {
        self.handshake.is_some() || !self.outstanding.is_empty()
    }

    /// Replaces the declared peer list and registers it anew.
    pub fn set_peers(&mut self, peers: Vec<PublicKey>) {
        if peers != self.peers {
            self.peers = peers;
            self.registration.done = None;
            self.registration.in_progress = false;
            self.outstanding
                .retain(|_, o| !matches!(o.request, Request::Register(_)));
        }
    }

    fn outstanding_lookups(&self) -> impl Iterator<Item = (PublicKey, bool)> + '_ {
        self.outstanding.values().flat_map(|o| {
            let (peers, punched) = match &o.request {
                Request::Lookup(l) => (l.peers.as_slice(), l.punched),
                Request::Register(_)
                | Request::PushAck(_)
                | Request::Candidates(_)
                | Request::Observe(_) => (&[][..], 0),
            };
            peers
                .iter()
                .enumerate()
                .map(move |(i, k)| (*k, punched >> i & 1 == 1))
        })
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The latest time by which [`Client::poll_transmit`] must be called again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let handshake = self.handshake.as_ref().map(|h| h.next_send);
        let requests = self.outstanding.values().map(|o| o.next_send).min();
        let rekey = self
            .session
            .as_ref()
            .map(|(_, at)| *at + self.config.rekey_after);
        let refresh = self.refresh_due();
        let ack = self.session.as_ref().and(self.pushes.ack_due);
        let mapping = match &self.mapping {
            Some(Mapping::Checking { check, .. }) => check.poll_timeout(),
            _ => None,
        };
        [handshake, requests, rekey, refresh, ack, mapping]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the registration is next refreshed; never while one is in flight (its due time would
    /// have passed, and the caller would be woken again and again until the ack came).
    fn refresh_due(&self) -> Option<Instant> {
        if self.registration.in_progress {
            return None;
        }
        self.registration.done.map(|(at, ttl)| {
            if self.registration.requested {
                at
            } else {
                at + (ttl / 3).min(self.config.refresh_max)
            }
        })
    }

    fn backoff(&mut self, attempts: u32) -> Duration {
        let (initial, max) = (self.config.retransmit_initial, self.config.retransmit_max);
        backoff::delay(initial, max, attempts, &mut self.rng)
    }

    fn request_id(&mut self) -> u32 {
        self.next_request_id = self.next_request_id.wrapping_add(1);
        self.next_request_id
    }

    /// The next datagram to send to the server, if one is due at `now`. `wall` is the real time
    /// for handshake timestamps.
    pub fn poll_transmit(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        if self
            .session
            .as_ref()
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) >= self.config.rekey_after)
        {
            debug!("session aged, rekeying");
            self.drop_session();
        }
        self.give_up_candidates(now);
        self.finish_mapping(now);
        let gave_up = self
            .outstanding
            .values()
            .any(|o| o.next_send <= now && o.attempts >= self.config.max_request_attempts);
        if self.session.is_some() && gave_up {
            debug!("server stopped answering, starting a new handshake");
            self.drop_session();
        }
        if self.session.is_none() {
            return self.transmit_handshake(now, wall);
        }
        self.queue_requests(now);
        if let Some(ack) = self.transmit_push_ack() {
            return Some(ack);
        }
        self.transmit_request(now)
    }

    /// The acknowledgement of every push received so far, if one is due: sent once, never
    /// retransmitted (a lost one only holds the server's window until the next).
    fn transmit_push_ack(&mut self) -> Option<Vec<u8>> {
        self.pushes.ack_due.take()?;
        let acked = self.pushes.seen;
        let mut plaintext = Vec::new();
        Request::PushAck(PushAck { acked })
            .emit(&mut plaintext)
            .ok()?;
        let (session, _) = self.session.as_mut()?;
        let mut datagram = Vec::new();
        if session.seal(&plaintext, &mut datagram).is_err() {
            self.drop_session();
            return None;
        }
        trace!(acked, "acknowledging pushes");
        Some(datagram)
    }

    fn transmit_handshake(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        if self.handshake.as_ref().is_some_and(|h| now < h.next_send) {
            return None;
        }
        // Timestamps must strictly increase even if the clock stands still or steps back.
        let timestamp = unix_nanos(wall).max(self.last_timestamp + 1);
        self.last_timestamp = timestamp;
        let index = self.rng.next_u32();
        let seed = self.rng.seed();
        // A cookie is good for as long as the server keeps its secret (two minutes); use it a
        // little less to stay clear of the rotation.
        let cookie = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_USE_FOR)
            .map(|(c, _)| c);
        let (initiation, datagram) = Initiation::start_with_cookie(
            &self.private,
            &self.server,
            index,
            timestamp,
            seed,
            cookie.as_ref(),
        )
        .ok()?;
        let attempts = self
            .handshake
            .as_ref()
            .map_or(self.handshake_backoff, |h| h.attempts + 1);
        let delay = self.backoff(attempts);
        self.handshake = Some(PendingHandshake {
            initiation,
            next_send: now + delay,
            attempts,
        });
        trace!(attempts, "sending handshake initiation");
        Some(datagram)
    }

    fn queue_requests(&mut self, now: Instant) {
        let refresh_due =
            self.refresh_due().is_some_and(|at| now >= at) || self.registration.requested;
        if !self.registration.in_progress && (self.registration.done.is_none() || refresh_due) {
            self.queue_registration(now);
        }
        if self.is_registered() && !self.wanted.is_empty() {
            let wanted: Vec<(PublicKey, bool)> =
                std::mem::take(&mut self.wanted).into_iter().collect();
            for chunk in wanted.chunks(MAX_KEYS_PER_LOOKUP) {
                let request_id = self.request_id();
                let punched = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |mask, (i, (_, p))| mask | u32::from(*p) << i);
                let request = Request::Lookup(Lookup {
                    request_id,
                    peers: chunk.iter().map(|(k, _)| *k).collect(),
                    punched,
                });
                self.outstanding.insert(
                    request_id,
                    Outstanding {
                        request,
                        next_send: now,
                        attempts: 0,
                    },
                );
            }
        }
        if self.is_registered() {
            for peer in std::mem::take(&mut self.candidates_wanted) {
                let request_id = self.request_id();
                self.outstanding.insert(
                    request_id,
                    Outstanding {
                        request: Request::Candidates(CandidatesRequest { request_id, peer }),
                        next_send: now,
                        attempts: 0,
                    },
                );
            }
            if let Some(server) = self.mapping_wanted.take() {
                let request_id = self.request_id();
                self.outstanding.insert(
                    request_id,
                    Outstanding {
                        request: Request::Observe(ObserveRequest { request_id }),
                        next_send: now,
                        attempts: 0,
                    },
                );
                self.mapping = Some(Mapping::Asked { server, request_id });
            }
        }
    }

    /// Candidates requests sent [`CANDIDATE_ATTEMPTS`] times without an answer: the server does
    /// not know them (or is gone, which the other requests find out). The peer is then taken to
    /// have none, until a push about it asks again.
    fn give_up_candidates(&mut self, now: Instant) {
        if let Some(Mapping::Asked { request_id, .. }) = self.mapping {
            if self
                .outstanding
                .get(&request_id)
                .is_some_and(|o| o.next_send <= now && o.attempts >= CANDIDATE_ATTEMPTS)
            {
                debug!("the server does not answer observe requests");
                self.outstanding.remove(&request_id);
                self.mapping = None;
                self.events.push_back(Event::Mapping(MappingReport {
                    main: None,
                    others: Vec::new(),
                }));
            }
        }
        let stale: Vec<u32> = self
            .outstanding
            .iter()
            .filter(|(_, o)| {
                matches!(o.request, Request::Candidates(_))
                    && o.next_send <= now
                    && o.attempts >= CANDIDATE_ATTEMPTS
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(Outstanding {
                request: Request::Candidates(c),
                ..
            }) = self.outstanding.remove(&id)
            {
                debug!(peer = %c.peer, "the server does not answer candidate requests");
                self.candidates_known.insert(c.peer);
                self.events.push_back(Event::Candidates {
                    peer: c.peer,
                    known: false,
                    same_public: false,
                    hard_nat: false,
                    candidates: Vec::new(),
                });
            }
        }
    }

    fn queue_registration(&mut self, now: Instant) {
        self.outstanding
            .retain(|_, o| !matches!(o.request, Request::Register(_)));
        let generation = self.registration.generation.wrapping_add(1);
        let chunks: Vec<Vec<PublicKey>> = if self.peers.is_empty() {
            vec![vec![]]
        } else {
            self.peers
                .chunks(MAX_KEYS_PER_PART)
                .map(<[PublicKey]>::to_vec)
                .collect()
        };
        let Ok(parts) = u8::try_from(chunks.len()) else {
            debug!(peers = self.peers.len(), "too many peers to register");
            return;
        };
        let mut unacked = BTreeSet::new();
        for (part, chunk) in (0u8..).zip(chunks) {
            let request_id = self.request_id();
            let register = Register {
                request_id,
                generation,
                part,
                parts,
                peers: chunk,
                local_addrs: if part == 0 {
                    self.local_addrs.clone()
                } else {
                    vec![]
                },
                watch: self.config.watch,
                hard_nat: self.hard_nat,
            };
            unacked.insert(part);
            self.outstanding.insert(
                request_id,
                Outstanding {
                    request: Request::Register(register),
                    next_send: now,
                    attempts: 0,
                },
            );
        }
        self.registration.generation = generation;
        self.registration.unacked = unacked;
        self.registration.in_progress = true;
        self.registration.requested = false;
    }

    fn transmit_request(&mut self, now: Instant) -> Option<Vec<u8>> {
        let (&id, due) = self
            .outstanding
            .iter()
            .filter(|(_, o)| o.next_send <= now)
            .min_by_key(|(_, o)| o.next_send)?;
        let attempts = due.attempts;
        let delay = self.backoff(attempts);
        let o = self.outstanding.get_mut(&id)?;
        o.attempts += 1;
        o.next_send = now + delay;
        let mut plaintext = Vec::new();
        o.request.emit(&mut plaintext).ok()?;
        let (session, _) = self.session.as_mut()?;
        let mut datagram = Vec::new();
        if session.seal(&plaintext, &mut datagram).is_err() {
            self.drop_session();
            return None;
        }
        Some(datagram)
    }

    /// Forgets the session; lookups in flight are asked again and the registration is redone on
    /// the next session.
    fn drop_session(&mut self) {
        self.session = None;
        let lookups: Vec<(PublicKey, bool)> = self.outstanding_lookups().collect();
        self.wanted.extend(lookups);
        for o in self.outstanding.values() {
            if let Request::Candidates(c) = &o.request {
                self.candidates_wanted.insert(c.peer);
            }
        }
        self.candidates_known.clear();
        self.candidates_stale.clear();
        // A check under way starts over in the next session.
        match self.mapping.take() {
            Some(Mapping::Asked { server, .. } | Mapping::Checking { server, .. }) => {
                self.mapping_wanted = Some(server);
            }
            None => {}
        }
        self.outstanding.clear();
        self.registration.in_progress = false;
        self.registration.done = None;
        self.registration.requested = false;
        // Push sequences count per session.
        self.pushes = Pushes::default();
    }

    /// Handles a datagram that came from the server. Anything that is not a valid answer to what
    /// we asked is dropped.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        match Packet::parse(datagram) {
            Ok(Packet::HandshakeResponse(response)) => {
                let Some(pending) = self
                    .handshake
                    .take_if(|h| h.initiation.sender_index == response.receiver_index)
                else {
                    return;
                };
                match pending.initiation.complete(&response) {
                    Ok(session) => {
                        debug!("connected to the server");
                        self.drop_session();
                        self.session = Some((session, now));
                        self.handshake_backoff = 0;
                        self.events.push_back(Event::Connected);
                    }
                    Err(e) => {
                        // Retry soon with a fresh initiation rather than wait out the backoff.
                        trace!(error = %e, "bad handshake response");
                        self.handshake_backoff = pending.attempts;
                    }
                }
            }
            Ok(Packet::Transport(message)) => {
                let Some((session, _)) = self
                    .session
                    .as_mut()
                    .filter(|(s, _)| s.local_index == message.receiver_index)
                else {
                    return;
                };
                let Ok(len) = session.open(&message, &mut self.plaintext[..]) else {
                    return;
                };
                if let Some(Ok(reply)) = self.plaintext.get(..len).map(Reply::parse) {
                    self.handle_reply(now, reply);
                }
            }
            Ok(Packet::CookieReply(reply)) => {
                let Some(pending) = self
                    .handshake
                    .as_mut()
                    .filter(|h| h.initiation.sender_index == reply.receiver_index)
                else {
                    return;
                };
                if let Some(cookie) =
                    cookie::open_reply(&self.server, &reply, &pending.initiation.mac1)
                {
                    debug!("server under load: retrying the handshake with its cookie");
                    self.cookie = Some((cookie, now));
                    pending.next_send = now;
                }
            }
            Ok(Packet::HandshakeInit(_)) | Err(_) => {}
        }
    }

    /// An observe reply: the main address's starts the check of the mapping addresses, theirs
    /// fill it in. One that answers nothing of ours changes nothing.
    fn on_observed(&mut self, now: Instant, answer: ObserveReply) {
        match self.mapping.take() {
            Some(Mapping::Asked { server, request_id }) if request_id == answer.request_id => {
                self.outstanding.remove(&request_id);
                let check = MappingCheck::new(
                    server,
                    answer.observed,
                    &answer.alternates,
                    || self.request_id(),
                    now,
                );
                self.mapping = Some(Mapping::Checking { server, check });
            }
            Some(Mapping::Checking { server, mut check }) => {
                check.on_reply(answer.request_id, answer.observed);
                self.mapping = Some(Mapping::Checking { server, check });
            }
            other => self.mapping = other,
        }
        self.finish_mapping(now);
    }

    fn handle_reply(&mut self, now: Instant, reply: Reply) {
        match reply {
            Reply::Observed(answer) => self.on_observed(now, answer),
            Reply::RegisterAck(ack) => {
                let Some(Outstanding {
                    request: Request::Register(register),
                    ..
                }) = self
                    .outstanding
                    .remove_if_register(ack.request_id, ack.part)
                else {
                    return;
                };
                if register.generation != self.registration.generation {
                    return;
                }
                self.registration.unacked.remove(&register.part);
                if self.registration.unacked.is_empty() {
                    let ttl = Duration::from_secs(u64::from(ack.ttl_secs));
                    self.registration.in_progress = false;
                    self.registration.done = Some((now, ttl));
                    self.events.push_back(Event::Registered {
                        observed: ack.observed,
                        ttl,
                    });
                }
            }
            Reply::LookupReply(answer) => {
                let Some(Outstanding {
                    request: Request::Lookup(lookup),
                    ..
                }) = self
                    .outstanding
                    .remove_if_lookup(answer.request_id, answer.entries.len())
                else {
                    return;
                };
                for (peer, entry) in lookup.peers.into_iter().zip(answer.entries) {
                    if entry.is_some() && !self.candidates_known.contains(&peer) {
                        self.fetch_candidates(peer);
                    }
                    self.events.push_back(match entry {
                        Some(s) => Event::Resolved {
                            peer,
                            endpoint: s.endpoint,
                            age: Duration::from_secs(u64::from(s.age_secs)),
                            peer_has_yours: s.peer_has_yours,
                        },
                        None => Event::Unknown { peer },
                    });
                }
            }
            Reply::Push(push) => self.handle_push(now, push),
            Reply::Candidates(reply) => self.handle_candidates(reply),
        }
    }

    /// The answer to a candidates request: only for the peer that request asked about.
    fn handle_candidates(&mut self, reply: CandidatesReply) {
        let Some(Outstanding {
            request: Request::Candidates(asked),
            ..
        }) = self
            .outstanding
            .remove_if_candidates(reply.request_id, reply.peer)
        else {
            return;
        };
        if reply.known {
            self.candidates_known.insert(asked.peer);
        }
        self.events.push_back(Event::Candidates {
            peer: asked.peer,
            known: reply.known,
            same_public: reply.same_public,
            hard_nat: reply.hard_nat,
            candidates: reply.candidates,
        });
        if self.candidates_stale.remove(&asked.peer) {
            self.candidates_known.remove(&asked.peer);
            self.fetch_candidates(asked.peer);
        }
    }

    /// A push from the server: only about a peer we declared, only once (sequences increase in
    /// a session), and then the same event as a lookup answer.
    fn handle_push(&mut self, now: Instant, push: Push) {
        if !self.peers.contains(&push.peer) || push.sequence <= self.pushes.seen {
            return;
        }
        self.pushes.seen = push.sequence;
        self.pushes.ack_due.get_or_insert(now);
        // Something about the peer changed: its candidates may have too.
        self.candidates_known.remove(&push.peer);
        if self.candidates_pending(&push.peer) && !self.candidates_wanted.contains(&push.peer) {
            self.candidates_stale.insert(push.peer);
        }
        self.fetch_candidates(push.peer);
        let s = push.sighting;
        trace!(peer = %push.peer, endpoint = %s.endpoint, sequence = push.sequence, "pushed");
        self.events.push_back(Event::Resolved {
            peer: push.peer,
            endpoint: s.endpoint,
            age: Duration::from_secs(u64::from(s.age_secs)),
            peer_has_yours: s.peer_has_yours,
        });
    }
}

/// Removes an outstanding request only when the reply matches its kind and shape.
trait TakeMatching {
    fn remove_if_register(&mut self, id: u32, part: u8) -> Option<Outstanding>;
    fn remove_if_lookup(&mut self, id: u32, entries: usize) -> Option<Outstanding>;
    fn remove_if_candidates(&mut self, id: u32, peer: PublicKey) -> Option<Outstanding>;
}

impl TakeMatching for BTreeMap<u32, Outstanding> {
    fn remove_if_register(&mut self, id: u32, part: u8) -> Option<Outstanding> {
        match self.get(&id)?.request {
            Request::Register(ref r) if r.part == part => self.remove(&id),
            _ => None,
        }
    }

    fn remove_if_lookup(&mut self, id: u32, entries: usize) -> Option<Outstanding> {
        match self.get(&id)?.request {
            Request::Lookup(ref l) if l.peers.len() == entries => self.remove(&id),
            _ => None,
        }
    }

    fn remove_if_candidates(&mut self, id: u32, peer: PublicKey) -> Option<Outstanding> {
        match self.get(&id)?.request {
            Request::Candidates(ref c) if c.peer == peer => self.remove(&id),
            _ => None,
        }
    }
}
