//! The client's decisions as one sans-IO state machine: which peers to look up and when, the
//! punches and their TTL, the barrier, verification, recovery, parking, warnings and the exit.
//!
//! The IO layer feeds it the server's datagrams ([`Agent::handle_datagram`]), snapshots of the
//! WireGuard interface ([`Agent::handle_interface`]) and the time ([`Agent::handle_timeout`]);
//! it sends what [`Agent::poll_transmit`] returns to the server from the WireGuard port, carries
//! out what [`Agent::poll_action`] asks (punch, set an endpoint, read the interface, log, exit),
//! and wakes up no later than [`Agent::poll_timeout`]. Nothing here reads a clock or touches the
//! network, so tests drive whole scenarios in virtual time.

pub mod discovery;
pub mod local;
pub mod peers;
pub mod probing;
pub mod sanity;
pub mod snapshot;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use tracing::debug;

use crate::client::Event;
use crate::keys::PublicKey;
use crate::mapping::{MappingReport, NatMapping};
use discovery::Discovery;
use local::{Family, LocalAddr};
use peers::{ParkReason, PeerAction, PeerPolicy, Peers, State};
use probing::{Heard, Ours, PeerCandidates, Prober};
use sanity::Refused;
use snapshot::InterfaceSnapshot;

/// How often the interface is read while a peer waits for its handshake (a read of the UAPI
/// socket or netlink costs well under a millisecond).
const READ_CLOSELY: Duration = Duration::from_millis(100);

/// How often the interface is read otherwise: new peers, traffic that gets no answer.
const READ_EVERY: Duration = Duration::from_secs(1);

/// Longest time between lookups while peers wait behind the barrier, since punch
/// confirmations count for 20 s on the server.
const MAX_LOOKUP_INTERVAL: Duration = Duration::from_secs(10);

/// natpunch-go: how much longer than the lookup interval a found endpoint waits before it is set,
/// so that the peer's client has looked us up and punched towards us (see [`discovery`]).
const NATPUNCH_GO_GRACE_SLACK: Duration = Duration::from_secs(1);

/// In continuous mode, how long without a server before a warning is logged.
const SILENCE_WARNING: Duration = Duration::from_secs(30);

/// Shortest time between two registrations made because a path looked broken; a suspicion
/// within it waits for its end rather than being lost.
const SUSPECT_REFRESH_GAP: Duration = Duration::from_secs(2);

/// Most refused `(peer, endpoint)` pairs remembered, so each is warned about once.
const MAX_REFUSED: usize = 1024;

/// How the agent behaves: the client's command line, as far as decisions go.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Keep running (continuous mode) instead of exiting once every peer is settled.
    pub continuous: bool,
    /// Persistent keepalive set on resolved peers.
    pub keepalive: u16,
    /// How long to wait for a WireGuard handshake after setting an endpoint.
    pub handshake_timeout: Duration,
    /// Fallback interval between lookups of peers not resolved yet (`--delay`); the server's
    /// pushes make most of them unnecessary.
    pub delay: Duration,
    /// One-shot mode: give up after this long.
    pub timeout: Duration,
    /// TTL of punches; by default 1 without NAT, else 2.
    pub punch_ttl: Option<u8>,
    /// Which address families paths to peers may use (`--family`).
    pub family: Family,
    /// The discovery server's address: never taken as a peer's candidate.
    pub server: Option<SocketAddr>,
    /// Seeds the txids of probes (unguessable, so that nobody off the path can answer them).
    pub seed: crate::noise::Seed,
}

impl AgentConfig {
    /// How often peers are looked up: `delay`, but at least every 10 s.
    pub fn lookup_interval(&self) -> Duration {
        self.delay.min(MAX_LOOKUP_INTERVAL)
    }

    /// natpunch-go's timed barrier: how long the server must have given the same endpoint for a
    /// peer before it is set (the peer, with the same `--delay`, has looked us up by then).
    pub fn natpunch_go_grace(&self) -> Duration {
        self.lookup_interval() + NATPUNCH_GO_GRACE_SLACK
    }

    /// The per-peer policy that follows from this configuration.
    pub fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy::new(self.continuous, self.keepalive, self.handshake_timeout)
    }
}

/// What the IO layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send an empty datagram from the WireGuard port to `endpoint` with IP TTL `ttl`.
    Punch {
        /// The peer.
        peer: PublicKey,
        /// Its public endpoint.
        endpoint: SocketAddr,
        /// Hops: through our own NAT, not as far as the peer's.
        ttl: u8,
    },
    /// Set the peer's endpoint and persistent keepalive.
    SetEndpoint {
        /// The peer.
        peer: PublicKey,
        /// The endpoint.
        endpoint: SocketAddr,
        /// The keepalive in seconds.
        keepalive: u16,
    },
    /// Set only the peer's persistent keepalive: WireGuard found a working path by itself.
    SetKeepalive {
        /// The peer.
        peer: PublicKey,
        /// The keepalive in seconds.
        keepalive: u16,
    },
    /// Point the peer's endpoint at `endpoint`, our own loopback WireGuard port, so that nothing
    /// leaves the host towards it; the keepalive stays as it is.
    Park {
        /// The peer.
        peer: PublicKey,
        /// The parking endpoint.
        endpoint: SocketAddr,
        /// Why, for the log.
        reason: ParkReason,
    },
    /// Send `payload` (a [`crate::wire::probe::Probe`]) as one UDP datagram from the WireGuard
    /// port to `to`, with the normal TTL, from whichever local address routes there.
    Probe {
        /// The peer the probe is for or answers.
        peer: PublicKey,
        /// One of the peer's candidates (a ping) or the source of its ping (a pong).
        to: SocketAddr,
        /// The encoded probe.
        payload: Vec<u8>,
    },
    /// Read the interface and hand it to [`Agent::handle_interface`] (or report
    /// [`Agent::interface_unreadable`]).
    ReadInterface,
    /// Tell the user.
    Notice(Notice),
    /// Stop: one-shot mode is done.
    Exit(Outcome),
}

/// Something worth telling the user; the IO layer logs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// What the protocol reported: a handshake with the server, an answer or push about a peer,
    /// a peer the server cannot tell about (registrations come as [`Notice::Registered`]).
    Heard(Event),
    /// The server holds our registration and sees our WireGuard port at `observed`.
    Registered {
        /// Our public address as the server sees it.
        observed: SocketAddr,
        /// How long the registration lasts without a refresh.
        ttl: Duration,
        /// The address it saw before, when this is a change.
        previous: Option<SocketAddr>,
    },
    /// An endpoint from the server was refused (told once per peer and endpoint).
    EndpointRefused {
        /// The peer.
        peer: PublicKey,
        /// The refused endpoint.
        endpoint: SocketAddr,
        /// Why.
        reason: Refused,
    },
    /// Traffic through the tunnel gets no answer: registering again to see whether our NAT
    /// mapping moved (the server then tells the peers).
    PathSuspect,
    /// Continuous mode: the server has not answered for this long.
    ServerSilent {
        /// How long.
        silent: Duration,
    },
    /// Our NAT and the peer's both map each destination to their own port: no direct path can
    /// work, so a one-shot run stops waiting for the peer.
    NoDirectPath {
        /// The peer.
        peer: PublicKey,
    },
    /// A mapping check told how our NAT maps us (logged when it differs from the last).
    NatMapping {
        /// What it says.
        mapping: NatMapping,
        /// Where the server's addresses saw us.
        report: MappingReport,
    },
    /// A probe to one of a peer's candidates was answered: that path is used.
    CandidateAnswered {
        /// The peer.
        peer: PublicKey,
        /// The candidate.
        endpoint: SocketAddr,
        /// From the ping to its pong.
        rtt: Duration,
    },
    /// No WireGuard handshake followed on a candidate that answered a probe; the next one (or
    /// the public endpoint) is tried.
    CandidateFailed {
        /// The peer.
        peer: PublicKey,
        /// The candidate.
        endpoint: SocketAddr,
    },
    /// No candidate of a peer answered its probes: the public endpoint is tried.
    NoCandidateAnswered {
        /// The peer.
        peer: PublicKey,
    },
    /// Our local addresses changed (registered again at once).
    AddressesChanged {
        /// The addresses now.
        addrs: Vec<LocalAddr>,
    },
}

/// How a one-shot run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every peer connected, or already had a working handshake.
    Connected {
        /// Number of peers.
        peers: usize,
    },
    /// Endpoints were set, but no WireGuard handshake followed with these peers.
    NoHandshake {
        /// Each peer with the endpoint tried.
        failed: Vec<(PublicKey, SocketAddr)>,
    },
    /// The timeout passed with peers unresolved.
    Unresolved {
        /// Peers the server never gave.
        unresolved: Vec<PublicKey>,
        /// Peers whose endpoint was set without a handshake following, as for `NoHandshake`.
        failed: Vec<(PublicKey, SocketAddr)>,
        /// Number of peers.
        peers: usize,
    },
    /// The server never answered.
    NoServer,
}

/// The client's decisions, for one WireGuard interface and one discovery server.
#[derive(Debug)]
pub struct Agent {
    config: AgentConfig,
    discovery: Discovery,
    peers: Peers,
    snapshot: InterfaceSnapshot,
    /// The address and port our datagrams leave from (the WireGuard port).
    local: SocketAddr,
    /// Our WireGuard port's public address as the server sees it.
    observed: Option<SocketAddr>,
    /// How our NAT maps us, once a check told.
    nat_mapping: Option<NatMapping>,
    /// Peers whose NAT, the server says, maps each destination to its own port.
    hard_peers: BTreeSet<PublicKey>,
    started: Instant,
    next_lookup: Instant,
    /// Lookups in a row that the server answered with nothing but "unknown": the server pushes a
    /// peer's registration, so the fallback lookups back off (up to 10 s).
    unknown_streak: u32,
    next_read: Instant,
    /// A [`Action::ReadInterface`] is out and not answered yet.
    reading: bool,
    /// Answers waiting for a fresh snapshot of the interface before they are decided on.
    answers: Vec<(PublicKey, SocketAddr, bool)>,
    last_contact: Option<Instant>,
    warned_silence: bool,
    refused: HashSet<(PublicKey, SocketAddr)>,
    last_suspect_refresh: Option<Instant>,
    /// A path looked broken within [`SUSPECT_REFRESH_GAP`] of the last such registration.
    suspect_pending: bool,
    actions: VecDeque<Action>,
    exited: bool,
    /// Our addresses, as [`Agent::handle_addresses`] last gave them.
    addrs: Vec<LocalAddr>,
    prober: Prober,
}

impl Agent {
    /// An agent for an interface first seen as `snapshot` at `now` (`wall`), talking to the
    /// server through `discovery` from `local` (the WireGuard port).
    pub fn new(
        config: AgentConfig,
        discovery: Discovery,
        local: SocketAddr,
        snapshot: InterfaceSnapshot,
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut policy = config.peer_policy();
        policy.own_key = Some(discovery.public_key());
        let peers = Peers::new(policy, &snapshot.peers, now, wall);
        let prober = Prober::new(discovery.public_key(), config.seed);
        let mut agent = Self {
            config,
            discovery,
            peers,
            snapshot,
            local,
            observed: None,
            nat_mapping: None,
            hard_peers: BTreeSet::new(),
            started: now,
            next_lookup: now,
            unknown_streak: 0,
            next_read: now + READ_EVERY,
            reading: false,
            answers: Vec::new(),
            last_contact: None,
            warned_silence: false,
            refused: HashSet::new(),
            last_suspect_refresh: None,
            suspect_pending: false,
            actions: VecDeque::new(),
            exited: false,
            addrs: Vec::new(),
            prober,
        };
        agent.take_peer_actions(now);
        agent
    }

    /// The per-peer state machine, for inspection.
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Our public address as the server last saw it.
    pub fn observed(&self) -> Option<SocketAddr> {
        self.observed
    }

    /// True in continuous mode.
    pub fn is_continuous(&self) -> bool {
        self.config.continuous
    }

    /// Handles a datagram from the server; nothing after the run is over.
    pub fn handle_datagram(&mut self, now: Instant, wall: SystemTime, datagram: &[u8]) {
        if self.exited {
            return;
        }
        self.discovery.handle_datagram(now, datagram);
        self.take_events(now, wall);
    }

    /// Handles a fresh snapshot of the interface, read because of [`Action::ReadInterface`] (or
    /// at any other time); nothing after the run is over.
    pub fn handle_interface(
        &mut self,
        snapshot: InterfaceSnapshot,
        now: Instant,
        wall: SystemTime,
    ) {
        self.reading = false;
        if self.exited {
            return;
        }
        self.peers.observe(&snapshot.peers, now, wall);
        if self.config.continuous {
            self.discovery.set_peers(snapshot.keys());
        }
        self.snapshot = snapshot;
        let on_interface: HashSet<PublicKey> = self.snapshot.keys().into_iter().collect();
        self.prober.retain(|k| on_interface.contains(k));
        self.hard_peers.retain(|k| on_interface.contains(k));
        let tunnel = self.snapshot.tunnel_networks();
        let mut held = Vec::new();
        for (peer, endpoint, peer_has_yours) in std::mem::take(&mut self.answers) {
            if self.discovery.candidates_pending(&peer) {
                // Its candidates are on the way: decide with them.
                held.push((peer, endpoint, peer_has_yours));
                continue;
            }
            match self.peers.state(&peer) {
                Some(State::Wanted) => {
                    let targets = self.prober.targets(&peer, self.ours(&tunnel));
                    if !targets.is_empty() {
                        debug!(peer = %peer, ?targets, "probing candidates");
                        self.prober.start(peer, &targets, now);
                        self.peers.start_probing(peer, endpoint);
                        continue;
                    }
                }
                Some(State::Probing) => continue,
                _ => {}
            }
            let refused = if self.config.family.allows(endpoint.ip()) {
                sanity::check_endpoint(endpoint, &tunnel)
            } else {
                Err(Refused::Family)
            };
            if let Err(reason) = refused {
                if self.refused.len() >= MAX_REFUSED {
                    self.refused.clear();
                }
                if self.refused.insert((peer, endpoint)) {
                    self.notice(Notice::EndpointRefused {
                        peer,
                        endpoint,
                        reason,
                    });
                }
                continue;
            }
            let current = match self.snapshot.peer(&peer) {
                Some(p) => p.clone(),
                None => continue,
            };
            self.peers
                .on_resolved(peer, endpoint, peer_has_yours, &current, now, wall);
        }
        self.answers = held;
        let hard: Vec<PublicKey> = self.hard_peers.iter().copied().collect();
        for peer in hard {
            self.check_direct_path(peer, now);
        }
        if self.peers.take_suspect() {
            self.suspect_pending = true;
        }
        self.on_suspect(now);
        self.take_peer_actions(now);
        self.next_read = now + self.read_interval();
        self.check_done();
    }

    /// Our side, for choosing candidates.
    fn ours<'a>(&'a self, tunnel: &'a [(IpAddr, u8)]) -> Ours<'a> {
        Ours {
            addrs: &self.addrs,
            family: self.config.family,
            tunnel,
            server: self.config.server,
        }
    }

    /// The host's addresses now: `source` is where datagrams to the server leave from (the
    /// WireGuard port on the address that routes to the server), `addrs` every address a peer
    /// may reach the WireGuard port at, already filtered by the IO layer (no loopback,
    /// link-local, tunnel or container interfaces, `--allow-candidates`/`--deny-candidates`).
    /// Call it once after [`Agent::new`] and again whenever the addresses change.
    pub fn handle_addresses(
        &mut self,
        source: SocketAddr,
        addrs: Vec<LocalAddr>,
        now: Instant,
        wall: SystemTime,
    ) {
        if self.exited {
            return;
        }
        let _ = wall;
        self.local = source;
        let mut addrs = addrs;
        addrs.sort();
        addrs.dedup();
        if addrs == self.addrs {
            return;
        }
        let first = self.addrs.is_empty();
        self.addrs = addrs;
        self.discovery.set_local_addrs(
            self.addrs
                .iter()
                .map(|a| SocketAddr::new(a.ip, source.port()))
                .collect(),
        );
        if first {
            return;
        }
        self.notice(Notice::AddressesChanged {
            addrs: self.addrs.clone(),
        });
        // Our network changed: what failed may work now, and a candidate path may be gone.
        self.prober.forget_failures();
        self.rechoose_paths(now);
        self.next_lookup = now;
        self.take_peer_actions(now);
        self.take_probes();
    }

    /// Every peer whose candidate path is no longer worth probing chooses again; in continuous
    /// mode, a connected peer with candidates worth probing that it does not use probes them.
    fn rechoose_paths(&mut self, now: Instant) {
        let tunnel = self.snapshot.tunnel_networks();
        let states: Vec<(PublicKey, State)> = self.peers.states().collect();
        for (peer, state) in states {
            let targets = self.prober.targets(&peer, self.ours(&tunnel));
            match self.peers.candidate_path(&peer) {
                Some(path) if !targets.contains(&path) => self.peers.rechoose(&peer),
                None if self.config.continuous
                    && state == State::Connected
                    && !targets.is_empty() =>
                {
                    self.prober.start(peer, &targets, now);
                }
                _ => {}
            }
        }
    }

    /// Turns the prober's probes into actions.
    fn take_probes(&mut self) {
        while let Some(out) = self.prober.poll_transmit() {
            self.actions.push_back(Action::Probe {
                peer: out.peer,
                to: out.to,
                payload: out.payload,
            });
        }
    }

    /// Handles a datagram to the WireGuard port from `from` that starts with
    /// [`crate::wire::probe::PROBE_MAGIC`]: a peer's probe or the answer to ours.
    pub fn handle_probe(
        &mut self,
        now: Instant,
        wall: SystemTime,
        from: SocketAddr,
        payload: &[u8],
    ) {
        let _ = wall;
        if self.exited {
            return;
        }
        let Ok(probe) = crate::wire::probe::Probe::parse(payload) else {
            return;
        };
        let is_peer = self.snapshot.peer(&probe.sender).is_some();
        let told = self.peers.told(&probe.sender);
        match self.prober.handle_probe(now, from, probe, is_peer, told) {
            Some(Heard::Answered { peer, addr, rtt }) => {
                self.notice(Notice::CandidateAnswered {
                    peer,
                    endpoint: addr,
                    rtt,
                });
                self.peers
                    .on_candidate(peer, addr, probing::answer_wait(rtt), now);
                self.take_peer_actions(now);
            }
            Some(Heard::Unexpected { peer }) => self.discovery.fetch_candidates(peer),
            None => {}
        }
        self.take_probes();
    }

    /// The interface could not be read. Returns false when that ends the run (one-shot mode
    /// needs the interface to the end); continuous mode tries again later.
    pub fn interface_unreadable(&mut self, now: Instant) -> bool {
        self.reading = false;
        self.next_read = now + READ_EVERY;
        self.config.continuous
    }

    /// Lets time pass: lookups, interface reads, the one-shot deadline and the silence warning
    /// fall due here.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.exited {
            return;
        }
        self.on_suspect(now);
        for peer in self.prober.handle_timeout(now) {
            self.notice(Notice::NoCandidateAnswered { peer });
            self.peers.probing_failed(&peer);
            self.next_lookup = now;
            self.check_direct_path(peer, now);
        }
        self.take_probes();
        if now >= self.next_lookup {
            self.next_lookup = now + self.lookup_interval();
            let wanted = self.peers.take_wanted();
            if !wanted.is_empty() {
                self.discovery.lookup_with(wanted);
            }
        }
        let peer_due = self.peers.next_deadline().is_some_and(|d| now >= d);
        if (now >= self.next_read || peer_due) && !self.reading {
            self.reading = true;
            self.actions.push_back(Action::ReadInterface);
        }
        if !self.config.continuous && now >= self.started + self.config.timeout {
            let outcome = self.give_up();
            self.exit(outcome);
            return;
        }
        let silent = now.saturating_duration_since(self.last_contact.unwrap_or(self.started));
        if self.config.continuous && !self.warned_silence && silent >= SILENCE_WARNING {
            self.warned_silence = true;
            self.notice(Notice::ServerSilent { silent });
        }
    }

    /// The next datagram for the server, if one is due at `now`.
    pub fn poll_transmit(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        if self.exited {
            return None;
        }
        self.discovery.poll_transmit(now, wall)
    }

    /// The next datagram for one of the server's mapping addresses, and where it goes: sent like
    /// [`Agent::poll_transmit`]'s, from the WireGuard port.
    pub fn poll_mapping_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.exited {
            return None;
        }
        self.discovery.poll_mapping_transmit(now)
    }

    /// How our NAT maps us, once a check told.
    pub fn nat_mapping(&self) -> Option<NatMapping> {
        self.nat_mapping
    }

    /// The next thing for the IO layer to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Agent::handle_timeout`] and [`Agent::poll_transmit`] must be called next, at the
    /// latest; `None` once the run is over.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.exited {
            return None;
        }
        let lookup = self.peers.wants_lookups().then_some(self.next_lookup);
        let deadline = (!self.config.continuous).then(|| self.started + self.config.timeout);
        let warning = (self.config.continuous && !self.warned_silence)
            .then(|| self.last_contact.unwrap_or(self.started) + SILENCE_WARNING);
        [
            self.discovery.poll_timeout(),
            lookup,
            (!self.reading).then_some(self.next_read),
            self.peers.next_deadline(),
            deadline,
            warning,
            self.suspect_pending
                .then(|| self.suspect_refresh_at())
                .flatten(),
            self.prober.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The fallback interval between lookups: `--delay`, doubled for every lookup in a row that
    /// found nobody (the server pushes a registration the moment it happens), at most 10 s.
    /// natpunch-go's server pushes nothing, and its timed barrier counts on the peer looking us
    /// up every `--delay`: no backoff there.
    fn lookup_interval(&self) -> Duration {
        let base = self.config.lookup_interval();
        if !self.discovery.has_barrier() {
            return base;
        }
        base.saturating_mul(1 << self.unknown_streak.min(3))
            .min(MAX_LOOKUP_INTERVAL.max(base))
    }

    fn read_interval(&self) -> Duration {
        if self.peers.expects_handshake() {
            READ_CLOSELY
        } else {
            READ_EVERY
        }
    }

    /// When our NAT and `peer`'s both map each destination to their own port, no direct path can
    /// work: a one-shot run stops waiting for the peer at once instead of for its handshake
    /// (continuous mode keeps trying; the peer's LAN candidates are tried first either way).
    fn check_direct_path(&mut self, peer: PublicKey, now: Instant) {
        let ours_hard = self.nat_mapping.is_some_and(|m| !m.allows_direct());
        if !ours_hard || !self.hard_peers.contains(&peer) {
            return;
        }
        let tunnel = self.snapshot.tunnel_networks();
        let lan_left = !self.prober.targets(&peer, self.ours(&tunnel)).is_empty();
        if lan_left || self.prober.is_probing(&peer) {
            return;
        }
        if self.config.continuous {
            return;
        }
        if self.peers.no_direct_path(&peer, now) {
            // The run ends once everything is settled (checked after the events, or the next
            // interface read).
            self.notice(Notice::NoDirectPath { peer });
        }
    }

    fn notice(&mut self, notice: Notice) {
        self.actions.push_back(Action::Notice(notice));
    }

    fn exit(&mut self, outcome: Outcome) {
        if !self.exited {
            self.exited = true;
            self.actions.push_back(Action::Exit(outcome));
        }
    }

    /// Drains the protocol's events: registrations, answers and pushes.
    fn take_events(&mut self, now: Instant, wall: SystemTime) {
        let mut heard = false;
        let (mut unknown, mut known) = (false, false);
        while let Some(event) = self.discovery.poll_event(now) {
            heard = true;
            match event {
                Event::Connected => self.notice(Notice::Heard(event)),
                Event::Registered { observed, ttl } => {
                    let previous = self.observed.replace(observed);
                    if previous != Some(observed) {
                        // A new mapping, maybe a new NAT: check how it maps us.
                        if let Some(server) = self.config.server {
                            self.discovery.check_mapping(server);
                        }
                    }
                    if previous != Some(observed) {
                        self.notice(Notice::Registered {
                            observed,
                            ttl,
                            previous,
                        });
                    }
                    if previous.is_some_and(|p| p != observed) {
                        // Our NAT moved us: the peers must open theirs towards the new mapping.
                        self.peers.our_address_changed(now, wall);
                        self.next_lookup = now;
                    }
                }
                Event::Resolved {
                    peer,
                    endpoint,
                    peer_has_yours,
                    ..
                } => {
                    self.notice(Notice::Heard(event));
                    known = true;
                    self.answers.retain(|(p, _, _)| *p != peer);
                    self.answers.push((peer, endpoint, peer_has_yours));
                }
                Event::Unknown { .. } => {
                    unknown = true;
                    self.notice(Notice::Heard(event));
                }
                Event::Mapping(report) => {
                    let server = self.config.server.unwrap_or(self.local);
                    let mapping = report.classify(self.local, server);
                    // Only a server that answered the check knows the flag.
                    if report.main.is_some() {
                        self.discovery.set_hard_nat(!mapping.allows_direct());
                    }
                    if self.nat_mapping != Some(mapping) {
                        self.nat_mapping = Some(mapping);
                        self.notice(Notice::NatMapping { mapping, report });
                    }
                    let hard: Vec<PublicKey> = self.hard_peers.iter().copied().collect();
                    for peer in hard {
                        self.check_direct_path(peer, now);
                    }
                }
                Event::Candidates {
                    peer,
                    same_public,
                    hard_nat,
                    ref candidates,
                    ..
                } => {
                    if hard_nat {
                        self.hard_peers.insert(peer);
                    } else {
                        self.hard_peers.remove(&peer);
                    }
                    let tunnel = self.snapshot.tunnel_networks();
                    let checked =
                        PeerCandidates::checked(same_public, candidates, self.ours(&tunnel));
                    self.notice(Notice::Heard(event));
                    if self.prober.set_candidates(peer, checked) {
                        let targets = self.prober.targets(&peer, self.ours(&tunnel));
                        match self.peers.candidate_path(&peer) {
                            Some(path) if !targets.contains(&path) => {
                                self.peers.rechoose(&peer);
                                self.next_lookup = now;
                            }
                            None if self.config.continuous
                                && self.peers.state(&peer) == Some(State::Connected)
                                && !targets.is_empty() =>
                            {
                                self.prober.start(peer, &targets, now);
                            }
                            _ => {}
                        }
                    }
                    self.check_direct_path(peer, now);
                }
            }
        }
        if known {
            self.unknown_streak = 0;
        } else if unknown {
            self.unknown_streak = self.unknown_streak.saturating_add(1);
        }
        if heard || (self.discovery.is_connected() && !self.discovery.is_waiting()) {
            self.last_contact = Some(now);
            self.warned_silence = false;
        }
        if !self.answers.is_empty() && !self.reading {
            // Decide on what the interface shows right now: WireGuard may have found a path.
            self.reading = true;
            self.actions.push_back(Action::ReadInterface);
        }
        self.take_peer_actions(now);
        self.take_probes();
        self.check_done();
    }

    /// Some connected path looked broken: register again (at most every
    /// [`SUSPECT_REFRESH_GAP`]), so that the server observes our current mapping and, if it
    /// moved, tells the peers.
    fn on_suspect(&mut self, now: Instant) {
        if !self.suspect_pending || self.suspect_refresh_at().is_some_and(|at| now < at) {
            return;
        }
        self.suspect_pending = false;
        self.last_suspect_refresh = Some(now);
        self.discovery.refresh();
        self.notice(Notice::PathSuspect);
    }

    /// When a pending suspicion may register again.
    fn suspect_refresh_at(&self) -> Option<Instant> {
        self.last_suspect_refresh.map(|at| at + SUSPECT_REFRESH_GAP)
    }

    /// The punch TTL: passes our own NAT (if any) and expires before the peer's.
    fn punch_ttl(&self) -> u8 {
        self.config.punch_ttl.unwrap_or(match self.observed {
            Some(observed) if observed.ip() == self.local.ip() => 1,
            _ => 2,
        })
    }

    /// Where a parked peer's endpoint points: our own WireGuard port on loopback.
    fn parking_endpoint(&self) -> SocketAddr {
        let ip = match self.local.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, self.local.port())
    }

    fn take_peer_actions(&mut self, now: Instant) {
        let keepalive = self.config.keepalive;
        while let Some(action) = self.peers.poll_action() {
            let action = match action {
                PeerAction::Punch {
                    peer,
                    endpoint,
                    first,
                } => {
                    if first && self.discovery.has_barrier() {
                        // Confirm at once: the server then tells the peer, which may go ahead.
                        self.next_lookup = now;
                    }
                    Action::Punch {
                        peer,
                        endpoint,
                        ttl: self.punch_ttl(),
                    }
                }
                PeerAction::SetEndpoint { peer, endpoint } => Action::SetEndpoint {
                    peer,
                    endpoint,
                    keepalive,
                },
                PeerAction::SetKeepalive { peer } => Action::SetKeepalive { peer, keepalive },
                PeerAction::CandidateFailed { peer, endpoint } => {
                    self.prober.fail(peer, endpoint);
                    self.next_lookup = now;
                    Action::Notice(Notice::CandidateFailed { peer, endpoint })
                }
                PeerAction::Park { peer, reason } => Action::Park {
                    peer,
                    endpoint: self.parking_endpoint(),
                    reason,
                },
            };
            self.actions.push_back(action);
        }
        if self.peers.expects_handshake() {
            self.next_read = self.next_read.min(now + READ_CLOSELY);
        }
    }

    /// One-shot mode ends once the server holds us and every peer is settled.
    fn check_done(&mut self) {
        // natpunch-go's server may not tell us our address: a handshake registers us there.
        let registered = self.observed.is_some() || self.discovery.is_registered();
        if self.config.continuous || self.exited || !registered || !self.peers.is_settled() {
            return;
        }
        // What we declare changed (our NAT's kind, our addresses): end once the server has it,
        // so that the peers hear of it.
        if self.discovery.is_reregistering() {
            return;
        }
        let failed = self.peers.without_handshake();
        let outcome = if failed.is_empty() {
            Outcome::Connected {
                peers: self.peers.len(),
            }
        } else {
            Outcome::NoHandshake { failed }
        };
        debug!(?outcome, "one-shot run done");
        self.exit(outcome);
    }

    fn give_up(&self) -> Outcome {
        if self.last_contact.is_none() {
            return Outcome::NoServer;
        }
        let unresolved = self.peers.unresolved();
        let failed = self.peers.without_handshake();
        match (unresolved.is_empty(), failed.is_empty()) {
            (true, true) => Outcome::Connected {
                peers: self.peers.len(),
            },
            (true, false) => Outcome::NoHandshake { failed },
            (false, _) => Outcome::Unresolved {
                unresolved,
                failed,
                peers: self.peers.len(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::snapshot::PeerSnapshot;
    use crate::client::{Client, ClientConfig};
    use crate::keys::PrivateKey;
    use crate::server::{Server, ServerConfig};

    fn key(n: u8) -> PrivateKey {
        PrivateKey::from_bytes([n; 32])
    }

    fn config(continuous: bool) -> AgentConfig {
        AgentConfig {
            continuous,
            keepalive: 25,
            handshake_timeout: Duration::from_secs(15),
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
            punch_ttl: None,
            family: Family::Auto,
            server: None,
            seed: [0; 32],
        }
    }

    /// An agent for key 1 with peer key 2 on its interface, and a server for key 100.
    fn agent(continuous: bool, now: Instant, wall: SystemTime) -> (Agent, Server) {
        let server = Server::new(key(100), ServerConfig::default(), [9; 32]);
        let peer = key(2).public_key();
        let local: SocketAddr = "192.0.2.10:51820".parse().unwrap();
        let client = Client::new(
            key(1),
            server.public_key(),
            vec![peer],
            vec![local],
            ClientConfig::default(),
            [1; 32],
        );
        let snapshot = InterfaceSnapshot {
            peers: vec![PeerSnapshot::new(peer)],
        };
        let agent = Agent::new(
            config(continuous),
            Discovery::Native(Box::new(client)),
            local,
            snapshot,
            now,
            wall,
        );
        (agent, server)
    }

    /// Runs the agent against `server` (or nothing) for `steps` of 100 ms; returns its actions.
    fn drive(
        agent: &mut Agent,
        mut server: Option<&mut Server>,
        start: Instant,
        wall: SystemTime,
        steps: u32,
    ) -> Vec<Action> {
        let mut seen = Vec::new();
        let from: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        for i in 0..steps {
            let (now, wall) = (
                start + Duration::from_millis(100) * i,
                wall + Duration::from_millis(100) * i,
            );
            agent.handle_timeout(now);
            while let Some(action) = agent.poll_action() {
                if action == Action::ReadInterface {
                    let snapshot = agent.snapshot.clone();
                    agent.handle_interface(snapshot, now, wall);
                }
                seen.push(action);
            }
            while let Some(datagram) = agent.poll_transmit(now, wall) {
                if let Some(server) = server.as_deref_mut() {
                    if let Some(reply) = server.handle(now, wall, from, &datagram) {
                        agent.handle_datagram(now, wall, &reply);
                    }
                }
            }
        }
        seen
    }

    #[test]
    fn a_server_that_never_answers_ends_a_one_shot_run_with_no_server() {
        let (now, wall) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31),
        );
        let (mut agent, _) = agent(false, now, wall);
        let actions = drive(&mut agent, None, now, wall, 120);
        assert!(
            actions.contains(&Action::Exit(Outcome::NoServer)),
            "{actions:?}"
        );
        assert_eq!(
            agent.poll_timeout(),
            None,
            "nothing more to do after the exit"
        );
    }

    #[test]
    fn a_peer_never_registered_is_reported_unresolved_after_the_timeout() {
        let (now, wall) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31),
        );
        let (mut agent, mut server) = agent(false, now, wall);
        let actions = drive(&mut agent, Some(&mut server), now, wall, 120);
        let observed: SocketAddr = "203.0.113.7:40001".parse().unwrap();
        assert!(actions.iter().any(|a| matches!(a,
            Action::Notice(Notice::Registered { observed: o, previous: None, .. }) if *o == observed
        )), "{actions:?}");
        let peer = key(2).public_key();
        assert!(
            actions.contains(&Action::Exit(Outcome::Unresolved {
                unresolved: vec![peer],
                failed: vec![],
                peers: 1
            })),
            "{actions:?}"
        );
        assert_eq!(agent.observed(), Some(observed));
    }

    #[test]
    fn interface_reads_come_every_second_and_continuous_mode_survives_a_failed_one() {
        let (now, wall) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31),
        );
        let (mut agent, _) = agent(true, now, wall);
        let mut reads = 0;
        for i in 0..50u32 {
            let t = now + Duration::from_millis(100) * i;
            agent.handle_timeout(t);
            while let Some(action) = agent.poll_action() {
                if action == Action::ReadInterface {
                    reads += 1;
                    assert!(agent.interface_unreadable(t), "continuous mode goes on");
                }
            }
        }
        assert!((4..=6).contains(&reads), "{reads} reads in 5 s");
    }

    #[test]
    fn a_nonsense_endpoint_is_refused_once_and_never_set() {
        let (now, wall) = (
            Instant::now(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31),
        );
        let (mut agent, _) = agent(false, now, wall);
        let peer = key(2).public_key();
        let loopback: SocketAddr = "127.0.0.1:51820".parse().unwrap();
        for _ in 0..2 {
            agent.answers.push((peer, loopback, true));
            let snapshot = agent.snapshot.clone();
            agent.handle_interface(snapshot, now, wall);
        }
        let actions: Vec<Action> = std::iter::from_fn(|| agent.poll_action()).collect();
        assert_eq!(
            actions,
            vec![Action::Notice(Notice::EndpointRefused {
                peer,
                endpoint: loopback,
                reason: Refused::Loopback
            })]
        );
    }
}
