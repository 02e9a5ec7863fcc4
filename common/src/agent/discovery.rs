//! The two discovery protocols the client speaks, behind the one interface the agent uses.
//!
//! [`Discovery::Native`] is wgpunch's own protocol ([`Client`]). [`Discovery::NatpunchGo`] is
//! natpunch-go's ([`LegacyClient`]), for a peer whose server still runs natpunch-go (or
//! wgpunch-server in its compatibility mode): the same command line, so the clients can move to
//! wgpunch first and the server later.
//!
//! natpunch-go's events are turned into wgpunch's: an answer about our own key becomes
//! [`Event::Registered`], and a found peer becomes [`Event::Resolved`].
//!
//! # A timed barrier for natpunch-go
//!
//! wgpunch's server says whether the peer already holds our endpoint (`peer_has_yours`), and the
//! agent sets an endpoint, which starts WireGuard, only then: by that time the peer has punched
//! its own NAT open towards us, so our WireGuard packets do not arrive there unannounced and leave
//! a conntrack entry that makes the peer's NAT pick another port. natpunch-go's server cannot say.
//! Instead, a peer counts as holding our endpoint once the server has given the same endpoint for
//! it for the grace passed to [`Legacy::new`] (the lookup delay plus a second): the peer is
//! registered, so its client is running and looks us up at least that often, and punches as soon
//! as it finds us. Until then the agent only punches. A stale entry (natpunch-go's server keeps every entry for ever)
//! still gets its endpoint after the grace, and the wait for the WireGuard handshake tells it
//! apart (exit status 5).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::client::{Client, Event};
use crate::keys::PublicKey;
use crate::legacy::client::{LegacyClient, LegacyEvent};

/// A client of one discovery server, in the protocol the server speaks.
#[derive(Debug)]
pub enum Discovery {
    /// wgpunch's protocol.
    Native(Box<Client>),
    /// natpunch-go's protocol.
    NatpunchGo(Box<Legacy>),
}

/// natpunch-go's client, and when each peer's current endpoint was first given.
#[derive(Debug)]
pub struct Legacy {
    client: LegacyClient,
    /// How long the server must have given the same endpoint for a peer before it is used.
    grace: Duration,
    first_given: BTreeMap<PublicKey, (SocketAddr, Instant)>,
}

impl Legacy {
    /// Wraps `client`; endpoints are used once given for `grace`.
    pub fn new(client: LegacyClient, grace: Duration) -> Self {
        Self {
            client,
            grace,
            first_given: BTreeMap::new(),
        }
    }

    /// natpunch-go's event in wgpunch's terms, at `now`.
    fn translate(&mut self, event: LegacyEvent, now: Instant) -> Event {
        match event {
            LegacyEvent::Connected => Event::Connected,
            LegacyEvent::Observed(observed) => Event::Registered {
                observed: SocketAddr::V4(observed),
                ttl: NATPUNCH_GO_TTL,
            },
            LegacyEvent::Found { peer, endpoint } => {
                let endpoint = SocketAddr::V4(endpoint);
                let since = match self.first_given.get(&peer) {
                    Some((known, since)) if *known == endpoint => *since,
                    _ => {
                        self.first_given.insert(peer, (endpoint, now));
                        now
                    }
                };
                Event::Resolved {
                    peer,
                    endpoint,
                    age: Duration::ZERO,
                    peer_has_yours: now.saturating_duration_since(since) >= self.grace,
                }
            }
            LegacyEvent::NotFound { peer } => {
                self.first_given.remove(&peer);
                Event::Unknown { peer }
            }
        }
    }
}

impl Discovery {
    /// Our WireGuard public key.
    pub fn public_key(&self) -> PublicKey {
        match self {
            Discovery::Native(c) => c.public_key(),
            Discovery::NatpunchGo(l) => l.client.public_key(),
        }
    }

    /// True while a session with the server is established.
    pub fn is_connected(&self) -> bool {
        match self {
            Discovery::Native(c) => c.is_connected(),
            Discovery::NatpunchGo(l) => l.client.is_connected(),
        }
    }

    /// True once the server holds our endpoint: for wgpunch, once it acknowledged our whole
    /// registration; for natpunch-go, once a handshake completed (its server records the source of
    /// every initiation).
    pub fn is_registered(&self) -> bool {
        match self {
            Discovery::Native(c) => c.is_registered(),
            Discovery::NatpunchGo(l) => l.client.is_connected(),
        }
    }

    /// True while a new registration (one that declares something new) is asked for or in
    /// flight: a one-shot run waits for it before it ends, so the peers hear of it.
    pub fn is_reregistering(&self) -> bool {
        match self {
            Discovery::Native(c) => c.is_reregistering(),
            Discovery::NatpunchGo(_) => false,
        }
    }

    /// True while a handshake or request waits for its answer.
    pub fn is_waiting(&self) -> bool {
        match self {
            Discovery::Native(c) => c.is_waiting(),
            Discovery::NatpunchGo(l) => l.client.is_waiting(),
        }
    }

    /// True when the server tells whether a peer holds our endpoint (wgpunch's barrier), so that
    /// confirming a punch soon is worth a lookup. natpunch-go's timed barrier only needs time.
    pub fn has_barrier(&self) -> bool {
        matches!(self, Discovery::Native(_))
    }

    /// Asks for these peers, each with whether we punched towards the endpoint last given for it
    /// (natpunch-go has no use for that and asks for them one at a time).
    pub fn lookup_with(&mut self, wanted: Vec<(PublicKey, bool)>) {
        match self {
            Discovery::Native(c) => c.lookup_with(wanted),
            Discovery::NatpunchGo(l) => l.client.lookup(wanted.into_iter().map(|(peer, _)| peer)),
        }
    }

    /// Registers again at once, so that the server observes our current NAT mapping (natpunch-go's
    /// server records every handshake's source, and its lookups refresh nothing it tells us).
    pub fn refresh(&mut self) {
        if let Discovery::Native(c) = self {
            c.refresh();
        }
    }

    /// Checks how our NAT maps us, asking the server at `server` (natpunch-go's server cannot
    /// tell).
    pub fn check_mapping(&mut self, server: SocketAddr) {
        if let Discovery::Native(c) = self {
            c.check_mapping(server);
        }
    }

    /// Declares (or no longer) a NAT that maps each destination to its own port.
    pub fn set_hard_nat(&mut self, hard_nat: bool) {
        if let Discovery::Native(c) = self {
            c.set_hard_nat(hard_nat);
        }
    }

    /// The next observe request to a mapping address of the server, and where it goes.
    pub fn poll_mapping_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        match self {
            Discovery::Native(c) => c.poll_mapping_transmit(now),
            Discovery::NatpunchGo(_) => None,
        }
    }

    /// Asks for `peer`'s candidates (natpunch-go's server has none to tell).
    pub fn fetch_candidates(&mut self, peer: PublicKey) {
        if let Discovery::Native(c) = self {
            c.fetch_candidates(peer);
        }
    }

    /// True while `peer`'s candidates are asked for.
    pub fn candidates_pending(&self, peer: &PublicKey) -> bool {
        match self {
            Discovery::Native(c) => c.candidates_pending(peer),
            Discovery::NatpunchGo(_) => false,
        }
    }

    /// Replaces the local addresses declared to the server (natpunch-go declares none).
    pub fn set_local_addrs(&mut self, addrs: Vec<SocketAddr>) {
        if let Discovery::Native(c) = self {
            c.set_local_addrs(addrs);
        }
    }

    /// Replaces the peer list declared to the server (natpunch-go declares none).
    pub fn set_peers(&mut self, peers: Vec<PublicKey>) {
        if let Discovery::Native(c) = self {
            c.set_peers(peers);
        }
    }

    /// The next datagram for the server, if one is due.
    pub fn poll_transmit(&mut self, now: Instant, wall: SystemTime) -> Option<Vec<u8>> {
        match self {
            Discovery::Native(c) => c.poll_transmit(now, wall),
            Discovery::NatpunchGo(l) => l.client.poll_transmit(now, wall),
        }
    }

    /// The next event, in wgpunch's terms, at `now`.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        match self {
            Discovery::Native(c) => {
                c.finish_mapping(now);
                c.poll_event()
            }
            Discovery::NatpunchGo(l) => {
                let event = l.client.poll_event()?;
                Some(l.translate(event, now))
            }
        }
    }

    /// When [`Discovery::poll_transmit`] must be called again at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Discovery::Native(c) => c.poll_timeout(),
            Discovery::NatpunchGo(l) => l.client.poll_timeout(),
        }
    }

    /// Handles a datagram from the server.
    pub fn handle_datagram(&mut self, now: Instant, datagram: &[u8]) {
        match self {
            Discovery::Native(c) => c.handle_datagram(now, datagram),
            Discovery::NatpunchGo(l) => l.client.handle_datagram(now, datagram),
        }
    }
}

/// What the log says a natpunch-go "registration" lasts: the time until the next handshake
/// refreshes the endpoint the server records (its server itself keeps entries for ever).
const NATPUNCH_GO_TTL: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy() -> Legacy {
        let client = LegacyClient::new(
            crate::keys::PrivateKey::from_bytes([1; 32]),
            PublicKey([2; 32]),
            crate::legacy::client::LegacyConfig::default(),
            [3; 32],
        );
        Legacy::new(client, Duration::from_secs(3))
    }

    fn resolved(endpoint: &str, peer_has_yours: bool) -> Event {
        Event::Resolved {
            peer: PEER,
            endpoint: endpoint.parse().unwrap(),
            age: Duration::ZERO,
            peer_has_yours,
        }
    }

    const PEER: PublicKey = PublicKey([4; 32]);

    fn found(endpoint: &str) -> LegacyEvent {
        LegacyEvent::Found {
            peer: PEER,
            endpoint: endpoint.parse().unwrap(),
        }
    }

    #[test]
    fn a_found_endpoint_is_used_once_the_server_gave_it_for_the_grace() {
        let mut l = legacy();
        let t0 = Instant::now();
        let a = "203.0.113.9:51820";
        assert_eq!(l.translate(found(a), t0), resolved(a, false));
        assert_eq!(
            l.translate(found(a), t0 + Duration::from_secs(2)),
            resolved(a, false)
        );
        assert_eq!(
            l.translate(found(a), t0 + Duration::from_secs(3)),
            resolved(a, true)
        );
    }

    #[test]
    fn a_new_endpoint_or_an_unknown_peer_starts_the_grace_again() {
        let mut l = legacy();
        let t0 = Instant::now();
        let (a, b) = ("203.0.113.9:51820", "203.0.113.9:40000");
        l.translate(found(a), t0);
        let later = t0 + Duration::from_secs(5);
        assert_eq!(l.translate(found(b), later), resolved(b, false));
        assert_eq!(
            l.translate(LegacyEvent::NotFound { peer: PEER }, later),
            Event::Unknown { peer: PEER }
        );
        assert_eq!(
            l.translate(found(b), later + Duration::from_secs(1)),
            resolved(b, false)
        );
    }

    #[test]
    fn our_own_address_is_the_registration() {
        let mut l = legacy();
        let me = "198.51.100.7:40001";
        assert_eq!(
            l.translate(LegacyEvent::Observed(me.parse().unwrap()), Instant::now()),
            Event::Registered {
                observed: me.parse().unwrap(),
                ttl: NATPUNCH_GO_TTL
            }
        );
        assert_eq!(
            l.translate(LegacyEvent::Connected, Instant::now()),
            Event::Connected
        );
    }
}
