//! The client's per-peer state machine ([`wgpunch_common::agent::peers::Peers`]) driven by a script of
//! interface snapshots, server answers (which come from the network) and passing time.
//!
//! A model interface holds up to [`PEERS`] peers; the script adds and removes them, gives them
//! handshakes and received bytes, lets time pass (also backwards on the wall clock), feeds
//! answers with any endpoint and flag, and applies the actions the machine hands out to the model
//! as the real client would. Checked on every step:
//! - nothing panics;
//! - actions only name peers of the last snapshot the machine was given;
//! - the barrier: an endpoint is set only after a punch towards that very endpoint since the
//!   peer's last park, and only when the server said the peer holds ours;
//! - a peer whose endpoint was just set is [`State::Verifying`] that endpoint.
//!
//! Input: a policy (continuous flag, keepalive, handshake timeout), then operations of one byte
//! each with their arguments, see [`PeerOp`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::agent::peers::{PeerAction as Action, PeerPolicy, Peers, State};
use wgpunch_common::agent::snapshot::PeerSnapshot as Peer;
use wgpunch_common::keys::PublicKey;

use crate::input::{Input, Script};

/// Peers the model interface can hold.
pub const PEERS: u8 = 4;

/// Most operations run from one input.
const MAX_OPS: usize = 2000;

/// One step of a script.
#[derive(Debug, Clone, Copy)]
pub enum PeerOp {
    /// Let `millis` pass on both clocks.
    Wait {
        /// Milliseconds.
        millis: u16,
    },
    /// Step the wall clock by `secs` (negative: backwards), as NTP might.
    StepWall {
        /// Seconds.
        secs: i16,
    },
    /// Add the peer to the interface or remove it.
    Toggle {
        /// Which peer.
        peer: u8,
    },
    /// The peer completes a WireGuard handshake `ago` seconds before now and sends `bytes`.
    Handshake {
        /// Which peer.
        peer: u8,
        /// Seconds before now.
        ago: u8,
        /// Bytes received.
        bytes: u16,
    },
    /// Take a snapshot of the interface.
    Observe,
    /// The server answers about the peer.
    Resolved {
        /// Which peer.
        peer: u8,
        /// The endpoint's IPv4 address.
        ip: [u8; 4],
        /// The endpoint's port.
        port: u16,
        /// Whether the peer holds our endpoint.
        has_yours: bool,
    },
    /// Apply every pending action to the interface.
    Apply,
}

impl PeerOp {
    fn read(input: &mut Input<'_>) -> Self {
        match input.u8() % 7 {
            0 => Self::Wait {
                millis: input.u16(),
            },
            1 => Self::StepWall { secs: input.i16() },
            2 => Self::Toggle { peer: input.u8() },
            3 => Self::Handshake {
                peer: input.u8(),
                ago: input.u8(),
                bytes: input.u16(),
            },
            4 => Self::Observe,
            5 => Self::Resolved {
                peer: input.u8(),
                ip: input.u32().to_be_bytes(),
                port: input.u16(),
                has_yours: input.u8() & 1 == 1,
            },
            _ => Self::Apply,
        }
    }

    fn write(self, script: &mut Script) {
        match self {
            Self::Wait { millis } => script.u8(0).u16(millis),
            Self::StepWall { secs } => script.u8(1).i16(secs),
            Self::Toggle { peer } => script.u8(2).u8(peer),
            Self::Handshake { peer, ago, bytes } => script.u8(3).u8(peer).u8(ago).u16(bytes),
            Self::Observe => script.u8(4),
            Self::Resolved {
                peer,
                ip,
                port,
                has_yours,
            } => script
                .u8(5)
                .u8(peer)
                .u32(u32::from_be_bytes(ip))
                .u16(port)
                .u8(u8::from(has_yours)),
            Self::Apply => script.u8(6),
        };
    }
}

/// Writes a script: the policy, then `ops`.
pub fn script(continuous: bool, ops: &[PeerOp]) -> Vec<u8> {
    let mut script = Script::new();
    script.u8(u8::from(continuous)).u16(25).u8(15);
    for op in ops {
        op.write(&mut script);
    }
    script.into_bytes()
}

fn key(n: u8) -> PublicKey {
    PublicKey([n % PEERS + 1; 32])
}

/// What a run did, for the seed tests.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Endpoints set, in order.
    pub endpoints_set: Vec<(PublicKey, SocketAddr)>,
    /// Peers connected at the end.
    pub connected: usize,
}

/// Runs the script in `data`, panicking when a check fails.
pub fn run(data: &[u8]) -> Outcome {
    let mut input = Input::new(data);
    let continuous = input.u8() & 1 == 1;
    let keepalive = input.u16().max(1);
    let handshake_timeout = Duration::from_secs(u64::from(input.u8()));
    let policy = PeerPolicy::new(continuous, keepalive, handshake_timeout);

    let mut now = Instant::now();
    let mut wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut iface: BTreeMap<PublicKey, Peer> =
        (0..PEERS).map(|n| (key(n), blank(key(n)))).collect();
    let mut peers = Peers::new(policy, &snapshot(&iface), now, wall);
    let mut observed: BTreeSet<PublicKey> = iface.keys().copied().collect();
    // Per peer: endpoints punched since its last park, and whether the server said it holds ours.
    let mut punched: BTreeMap<PublicKey, BTreeSet<SocketAddr>> = BTreeMap::new();
    let mut promised: BTreeSet<(PublicKey, SocketAddr)> = BTreeSet::new();
    let mut outcome = Outcome::default();

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        match PeerOp::read(&mut input) {
            PeerOp::Wait { millis } => {
                let step = Duration::from_millis(u64::from(millis));
                now += step;
                wall += step;
            }
            PeerOp::StepWall { secs } => {
                let step = Duration::from_secs(u64::from(secs.unsigned_abs()));
                wall = if secs < 0 { wall - step } else { wall + step };
            }
            PeerOp::Toggle { peer } => {
                let k = key(peer);
                if iface.remove(&k).is_none() {
                    iface.insert(k, blank(k));
                }
            }
            PeerOp::Handshake { peer, ago, bytes } => {
                if let Some(p) = iface.get_mut(&key(peer)) {
                    p.last_handshake = Some(wall - Duration::from_secs(u64::from(ago)));
                    p.rx_bytes += u64::from(bytes);
                }
            }
            PeerOp::Observe => {
                peers.observe(&snapshot(&iface), now, wall);
                observed = iface.keys().copied().collect();
            }
            PeerOp::Resolved {
                peer,
                ip,
                port,
                has_yours,
            } => {
                let k = key(peer);
                let endpoint = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port);
                let current = iface.get(&k).cloned().unwrap_or_else(|| blank(k));
                if has_yours {
                    promised.insert((k, endpoint));
                }
                peers.on_resolved(k, endpoint, has_yours, &current, now, wall);
            }
            PeerOp::Apply => {}
        }
        // The real client applies actions right away; check each as it comes.
        while let Some(action) = peers.poll_action() {
            let peer = match action {
                Action::Punch { peer, .. }
                | Action::SetEndpoint { peer, .. }
                | Action::SetKeepalive { peer }
                | Action::CandidateFailed { peer, .. }
                | Action::Park { peer, .. } => peer,
            };
            assert!(
                observed.contains(&peer),
                "action for a peer not in the last snapshot: {action:?}"
            );
            apply(
                action,
                peer,
                &mut iface,
                &mut punched,
                &promised,
                &peers,
                &mut outcome,
            );
        }
    }
    outcome.connected = iface
        .keys()
        .filter(|k| peers.state(k) == Some(State::Connected))
        .count();
    outcome
}

fn apply(
    action: Action,
    peer: PublicKey,
    iface: &mut BTreeMap<PublicKey, Peer>,
    punched: &mut BTreeMap<PublicKey, BTreeSet<SocketAddr>>,
    promised: &BTreeSet<(PublicKey, SocketAddr)>,
    peers: &Peers,
    outcome: &mut Outcome,
) {
    match action {
        Action::Punch { endpoint, .. } => {
            punched.entry(peer).or_default().insert(endpoint);
        }
        Action::SetEndpoint { endpoint, .. } => {
            assert!(
                punched.get(&peer).is_some_and(|p| p.contains(&endpoint)),
                "endpoint {endpoint} set for {peer} without a punch towards it since its last park"
            );
            assert!(
                promised.contains(&(peer, endpoint)),
                "endpoint {endpoint} set for {peer} before the server said it holds ours"
            );
            assert!(
                matches!(peers.state(&peer), Some(State::Verifying { endpoint: e, .. }) if e == endpoint),
                "endpoint set but the peer is {:?}",
                peers.state(&peer)
            );
            outcome.endpoints_set.push((peer, endpoint));
            if let Some(p) = iface.get_mut(&peer) {
                p.endpoint = Some(endpoint);
            }
        }
        Action::SetKeepalive { .. } => {
            if let Some(p) = iface.get_mut(&peer) {
                p.keepalive = Some(25);
            }
        }
        Action::CandidateFailed { endpoint, .. } => {
            panic!("candidate {endpoint} of {peer} failed, but this simulation gives no candidates")
        }
        Action::Park { .. } => {
            punched.remove(&peer);
            if let Some(p) = iface.get_mut(&peer) {
                p.endpoint = Some(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9));
            }
        }
    }
}

fn blank(key: PublicKey) -> Peer {
    Peer::new(key)
}

fn snapshot(iface: &BTreeMap<PublicKey, Peer>) -> Vec<Peer> {
    iface.values().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(peer: u8, has_yours: bool) -> PeerOp {
        PeerOp::Resolved {
            peer,
            ip: [198, 51, 100, 20 + peer],
            port: 51820,
            has_yours,
        }
    }

    #[test]
    fn the_barrier_seed_sets_an_endpoint_then_connects() {
        let ops = [
            PeerOp::Observe,
            resolved(0, false),
            PeerOp::Wait { millis: 500 },
            resolved(0, true),
            PeerOp::Handshake {
                peer: 0,
                ago: 0,
                bytes: 148,
            },
            PeerOp::Observe,
        ];
        let outcome = run(&script(false, &ops));
        assert_eq!(outcome.endpoints_set.len(), 1, "{outcome:?}");
        assert_eq!(outcome.connected, 1, "{outcome:?}");
    }

    #[test]
    fn a_dead_path_parks_and_needs_a_new_punch() {
        let ops = [
            PeerOp::Observe,
            resolved(1, true),
            PeerOp::Handshake {
                peer: 1,
                ago: 0,
                bytes: 92,
            },
            PeerOp::Observe,
            // Silence for longer than the continuous mode's limit: parked, then wanted again.
            PeerOp::Wait { millis: 65_000 },
            PeerOp::Observe,
            PeerOp::Wait { millis: 36_000 },
            PeerOp::Observe,
            resolved(1, true),
        ];
        let outcome = run(&script(true, &ops));
        assert_eq!(outcome.endpoints_set.len(), 2, "{outcome:?}");
    }

    #[test]
    fn empty_and_short_inputs_run() {
        run(&[]);
        run(&[1]);
        run(&[0, 0, 0, 0, 5, 0]);
    }
}
