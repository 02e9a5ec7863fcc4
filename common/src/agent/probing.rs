//! Path candidates: which of a peer's candidates are worth trying, the probe rounds that find
//! the first one that carries packets both ways, and the answers to the peers' own probes.
//!
//! A peer's candidates are the local addresses it registered, as the server hands them to
//! consenting peers. Worth probing are those on a network we share: a private address when the
//! server sees both of us at one public address, or any address inside one of our own on-link
//! prefixes; and global IPv6 addresses when we have one too (no NAT66: stateful firewalls open
//! for the probes that both sides send). A round pings every such candidate from the WireGuard
//! port a few times; the first pong names the path, and the WireGuard handshake that follows on
//! it is the proof. A candidate whose handshake never comes is not tried again until something
//! changes.
//!
//! Nothing here can make the client a packet source towards arbitrary addresses: pings go only
//! to the bounded, checked candidates of peers the server says consent, pongs only to a source
//! that is such a candidate (or the peer's public endpoint), and both share one send budget.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::addr::{is_global_v6, is_private};
use crate::keys::PublicKey;
use crate::noise::{Rng, Seed};
use crate::wire::candidates::MAX_CANDIDATES;
use crate::wire::endpoint::canonical;
use crate::wire::probe::{Probe, ProbeKind};

use super::local::{Family, LocalAddr};
use super::sanity;

/// How long a round waits for a pong before the public path is tried.
pub const PROBE_WAIT: Duration = Duration::from_millis(1500);
/// Time between the pings of a round.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(150);
/// Most probes (pings and pongs) sent in one budget window.
pub const PROBE_BUDGET: u32 = 256;
/// The budget's window.
pub const PROBE_WINDOW: Duration = Duration::from_secs(1);

/// How long the side that yields to the peer's WireGuard (see
/// [`super::peers::PeerPolicy::yield_time`]) waits on a candidate path whose pong came `rtt`
/// after its ping: the peer hears its own pong at most one ping interval later, and its
/// handshake needs about one more round trip to reach us.
pub fn answer_wait(rtt: Duration) -> Duration {
    PROBE_INTERVAL + rtt.saturating_mul(3) + Duration::from_millis(20)
}

/// A peer's candidates as the server gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerCandidates {
    /// The server sees both of us at one public IP address.
    pub same_public: bool,
    /// The candidates, checked and bounded.
    pub addrs: Vec<SocketAddr>,
}

/// What the agent knows of its own side, for choosing candidates.
#[derive(Debug, Clone, Copy)]
pub struct Ours<'a> {
    /// Our addresses.
    pub addrs: &'a [LocalAddr],
    /// `--family`.
    pub family: Family,
    /// The networks routed through the tunnel.
    pub tunnel: &'a [(IpAddr, u8)],
    /// The discovery server.
    pub server: Option<SocketAddr>,
}

impl PeerCandidates {
    /// Checks what the server gave: a bounded list of distinct addresses that pass the endpoint
    /// sanity check, inside no tunnel network, not the server's and not one of ours.
    pub fn checked(same_public: bool, given: &[SocketAddr], ours: Ours<'_>) -> Self {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for addr in given.iter().map(|a| canonical(*a)) {
            if addrs.len() >= MAX_CANDIDATES {
                break;
            }
            let server = ours.server.map(|s| canonical(s).ip());
            if sanity::check_endpoint(addr, ours.tunnel).is_err()
                || server == Some(addr.ip())
                || ours.addrs.iter().any(|a| a.ip == addr.ip())
                || addrs.contains(&addr)
            {
                continue;
            }
            addrs.push(addr);
        }
        Self { same_public, addrs }
    }

    /// The candidates worth probing, best first: on a network we share, then global IPv6.
    pub fn worth_probing(&self, ours: Ours<'_>) -> Vec<SocketAddr> {
        let have_v6 = ours.addrs.iter().any(|a| is_global_v6(a.ip));
        let mut local = Vec::new();
        let mut global = Vec::new();
        for addr in &self.addrs {
            let ip = addr.ip();
            if !ours.family.allows(ip) {
                continue;
            }
            let on_link = ours.addrs.iter().any(|a| a.on_link(ip));
            if on_link || (self.same_public && is_private(ip)) {
                local.push(*addr);
            } else if is_global_v6(ip) && have_v6 {
                global.push(*addr);
            }
        }
        local.extend(global);
        local
    }
}

#[derive(Debug)]
struct Round {
    /// Each target with the txid of its first ping; ping `n` carries that txid plus `n`.
    targets: Vec<(SocketAddr, u64)>,
    /// When ping `n` went out (to every target at once); at most one per [`PROBE_INTERVAL`]
    /// of [`PROBE_WAIT`].
    sent: Vec<Instant>,
    next_ping: Instant,
    until: Instant,
}

impl Round {
    /// When the ping that `txid` answers went to `addr`, if it is one of ours.
    fn ping_sent(&self, addr: SocketAddr, txid: u64) -> Option<Instant> {
        self.targets.iter().find_map(|(to, first)| {
            let n = usize::try_from(txid.wrapping_sub(*first)).ok()?;
            (*to == addr).then(|| self.sent.get(n).copied()).flatten()
        })
    }
}

/// A probe to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The peer it is for.
    pub peer: PublicKey,
    /// Where it goes.
    pub to: SocketAddr,
    /// The encoded probe.
    pub payload: Vec<u8>,
}

/// What a received probe meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A pong for a round of ours: `addr` carries packets both ways.
    Answered {
        /// The peer.
        peer: PublicKey,
        /// The candidate that answered.
        addr: SocketAddr,
        /// From the ping to its pong.
        rtt: Duration,
    },
    /// A ping from a peer we hold no candidates for that match its source: ask the server.
    Unexpected {
        /// The peer.
        peer: PublicKey,
    },
}

/// The probe rounds of every peer, and what the peers' candidates are.
#[derive(Debug)]
pub struct Prober {
    own: PublicKey,
    rng: Rng,
    known: BTreeMap<PublicKey, PeerCandidates>,
    rounds: BTreeMap<PublicKey, Round>,
    /// Candidates whose handshake never came, or that never answered, per peer.
    failed: BTreeMap<PublicKey, Vec<SocketAddr>>,
    outgoing: VecDeque<Outgoing>,
    window_start: Option<Instant>,
    sent_in_window: u32,
    /// Probes not sent for want of budget.
    over_budget: u64,
}

impl Prober {
    /// Probes as `own`, with txids drawn from `seed`.
    pub fn new(own: PublicKey, seed: Seed) -> Self {
        Self {
            own,
            rng: Rng::from_seed(seed),
            known: BTreeMap::new(),
            rounds: BTreeMap::new(),
            failed: BTreeMap::new(),
            outgoing: VecDeque::new(),
            window_start: None,
            sent_in_window: 0,
            over_budget: 0,
        }
    }

    /// The candidates last told for `peer`.
    pub fn candidates(&self, peer: &PublicKey) -> Option<&PeerCandidates> {
        self.known.get(peer)
    }

    /// Records `peer`'s candidates; returns true when they changed (what failed is then
    /// forgotten: the peer's network changed).
    pub fn set_candidates(&mut self, peer: PublicKey, candidates: PeerCandidates) -> bool {
        if self.known.get(&peer) == Some(&candidates) {
            return false;
        }
        self.known.insert(peer, candidates);
        self.failed.remove(&peer);
        true
    }

    /// Forgets peers no longer on the interface.
    pub fn retain(&mut self, keep: impl Fn(&PublicKey) -> bool) {
        self.known.retain(|k, _| keep(k));
        self.rounds.retain(|k, _| keep(k));
        self.failed.retain(|k, _| keep(k));
    }

    /// Forgets every failure: our own network changed.
    pub fn forget_failures(&mut self) {
        self.failed.clear();
    }

    /// Forgets `peer`'s failures.
    pub fn forget_failures_of(&mut self, peer: &PublicKey) {
        self.failed.remove(peer);
    }

    /// Marks `addr` as failed for `peer`.
    pub fn fail(&mut self, peer: PublicKey, addr: SocketAddr) {
        let failed = self.failed.entry(peer).or_default();
        if !failed.contains(&addr) && failed.len() < MAX_CANDIDATES * 2 {
            failed.push(addr);
        }
    }

    /// The candidates of `peer` to probe now, best first: worth probing and not failed.
    pub fn targets(&self, peer: &PublicKey, ours: Ours<'_>) -> Vec<SocketAddr> {
        let Some(known) = self.known.get(peer) else {
            return Vec::new();
        };
        let failed = self.failed.get(peer);
        known
            .worth_probing(ours)
            .into_iter()
            .filter(|a| failed.is_none_or(|f| !f.contains(a)))
            .collect()
    }

    /// True while a round for `peer` runs.
    pub fn is_probing(&self, peer: &PublicKey) -> bool {
        self.rounds.contains_key(peer)
    }

    /// Starts a round towards `targets` (at most [`MAX_CANDIDATES`]) unless one runs.
    pub fn start(&mut self, peer: PublicKey, targets: &[SocketAddr], now: Instant) {
        if targets.is_empty() || self.rounds.contains_key(&peer) {
            return;
        }
        let targets = targets
            .iter()
            .take(MAX_CANDIDATES)
            .map(|a| (*a, self.rng.next_u64()))
            .collect();
        self.rounds.insert(
            peer,
            Round {
                targets,
                sent: Vec::new(),
                next_ping: now,
                until: now + PROBE_WAIT,
            },
        );
    }

    /// Ends `peer`'s round, if any.
    pub fn stop(&mut self, peer: &PublicKey) {
        self.rounds.remove(peer);
    }

    /// Lets time pass: queues the pings that are due and ends the rounds that ran out. Returns
    /// the peers whose round ended without an answer; their targets count as failed.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<PublicKey> {
        let mut ended = Vec::new();
        let mut due = Vec::new();
        for (peer, round) in &mut self.rounds {
            if now >= round.until {
                ended.push(*peer);
            } else if now >= round.next_ping {
                round.next_ping = now + PROBE_INTERVAL;
                let n = round.sent.len() as u64;
                round.sent.push(now);
                due.extend(
                    round
                        .targets
                        .iter()
                        .map(|(to, first)| (*peer, *to, first.wrapping_add(n))),
                );
            }
        }
        for (peer, to, txid) in due {
            let ping = Probe {
                kind: ProbeKind::Ping,
                txid,
                sender: self.own,
                receiver: peer,
            };
            self.send(peer, to, ping, now);
        }
        for peer in &ended {
            if let Some(round) = self.rounds.remove(peer) {
                for (addr, _) in round.targets {
                    self.fail(*peer, addr);
                }
            }
        }
        ended
    }

    /// The next probe to send.
    pub fn poll_transmit(&mut self) -> Option<Outgoing> {
        self.outgoing.pop_front()
    }

    /// When [`Prober::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rounds.values().map(|r| r.next_ping.min(r.until)).min()
    }

    /// Probes not sent for want of budget so far.
    pub fn over_budget(&self) -> u64 {
        self.over_budget
    }

    /// Handles a probe from `from`. `told` is where the server last said the sender is. A ping
    /// from one of the interface's peers (`is_peer`) is answered when its source is one of the
    /// sender's candidates or its public endpoint; a pong ends our round when it answers one of
    /// its pings from the very address pinged.
    pub fn handle_probe(
        &mut self,
        now: Instant,
        from: SocketAddr,
        probe: Probe,
        is_peer: bool,
        told: Option<SocketAddr>,
    ) -> Option<Heard> {
        let from = canonical(from);
        if probe.receiver != self.own || probe.sender == self.own || !is_peer {
            return None;
        }
        let peer = probe.sender;
        match probe.kind {
            ProbeKind::Ping => {
                let vouched = told.map(canonical) == Some(from)
                    || self
                        .known
                        .get(&peer)
                        .is_some_and(|k| k.addrs.contains(&from));
                if vouched {
                    self.send(peer, from, probe.pong(), now);
                    None
                } else {
                    Some(Heard::Unexpected { peer })
                }
            }
            ProbeKind::Pong => {
                let sent = self.rounds.get(&peer)?.ping_sent(from, probe.txid)?;
                self.rounds.remove(&peer);
                Some(Heard::Answered {
                    peer,
                    addr: from,
                    rtt: now.saturating_duration_since(sent),
                })
            }
        }
    }

    fn send(&mut self, peer: PublicKey, to: SocketAddr, probe: Probe, now: Instant) {
        if self
            .window_start
            .is_none_or(|s| now.saturating_duration_since(s) >= PROBE_WINDOW)
        {
            self.window_start = Some(now);
            self.sent_in_window = 0;
        }
        if self.sent_in_window >= PROBE_BUDGET {
            self.over_budget += 1;
            return;
        }
        self.sent_in_window += 1;
        self.outgoing.push_back(Outgoing {
            peer,
            to,
            payload: probe.emit(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KEY_LEN;

    const US: PublicKey = PublicKey([1; KEY_LEN]);
    const PEER: PublicKey = PublicKey([2; KEY_LEN]);

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn local(s: &str, prefix: u8) -> LocalAddr {
        LocalAddr::new(s.parse().unwrap(), prefix)
    }

    fn ours<'a>(addrs: &'a [LocalAddr], family: Family) -> Ours<'a> {
        Ours {
            addrs,
            family,
            tunnel: &[],
            server: Some(addr("203.0.113.1:51818")),
        }
    }

    fn given(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| addr(a)).collect()
    }

    #[test]
    fn hostile_lists_are_trimmed_to_sane_candidates() {
        let mine = [local("10.0.0.2", 24)];
        let list = given(&[
            "127.0.0.1:51820",
            "224.0.0.5:51820",
            "[ff02::1]:51820",
            "203.0.113.1:51820",
            "10.0.0.2:51820",
            "192.0.2.7:51820",
            "10.0.0.3:0",
            "10.0.0.3:51820",
            "10.0.0.3:51820",
        ]);
        let tunnel = [("192.0.2.0".parse().unwrap(), 24)];
        let ours = Ours {
            tunnel: &tunnel,
            ..ours(&mine, Family::Auto)
        };
        let checked = PeerCandidates::checked(false, &list, ours);
        assert_eq!(checked.addrs, given(&["10.0.0.3:51820"]));
        let many: Vec<SocketAddr> = (1..=40)
            .map(|n| SocketAddr::new(IpAddr::from([10, 9, 0, n]), 51820))
            .collect();
        assert_eq!(
            PeerCandidates::checked(true, &many, ours).addrs.len(),
            MAX_CANDIDATES
        );
    }

    #[test]
    fn lan_candidates_come_first_then_global_ipv6() {
        let mine = [local("192.168.1.5", 24), local("2001:db8:1::5", 64)];
        let peer = PeerCandidates {
            same_public: false,
            addrs: given(&[
                "[2001:db8:2::7]:51820",
                "192.168.1.7:51820",
                "10.7.0.7:51820",
            ]),
        };
        let auto = peer.worth_probing(ours(&mine, Family::Auto));
        assert_eq!(auto, given(&["192.168.1.7:51820", "[2001:db8:2::7]:51820"]));
        let v4 = peer.worth_probing(ours(&mine, Family::V4));
        assert_eq!(v4, given(&["192.168.1.7:51820"]));
        let v6 = peer.worth_probing(ours(&mine, Family::V6));
        assert_eq!(v6, given(&["[2001:db8:2::7]:51820"]));
        let same = PeerCandidates {
            same_public: true,
            ..peer.clone()
        };
        assert!(same
            .worth_probing(ours(&mine, Family::Auto))
            .contains(&addr("10.7.0.7:51820")));
        let no_v6 = [local("192.168.9.5", 24)];
        assert!(peer.worth_probing(ours(&no_v6, Family::Auto)).is_empty());
    }

    #[test]
    fn a_round_pings_until_a_pong_from_the_pinged_address_answers() {
        let now = Instant::now();
        let mut prober = Prober::new(US, [7; 32]);
        prober.start(PEER, &given(&["10.0.0.3:51820", "10.0.0.4:51820"]), now);
        assert!(prober.handle_timeout(now).is_empty());
        let pings: Vec<Outgoing> = std::iter::from_fn(|| prober.poll_transmit()).collect();
        assert_eq!(pings.len(), 2);
        let ping = Probe::parse(&pings[1].payload).unwrap();
        assert_eq!((ping.sender, ping.receiver), (US, PEER));
        // A pong from elsewhere, or with another txid, ends nothing.
        let pong = ping.pong();
        assert_eq!(
            prober.handle_probe(now, addr("10.0.0.3:51820"), pong, true, None),
            None
        );
        for txid in [pong.txid ^ (1 << 40), pong.txid.wrapping_add(1)] {
            let forged = Probe { txid, ..pong };
            assert_eq!(
                prober.handle_probe(now, pings[1].to, forged, true, None),
                None,
                "a txid of no ping sent"
            );
        }
        let later = now + Duration::from_millis(3);
        assert_eq!(
            prober.handle_probe(later, pings[1].to, pong, true, None),
            Some(Heard::Answered {
                peer: PEER,
                addr: pings[1].to,
                rtt: Duration::from_millis(3),
            })
        );
        assert!(!prober.is_probing(&PEER));
    }

    #[test]
    fn the_round_trip_counts_from_the_ping_that_was_answered() {
        let now = Instant::now();
        let mut prober = Prober::new(US, [7; 32]);
        prober.start(PEER, &given(&["10.0.0.3:51820"]), now);
        let mut pings = Vec::new();
        for n in 0..3u32 {
            prober.handle_timeout(now + PROBE_INTERVAL * n);
            pings.extend(std::iter::from_fn(|| prober.poll_transmit()));
        }
        let txids: Vec<u64> = pings
            .iter()
            .map(|p| Probe::parse(&p.payload).unwrap().txid)
            .collect();
        assert_eq!(txids.len(), 3);
        assert!(
            txids[0] != txids[1] && txids[1] != txids[2],
            "one txid per ping"
        );
        // The second ping's pong comes after the third went out: the round trip is the second's.
        let pong = Probe::parse(&pings[1].payload).unwrap().pong();
        let heard = prober.handle_probe(
            now + PROBE_INTERVAL * 2 + Duration::from_millis(4),
            pings[1].to,
            pong,
            true,
            None,
        );
        let Some(Heard::Answered { rtt, .. }) = heard else {
            panic!("no answer: {heard:?}");
        };
        assert_eq!(rtt, PROBE_INTERVAL + Duration::from_millis(4));
        assert!(answer_wait(Duration::from_millis(1)) < Duration::from_millis(200));
        assert!(answer_wait(Duration::from_millis(300)) > Duration::from_secs(1));
    }

    #[test]
    fn an_unanswered_round_ends_and_its_targets_fail() {
        let now = Instant::now();
        let mut prober = Prober::new(US, [7; 32]);
        let mine = [local("10.0.0.2", 24)];
        prober.set_candidates(
            PEER,
            PeerCandidates {
                same_public: true,
                addrs: given(&["10.0.0.3:51820"]),
            },
        );
        let targets = prober.targets(&PEER, ours(&mine, Family::Auto));
        prober.start(PEER, &targets, now);
        let mut at = now;
        let mut sent = 0;
        while prober.is_probing(&PEER) {
            prober.handle_timeout(at);
            sent += std::iter::from_fn(|| prober.poll_transmit()).count();
            at += Duration::from_millis(50);
        }
        assert_eq!(sent, 10, "one ping per interval for the whole wait");
        assert!(prober.targets(&PEER, ours(&mine, Family::Auto)).is_empty());
        prober.forget_failures();
        assert_eq!(prober.targets(&PEER, ours(&mine, Family::Auto)).len(), 1);
    }

    #[test]
    fn pings_are_answered_only_from_vouched_sources() {
        let now = Instant::now();
        let mut prober = Prober::new(US, [7; 32]);
        prober.set_candidates(
            PEER,
            PeerCandidates {
                same_public: true,
                addrs: given(&["10.0.0.3:51820"]),
            },
        );
        let ping = Probe {
            kind: ProbeKind::Ping,
            txid: 9,
            sender: PEER,
            receiver: US,
        };
        let stranger = addr("10.0.0.66:51820");
        assert_eq!(
            prober.handle_probe(now, stranger, ping, true, None),
            Some(Heard::Unexpected { peer: PEER })
        );
        assert_eq!(prober.handle_probe(now, stranger, ping, false, None), None);
        let for_someone_else = Probe {
            receiver: PEER,
            ..ping
        };
        assert_eq!(
            prober.handle_probe(now, stranger, for_someone_else, true, None),
            None
        );
        assert!(prober.poll_transmit().is_none());
        prober.handle_probe(now, addr("10.0.0.3:51820"), ping, true, None);
        prober.handle_probe(now, stranger, ping, true, Some(stranger));
        let pongs: Vec<Outgoing> = std::iter::from_fn(|| prober.poll_transmit()).collect();
        assert_eq!(pongs.len(), 2);
        assert_eq!(Probe::parse(&pongs[0].payload), Ok(ping.pong()));
    }

    #[test]
    fn the_send_budget_holds_under_a_ping_flood() {
        let now = Instant::now();
        let mut prober = Prober::new(US, [7; 32]);
        let from = addr("10.0.0.3:51820");
        let ping = Probe {
            kind: ProbeKind::Ping,
            txid: 9,
            sender: PEER,
            receiver: US,
        };
        for _ in 0..10_000 {
            prober.handle_probe(now, from, ping, true, Some(from));
        }
        let sent = std::iter::from_fn(|| prober.poll_transmit()).count();
        assert_eq!(sent as u32, PROBE_BUDGET);
        assert_eq!(prober.over_budget(), 10_000 - u64::from(PROBE_BUDGET));
    }
}
