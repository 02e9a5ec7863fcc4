//! The discovery server's protocol state machine.
//!
//! [`Server::handle`] takes one datagram, its source and the time, and returns at most one reply
//! for the same source, never larger than the datagram. Pushes to watching clients (see [`push`])
//! that it queued come out of [`Server::poll_transmit`]. Everything unauthenticated or malformed is
//! dropped silently and counted in [`Stats`]. The cheapest checks run first: length and type, then
//! mac1, and only then the Diffie-Hellman of the Noise handshake.

mod candidates;
mod expiry;
mod key_state;
pub mod legacy;
pub mod limits;
mod mapping;
mod push;
pub mod registry;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use tracing::{debug, trace};

use crate::cookie::CookieJar;
use crate::handshake::Accepted;
use crate::keys::{PrivateKey, PublicKey};
use crate::mac::Mac1Key;
use crate::noise::{Rng, Seed};
use crate::session::Session;
use crate::wire::endpoint::canonical;
use crate::wire::packet::{COOKIE_NONCE_LEN, MAC1_OFFSET, MAX_PLAINTEXT_LEN};
use crate::wire::{
    HandshakeInit, LookupReply, ObserveReply, Packet, Register, RegisterAck, Reply, Request,
    Transport,
};
use key_state::{Held, KeyState, Queues, Refusal};
use limits::{LoadMeter, SourceLimiter};
use push::PushBudget;
pub use push::{Transmit, MAX_QUEUED_PUSHES, PUSH_BURST, PUSH_RATE, PUSH_WINDOW};

/// Which of the server's addresses a datagram arrived at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A listen address: the whole protocol.
    Main,
    /// A mapping address (a second port or address, [`ServerConfig::mapping`]): observe requests
    /// only, so that a client can compare how its NAT maps it towards two destinations.
    Mapping,
}
use registry::{Registration, Registry};

/// Limits and lifetimes of the server's state.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// How long a registration lives after its client was last seen.
    pub registration_ttl: Duration,
    /// How long a session may be used after its handshake.
    pub session_lifetime: Duration,
    /// How far an initiation's timestamp may be from the server's clock, either way.
    pub clock_tolerance: Duration,
    /// Most sessions held at once.
    pub max_sessions: usize,
    /// Most registrations held at once.
    pub max_registrations: usize,
    /// Most client keys whose replay-protection state is kept at once (a key's last timestamp
    /// outlives its sessions by a few minutes).
    pub max_keys: usize,
    /// Most WireGuard peers one client may declare.
    pub max_peers_per_client: usize,
    /// When set, only these keys may register (or hold a session at all); others get silence
    /// and leave no state behind.
    pub allowed_keys: Option<HashSet<PublicKey>>,
    /// Initiations a second above which the server is under load: it then limits initiations per
    /// source (cookie replies included) and answers those without a valid mac2 with a cookie.
    pub load_threshold: u32,
    /// Under load: handshakes a second allowed per source (IPv4 address or IPv6 /64), and
    /// separately, cookie replies a second sent to it.
    pub source_rate: u32,
    /// Under load: the burst of handshakes (and of cookie replies) allowed per source.
    pub source_burst: u32,
    /// Most sources each per-source limiter tracks. When the handshake limiter is full, new
    /// sources are refused; when the cookie limiter is full, new sources get cookies untracked.
    pub max_sources: usize,
    /// Handshakes a second allowed per client key (after authentication), always.
    pub key_rate: u32,
    /// The burst of handshakes allowed per client key.
    pub key_burst: u32,
    /// When set, natpunch-go clients are served too, on the same port (see [`legacy`]).
    pub natpunch_go: Option<legacy::LegacyConfig>,
    /// The server's mapping addresses, as an observe reply at the main address lists them (at
    /// most [`crate::wire::observe::MAX_ALTERNATES`]; an unspecified IP stands for the address the client talks to).
    /// Datagrams that arrive there come [`Via::Mapping`].
    pub mapping: Vec<SocketAddr>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            registration_ttl: Duration::from_secs(120),
            session_lifetime: Duration::from_secs(180),
            clock_tolerance: Duration::from_secs(120),
            max_sessions: 1 << 20,
            max_registrations: 1 << 20,
            max_keys: 1 << 21,
            max_peers_per_client: 1024,
            allowed_keys: None,
            load_threshold: 1000,
            source_rate: 20,
            source_burst: 20,
            max_sources: 1 << 16,
            key_rate: 1,
            key_burst: 10,
            natpunch_go: None,
            mapping: Vec::new(),
        }
    }
}

/// Exact counts of what the server did with the datagrams it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handled.
    pub datagrams: u64,
    /// Dropped: not a well-formed datagram of this protocol (or not one a server receives).
    pub malformed: u64,
    /// Dropped: initiation with a wrong mac1.
    pub bad_mac1: u64,
    /// Dropped: initiation that Noise rejected, or whose static key is of low order.
    pub bad_handshake: u64,
    /// Dropped: authenticated initiation from a key not in the allowed list.
    pub not_allowed: u64,
    /// Under load: initiations answered with a cookie reply instead of a handshake.
    pub cookie_replies: u64,
    /// Dropped: over a per-source or per-key handshake rate, or the source table was full.
    pub rate_limited: u64,
    /// Dropped: initiation whose timestamp is outside the clock tolerance.
    pub stale_timestamp: u64,
    /// Dropped: initiation whose timestamp is not newer than the last accepted for its key.
    pub replayed_initiation: u64,
    /// Dropped: no room for another session or another client key.
    pub sessions_full: u64,
    /// Handshakes answered.
    pub handshakes: u64,
    /// Dropped: transport message for no live session.
    pub unknown_session: u64,
    /// Dropped: transport message that was replayed or did not decrypt.
    pub bad_transport: u64,
    /// Dropped: authenticated plaintext that is not a valid request.
    pub bad_request: u64,
    /// Dropped: registration over the peer limit, inconsistent parts, or no room in the table.
    pub refused_registration: u64,
    /// Registration parts acknowledged.
    pub registrations: u64,
    /// Lookups answered.
    pub lookups: u64,
    /// Pushes queued for watching clients.
    pub pushes: u64,
    /// Pushes not sent: over their session's window or rate, or the outgoing queue was full.
    pub pushes_over_budget: u64,
    /// Push acknowledgements received.
    pub push_acks: u64,
    /// Candidate requests answered.
    pub candidate_lookups: u64,
    /// Observe requests answered, at the main address and at the mapping addresses.
    pub observes: u64,
    /// Dropped at a mapping address: anything but an observe request of a confirmed session.
    pub mapping_refused: u64,
    /// Candidates dropped from registrations: unusable addresses, port 0 and repeats.
    pub candidates_trimmed: u64,
}

/// A registration whose parts are still arriving.
#[derive(Debug)]
struct Assembly {
    generation: u32,
    parts: Vec<Option<Vec<PublicKey>>>,
    local_addrs: Vec<SocketAddr>,
    watch: bool,
    hard_nat: bool,
}

#[derive(Debug)]
struct ServerSession {
    session: Session,
    client: PublicKey,
    created: Instant,
    confirmed: bool,
    assembly: Option<Assembly>,
    committed: Option<u32>,
    push: PushBudget,
}

impl Held for ServerSession {
    fn created(&self) -> Instant {
        self.created
    }

    fn client(&self) -> PublicKey {
        self.client
    }
}

/// The discovery server.
pub struct Server {
    private: PrivateKey,
    public: PublicKey,
    mac1: Mac1Key,
    config: ServerConfig,
    rng: Rng,
    sessions: HashMap<u32, ServerSession>,
    keys: HashMap<PublicKey, KeyState>,
    /// When the sessions and keys fall due for expiry.
    queues: Queues,
    registry: Registry,
    stats: Stats,
    plaintext: Box<[u8; MAX_PLAINTEXT_LEN]>,
    /// Made at the first initiation (the core gets the time only with its inputs).
    cookies: Option<CookieJar>,
    load: Option<LoadMeter>,
    /// Handshakes under load, per proven source (fails closed).
    sources: SourceLimiter,
    /// Cookie replies under load, per claimed source (fails open).
    cookie_sources: SourceLimiter,
    /// natpunch-go handshakes under load, per claimed source (fails closed): that format has no
    /// cookies to prove a source, so its own table keeps made-up sources away from the native one.
    legacy_sources: SourceLimiter,
    legacy: legacy::LegacyState,
    /// Pushes waiting for [`Server::poll_transmit`], at most [`MAX_QUEUED_PUSHES`].
    transmits: VecDeque<Transmit>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("public", &self.public)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with static key `private`; `seed` seeds its session indexes and ephemeral keys.
    pub fn new(private: PrivateKey, config: ServerConfig, seed: Seed) -> Self {
        let public = private.public_key();
        Self {
            mac1: Mac1Key::for_server(&public),
            public,
            private,
            registry: Registry::new(config.registration_ttl, config.max_registrations),
            rng: Rng::from_seed(seed),
            sessions: HashMap::new(),
            keys: HashMap::new(),
            queues: Queues::default(),
            stats: Stats::default(),
            plaintext: Box::new([0; MAX_PLAINTEXT_LEN]),
            cookies: None,
            load: None,
            sources: SourceLimiter::new(
                config.source_rate,
                config.source_burst,
                config.max_sources,
            ),
            cookie_sources: SourceLimiter::failing_open(
                config.source_rate,
                config.source_burst,
                config.max_sources,
            ),
            legacy_sources: SourceLimiter::new(
                config.source_rate,
                config.source_burst,
                config.max_sources,
            ),
            config,
            legacy: legacy::LegacyState::default(),
            transmits: VecDeque::new(),
        }
    }

    /// The server's public key, which clients must know.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// What the server has done so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The registration table, for inspection.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Number of sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Handles one datagram from `from`, received at `now` (monotonic) and `wall` (real time).
    /// Returns the reply to send back to `from`, if any.
    pub fn handle(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        self.handle_via(now, wall, from, Via::Main, datagram)
    }

    /// Like [`Server::handle`], for a datagram that arrived `via` one of the server's addresses.
    /// A mapping address answers only observe requests of confirmed sessions, and nothing that
    /// arrives there registers, moves or refreshes a client.
    pub fn handle_via(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        via: Via,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        if via == Via::Mapping {
            self.stats.datagrams += 1;
            let from = canonical(from);
            return self
                .handle_mapping(now, from, datagram)
                .filter(|r| r.len() <= datagram.len());
        }
        self.stats.datagrams += 1;
        let from = canonical(from);
        // natpunch-go's types (1 to 3) never collide with ours (0x11 to 0x14): see legacy::packet.
        let legacy = self.config.natpunch_go.is_some()
            && datagram
                .first()
                .is_some_and(|&b| crate::legacy::packet::is_legacy_type(b));
        let reply = if legacy {
            self.handle_legacy(now, wall, from, datagram)
        } else {
            self.handle_native(now, wall, from, datagram)
        };
        // The protocol's sizes guarantee this; the check keeps the guarantee if they ever change.
        reply.filter(|r| r.len() <= datagram.len())
    }

    /// Handles a datagram of wgpunch's own protocol.
    fn handle_native(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Option<Vec<u8>> {
        match Packet::parse(datagram) {
            Ok(Packet::HandshakeInit(init)) => {
                self.handle_initiation(now, wall, from, datagram, &init)
            }
            Ok(Packet::Transport(message)) => {
                self.handle_transport(now, from, &message, datagram.len())
            }
            Ok(Packet::HandshakeResponse(_) | Packet::CookieReply(_)) | Err(_) => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    fn handle_initiation(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        datagram: &[u8],
        init: &HandshakeInit,
    ) -> Option<Vec<u8>> {
        if !self.mac1.verify(datagram.get(..MAC1_OFFSET)?, &init.mac1) {
            self.stats.bad_mac1 += 1;
            return None;
        }
        let load = self.load.get_or_insert_with(|| LoadMeter::new(now));
        load.note(now);
        if load.is_over(self.config.load_threshold) {
            let cookies = match &mut self.cookies {
                Some(jar) => jar,
                slot => slot.insert(CookieJar::new(&self.public, self.rng.seed(), now)),
            };
            if cookies.needs_rotation(now) {
                cookies.rotate(self.rng.seed(), now);
            }
            if !cookies.verify_mac2(from, datagram, &init.mac2) {
                // Cookie replies have their own budget per source, so a flood from one source
                // costs a table lookup per datagram, not a reply. Its table fails open: the
                // sources of these datagrams are unproven (spoofable), and filling the table
                // with made-up ones must not deny everyone new their cookie.
                if !self.cookie_sources.allow(from, now) {
                    self.stats.rate_limited += 1;
                    return None;
                }
                let mut nonce = [0u8; COOKIE_NONCE_LEN];
                nonce[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                nonce[8..16].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                nonce[16..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
                let reply = cookies.reply(from, init.sender_index, &init.mac1, nonce)?;
                self.stats.cookie_replies += 1;
                let mut out = Vec::new();
                reply.emit(&mut out);
                return Some(out);
            }
            // mac2 proves the source address: only proven sources take room in this table.
            if !self.sources.allow(from, now) {
                self.stats.rate_limited += 1;
                return None;
            }
        }
        let Ok(accepted) = Accepted::read(&self.private, init, self.rng.seed()) else {
            self.stats.bad_handshake += 1;
            return None;
        };
        let admitted = key_state::admit(
            &self.config,
            &self.private,
            &mut self.keys,
            &accepted.client,
            accepted.timestamp,
            wall,
            now,
        );
        if let Err(refusal) = admitted {
            let counter = match refusal {
                Refusal::LowOrderKey => &mut self.stats.bad_handshake,
                Refusal::NotAllowed => &mut self.stats.not_allowed,
                Refusal::StaleTimestamp => {
                    debug!(peer = %accepted.client, "initiation timestamp outside clock tolerance");
                    &mut self.stats.stale_timestamp
                }
                Refusal::ReplayedInitiation => &mut self.stats.replayed_initiation,
                Refusal::RateLimited => &mut self.stats.rate_limited,
            };
            *counter += 1;
            return None;
        }
        let known = self.keys.get(&accepted.client);
        let replaces_pending = known.and_then(|k| k.pending).is_some();
        let new_key = known.is_none();
        if self.is_full(new_key, replaces_pending) {
            self.expire(now);
            if self.is_full(new_key, replaces_pending) {
                self.stats.sessions_full += 1;
                return None;
            }
        }
        let index = key_state::free_index(&mut self.rng, &self.sessions)?;
        let client = accepted.client;
        let timestamp = accepted.timestamp;
        let Ok((session, response)) = accepted.respond(index) else {
            self.stats.bad_handshake += 1;
            return None;
        };
        let state = self.keys.entry(client).or_default();
        state.last_timestamp = timestamp;
        state.last_handshake = Some(now);
        if let Some(old) = state.pending.replace(index) {
            self.sessions.remove(&old);
        }
        self.sessions.insert(
            index,
            ServerSession {
                session,
                client,
                created: now,
                confirmed: false,
                assembly: None,
                committed: None,
                push: PushBudget::new(now),
            },
        );
        let (tolerance, lifetime) = (self.config.clock_tolerance, self.config.session_lifetime);
        self.queues
            .session_added(&self.sessions, &mut self.keys, index, tolerance, lifetime);
        self.stats.handshakes += 1;
        debug!(peer = %client, index, "handshake answered");
        Some(response)
    }

    /// True when an initiation cannot be taken: no room for its session (unless it replaces a
    /// pending one) or, for a new key, for its replay-protection state.
    fn is_full(&self, new_key: bool, replaces_pending: bool) -> bool {
        let (config, sessions, keys) = (&self.config, &self.sessions, &self.keys);
        key_state::is_full(config, sessions, keys, new_key, replaces_pending)
    }

    fn handle_transport(
        &mut self,
        now: Instant,
        from: SocketAddr,
        message: &Transport<'_>,
        request_len: usize,
    ) -> Option<Vec<u8>> {
        let lifetime = self.config.session_lifetime;
        let Some(entry) = self.sessions.get_mut(&message.receiver_index) else {
            self.stats.unknown_session += 1;
            return None;
        };
        if now.saturating_duration_since(entry.created) >= lifetime {
            self.stats.unknown_session += 1;
            return None;
        }
        let Ok(len) = entry.session.open(message, &mut self.plaintext[..]) else {
            self.stats.bad_transport += 1;
            return None;
        };
        let client = entry.client;
        if !entry.confirmed {
            entry.confirmed = true;
            key_state::confirm(
                &mut self.keys,
                &mut self.sessions,
                client,
                message.receiver_index,
            );
        }
        let index = message.receiver_index;
        let request = Request::parse(self.plaintext.get(..len)?);
        if self.registry.touch(&client, from, index, now) {
            self.push_about(client, now);
        }
        let Ok(request) = request else {
            self.stats.bad_request += 1;
            return None;
        };
        let reply = match request {
            Request::Register(register) => self.handle_register(now, from, index, register)?,
            Request::Lookup(lookup) => {
                self.stats.lookups += 1;
                let entries = lookup
                    .peers
                    .iter()
                    .enumerate()
                    .map(|(i, target)| {
                        let punched = lookup.punched >> i & 1 == 1;
                        // A confirmed punch may open the target's barrier: push it on that
                        // transition only.
                        let before = punched
                            .then(|| self.watched_flag(target, &client, now))
                            .flatten();
                        let entry = self.lookup_any(&client, target, punched, now);
                        if before == Some(false)
                            && self.watched_flag(target, &client, now) == Some(true)
                        {
                            self.push_to(*target, client, now);
                        }
                        entry
                    })
                    .collect();
                Reply::LookupReply(LookupReply {
                    request_id: lookup.request_id,
                    entries,
                })
            }
            Request::Candidates(request) => {
                self.stats.candidate_lookups += 1;
                Reply::Candidates(self.registry.candidates(&client, request, now))
            }
            Request::Observe(request) => {
                self.stats.observes += 1;
                Reply::Observed(ObserveReply {
                    request_id: request.request_id,
                    observed: from,
                    alternates: self.config.mapping.clone(),
                })
            }
            Request::PushAck(ack) => {
                self.stats.push_acks += 1;
                if let Some(session) = self.sessions.get_mut(&index) {
                    session.push.ack(ack.acked);
                }
                return None;
            }
        };
        let mut plaintext = Vec::with_capacity(request_len);
        reply.emit(&mut plaintext);
        let mut datagram = Vec::with_capacity(request_len);
        let session = self.sessions.get_mut(&message.receiver_index)?;
        session.session.seal(&plaintext, &mut datagram).ok()?;
        trace!(peer = %client, len = datagram.len(), "reply");
        Some(datagram)
    }

    fn handle_register(
        &mut self,
        now: Instant,
        from: SocketAddr,
        index: u32,
        register: Register,
    ) -> Option<Reply> {
        let max_peers = self.config.max_peers_per_client;
        let session = self.sessions.get_mut(&index)?;
        let client = session.client;
        let ack = Reply::RegisterAck(RegisterAck {
            request_id: register.request_id,
            part: register.part,
            ttl_secs: u16::try_from(self.registry.ttl().as_secs()).unwrap_or(u16::MAX),
            observed: from,
        });
        if session.committed.is_some_and(|g| register.generation <= g)
            || session
                .assembly
                .as_ref()
                .is_some_and(|a| register.generation < a.generation)
        {
            // A retransmission of something already taken, or superseded: acknowledge, change nothing.
            self.stats.registrations += 1;
            return Some(ack);
        }
        let parts = usize::from(register.parts);
        if parts.saturating_sub(1) * crate::wire::message::MAX_KEYS_PER_PART >= max_peers.max(1) {
            self.stats.refused_registration += 1;
            return None;
        }
        let assembly = match &mut session.assembly {
            Some(a) if a.generation == register.generation => a,
            slot => slot.insert(Assembly {
                generation: register.generation,
                parts: vec![None; parts],
                local_addrs: vec![],
                watch: false,
                hard_nat: false,
            }),
        };
        if assembly.parts.len() != parts {
            self.stats.refused_registration += 1;
            return None;
        }
        if register.part == 0 {
            assembly.local_addrs = register.local_addrs;
            assembly.watch = register.watch;
            assembly.hard_nat = register.hard_nat;
        }
        if let Some(slot) = assembly.parts.get_mut(usize::from(register.part)) {
            *slot = Some(register.peers);
        }
        if assembly.parts.iter().all(Option::is_some) {
            let peers: BTreeSet<PublicKey> =
                assembly.parts.iter().flatten().flatten().copied().collect();
            if peers.len() > max_peers {
                session.assembly = None;
                self.stats.refused_registration += 1;
                return None;
            }
            let declared = std::mem::take(&mut assembly.local_addrs);
            let declared_len = declared.len();
            let local_addrs = candidates::trim(declared);
            let trimmed = declared_len - local_addrs.len();
            let (watch, hard_nat) = (assembly.watch, assembly.hard_nat);
            session.assembly = None;
            session.committed = Some(register.generation);
            let registration = Registration {
                endpoint: from,
                seen: now,
                peers,
                local_addrs,
                hard_nat,
                given: BTreeMap::new(),
                watch,
                session: index,
            };
            let before = self
                .registry
                .get(&client, now)
                .map(|r| (r.local_addrs.clone(), r.hard_nat));
            let changed =
                before.as_ref() != Some(&(registration.local_addrs.clone(), registration.hard_nat));
            if !self.registry.register(client, registration, now) {
                if let Some(s) = self.sessions.get_mut(&index) {
                    s.committed = None;
                }
                self.stats.refused_registration += 1;
                return None;
            }
            self.stats.candidates_trimmed += trimmed as u64;
            debug!(peer = %client, endpoint = %from, "registered");
            // A new registration, or new candidates or NAT flag: the watching peers hear of it at
            // once (a push makes them ask for the candidates again).
            if before.is_none() || changed {
                self.push_about(client, now);
            }
        }
        self.stats.registrations += 1;
        Some(ack)
    }
}
