//! An in-memory world for the client's [`Agent`]: WireGuard hosts behind modelled NATs, the
//! real discovery [`Server`] on a public address, and a discrete-event simulator in virtual
//! time. Deterministic for a seed. `WORLD_TRACE=1` prints every delivery and action.

pub mod host;
pub mod nat;
pub mod net;
mod route;
pub mod sim;
pub mod wireguard;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use wgpunch_common::agent::AgentConfig;
use wgpunch_common::keys::{PrivateKey, PublicKey};
use wgpunch_common::server::{Server, ServerConfig};

use host::{Host, WG_PORT};
use nat::{Mapping, Nat};
use net::{Faults, Packet};
use sim::{Clock, Queue, Rng};

/// The discovery server's public address.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 51818);

/// How often the WireGuard models' timers run.
const WG_TICK: Duration = Duration::from_millis(100);

/// Where a host sits.
#[derive(Debug, Clone, Copy)]
pub enum Site {
    /// Behind a NAT of this kind, with or without a stateful firewall.
    Nat(Mapping, bool),
    /// On a public address, no NAT.
    Public,
}

/// Something due at a time.
enum Delivery {
    /// A packet leaving host `i`'s LAN through its NAT.
    NatOut(usize, Packet),
    /// A packet in the core router.
    Core(Packet),
    /// A packet arriving at host `i`'s NAT from outside.
    NatIn(usize, Packet),
    /// A packet arriving at host `i`.
    Host(usize, Packet),
    /// A packet arriving at the server.
    Server(Packet),
    /// Host `i`'s client starts.
    Start(usize),
}

/// The whole simulated world.
pub struct World {
    clock: Clock,
    rng: Rng,
    queue: Queue<Delivery>,
    server: Server,
    /// The hosts, in the order they were given.
    pub hosts: Vec<Host>,
    /// Each host's NAT (`None`: public host).
    pub nats: Vec<Option<Nat>>,
    privates: Vec<PrivateKey>,
    configs: Vec<Option<AgentConfig>>,
    access: Vec<Duration>,
    faults: Faults,
    next_tick: Instant,
    next_expiry: Instant,
    trace: bool,
    traced_actions: Vec<usize>,
}

/// The configuration of the real client with its defaults (`--delay 2`, keepalive 25 s).
pub fn config(continuous: bool) -> AgentConfig {
    AgentConfig {
        continuous,
        keepalive: 25,
        handshake_timeout: Duration::from_secs(15),
        delay: Duration::from_secs(2),
        timeout: Duration::from_secs(60),
        punch_ttl: None,
        family: wgpunch_common::agent::local::Family::Auto,
        server: None,
        seed: [0; 32],
    }
}

impl World {
    /// A world of `sites`, each host a WireGuard peer of every other, with `faults` in the core.
    pub fn new(seed: u64, faults: Faults, sites: &[Site]) -> Self {
        let mut rng = Rng::new(seed);
        let clock = Clock::new();
        let server = Server::new(
            PrivateKey::from_bytes([200; 32]),
            ServerConfig::default(),
            rng.seed(),
        );
        let privates: Vec<PrivateKey> = (0..sites.len())
            .map(|i| PrivateKey::from_bytes([i as u8 + 1; 32]))
            .collect();
        let keys: Vec<PublicKey> = privates.iter().map(PrivateKey::public_key).collect();
        let mut hosts = Vec::new();
        let mut nats = Vec::new();
        let mut access = Vec::new();
        for (i, site) in sites.iter().enumerate() {
            let peers: Vec<PublicKey> = keys
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, k)| *k)
                .collect();
            let n = i as u8;
            let (local, nat) = match *site {
                Site::Nat(mapping, firewall) => (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, n + 1, 2)), WG_PORT),
                    Some(Nat::new(
                        mapping,
                        firewall,
                        IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + n)),
                    )),
                ),
                Site::Public => (
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + n)), WG_PORT),
                    None,
                ),
            };
            let name = char::from(b'a' + n).to_string();
            hosts.push(Host::new(&name, &privates[i], local, &peers));
            nats.push(nat);
            access.push(Duration::from_millis(rng.range(10, 30)));
        }
        let now = clock.now();
        Self {
            clock,
            rng,
            queue: Queue::new(),
            server,
            traced_actions: vec![0; hosts.len()],
            configs: vec![None; hosts.len()],
            hosts,
            nats,
            privates,
            access,
            faults,
            next_tick: now,
            next_expiry: now,
            trace: std::env::var_os("WORLD_TRACE").is_some_and(|v| v != "0"),
        }
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.clock.elapsed()
    }

    /// Starts host `i`'s client `after` from now.
    pub fn start(&mut self, i: usize, config: AgentConfig, after: Duration) {
        self.configs[i] = Some(config);
        self.queue
            .push(self.clock.now() + after, Delivery::Start(i));
    }

    /// Turns the ping application on or off on every host.
    pub fn ping(&mut self, on: bool) {
        for host in &mut self.hosts {
            host.wg.pinging = on;
        }
    }

    /// The public address host `i`'s WireGuard port has towards `remote` right now.
    pub fn public_of(&mut self, i: usize, remote: SocketAddr) -> Option<SocketAddr> {
        let now = self.clock.now();
        let local = self.hosts[i].local;
        match &mut self.nats[i] {
            None => Some(local),
            Some(nat) => nat.mapped(now, local, remote),
        }
    }

    /// True when `a` and `b` have a session with each other and each holds as the other's
    /// endpoint the address the other's NAT really maps it to.
    pub fn connected(&mut self, a: usize, b: usize) -> bool {
        let (ka, kb) = (self.hosts[a].key, self.hosts[b].key);
        let (Some(pa), Some(pb)) = (self.hosts[a].wg.peer(&kb), self.hosts[b].wg.peer(&ka)) else {
            return false;
        };
        if !pa.has_session() || !pb.has_session() {
            return false;
        }
        let (Some(a_holds), Some(b_holds)) = (pa.endpoint, pb.endpoint) else {
            return false;
        };
        self.public_of(b, b_holds) == Some(a_holds) && self.public_of(a, a_holds) == Some(b_holds)
    }

    /// When `a` last received a ping from `b`.
    pub fn last_ping(&self, a: usize, b: usize) -> Option<Instant> {
        let kb = self.hosts[b].key;
        self.hosts[a].wg.peer(&kb).and_then(|p| p.last_ping)
    }

    /// True when pings crossed between `a` and `b` both ways after `since`.
    pub fn pinged_since(&self, a: usize, b: usize, since: Instant) -> bool {
        self.last_ping(a, b).is_some_and(|t| t > since)
            && self.last_ping(b, a).is_some_and(|t| t > since)
    }

    /// The monotonic time now.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Host `i`'s public key.
    pub fn key(&self, i: usize) -> PublicKey {
        self.hosts[i].key
    }

    /// Trap clashes over every NAT so far.
    pub fn trap_clashes(&self) -> u32 {
        self.nats.iter().flatten().map(|n| n.trap_clashes).sum()
    }

    /// Moves host `i`'s NAT to a new public address, forgetting every flow.
    pub fn change_address(&mut self, i: usize) {
        let nat = self.nats[i].as_mut().expect("a NAT");
        let IpAddr::V4(old) = nat.ip else {
            unreachable!("IPv4 only")
        };
        let [x, y, z, w] = old.octets();
        let ip = IpAddr::V4(Ipv4Addr::new(x, y, z, w.wrapping_add(100)));
        nat.change_address(ip);
        self.note(format!("NAT of {} now at {ip}", self.hosts[i].name));
    }

    /// Remaps host `i`'s NAT: every flow forgotten, new flows in a new port range.
    pub fn remap(&mut self, i: usize) {
        self.nats[i].as_mut().expect("a NAT").remap();
        self.note(format!("NAT of {} remapped", self.hosts[i].name));
    }

    /// Runs for `duration` of virtual time.
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.clock.now() + duration;
        while self.step(end) {}
    }

    /// Runs until `done` holds or `limit` passes; returns how long it took.
    pub fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut World) -> bool,
    ) -> Option<Duration> {
        let start = self.clock.now();
        let end = start + limit;
        loop {
            if done(self) {
                return Some(self.clock.now() - start);
            }
            if !self.step(end) {
                return done(self).then(|| self.clock.now() - start);
            }
        }
    }

    /// Does the next thing due no later than `end`; false once nothing is left before it.
    fn step(&mut self, end: Instant) -> bool {
        let wake = self.hosts.iter().filter_map(|h| h.wake).min();
        let next = [self.queue.next_at(), wake, Some(self.next_tick)]
            .into_iter()
            .flatten()
            .min()
            .expect("the tick is always due");
        if next > end {
            self.clock.advance_to(end);
            return false;
        }
        self.clock.advance_to(next);
        let now = self.clock.now();
        if let Some(delivery) = self.queue.pop_due(now) {
            self.deliver(delivery);
        } else if let Some(i) = self
            .hosts
            .iter()
            .position(|h| h.wake.is_some_and(|w| w <= now))
        {
            self.step_host(i);
        } else {
            self.tick();
        }
        true
    }

    fn tick(&mut self) {
        let now = self.clock.now();
        self.next_tick = now + WG_TICK;
        if now >= self.next_expiry {
            self.next_expiry = now + Duration::from_secs(1);
            self.server.expire(now);
        }
        for i in 0..self.hosts.len() {
            for (dst, message) in self.hosts[i].wg.tick(now) {
                self.send_wireguard(i, dst, message);
            }
        }
    }

    fn step_host(&mut self, i: usize) {
        let (now, wall) = (self.clock.now(), self.clock.wall());
        let packets = self.hosts[i].step(now, wall, SERVER);
        if self.trace {
            let host = &self.hosts[i];
            for (_, action) in &host.actions[self.traced_actions[i]..] {
                println!(
                    "{:>10.3} {} action {:?}",
                    self.clock.elapsed().as_secs_f64(),
                    host.name,
                    action
                );
            }
            if let Some((outcome, _)) = &host.outcome {
                if host.agent.is_none()
                    && host.wake.is_none()
                    && self.traced_actions[i] < host.actions.len()
                {
                    println!(
                        "{:>10.3} {} exited {:?}",
                        self.clock.elapsed().as_secs_f64(),
                        host.name,
                        outcome
                    );
                }
            }
        }
        self.traced_actions[i] = self.hosts[i].actions.len();
        for packet in packets {
            self.send(i, packet);
        }
    }

    /// Prints `what` with the virtual time when tracing.
    fn note(&self, what: String) {
        if self.trace {
            println!("{:>10.3} {what}", self.clock.elapsed().as_secs_f64());
        }
    }
}
