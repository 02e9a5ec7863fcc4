//! What the client does for each WireGuard peer, as a state machine without IO.
//!
//! It takes snapshots of the interface ([`Peers::observe`]) and the server's answers
//! ([`Peers::on_resolved`]), and hands out [`Action`]s for the IO layer: punch our own NAT open
//! towards a peer, set its endpoint, set its keepalive, or park it.
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
//! us, because it punches as soon as it learns our endpoint. When a path dies anyway (a NAT
//! remapped us), both sides *park* the peer for a while, pointing its endpoint at our own loopback
//! address. With nobody sending, stale conntrack entries on both NATs expire, and the barrier
//! runs again.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::keys::PublicKey;

use crate::iface::Peer;

/// How the peer state machine behaves.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    /// Keep watching peers after they connected (continuous mode).
    pub continuous: bool,
    /// Persistent keepalive set on peers.
    pub keepalive: u16,
    /// How long to wait for a WireGuard handshake after setting an endpoint.
    pub handshake_timeout: Duration,
    /// Continuous mode: a connected peer from which nothing was received for this long has lost
    /// its path (its keepalives would have arrived).
    pub silence_limit: Duration,
    /// How long a peer stays parked: longer than a NAT keeps an unanswered UDP mapping (30 s on
    /// Linux).
    pub park_time: Duration,
    /// Continuous mode: how long after a failed handshake to try the peer again.
    pub retry_after: Duration,
}

impl PeerPolicy {
    /// The defaults for a keepalive of `keepalive` seconds.
    pub fn new(continuous: bool, keepalive: u16, handshake_timeout: Duration) -> Self {
        Self {
            continuous,
            keepalive,
            handshake_timeout,
            silence_limit: Duration::from_secs(u64::from(keepalive) * 2 + 10),
            park_time: Duration::from_secs(35),
            retry_after: Duration::from_secs(60),
        }
    }
}

/// Something the IO layer must do to the interface or the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
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
    /// Point the peer's endpoint at our own loopback address so that nothing goes towards it.
    Park {
        /// The peer.
        peer: PublicKey,
    },
}

/// Where one peer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for the server to give its endpoint and say it holds ours.
    Wanted,
    /// Kept silent until `until`, then wanted again.
    Parked {
        /// When parking ends.
        until: Instant,
    },
    /// Endpoint set at `since`; waiting for a WireGuard handshake.
    Verifying {
        /// The endpoint set.
        endpoint: SocketAddr,
        /// When it was set.
        since: Instant,
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
    rx_bytes: u64,
    rx_changed: Instant,
}

/// The state of every peer of the interface.
#[derive(Debug)]
pub struct Peers {
    policy: PeerPolicy,
    peers: BTreeMap<PublicKey, Tracked>,
    actions: Vec<Action>,
}

impl Peers {
    /// Starts from a first snapshot of the interface, taken at `now`.
    pub fn new(policy: PeerPolicy, snapshot: &[Peer], now: Instant, wall: SystemTime) -> Self {
        let mut peers = Self {
            policy,
            peers: BTreeMap::new(),
            actions: Vec::new(),
        };
        peers.observe(snapshot, now, wall);
        peers
    }

    /// The state of `peer`.
    pub fn state(&self, peer: &PublicKey) -> Option<State> {
        self.peers.get(peer).map(|t| t.state)
    }

    /// Peers to ask the server about, each with whether we punched towards the endpoint it last
    /// gave us: those waiting behind the barrier, and those waiting for a handshake (whose
    /// confirmations let the peer's barrier open).
    pub fn wanted(&self) -> impl Iterator<Item = (PublicKey, bool)> + '_ {
        self.peers.iter().filter_map(|(k, t)| match t.state {
            State::Wanted => Some((*k, t.punched.is_some())),
            State::Verifying { .. } => Some((*k, true)),
            _ => None,
        })
    }

    /// Peers the server has not (yet) given, or that are parked before being asked again.
    pub fn unresolved(&self) -> impl Iterator<Item = PublicKey> + '_ {
        self.in_state(|s| matches!(s, State::Wanted | State::Parked { .. }))
    }

    /// Peers whose endpoint was set but with which no handshake happened, with that endpoint.
    pub fn without_handshake(&self) -> impl Iterator<Item = (PublicKey, SocketAddr)> + '_ {
        self.peers.iter().filter_map(|(k, t)| match t.state {
            State::NoHandshake { endpoint, .. } | State::Verifying { endpoint, .. } => {
                Some((*k, endpoint))
            }
            _ => None,
        })
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

    /// True while some peer waits for a handshake or the end of its parking, so the interface
    /// should be watched closely.
    pub fn is_busy(&self) -> bool {
        self.peers
            .values()
            .any(|t| matches!(t.state, State::Verifying { .. } | State::Parked { .. }))
    }

    /// The next time something changes without new input.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .values()
            .filter_map(|t| match t.state {
                State::Parked { until } => Some(until),
                State::Verifying { since, .. } => Some(since + self.policy.handshake_timeout),
                State::NoHandshake { since, .. } if self.policy.continuous => {
                    Some(since + self.policy.retry_after)
                }
                _ => None,
            })
            .min()
    }

    /// The next action for the IO layer.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.actions.is_empty() {
            None
        } else {
            Some(self.actions.remove(0))
        }
    }

    fn in_state(&self, f: fn(&State) -> bool) -> impl Iterator<Item = PublicKey> + '_ {
        self.peers
            .iter()
            .filter(move |(_, t)| f(&t.state))
            .map(|(k, _)| *k)
    }

    /// Takes a fresh snapshot of the interface: notices handshakes, dead paths, new and removed
    /// peers, and the ends of waits.
    pub fn observe(&mut self, snapshot: &[Peer], now: Instant, wall: SystemTime) {
        self.peers
            .retain(|k, _| snapshot.iter().any(|p| p.key == *k));
        for peer in snapshot {
            let floor = self.peers.get(&peer.key).and_then(|t| t.floor);
            let fresh = live_handshake(peer, wall, floor);
            if !self.peers.contains_key(&peer.key) {
                let state = match (fresh, peer.endpoint) {
                    (true, _) => State::Connected,
                    // A stale endpoint may be keeping a trap alive on the peer's NAT: go quiet first.
                    (false, Some(_)) => self.park(peer.key, now, wall),
                    (false, None) => State::Wanted,
                };
                self.peers.insert(
                    peer.key,
                    Tracked {
                        state,
                        punched: None,
                        floor: None,
                        rx_bytes: peer.rx_bytes,
                        rx_changed: now,
                    },
                );
            }
            let Some(tracked) = self.peers.get_mut(&peer.key) else {
                continue;
            };
            if tracked.rx_bytes != peer.rx_bytes {
                tracked.rx_bytes = peer.rx_bytes;
                tracked.rx_changed = now;
            }
            let next = match tracked.state {
                State::Verifying { .. } if fresh => Some(State::Connected),
                State::Wanted if fresh => {
                    // The peer reached us first: keep the endpoint WireGuard learned, but hold the
                    // NAT mappings open from this side too.
                    if peer.keepalive != Some(self.policy.keepalive) {
                        self.actions.push(Action::SetKeepalive { peer: peer.key });
                    }
                    Some(State::Connected)
                }
                State::Verifying { endpoint, since }
                    if now >= since + self.policy.handshake_timeout =>
                {
                    Some(State::NoHandshake {
                        endpoint,
                        since: now,
                    })
                }
                State::Parked { until } if now >= until => Some(State::Wanted),
                State::Connected if self.policy.continuous => {
                    let silent = now.saturating_duration_since(tracked.rx_changed)
                        >= self.policy.silence_limit;
                    (!fresh || silent).then(|| self.park(peer.key, now, wall))
                }
                State::NoHandshake { since, .. }
                    if self.policy.continuous && now >= since + self.policy.retry_after =>
                {
                    Some(self.park(peer.key, now, wall))
                }
                _ => None,
            };
            if let (Some(state), Some(tracked)) = (next, self.peers.get_mut(&peer.key)) {
                if state == State::Connected {
                    // Connected from now on: silence is counted from here.
                    tracked.rx_changed = now;
                }
                tracked.state = state;
            }
        }
    }

    fn park(&mut self, peer: PublicKey, now: Instant, wall: SystemTime) -> State {
        self.actions.push(Action::Park { peer });
        if let Some(tracked) = self.peers.get_mut(&peer) {
            tracked.punched = None;
            tracked.floor = Some(wall);
        }
        State::Parked {
            until: now + self.policy.park_time,
        }
    }

    /// Handles the server's answer for `peer`: its endpoint, and whether it holds ours. `current`
    /// is the peer as the interface shows it right now.
    #[allow(clippy::too_many_arguments)]
    pub fn on_resolved(
        &mut self,
        peer: PublicKey,
        endpoint: SocketAddr,
        peer_has_yours: bool,
        current: &Peer,
        now: Instant,
        wall: SystemTime,
    ) {
        let keepalive = self.policy.keepalive;
        let Some(tracked) = self.peers.get_mut(&peer) else {
            return;
        };
        if tracked.state != State::Wanted {
            return;
        }
        if live_handshake(current, wall, tracked.floor) {
            // The peer reached us first: WireGuard has a path; keep its endpoint.
            if current.keepalive != Some(keepalive) {
                self.actions.push(Action::SetKeepalive { peer });
            }
            tracked.state = State::Connected;
            tracked.rx_changed = now;
            return;
        }
        let first = tracked.punched != Some(endpoint);
        self.actions.push(Action::Punch {
            peer,
            endpoint,
            first,
        });
        tracked.punched = Some(endpoint);
        if peer_has_yours {
            self.actions.push(Action::SetEndpoint { peer, endpoint });
            tracked.state = State::Verifying {
                endpoint,
                since: now,
            };
        }
    }
}

/// True when the peer has a handshake younger than 180 s that is newer than `floor`.
fn live_handshake(peer: &Peer, wall: SystemTime, floor: Option<SystemTime>) -> bool {
    peer.has_fresh_handshake(wall)
        && floor.is_none_or(|f| peer.last_handshake.is_some_and(|t| t > f))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: PublicKey = PublicKey([1; 32]);

    fn peer(endpoint: Option<&str>, handshake_ago: Option<u64>, rx_bytes: u64) -> Peer {
        Peer {
            key: A,
            endpoint: endpoint.map(|e| e.parse().unwrap()),
            keepalive: None,
            last_handshake: handshake_ago.map(|s| SystemTime::now() - Duration::from_secs(s)),
            rx_bytes,
            allowed_ips: vec![],
        }
    }

    fn endpoint() -> SocketAddr {
        "198.51.100.10:51820".parse().unwrap()
    }

    fn actions(peers: &mut Peers) -> Vec<Action> {
        std::iter::from_fn(|| peers.poll_action()).collect()
    }

    /// The server's answer about A (at `endpoint()`), with A as `view` shows it.
    fn answer(peers: &mut Peers, peer_has_yours: bool, view: &Peer, now: Instant) {
        peers.on_resolved(A, endpoint(), peer_has_yours, view, now, SystemTime::now());
    }

    fn policy(continuous: bool) -> PeerPolicy {
        PeerPolicy::new(continuous, 25, Duration::from_secs(15))
    }

    #[test]
    fn punches_first_and_sets_the_endpoint_only_once_the_peer_holds_ours() {
        let now = Instant::now();
        let mut peers = Peers::new(
            policy(false),
            &[peer(None, None, 0)],
            now,
            SystemTime::now(),
        );
        assert_eq!(peers.wanted().collect::<Vec<_>>(), vec![(A, false)]);
        answer(&mut peers, false, &peer(None, None, 0), now);
        assert_eq!(
            actions(&mut peers),
            vec![Action::Punch {
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
            peers.wanted().collect::<Vec<_>>(),
            vec![(A, true)],
            "the next lookup confirms the punch"
        );
        answer(&mut peers, true, &peer(None, None, 0), now);
        assert_eq!(
            actions(&mut peers),
            vec![
                Action::Punch {
                    peer: A,
                    endpoint: endpoint(),
                    first: false
                },
                Action::SetEndpoint {
                    peer: A,
                    endpoint: endpoint()
                }
            ]
        );
        assert!(matches!(peers.state(&A), Some(State::Verifying { .. })));
        assert!(!peers.is_settled());
        assert_eq!(
            peers.wanted().collect::<Vec<_>>(),
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
    fn no_handshake_within_the_wait_is_reported_not_resolved() {
        let now = Instant::now();
        let mut peers = Peers::new(
            policy(false),
            &[peer(None, None, 0)],
            now,
            SystemTime::now(),
        );
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
        assert_eq!(
            peers.without_handshake().collect::<Vec<_>>(),
            vec![(A, endpoint())]
        );
    }

    #[test]
    fn a_peer_that_reached_us_first_keeps_its_endpoint_and_gets_the_keepalive() {
        let now = Instant::now();
        let mut peers = Peers::new(
            policy(false),
            &[peer(None, None, 0)],
            now,
            SystemTime::now(),
        );
        answer(
            &mut peers,
            true,
            &peer(Some("198.51.100.10:51820"), Some(1), 92),
            now,
        );
        assert_eq!(actions(&mut peers), vec![Action::SetKeepalive { peer: A }]);
        assert_eq!(peers.state(&A), Some(State::Connected));
    }

    #[test]
    fn a_waiting_peer_that_connects_by_itself_gets_the_keepalive() {
        let now = Instant::now();
        let mut peers = Peers::new(
            policy(false),
            &[peer(None, None, 0)],
            now,
            SystemTime::now(),
        );
        answer(&mut peers, false, &peer(None, None, 0), now);
        assert_eq!(
            actions(&mut peers),
            vec![Action::Punch {
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
        assert_eq!(actions(&mut peers), vec![Action::SetKeepalive { peer: A }]);
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
        assert_eq!(actions(&mut peers), vec![Action::Park { peer: A }]);
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
        assert_eq!(actions(&mut peers), vec![Action::Park { peer: A }]);
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
        assert_eq!(actions(&mut peers), vec![Action::Park { peer: A }]);
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
            &[Peer {
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
}
