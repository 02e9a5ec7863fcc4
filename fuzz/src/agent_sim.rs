//! The `agent` target: the client's whole decision core ([`Agent`]) against a real server and a
//! real peer client, driven by a script whose steps may lose, replay, corrupt or invent the
//! server's datagrams, change the interface and move both clocks.
//!
//! The agent's key is [`world::client_key`]; its interface lists the two puppets as peers, and
//! puppet 0 runs a real [`Client`] that lists the agent, so registrations, lookups, answers and
//! pushes all happen for real (the server's pushes to the agent are queued with its replies). The model interface applies the agent's actions as the real
//! binary does, and answers every [`Action::ReadInterface`] at once.
//!
//! Puppet 0 registers LAN and IPv6 candidates (and a loopback one the server must trim), and the
//! agent's own LAN is the same /24, so the agent probes them; scripts may answer its pings, or
//! send it pings and pongs of their own making from candidates, public sources or strangers.
//!
//! Checked on every step: nothing panics; every datagram the agent sends parses as one a client
//! sends; actions name only peers of the interface; an endpoint is set only after a punch towards
//! that endpoint since the peer was last parked, or after a pong from it; probes go only to the
//! puppet's sane candidates or to its public sources, never to anybody else; after
//! [`Action::Exit`] the agent is silent.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use wgpunch_common::agent::discovery::Discovery;
use wgpunch_common::agent::local::LocalAddr;
use wgpunch_common::agent::snapshot::{InterfaceSnapshot, PeerSnapshot};
use wgpunch_common::agent::{Action, Agent, AgentConfig};
use wgpunch_common::client::{Client, ClientConfig};
use wgpunch_common::keys::PublicKey;
use wgpunch_common::server::Server;
use wgpunch_common::wire::probe::{Probe, ProbeKind};
use wgpunch_common::wire::Packet;

use crate::input::{Input, Script};
use crate::world::{self, Clock};

/// Most operations one input runs.
pub const MAX_OPS: usize = 128;
/// Most datagrams one side may send in one step.
const MAX_SENDS_PER_STEP: usize = 16;
/// Past datagrams kept for replays.
const HISTORY: usize = 32;
/// Longest raw datagram.
const MAX_RAW_LEN: usize = 1300;
/// The agent's sources are [`world::source`] of `0..PEER_PORTS`, the peer's those above.
const PEER_PORTS: u8 = 128;
/// Probes the agent sent, kept for [`AgentOp::Answer`].
const SENT_PROBES: usize = 16;

/// One step of an agent script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentOp {
    /// Let `centis` hundredths of a second pass, then let the agent act.
    Advance {
        /// Hundredths of a second.
        centis: u16,
    },
    /// Step the wall clock by `secs` seconds.
    StepWall {
        /// Seconds, negative for back.
        secs: i16,
    },
    /// The agent's due datagrams reach the server from source `port` (see [`world::source`]),
    /// the first with bit `flip - 1` flipped; the server's answers are queued.
    Transmit {
        /// Source port selector: a NAT that moves.
        port: u8,
        /// Bit to flip, 0 none.
        flip: u16,
    },
    /// Up to `count` queued server datagrams reach the agent.
    Deliver {
        /// How many.
        count: u8,
    },
    /// The queued server datagrams are lost.
    Lose,
    /// Datagram `index` of those the agent received, again, with bit `flip - 1` flipped.
    Resend {
        /// Which, counted back from the latest.
        index: u8,
        /// Bit to flip.
        flip: u16,
    },
    /// Arbitrary bytes reach the agent.
    Raw {
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Puppet 0's client runs one exchange with the server from source `port`.
    Peer {
        /// Its source port selector.
        port: u8,
    },
    /// The interface's peer `peer` changes: a handshake `ago` seconds back (255: none), and
    /// `rx`/`tx` more bytes.
    Interface {
        /// Which peer (0 or 1).
        peer: u8,
        /// Seconds since its handshake.
        ago: u8,
        /// Bytes received more.
        rx: u16,
        /// Bytes sent more.
        tx: u16,
    },
    /// The probe the agent sent `index` probes back is answered from where it went: a pong for
    /// a ping, a ping back for a pong.
    Answer {
        /// Which, counted back from the latest.
        index: u8,
    },
    /// A probe made here reaches the agent from [`probe_source`]`(from)`: a ping or a pong
    /// (`pong` odd) with `txid`, from puppet 0 or (`stranger` odd) a key not on the interface,
    /// bit `flip - 1` flipped.
    Probe {
        /// Source selector.
        from: u8,
        /// Odd: a pong.
        pong: u8,
        /// Its txid.
        txid: u32,
        /// Odd: signed by a key that is no peer.
        stranger: u8,
        /// Bit to flip.
        flip: u16,
    },
}

/// Puppet 0's registered candidates; the loopback one is for the server to trim.
fn puppet_candidates() -> Vec<SocketAddr> {
    [
        "192.168.1.30:51820",
        "[2001:db8:1::30]:51820",
        "127.0.0.1:51820",
    ]
    .iter()
    .filter_map(|a| a.parse().ok())
    .collect()
}

/// Where [`AgentOp::Probe`] comes from: a candidate of puppet 0, a stranger on the LAN, or one
/// of the sources the server may see.
pub fn probe_source(from: u8) -> SocketAddr {
    match from % 4 {
        0 => puppet_candidates()
            .first()
            .copied()
            .unwrap_or_else(|| world::source(0)),
        1 => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 99)), 51820),
        _ => world::source(from),
    }
}

impl AgentOp {
    /// Reads one operation.
    pub fn decode(r: &mut Input<'_>) -> Self {
        match r.u8() % 11 {
            0 => Self::Advance { centis: r.u16() },
            1 => Self::StepWall { secs: r.i16() },
            2 => Self::Transmit {
                port: r.u8(),
                flip: r.u16(),
            },
            3 => Self::Deliver { count: r.u8() },
            4 => Self::Lose,
            5 => Self::Resend {
                index: r.u8(),
                flip: r.u16(),
            },
            6 => Self::Raw {
                bytes: r.chunk(MAX_RAW_LEN).to_vec(),
            },
            7 => Self::Peer { port: r.u8() },
            9 => Self::Answer { index: r.u8() },
            10 => Self::Probe {
                from: r.u8(),
                pong: r.u8(),
                txid: r.u32(),
                stranger: r.u8(),
                flip: r.u16(),
            },
            _ => Self::Interface {
                peer: r.u8(),
                ago: r.u8(),
                rx: r.u16(),
                tx: r.u16(),
            },
        }
    }

    /// Writes the operation as [`AgentOp::decode`] reads it.
    pub fn encode(&self, s: &mut Script) {
        match self {
            Self::Advance { centis } => s.u8(0).u16(*centis),
            Self::StepWall { secs } => s.u8(1).i16(*secs),
            Self::Transmit { port, flip } => s.u8(2).u8(*port).u16(*flip),
            Self::Deliver { count } => s.u8(3).u8(*count),
            Self::Lose => s.u8(4),
            Self::Resend { index, flip } => s.u8(5).u8(*index).u16(*flip),
            Self::Raw { bytes } => s.u8(6).chunk(bytes),
            Self::Peer { port } => s.u8(7).u8(*port),
            Self::Interface { peer, ago, rx, tx } => s.u8(8).u8(*peer).u8(*ago).u16(*rx).u16(*tx),
            Self::Answer { index } => s.u8(9).u8(*index),
            Self::Probe {
                from,
                pong,
                txid,
                stranger,
                flip,
            } => s
                .u8(10)
                .u8(*from)
                .u8(*pong)
                .u32(*txid)
                .u8(*stranger)
                .u16(*flip),
        };
    }
}

/// Writes a script of `ops`, the first byte choosing continuous mode.
pub fn script(continuous: bool, ops: &[AgentOp]) -> Vec<u8> {
    let mut s = Script::new();
    s.u8(u8::from(continuous));
    for op in ops {
        op.encode(&mut s);
    }
    s.into_bytes()
}

/// What a run did, for the seed tests.
#[derive(Debug, Default)]
pub struct Report {
    /// Endpoints set, in order.
    pub endpoints_set: Vec<(PublicKey, SocketAddr)>,
    /// The run ended with this action.
    pub exited: bool,
    /// Datagrams the agent sent.
    pub sent: usize,
    /// Probes the agent sent.
    pub probes: usize,
}

/// The agent, the server, puppet 0's client and the model interface.
struct AgentSim {
    clock: Clock,
    agent: Agent,
    server: Server,
    peer: Client,
    iface: BTreeMap<PublicKey, PeerSnapshot>,
    to_agent: VecDeque<Vec<u8>>,
    received: VecDeque<Vec<u8>>,
    punched: BTreeMap<PublicKey, BTreeSet<SocketAddr>>,
    /// Sources of the pongs delivered to the agent: endpoints it may set without a punch.
    answered: BTreeSet<SocketAddr>,
    /// The latest probes the agent sent: where to, and what.
    sent_probes: VecDeque<(SocketAddr, Vec<u8>)>,
    report: Report,
}

fn local() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 1, 20)), 51820)
}

impl AgentSim {
    fn new(continuous: bool) -> Self {
        let clock = Clock::start();
        let iface: BTreeMap<PublicKey, PeerSnapshot> = (0..2u8)
            .map(|n| {
                let key = world::puppet_public(n);
                (key, PeerSnapshot::new(key))
            })
            .collect();
        let config = AgentConfig {
            continuous,
            keepalive: 25,
            handshake_timeout: Duration::from_secs(15),
            delay: Duration::from_secs(2),
            timeout: Duration::from_secs(60),
            punch_ttl: None,
            family: wgpunch_common::agent::local::Family::Auto,
            server: None,
            seed: [0; 32],
        };
        let discovery = Discovery::Native(Box::new(world::client()));
        let snapshot = InterfaceSnapshot {
            peers: iface.values().cloned().collect(),
        };
        let mut agent = Agent::new(config, discovery, local(), snapshot, clock.now, clock.wall);
        agent.handle_addresses(
            local(),
            vec![LocalAddr::new(local().ip(), 24)],
            clock.now,
            clock.wall,
        );
        let peer = Client::new(
            world::puppet_key(0),
            world::server_public(),
            vec![world::client_public()],
            puppet_candidates(),
            ClientConfig::default(),
            world::seed(7, 0),
        );
        Self {
            clock,
            agent,
            server: world::server(false),
            peer,
            iface,
            to_agent: VecDeque::new(),
            received: VecDeque::new(),
            punched: BTreeMap::new(),
            answered: BTreeSet::new(),
            sent_probes: VecDeque::new(),
            report: Report::default(),
        }
    }

    fn snapshot(&self) -> InterfaceSnapshot {
        InterfaceSnapshot {
            peers: self.iface.values().cloned().collect(),
        }
    }

    /// Lets the agent act on the time, applying its actions as the binary does.
    fn act(&mut self) {
        self.agent.handle_timeout(self.clock.now);
        while let Some(action) = self.agent.poll_action() {
            assert!(!self.report.exited, "action after the exit: {action:?}");
            match action {
                Action::Punch { peer, endpoint, .. } => {
                    assert!(self.iface.contains_key(&peer), "punch for {peer}");
                    self.punched.entry(peer).or_default().insert(endpoint);
                }
                Action::SetEndpoint { peer, endpoint, .. } => {
                    assert!(
                        self.punched
                            .get(&peer)
                            .is_some_and(|p| p.contains(&endpoint))
                            || self.answered.contains(&endpoint),
                        "endpoint {endpoint} set for {peer} without a punch towards it or a pong from it"
                    );
                    self.report.endpoints_set.push((peer, endpoint));
                    if let Some(p) = self.iface.get_mut(&peer) {
                        p.endpoint = Some(endpoint);
                        p.keepalive = Some(25);
                    }
                }
                Action::SetKeepalive { peer, keepalive } => {
                    if let Some(p) = self.iface.get_mut(&peer) {
                        p.keepalive = Some(keepalive);
                    }
                }
                Action::Park { peer, endpoint, .. } => {
                    assert!(endpoint.ip().is_loopback(), "parked at {endpoint}");
                    self.punched.remove(&peer);
                    if let Some(p) = self.iface.get_mut(&peer) {
                        p.endpoint = Some(endpoint);
                    }
                }
                Action::ReadInterface => {
                    let snapshot = self.snapshot();
                    self.agent
                        .handle_interface(snapshot, self.clock.now, self.clock.wall);
                }
                Action::Probe { peer, to, payload } => {
                    assert_eq!(peer, world::puppet_public(0), "probe for {peer}");
                    let sane = puppet_candidates()
                        .into_iter()
                        .filter(|a| !a.ip().is_loopback())
                        .any(|a| a == to);
                    let public = (PEER_PORTS..=u8::MAX).any(|p| world::source(p) == to);
                    assert!(
                        sane || public,
                        "probe to {to}, neither a sane candidate nor a source of the peer"
                    );
                    assert!(Probe::parse(&payload).is_ok(), "probe that does not parse");
                    self.report.probes += 1;
                    self.sent_probes.push_back((to, payload));
                    if self.sent_probes.len() > SENT_PROBES {
                        self.sent_probes.pop_front();
                    }
                }
                Action::Notice(_) => {}
                Action::Exit(_) => self.report.exited = true,
            }
        }
    }

    fn transmit(&mut self, port: u8, flip: u16) {
        self.act();
        for n in 0..MAX_SENDS_PER_STEP {
            let Some(datagram) = self.agent.poll_transmit(self.clock.now, self.clock.wall) else {
                break;
            };
            assert!(!self.report.exited, "sent after the exit");
            assert!(
                matches!(
                    Packet::parse(&datagram),
                    Ok(Packet::HandshakeInit(_) | Packet::Transport(_))
                ),
                "the agent sent a datagram no client sends: {datagram:02x?}"
            );
            self.report.sent += 1;
            let datagram = if n == 0 {
                world::flipped(&datagram, flip)
            } else {
                datagram
            };
            let from = world::source(port % PEER_PORTS);
            let (now, wall) = (self.clock.now, self.clock.wall);
            if let Some(reply) = self.server.handle(now, wall, from, &datagram) {
                self.to_agent.push_back(reply);
            }
            self.take_pushes();
        }
    }

    /// The server's pushes: those for the agent's current source are queued for it, those for
    /// the peer are its business.
    fn take_pushes(&mut self) {
        while let Some(push) = self.server.poll_transmit() {
            if push.destination.port() < world::source(PEER_PORTS).port() {
                self.to_agent.push_back(push.datagram);
            }
        }
    }

    fn receive(&mut self, datagram: Vec<u8>) {
        self.agent
            .handle_datagram(self.clock.now, self.clock.wall, &datagram);
        self.received.push_back(datagram);
        if self.received.len() > HISTORY {
            self.received.pop_front();
        }
        self.act();
    }

    fn peer_exchange(&mut self, port: u8) {
        let (now, wall) = (self.clock.now, self.clock.wall);
        self.peer.lookup_with([(world::client_public(), true)]);
        let from = world::source(PEER_PORTS + port % PEER_PORTS);
        for _ in 0..MAX_SENDS_PER_STEP {
            let Some(datagram) = self.peer.poll_transmit(now, wall) else {
                break;
            };
            if let Some(reply) = self.server.handle(now, wall, from, &datagram) {
                self.peer.handle_datagram(now, &reply);
            }
            self.take_pushes();
        }
        while self.peer.poll_event().is_some() {}
    }

    /// `bytes` reach the agent as a probe from `from`.
    fn probe(&mut self, from: SocketAddr, bytes: &[u8]) {
        if Probe::parse(bytes).is_ok_and(|p| p.kind == ProbeKind::Pong) {
            self.answered.insert(from);
        }
        self.agent
            .handle_probe(self.clock.now, self.clock.wall, from, bytes);
        self.act();
    }

    fn apply(&mut self, op: AgentOp) {
        match op {
            AgentOp::Advance { centis } => {
                self.clock.advance(centis);
                self.act();
            }
            AgentOp::StepWall { secs } => self.clock.step_wall(secs),
            AgentOp::Transmit { port, flip } => self.transmit(port, flip),
            AgentOp::Deliver { count } => {
                for _ in 0..count {
                    let Some(datagram) = self.to_agent.pop_front() else {
                        break;
                    };
                    self.receive(datagram);
                }
            }
            AgentOp::Lose => self.to_agent.clear(),
            AgentOp::Resend { index, flip } => {
                let len = self.received.len();
                if len > 0 {
                    let i = len - 1 - usize::from(index) % len;
                    if let Some(old) = self.received.get(i) {
                        let datagram = world::flipped(old, flip);
                        self.receive(datagram);
                    }
                }
            }
            AgentOp::Raw { bytes } => self.receive(bytes),
            AgentOp::Peer { port } => self.peer_exchange(port),
            AgentOp::Answer { index } => {
                let len = self.sent_probes.len();
                if len > 0 {
                    let i = len - 1 - usize::from(index) % len;
                    if let Some((to, payload)) = self.sent_probes.get(i).cloned() {
                        if let Ok(sent) = Probe::parse(&payload) {
                            let answer = match sent.kind {
                                ProbeKind::Ping => sent.pong(),
                                ProbeKind::Pong => Probe {
                                    kind: ProbeKind::Ping,
                                    sender: sent.receiver,
                                    receiver: sent.sender,
                                    ..sent
                                },
                            };
                            self.probe(to, &answer.emit());
                        }
                    }
                }
            }
            AgentOp::Probe {
                from,
                pong,
                txid,
                stranger,
                flip,
            } => {
                let probe = Probe {
                    kind: if pong % 2 == 1 {
                        ProbeKind::Pong
                    } else {
                        ProbeKind::Ping
                    },
                    txid: u64::from(txid),
                    sender: if stranger % 2 == 1 {
                        PublicKey([0x55; 32])
                    } else {
                        world::puppet_public(0)
                    },
                    receiver: world::client_public(),
                };
                let bytes = world::flipped(&probe.emit(), flip);
                self.probe(probe_source(from), &bytes);
            }
            AgentOp::Interface { peer, ago, rx, tx } => {
                let key = world::puppet_public(peer % 2);
                let wall = self.clock.wall;
                if let Some(p) = self.iface.get_mut(&key) {
                    p.last_handshake =
                        (ago != u8::MAX).then(|| wall - Duration::from_secs(u64::from(ago)));
                    p.rx_bytes = p.rx_bytes.saturating_add(u64::from(rx));
                    p.tx_bytes = p.tx_bytes.saturating_add(u64::from(tx));
                }
            }
        }
    }
}

/// Runs the script in `data`, panicking when a check fails.
pub fn run(data: &[u8]) -> Report {
    let mut input = Input::new(data);
    let continuous = input.u8() & 1 == 1;
    let mut sim = AgentSim::new(continuous);
    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = AgentOp::decode(&mut input);
        sim.apply(op);
    }
    sim.report
}

/// `rounds` rounds of both sides exchanging with the server, 0.1 s apart: after six, the agent
/// knows the peer's candidates and probes them.
pub fn exchanges(rounds: usize) -> Vec<AgentOp> {
    let mut ops = vec![];
    for _ in 0..rounds {
        ops.extend([
            AgentOp::Peer { port: 1 },
            AgentOp::Transmit { port: 3, flip: 0 },
            AgentOp::Deliver { count: 16 },
            AgentOp::Advance { centis: 10 },
        ]);
    }
    ops
}

/// A script's steps in which both sides exchange with the server until the agent has set the
/// peer's endpoint: its probes go unanswered, so after their wait it takes the public path. The
/// seed corpus starts from it.
pub fn connect() -> Vec<AgentOp> {
    let mut ops = exchanges(6);
    ops.push(AgentOp::Advance { centis: 160 });
    ops.extend(exchanges(6));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connect_seed_sets_the_peers_endpoint_behind_the_barrier() {
        let report = run(&script(false, &connect()));
        assert_eq!(
            report.endpoints_set.first().map(|(k, _)| *k),
            Some(world::puppet_public(0)),
            "{report:?}"
        );
    }

    #[test]
    fn a_one_shot_run_exits_once_the_peer_connected() {
        let mut ops = connect();
        ops.extend([
            AgentOp::Interface {
                peer: 0,
                ago: 0,
                rx: 148,
                tx: 92,
            },
            AgentOp::Advance { centis: 20 },
            AgentOp::Interface {
                peer: 1,
                ago: 0,
                rx: 148,
                tx: 92,
            },
            AgentOp::Advance { centis: 200 },
        ]);
        let report = run(&script(false, &ops));
        assert!(report.exited, "{report:?}");
    }

    #[test]
    fn an_answer_after_the_exit_changes_nothing() {
        // Found by the fuzzer: a server datagram handled after the one-shot exit made the agent
        // act again.
        let hex = "000701020300000310000001fa00021000000a070102030000031000000a070102030000031080000a03003200031000080a070102035500031000000a00000000000000000000000000000000000000000000000000000007010a0701";
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        run(&bytes);
    }

    #[test]
    fn an_answered_probe_sets_the_lan_candidate_as_the_endpoint() {
        let mut ops = exchanges(6);
        ops.push(AgentOp::Answer { index: 0 });
        let report = run(&script(false, &ops));
        assert!(report.probes > 0, "the agent never probed: {report:?}");
        let lan: SocketAddr = "192.168.1.30:51820".parse().unwrap();
        assert!(
            report
                .endpoints_set
                .contains(&(world::puppet_public(0), lan)),
            "{report:?}"
        );
    }

    #[test]
    fn probes_from_strangers_and_forged_pongs_set_nothing() {
        let mut ops = exchanges(6);
        for from in 0..4 {
            ops.push(AgentOp::Probe {
                from,
                pong: 1,
                txid: 7,
                stranger: from % 2,
                flip: 0,
            });
            ops.push(AgentOp::Probe {
                from,
                pong: 0,
                txid: 7,
                stranger: 1,
                flip: 0,
            });
        }
        let report = run(&script(false, &ops));
        let lan: SocketAddr = "192.168.1.30:51820".parse().unwrap();
        assert!(
            !report.endpoints_set.iter().any(|(_, e)| *e == lan),
            "{report:?}"
        );
    }

    #[test]
    fn empty_and_short_inputs_run() {
        run(&[]);
        run(&[1]);
        run(&[0, 6, 0, 0]);
    }
}
