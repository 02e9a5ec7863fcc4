//! What the client does for each WireGuard peer, as a state machine without IO.
//!
//! It takes snapshots of the interface ([`Peers::observe`]) and the server's answers and pushes
//! ([`Peers::on_resolved`]), and hands out [`PeerAction`]s: punch our own NAT open towards a
//! peer, set its endpoint, set its keepalive, or park it.
//!
//! # The conntrack trap and the barrier
//!
//! Suppose A's first WireGuard packet reaches B's NAT before B has sent anything to A. B's NAT
//! keeps a conntrack entry for that unsolicited packet, and A's retries keep it alive. B's packets
//! to A would use the same public `ip:port` pair, so B's NAT must map them to another port, and A
//! never hears from the port it knows. To prevent this, each side first opens its own NAT towards
//! the other with a *punch*: an empty datagram from the WireGuard port whose TTL runs out before it
//! reaches the other NAT. A side sets the endpoint, which makes WireGuard send, only once the
//! server says the peer already holds our current endpoint. By then the peer has punched towards
//! us, because it punches as soon as it learns our endpoint.
//!
//! # Recovery
//!
//! A connected peer whose endpoint the server reports somewhere else has moved (its NAT remapped
//! or its public address changed): it goes behind the barrier again towards the new endpoint,
//! while WireGuard keeps its session. When our own address changed, every connected peer is
//! punched and confirmed again, so that the peers' barriers open towards our new address, and is
//! then watched for traffic for a short while. Only a path that still carries nothing after that
//! is *parked*: its endpoint points at our own loopback address, so that nobody sends and stale
//! conntrack entries on both NATs (the trap above) expire; then the barrier runs again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::keys::PublicKey;

use super::snapshot::PeerSnapshot;

/// How the peer state machine behaves.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// Keep watching peers after they connected (continuous mode).
    pub continuous: bool,
    /// Persistent keepalive set on peers.
    pub keepalive: u16,
    /// How long to wait for a WireGuard handshake after setting an endpoint.
    pub handshake_timeout: Duration,
    /// Continuous mode: after a move (ours or the peer's), how long the path may carry nothing
    /// before it is taken as trapped by stale NAT state and parked.
    pub recovery_wait: Duration,
    /// Continuous mode: a connected peer from which nothing was received for this long has lost
    /// its path (its keepalives would have arrived).
    pub silence_limit: Duration,
    /// How long a peer stays parked: longer than a NAT keeps an unanswered UDP mapping (30 s on
    /// Linux).
    pub park_time: Duration,
    /// Continuous mode: traffic that gets no answer for this long makes the path suspect.
    pub suspect_after: Duration,
    /// Our own WireGuard public key. When both sides may start WireGuard, the side with the
    /// lower key does; the other yields for [`PeerPolicy::yield_time`] first, so that the two
    /// WireGuards do not initiate at once (wireguard-go then drops one side's packets until
    /// its next handshake, 5 s later). `None`: never yield.
    pub own_key: Option<PublicKey>,
    /// How long the side with the higher key waits for the peer's WireGuard to reach it.
    pub yield_time: Duration,
}

impl PeerPolicy {
    /// The defaults for a keepalive of `keepalive` seconds.
    pub fn new(continuous: bool, keepalive: u16, handshake_timeout: Duration) -> Self {
        Self {
            continuous,
            keepalive,
            handshake_timeout,
            recovery_wait: Duration::from_secs(6),
            silence_limit: Duration::from_secs(u64::from(keepalive) * 2 + 10),
            park_time: Duration::from_secs(35),
            suspect_after: Duration::from_secs(2),
            own_key: None,
            yield_time: Duration::from_secs(1),
        }
    }
}

impl PeerPolicy {
    /// The wait after setting `endpoint` at `now`: traffic within the recovery wait when the
    /// path `moved`, else a handshake within the handshake timeout.
    fn verifying(&self, endpoint: SocketAddr, now: Instant, moved: bool) -> State {
        self.verifying_for(endpoint, now, moved, false)
    }

    /// Like [`PeerPolicy::verifying`]; a `candidate` path (one a probe answered on) waits at
    /// most [`CANDIDATE_WAIT`] for its handshake before the next candidate is tried.
    fn verifying_for(
        &self,
        endpoint: SocketAddr,
        now: Instant,
        moved: bool,
        candidate: bool,
    ) -> State {
        let wait = if moved {
            self.recovery_wait
        } else if candidate {
            self.handshake_timeout.min(CANDIDATE_WAIT)
        } else {
            self.handshake_timeout
        };
        State::Verifying {
            endpoint,
            since: now,
            until: now + wait,
            moved,
        }
    }
}

/// How long a candidate path that answered a probe may go without a WireGuard handshake: one
/// retry of WireGuard's (5 s apart) and a little more.
pub const CANDIDATE_WAIT: Duration = Duration::from_secs(6);

/// Why a peer was parked: what the log tells the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// At start the peer had an endpoint but no live handshake: the stale endpoint may be
    /// keeping a trap alive on the peer's NAT.
    StaleAtStart,
    /// After a move, the path carried nothing within the recovery wait.
    NoTrafficAfterMove,
    /// The endpoint was set, but no handshake followed within the wait.
    NoHandshake,
    /// Nothing was received for the silence limit, or the handshake went stale.
    Silent,
}

impl ParkReason {
    /// The reason in plain words.
    pub fn describe(self) -> &'static str {
        match self {
            ParkReason::StaleAtStart => {
                "its endpoint is set but WireGuard has no live handshake with it"
            }
            ParkReason::NoTrafficAfterMove => {
                "after the NAT mapping moved, nothing came back through the new path"
            }
            ParkReason::NoHandshake => "no WireGuard handshake followed after setting its endpoint",
            ParkReason::Silent => "nothing has been received from it for too long",
        }
    }
}

/// Something the IO layer must do for one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerAction {
    /// Send a TTL-limited punch from the WireGuard port towards `endpoint`.
    Punch {
        /// The peer.
        peer: PublicKey,
        /// Its public endpoint.
        endpoint: SocketAddr,
        /// The first punch towards this endpoint: confirming it soon lets the peer go ahead.
        first: bool,
    },
    /// Set the peer's endpoint and the keepalive.
    SetEndpoint {
        /// The peer.
        peer: PublicKey,
        /// Its public endpoint.
        endpoint: SocketAddr,
    },
    /// Set only the keepalive: WireGuard found a working path by itself.
    SetKeepalive {
        /// The peer.
        peer: PublicKey,
    },
    /// A candidate path answered a probe but no handshake followed on it: try the next one.
    CandidateFailed {
        /// The peer.
        peer: PublicKey,
        /// The candidate.
        endpoint: SocketAddr,
    },
    /// Point the peer's endpoint at our own loopback address so that nothing goes towards it.
    Park {
        /// The peer.
        peer: PublicKey,
        /// Why.
        reason: ParkReason,
    },
}

/// Where one peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the server to give its endpoint and say it holds ours.
    Wanted,
    /// Probing the peer's candidates (see [`super::probing`]); the public path waits.
    Probing,
    /// The peer holds our endpoint and starts WireGuard towards us; we wait for its handshake
    /// until `until`, then set `endpoint` ourselves.
    Yielding {
        /// The endpoint to set if the peer does not reach us.
        endpoint: SocketAddr,
        /// When the wait ends.
        until: Instant,
    },
    /// Kept silent until `until`, then wanted again.
    Parked {
        /// When parking ends.
        until: Instant,
    },
    /// Endpoint set (or our own address changed) at `since`; waiting for a WireGuard handshake
    /// or traffic from the peer until `until`.
    Verifying {
        /// The endpoint set.
        endpoint: SocketAddr,
        /// When it was set.
        since: Instant,
        /// When the wait ends.
        until: Instant,
        /// The path moved (ours or the peer's): WireGuard keeps its session, so traffic proves
        /// the new path, and nothing within the recovery wait means stale NAT state.
        moved: bool,
    },
    /// WireGuard has a working path.
    Connected,
    /// The endpoint was set but no handshake came: no direct path.
    NoHandshake {
        /// The endpoint that was tried.
        endpoint: SocketAddr,
        /// When the wait ended.
        since: Instant,
    },
}

#[derive(Debug, Clone)]
struct Tracked {
    state: State,
    /// The endpoint we last punched towards while waiting behind the barrier.
    punched: Option<SocketAddr>,
    /// Handshakes at or before this time do not count: they belong to a path that died.
    floor: Option<SystemTime>,
    /// Where the interface last said the peer is.
    endpoint: Option<SocketAddr>,
    /// The endpoint the server last gave for the peer: a different one later means it moved.
    told: Option<SocketAddr>,
    rx_bytes: u64,
    tx_bytes: u64,
    /// When the received bytes last grew.
    rx_changed: Instant,
    /// Reads in a row at which the received bytes grew.
    rx_streak: u32,
    /// A steady flow came from the peer (two reads in a row saw it), not a lone keepalive.
    flowing: bool,
    /// Reads at which the sent bytes grew since the received ones last did.
    tx_unanswered: u32,
    /// The current silence already made the path suspect once.
    suspected: bool,
    /// The next lookup of this peer confirms a punch towards its current endpoint.
    confirm: bool,
    /// The path moved and has not carried traffic since.
    moving: bool,
    /// The next lookups ask where this connected peer is: its path looks broken.
    ask: bool,
    /// The endpoint set is a candidate a probe answered on, not the public endpoint.
    candidate: Option<SocketAddr>,
}

/// The state of every peer of the interface.
#[derive(Debug)]
pub struct Peers {
    policy: PeerPolicy,
    peers: BTreeMap<PublicKey, Tracked>,
    actions: Vec<PeerAction>,
    /// Some connected path looks broken: the agent refreshes its registration.
    suspect: bool,
}

impl Peers {
    /// Starts from a first snapshot of the interface's peers, taken at `now` (`wall`).
    pub fn new(
        policy: PeerPolicy,
        snapshot: &[PeerSnapshot],
        now: Instant,
        wall: SystemTime,
    ) -> Self {
        let mut peers = Self {
            policy,
            peers: BTreeMap::new(),
            actions: Vec::new(),
            suspect: false,
        };
        peers.observe(snapshot, now, wall);
        peers
    }

    /// The policy in force.
    pub fn policy(&self) -> &PeerPolicy {
        &self.policy
    }

    /// The state of `peer`.
    pub fn state(&self, peer: &PublicKey) -> Option<State> {
        self.peers.get(peer).map(|t| t.state)
    }

    /// The states of every peer, in key order.
    pub fn states(&self) -> impl Iterator<Item = (PublicKey, State)> + '_ {
        self.peers.iter().map(|(k, t)| (*k, t.state))
    }

    /// Peers to ask the server about, each with whether we punched towards the endpoint it last
    /// gave us: those waiting behind the barrier, those waiting for a handshake (whose
    /// confirmations let the peer's barrier open), and connected peers that must confirm again
    /// after our own address changed. Consumes those one-time confirmations.
    pub fn take_wanted(&mut self) -> Vec<(PublicKey, bool)> {
        self.peers
            .iter_mut()
            .filter_map(|(k, t)| {
                let confirm = std::mem::take(&mut t.confirm);
                match t.state {
                    State::Wanted => Some((*k, t.punched.is_some() || confirm)),
                    State::Verifying { .. } | State::Yielding { .. } => Some((*k, true)),
                    State::Connected if confirm || t.ask => Some((*k, confirm)),
                    _ => None,
                }
            })
            .collect()
    }

    /// True when some peer waits behind the barrier or for a handshake: lookups are due.
    pub fn wants_lookups(&self) -> bool {
        self.peers.values().any(|t| {
            matches!(
                t.state,
                State::Wanted | State::Verifying { .. } | State::Yielding { .. }
            ) || t.confirm
                || t.ask
        })
    }

    /// Peers the server has not (yet) given, or that are parked before being asked again.
    pub fn unresolved(&self) -> Vec<PublicKey> {
        self.in_state(|s| matches!(s, State::Wanted | State::Parked { .. }))
    }

    /// Peers whose endpoint was set but with which no handshake happened, with that endpoint.
    pub fn without_handshake(&self) -> Vec<(PublicKey, SocketAddr)> {
        self.peers
            .iter()
            .filter_map(|(k, t)| match t.state {
                State::NoHandshake { endpoint, .. } | State::Verifying { endpoint, .. } => {
                    Some((*k, endpoint))
                }
                _ => None,
            })
            .collect()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// True when the interface has no peers.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// True when nothing is pending: every peer is connected or failed.
    pub fn is_settled(&self) -> bool {
        self.peers
            .values()
            .all(|t| matches!(t.state, State::Connected | State::NoHandshake { .. }))
    }

    /// True while some peer waits for a handshake, or has been punched towards and may reach us
    /// any moment, so the interface should be read often.
    pub fn expects_handshake(&self) -> bool {
        self.peers.values().any(|t| match t.state {
            State::Verifying { .. } | State::Yielding { .. } | State::Probing => true,
            State::Wanted => t.punched.is_some(),
            _ => false,
        })
    }

    /// The next time something changes without new input.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|t| match t.state {
                State::Parked { until }
                | State::Verifying { until, .. }
                | State::Yielding { until, .. } => Some(until),
                _ => None,
            })
            .min()
    }

    /// The next action for the IO layer.
    pub fn poll_action(&mut self) -> Option<PeerAction> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }

    /// True once after some connected path started to look broken: traffic to the peer gets no
    /// answer, or a steady flow from it stopped.
    pub fn take_suspect(&mut self) -> bool {
        std::mem::take(&mut self.suspect)
    }

    fn in_state(&self, f: fn(&State) -> bool) -> Vec<PublicKey> {
        self.peers
            .iter()
            .filter(|(_, t)| f(&t.state))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Our own public address changed: punch every connected peer again from the new mapping
    /// and confirm it, so that its barrier opens towards us, then watch the path for traffic.
    pub fn our_address_changed(&mut self, now: Instant, wall: SystemTime) {
        for (key, tracked) in &mut self.peers {
            let (State::Connected, Some(endpoint)) = (tracked.state, tracked.endpoint) else {
                continue;
            };
            self.actions.push(PeerAction::Punch {
                peer: *key,
                endpoint,
                first: true,
            });
            tracked.confirm = true;
            if self.policy.continuous {
                tracked.floor = Some(wall);
                tracked.moving = true;
                tracked.state = self.policy.verifying(endpoint, now, true);
            }
        }
    }

    /// Takes a fresh snapshot of the interface: notices handshakes, traffic, dead paths, new and
    /// removed peers, and the ends of waits.
    pub fn observe(&mut self, snapshot: &[PeerSnapshot], now: Instant, wall: SystemTime) {
        self.peers
            .retain(|k, _| snapshot.iter().any(|p| p.key == *k));
        for peer in snapshot {
            self.observe_one(peer, now, wall);
        }
    }

    fn observe_one(&mut self, peer: &PeerSnapshot, now: Instant, wall: SystemTime) {
        let policy = self.policy.clone();
        let floor = self.peers.get(&peer.key).and_then(|t| t.floor);
        let fresh = live_handshake(peer, wall, floor);
        if !self.peers.contains_key(&peer.key) {
            let state = match (fresh, peer.endpoint) {
                (true, _) => State::Connected,
                // A stale endpoint may be keeping a trap alive on the peer's NAT: go quiet first.
                (false, Some(_)) => self.park(peer.key, ParkReason::StaleAtStart, now, wall),
                (false, None) => State::Wanted,
            };
            self.peers.insert(
                peer.key,
                Tracked {
                    state,
                    punched: None,
                    floor: None,
                    endpoint: peer.endpoint,
                    told: None,
                    rx_bytes: peer.rx_bytes,
                    tx_bytes: peer.tx_bytes,
                    rx_changed: now,
                    rx_streak: 0,
                    flowing: false,
                    tx_unanswered: 0,
                    suspected: false,
                    confirm: false,
                    moving: false,
                    ask: false,
                    candidate: None,
                },
            );
        }
        let Some(tracked) = self.peers.get_mut(&peer.key) else {
            return;
        };
        let rx_grew = peer.rx_bytes != tracked.rx_bytes;
        let tx_grew = peer.tx_bytes != tracked.tx_bytes;
        tracked.rx_bytes = peer.rx_bytes;
        tracked.tx_bytes = peer.tx_bytes;
        tracked.endpoint = peer.endpoint;
        if rx_grew {
            // Growth at reads close together is a flow; a keepalive now and then is not.
            let close = now.saturating_duration_since(tracked.rx_changed) <= policy.suspect_after;
            tracked.rx_streak = if close {
                tracked.rx_streak.saturating_add(1)
            } else {
                1
            };
            tracked.rx_changed = now;
            tracked.flowing |= tracked.rx_streak >= 2;
            tracked.tx_unanswered = 0;
            tracked.suspected = false;
            tracked.ask = false;
        } else {
            tracked.rx_streak = 0;
            if tx_grew {
                tracked.tx_unanswered = tracked.tx_unanswered.saturating_add(1);
            }
        }
        let quiet = now.saturating_duration_since(tracked.rx_changed);
        let next = match tracked.state {
            // Traffic from the peer proves the path as well as a handshake: after a move,
            // WireGuard roams within its session and makes no new handshake.
            State::Verifying { .. } if fresh || rx_grew => Some(State::Connected),
            State::Wanted | State::Yielding { .. } | State::Probing if fresh => {
                // The peer reached us first: keep the endpoint WireGuard learned, but hold the
                // NAT mappings open from this side too.
                if peer.keepalive != Some(policy.keepalive) {
                    self.actions
                        .push(PeerAction::SetKeepalive { peer: peer.key });
                }
                Some(State::Connected)
            }
            State::Verifying {
                endpoint, until, ..
            } if now >= until && tracked.candidate == Some(endpoint) => {
                // The probe answered but the handshake never came: not the peer after all.
                self.actions.push(PeerAction::CandidateFailed {
                    peer: peer.key,
                    endpoint,
                });
                tracked.candidate = None;
                Some(State::Wanted)
            }
            State::Verifying {
                endpoint,
                until,
                moved,
                ..
            } if now >= until => {
                if policy.continuous {
                    let reason = if moved {
                        ParkReason::NoTrafficAfterMove
                    } else {
                        ParkReason::NoHandshake
                    };
                    Some(self.park(peer.key, reason, now, wall))
                } else {
                    Some(State::NoHandshake {
                        endpoint,
                        since: now,
                    })
                }
            }
            State::Yielding { endpoint, until } if now >= until => {
                // The peer did not reach us: start WireGuard from this side too.
                self.actions.push(PeerAction::SetEndpoint {
                    peer: peer.key,
                    endpoint,
                });
                let candidate = tracked.candidate == Some(endpoint);
                Some(policy.verifying_for(endpoint, now, tracked.moving, candidate))
            }
            State::Parked { until } if now >= until => Some(State::Wanted),
            State::Connected if policy.continuous => {
                if !fresh || quiet >= policy.silence_limit {
                    Some(self.park(peer.key, ParkReason::Silent, now, wall))
                } else {
                    // Our traffic gets no answer, or a steady flow from the peer stopped: a NAT
                    // on the way may have moved. A lone keepalive either way is neither.
                    let broken = tracked.tx_unanswered >= 2 || tracked.flowing;
                    if broken && quiet >= policy.suspect_after && !tracked.suspected {
                        // Ask where the peer is, too: if it moved, the answer says so even
                        // when no push reaches us (natpunch-go, or a lost datagram).
                        tracked.suspected = true;
                        tracked.flowing = false;
                        tracked.ask = true;
                        self.suspect = true;
                    }
                    None
                }
            }
            _ => None,
        };
        if let (Some(state), Some(tracked)) = (next, self.peers.get_mut(&peer.key)) {
            if state == State::Connected {
                // Connected from now on: silence is counted from here, and the path is proven,
                // so the handshake it has counts again.
                tracked.rx_changed = now;
                tracked.suspected = false;
                tracked.floor = None;
                tracked.moving = false;
                tracked.ask = false;
            }
            tracked.state = state;
        }
    }

    fn park(
        &mut self,
        peer: PublicKey,
        reason: ParkReason,
        now: Instant,
        wall: SystemTime,
    ) -> State {
        self.actions.push(PeerAction::Park { peer, reason });
        if let Some(tracked) = self.peers.get_mut(&peer) {
            tracked.punched = None;
            tracked.floor = Some(wall);
            tracked.confirm = false;
            tracked.moving = false;
            tracked.ask = false;
            tracked.candidate = None;
        }
        State::Parked {
            until: now + self.policy.park_time,
        }
    }

    /// A wanted peer's candidates are being probed: the server's answer `endpoint` (the public
    /// path) waits until the round ends.
    pub fn start_probing(&mut self, peer: PublicKey, endpoint: SocketAddr) {
        if let Some(tracked) = self.peers.get_mut(&peer) {
            if matches!(tracked.state, State::Wanted) {
                tracked.told = Some(endpoint);
                tracked.state = State::Probing;
            }
        }
    }

    /// The probe round of `peer` ended without an answer: the public path's turn.
    pub fn probing_failed(&mut self, peer: &PublicKey) {
        if let Some(tracked) = self.peers.get_mut(peer) {
            if matches!(tracked.state, State::Probing) {
                tracked.state = State::Wanted;
            }
        }
    }

    /// A probe to `endpoint`, one of the peer's candidates, was answered: use it. A wanted or
    /// probing peer gets it as its endpoint (after the yield, for the side with the higher key);
    /// a connected one moves to it (WireGuard keeps its session, and roams back should the
    /// peer's packets keep coming from elsewhere).
    ///
    /// `peer_wait` bounds how long the side with the higher key yields here: on a path the probes
    /// just measured, the peer's handshake comes within a few round trips or not at all.
    pub fn on_candidate(
        &mut self,
        peer: PublicKey,
        endpoint: SocketAddr,
        peer_wait: Duration,
        now: Instant,
    ) {
        let policy = self.policy.clone();
        let Some(tracked) = self.peers.get_mut(&peer) else {
            return;
        };
        match tracked.state {
            State::Wanted | State::Probing => {
                tracked.candidate = Some(endpoint);
                if policy.own_key.is_some_and(|own| own > peer) {
                    tracked.state = State::Yielding {
                        endpoint,
                        until: now + policy.yield_time.min(peer_wait),
                    };
                } else {
                    self.actions
                        .push(PeerAction::SetEndpoint { peer, endpoint });
                    tracked.state = policy.verifying_for(endpoint, now, false, true);
                }
            }
            State::Connected if tracked.endpoint != Some(endpoint) => {
                tracked.candidate = Some(endpoint);
                self.actions
                    .push(PeerAction::SetEndpoint { peer, endpoint });
            }
            _ => {}
        }
    }

    /// No direct path to `peer` can work (our NAT and its both map each destination to their own
    /// port): stop waiting for it, as if its handshake had not come. Only for a peer the server
    /// has given an endpoint and that is not on a candidate path or connected; returns whether it
    /// was stopped.
    pub fn no_direct_path(&mut self, peer: &PublicKey, now: Instant) -> bool {
        let Some(tracked) = self.peers.get_mut(peer) else {
            return false;
        };
        let Some(endpoint) = tracked.told else {
            return false;
        };
        if tracked.candidate.is_some() {
            return false;
        }
        match tracked.state {
            State::Wanted | State::Yielding { .. } | State::Verifying { .. } => {
                tracked.state = State::NoHandshake {
                    endpoint,
                    since: now,
                };
                true
            }
            _ => false,
        }
    }

    /// The candidate path of `peer`, if its endpoint is one.
    pub fn candidate_path(&self, peer: &PublicKey) -> Option<SocketAddr> {
        self.peers.get(peer).and_then(|t| t.candidate)
    }

    /// The endpoint the server last gave for `peer`.
    pub fn told(&self, peer: &PublicKey) -> Option<SocketAddr> {
        self.peers.get(peer).and_then(|t| t.told)
    }

    /// Choose `peer`'s path again (our addresses or its candidates changed under a candidate
    /// path): it is wanted again, and WireGuard keeps its session meanwhile.
    pub fn rechoose(&mut self, peer: &PublicKey) {
        if let Some(tracked) = self.peers.get_mut(peer) {
            if tracked.candidate.take().is_some()
                && matches!(
                    tracked.state,
                    State::Connected | State::Verifying { .. } | State::Yielding { .. }
                )
            {
                tracked.state = State::Wanted;
                tracked.punched = None;
            }
        }
    }

    /// Handles the server's answer (or push) for `peer`: its endpoint, and whether it holds ours.
    /// `current` is the peer as the interface shows it right now.
    pub fn on_resolved(
        &mut self,
        peer: PublicKey,
        endpoint: SocketAddr,
        peer_has_yours: bool,
        current: &PeerSnapshot,
        now: Instant,
        wall: SystemTime,
    ) {
        let policy = self.policy.clone();
        let Some(tracked) = self.peers.get_mut(&peer) else {
            return;
        };
        let told = tracked.told.replace(endpoint);
        let moved = told.is_some_and(|t| t != endpoint) && current.endpoint != Some(endpoint);
        if let Some(candidate) = tracked.candidate {
            // On a candidate path the public endpoint does not matter while the path works.
            // When it looks broken and the peer moved, choose again.
            if matches!(tracked.state, State::Connected)
                && policy.continuous
                && moved
                && tracked.ask
            {
                tracked.candidate = None;
                tracked.state = State::Wanted;
                tracing::debug!(peer = %peer, %candidate, "candidate path broken: choosing again");
            }
            if !matches!(tracked.state, State::Wanted) {
                return;
            }
        }
        match tracked.state {
            State::Wanted | State::Yielding { .. } => {}
            State::Probing => return,
            // Continuous mode follows a peer that moved: its NAT remapped, or its address changed.
            State::Connected | State::Verifying { .. } if policy.continuous && moved => {
                let first = tracked.punched != Some(endpoint);
                self.actions.push(PeerAction::Punch {
                    peer,
                    endpoint,
                    first,
                });
                tracked.punched = Some(endpoint);
                tracked.floor = Some(wall);
                tracked.moving = true;
                tracked.candidate = None;
                if peer_has_yours {
                    self.actions
                        .push(PeerAction::SetEndpoint { peer, endpoint });
                    tracked.state = policy.verifying(endpoint, now, true);
                } else {
                    tracked.state = State::Wanted;
                }
                return;
            }
            _ => return,
        }
        if live_handshake(current, wall, tracked.floor) {
            // The peer reached us first: WireGuard has a path; keep its endpoint.
            if current.keepalive != Some(policy.keepalive) {
                self.actions.push(PeerAction::SetKeepalive { peer });
            }
            tracked.state = State::Connected;
            tracked.rx_changed = now;
            return;
        }
        let first = tracked.punched != Some(endpoint);
        self.actions.push(PeerAction::Punch {
            peer,
            endpoint,
            first,
        });
        tracked.punched = Some(endpoint);
        tracked.candidate = None;
        let yields = policy.own_key.is_some_and(|own| own > peer);
        if peer_has_yours && yields {
            if !matches!(tracked.state, State::Yielding { endpoint: e, .. } if e == endpoint) {
                tracked.state = State::Yielding {
                    endpoint,
                    until: now + policy.yield_time,
                };
            }
        } else if peer_has_yours {
            self.actions
                .push(PeerAction::SetEndpoint { peer, endpoint });
            tracked.state = policy.verifying(endpoint, now, tracked.moving);
        }
    }
}

/// True when the peer has a handshake younger than 180 s that is newer than `floor`.
fn live_handshake(peer: &PeerSnapshot, wall: SystemTime, floor: Option<SystemTime>) -> bool {
    peer.has_fresh_handshake(wall)
        && floor.is_none_or(|f| peer.last_handshake.is_some_and(|t| t > f))
}
#[cfg(test)]
mod tests {
    use super::*;

    const A: PublicKey = PublicKey([1; 32]);

    fn peer(endpoint: Option<&str>, handshake_ago: Option<u64>, rx_bytes: u64) -> PeerSnapshot {
        PeerSnapshot {
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            last_handshake: handshake_ago.map(|s| SystemTime::now() - Duration::from_secs(s)),
            rx_bytes,
            ..PeerSnapshot::new(A)
        }
    }

    /// A machine whose one peer A has no endpoint and no handshake yet.
    fn waiting(continuous: bool, now: Instant) -> Peers {
        Peers::new(
            policy(continuous),
            &[peer(None, None, 0)],
            now,
            SystemTime::now(),
        )
    }

    fn endpoint() -> SocketAddr {
        "198.51.100.10:51820".parse().unwrap()
    }

    fn actions(peers: &mut Peers) -> Vec<PeerAction> {
        std::iter::from_fn(|| peers.poll_action()).collect()
    }

    /// The server's answer about A (at `endpoint()`), with A as `view` shows it.
    fn answer(peers: &mut Peers, peer_has_yours: bool, view: &PeerSnapshot, now: Instant) {
        peers.on_resolved(A, endpoint(), peer_has_yours, view, now, SystemTime::now());
    }

    fn policy(continuous: bool) -> PeerPolicy {
        PeerPolicy::new(continuous, 25, Duration::from_secs(15))
    }

    #[test]
    fn punches_first_and_sets_the_endpoint_only_once_the_peer_holds_ours() {
        let now = Instant::now();
        let mut peers = waiting(false, now);
        assert_eq!(peers.take_wanted(), vec![(A, false)]);
        answer(&mut peers, false, &peer(None, None, 0), now);
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Punch {
                peer: A,
                endpoint: endpoint(),
                first: true
            }]
        );
        assert_eq!(
            peers.state(&A),
            Some(State::Wanted),
            "still waiting behind the barrier"
        );
        assert_eq!(
            peers.take_wanted(),
            vec![(A, true)],
            "the next lookup confirms the punch"
        );
        answer(&mut peers, true, &peer(None, None, 0), now);
        assert_eq!(
            actions(&mut peers),
            vec![
                PeerAction::Punch {
                    peer: A,
                    endpoint: endpoint(),
                    first: false
                },
                PeerAction::SetEndpoint {
                    peer: A,
                    endpoint: endpoint()
                }
            ]
        );
        assert!(matches!(peers.state(&A), Some(State::Verifying { .. })));
        assert!(!peers.is_settled());
        assert_eq!(
            peers.take_wanted(),
            vec![(A, true)],
            "keeps confirming while verifying"
        );
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(0), 92)],
            now + Duration::from_secs(1),
            SystemTime::now(),
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
        assert!(peers.is_settled());
    }

    #[test]
    fn a_candidate_path_is_set_at_once_or_after_a_yield_bounded_by_its_round_trips() {
        let now = Instant::now();
        let lan: SocketAddr = "10.0.0.3:51820".parse().unwrap();
        let mut lower = waiting(false, now);
        lower.on_candidate(A, lan, Duration::from_millis(200), now);
        assert_eq!(
            actions(&mut lower),
            vec![PeerAction::SetEndpoint {
                peer: A,
                endpoint: lan
            }],
            "with no key of ours to compare, nobody yields"
        );

        let mut policy = policy(false);
        policy.own_key = Some(PublicKey([9; 32]));
        let mut higher = Peers::new(policy, &[peer(None, None, 0)], now, SystemTime::now());
        higher.on_candidate(A, lan, Duration::from_millis(200), now);
        assert!(actions(&mut higher).is_empty(), "the higher key yields");
        assert_eq!(
            higher.next_deadline(),
            Some(now + Duration::from_millis(200)),
            "for the measured wait, not the whole yield time"
        );
    }

    #[test]
    fn a_peer_without_a_direct_path_is_given_up_once_its_endpoint_is_known() {
        let now = Instant::now();
        let mut peers = waiting(false, now);
        assert!(!peers.no_direct_path(&A, now), "nothing told yet");
        answer(&mut peers, false, &peer(None, None, 0), now);
        assert!(peers.no_direct_path(&A, now));
        assert_eq!(
            peers.state(&A),
            Some(State::NoHandshake {
                endpoint: endpoint(),
                since: now
            })
        );
        assert!(peers.is_settled());
        assert_eq!(peers.without_handshake(), vec![(A, endpoint())]);
        assert!(!peers.no_direct_path(&A, now), "only once");
    }

    #[test]
    fn no_handshake_within_the_wait_is_reported_not_resolved() {
        let now = Instant::now();
        let mut peers = waiting(false, now);
        answer(&mut peers, true, &peer(None, None, 0), now);
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), None, 0)],
            now + Duration::from_secs(14),
            SystemTime::now(),
        );
        assert!(matches!(peers.state(&A), Some(State::Verifying { .. })));
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), None, 0)],
            now + Duration::from_secs(15),
            SystemTime::now(),
        );
        assert!(matches!(peers.state(&A), Some(State::NoHandshake { .. })));
        assert!(peers.is_settled());
        assert_eq!(peers.without_handshake(), vec![(A, endpoint())]);
    }

    #[test]
    fn a_peer_that_reached_us_first_keeps_its_endpoint_and_gets_the_keepalive() {
        let now = Instant::now();
        let mut peers = waiting(false, now);
        answer(
            &mut peers,
            true,
            &peer(Some("198.51.100.10:51820"), Some(1), 92),
            now,
        );
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::SetKeepalive { peer: A }]
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
    }

    #[test]
    fn a_waiting_peer_that_connects_by_itself_gets_the_keepalive() {
        let now = Instant::now();
        let mut peers = waiting(false, now);
        answer(&mut peers, false, &peer(None, None, 0), now);
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Punch {
                peer: A,
                endpoint: endpoint(),
                first: true
            }]
        );
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(0), 92)],
            now,
            SystemTime::now(),
        );
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::SetKeepalive { peer: A }]
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
    }

    #[test]
    fn a_stale_endpoint_is_parked_before_anything_else() {
        let now = Instant::now();
        let mut peers = Peers::new(
            policy(false),
            &[peer(Some("198.51.100.10:51820"), Some(600), 5)],
            now,
            SystemTime::now(),
        );
        assert!(matches!(peers.state(&A), Some(State::Parked { .. })));
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Park {
                peer: A,
                reason: ParkReason::StaleAtStart
            }]
        );
        peers.observe(
            &[peer(Some("127.0.0.1:51820"), Some(600), 5)],
            now + Duration::from_secs(35),
            SystemTime::now(),
        );
        assert_eq!(peers.state(&A), Some(State::Wanted));
    }

    #[test]
    fn continuous_mode_parks_a_silent_path_then_asks_again() {
        let now = Instant::now();
        let policy = policy(true);
        let (silence, park) = (policy.silence_limit, policy.park_time);
        let mut peers = Peers::new(
            policy,
            &[peer(Some("198.51.100.10:51820"), Some(5), 100)],
            now,
            SystemTime::now(),
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
        // Bytes keep arriving: still connected.
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(5), 200)],
            now + silence / 2,
            SystemTime::now(),
        );
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(5), 300)],
            now + silence,
            SystemTime::now(),
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
        // Then nothing for the whole silence limit, though the handshake is still under 180 s.
        let later = now + silence * 2 + Duration::from_secs(1);
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(60), 300)],
            later,
            SystemTime::now(),
        );
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Park {
                peer: A,
                reason: ParkReason::Silent
            }]
        );
        assert!(matches!(peers.state(&A), Some(State::Parked { .. })));
        peers.observe(
            &[peer(Some("127.0.0.1:51820"), Some(60), 300)],
            later + park,
            SystemTime::now(),
        );
        assert_eq!(peers.state(&A), Some(State::Wanted));
    }

    #[test]
    fn after_parking_only_a_new_handshake_counts() {
        let now = Instant::now();
        let policy = policy(true);
        let (silence, park) = (policy.silence_limit, policy.park_time);
        let start = SystemTime::now();
        let mut peers = Peers::new(
            policy,
            &[peer(Some("198.51.100.10:51820"), Some(5), 100)],
            now,
            start,
        );
        let later = now + silence + Duration::from_secs(1);
        // Silent, though the last handshake (made before the path died) is under 180 s old.
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(5), 100)],
            later,
            start,
        );
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Park {
                peer: A,
                reason: ParkReason::Silent
            }]
        );
        peers.observe(
            &[peer(Some("127.0.0.1:51820"), Some(5), 100)],
            later + park,
            start,
        );
        assert_eq!(
            peers.state(&A),
            Some(State::Wanted),
            "the old handshake must not count"
        );
        peers.on_resolved(
            A,
            endpoint(),
            true,
            &peer(Some("127.0.0.1:51820"), Some(5), 100),
            later + park,
            start,
        );
        assert!(matches!(peers.state(&A), Some(State::Verifying { .. })));
        // A handshake after the park does count.
        let new = peer(Some("198.51.100.10:51820"), Some(0), 200);
        peers.observe(
            &[PeerSnapshot {
                last_handshake: Some(start + Duration::from_secs(1)),
                ..new
            }],
            later + park,
            start + Duration::from_secs(2),
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
    }

    #[test]
    fn one_shot_mode_leaves_connected_peers_alone() {
        let now = Instant::now();
        let mut peers = Peers::new(
            policy(false),
            &[peer(Some("198.51.100.10:51820"), Some(5), 100)],
            now,
            SystemTime::now(),
        );
        peers.observe(
            &[peer(Some("198.51.100.10:51820"), Some(500), 100)],
            now + Duration::from_secs(500),
            SystemTime::now(),
        );
        assert_eq!(peers.state(&A), Some(State::Connected));
        assert!(actions(&mut peers).is_empty());
    }

    fn at(endpoint: &str, rx_bytes: u64, tx_bytes: u64) -> PeerSnapshot {
        PeerSnapshot {
            tx_bytes,
            ..peer(Some(endpoint), Some(5), rx_bytes)
        }
    }

    /// The interface shows A as `view` at `now`.
    fn see(peers: &mut Peers, view: PeerSnapshot, now: Instant) {
        peers.observe(&[view], now, SystemTime::now());
    }

    fn moved() -> SocketAddr {
        "198.51.100.10:41000".parse().unwrap()
    }

    /// A continuous machine with A connected at `endpoint()`, which the server told us.
    fn connected_continuous(now: Instant) -> Peers {
        let mut peers = waiting(true, now);
        answer(&mut peers, true, &peer(None, None, 0), now);
        see(&mut peers, at("198.51.100.10:51820", 100, 100), now);
        assert_eq!(peers.state(&A), Some(State::Connected));
        actions(&mut peers);
        peers
    }

    #[test]
    fn continuous_mode_follows_a_peer_that_moved_behind_the_barrier() {
        let now = Instant::now();
        let mut peers = connected_continuous(now);
        let current = at("198.51.100.10:51820", 100, 100);
        peers.on_resolved(A, moved(), false, &current, now, SystemTime::now());
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Punch {
                peer: A,
                endpoint: moved(),
                first: true
            }],
            "punch towards the new endpoint, do not send WireGuard there yet"
        );
        assert_eq!(peers.state(&A), Some(State::Wanted));
        assert_eq!(peers.take_wanted(), vec![(A, true)], "confirm the punch");
        peers.on_resolved(A, moved(), true, &current, now, SystemTime::now());
        assert_eq!(
            actions(&mut peers),
            vec![
                PeerAction::Punch {
                    peer: A,
                    endpoint: moved(),
                    first: false
                },
                PeerAction::SetEndpoint {
                    peer: A,
                    endpoint: moved()
                },
            ]
        );
        assert!(matches!(
            peers.state(&A),
            Some(State::Verifying { moved: true, .. })
        ));
        // WireGuard roams within its session: traffic, not a handshake, proves the new path.
        let later = now + Duration::from_millis(300);
        see(&mut peers, at("198.51.100.10:41000", 200, 200), later);
        assert_eq!(peers.state(&A), Some(State::Connected));
    }

    #[test]
    fn one_shot_mode_ignores_a_move_of_a_connected_peer() {
        let now = Instant::now();
        let mut peers = waiting(false, now);
        answer(&mut peers, true, &peer(None, None, 0), now);
        see(&mut peers, at("198.51.100.10:51820", 100, 100), now);
        actions(&mut peers);
        let current = at("198.51.100.10:51820", 100, 100);
        peers.on_resolved(A, moved(), true, &current, now, SystemTime::now());
        assert!(actions(&mut peers).is_empty());
        assert_eq!(peers.state(&A), Some(State::Connected));
    }

    #[test]
    fn after_our_address_changed_peers_are_punched_confirmed_and_watched() {
        let now = Instant::now();
        let mut peers = connected_continuous(now);
        peers.our_address_changed(now, SystemTime::now());
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Punch {
                peer: A,
                endpoint: endpoint(),
                first: true
            }]
        );
        assert_eq!(peers.take_wanted(), vec![(A, true)]);
        assert!(matches!(
            peers.state(&A),
            Some(State::Verifying { moved: true, .. })
        ));
        // Traffic comes back: connected again, nothing parked.
        let later = now + Duration::from_secs(1);
        see(&mut peers, at("198.51.100.10:51820", 300, 300), later);
        assert_eq!(peers.state(&A), Some(State::Connected));
        assert!(actions(&mut peers).is_empty());
    }

    #[test]
    fn a_moved_path_that_stays_silent_is_parked_saying_why() {
        let now = Instant::now();
        let mut peers = connected_continuous(now);
        let wait = peers.policy().recovery_wait;
        peers.our_address_changed(now, SystemTime::now());
        actions(&mut peers);
        see(&mut peers, at("198.51.100.10:51820", 100, 900), now + wait);
        assert_eq!(
            actions(&mut peers),
            vec![PeerAction::Park {
                peer: A,
                reason: ParkReason::NoTrafficAfterMove
            }]
        );
        assert!(matches!(peers.state(&A), Some(State::Parked { .. })));
    }

    #[test]
    fn traffic_without_answers_makes_the_path_suspect_once() {
        let now = Instant::now();
        let mut peers = connected_continuous(now);
        let mut tx = 100;
        for i in 1..=4 {
            tx += 100;
            see(
                &mut peers,
                at("198.51.100.10:51820", 100, tx),
                now + Duration::from_secs(i),
            );
        }
        assert!(peers.take_suspect(), "sending for 4 s with nothing back");
        see(
            &mut peers,
            at("198.51.100.10:51820", 100, tx + 100),
            now + Duration::from_secs(5),
        );
        assert!(!peers.take_suspect(), "once per silence");
    }

    #[test]
    fn a_steady_flow_that_stops_makes_the_path_suspect_but_lone_keepalives_do_not() {
        let now = Instant::now();
        let mut peers = connected_continuous(now);
        // Keepalives both ways every 25 s: never suspect.
        for i in 1..=8u64 {
            see(
                &mut peers,
                at("198.51.100.10:51820", 100 + 32 * i, 100 + 32 * i),
                now + Duration::from_secs(25 * i),
            );
            see(
                &mut peers,
                at("198.51.100.10:51820", 100 + 32 * i, 100 + 32 * i),
                now + Duration::from_secs(25 * i + 3),
            );
            assert!(!peers.take_suspect(), "keepalive {i}");
        }
        let t = now + Duration::from_secs(300);
        let (mut rx, mut step) = (1000, 0);
        for s in 0..3u64 {
            rx += 84;
            step = s;
            see(
                &mut peers,
                at("198.51.100.10:51820", rx, 5000),
                t + Duration::from_secs(s),
            );
        }
        assert!(!peers.take_suspect());
        see(
            &mut peers,
            at("198.51.100.10:51820", rx, 5000),
            t + Duration::from_secs(step + 1),
        );
        assert!(!peers.take_suspect(), "one quiet second is not yet suspect");
        see(
            &mut peers,
            at("198.51.100.10:51820", rx, 5000),
            t + Duration::from_secs(step + 2),
        );
        assert!(peers.take_suspect(), "a steady flow stopped for 2 s");
    }
}
