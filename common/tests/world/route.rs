//! How packets travel: from a host through its NAT into the core, to the server or to the
//! other NAT and the host behind it, with TTL, loss and reordering on the way.

use std::net::SocketAddr;
use std::time::Duration;

use super::nat::Inbound;
use super::net::{Packet, Payload, DEFAULT_TTL, LAN_DELAY, SERVER_DELAY};
use super::wireguard::Message;
use super::{Delivery, World, SERVER};

impl World {
    /// Host `i` sends `packet`: through its NAT, or straight into the core.
    /// Host `i`'s WireGuard sends `message` to `dst` from its WireGuard port.
    pub(super) fn send_wireguard(&mut self, i: usize, dst: SocketAddr, message: Message) {
        let src = self.hosts[i].local;
        let payload = Payload::WireGuard(message);
        self.send(
            i,
            Packet {
                src,
                dst,
                ttl: DEFAULT_TTL,
                payload,
            },
        );
    }

    pub(super) fn send(&mut self, i: usize, packet: Packet) {
        self.note(format!(
            "{} sends {}",
            self.hosts[i].name,
            packet.describe()
        ));
        if packet.dst.ip().is_loopback() {
            return;
        }
        let now = self.clock.now();
        if self.nats[i].is_some() {
            self.queue
                .push(now + LAN_DELAY, Delivery::NatOut(i, packet));
        } else {
            self.queue
                .push(now + self.access[i], Delivery::Core(packet));
        }
    }

    pub(super) fn deliver(&mut self, delivery: Delivery) {
        let (now, wall) = (self.clock.now(), self.clock.wall());
        match delivery {
            Delivery::Start(i) => {
                let config = self.configs[i].take().expect("configured");
                let seed = self.rng.seed();
                let private = self.privates[i].clone();
                let server = self.server.public_key();
                self.note(format!(
                    "{} starts (continuous: {})",
                    self.hosts[i].name, config.continuous
                ));
                self.hosts[i].start(private, server, config, seed, now, wall);
            }
            Delivery::NatOut(i, mut packet) => {
                let Some(ttl) = self.hop(&packet) else { return };
                packet.ttl = ttl;
                let nat = self.nats[i].as_mut().expect("a NAT");
                packet.src = nat.outbound(now, &mut self.rng, packet.src, packet.dst);
                self.queue
                    .push(now + self.access[i], Delivery::Core(packet));
            }
            Delivery::Core(mut packet) => {
                let Some(ttl) = self.hop(&packet) else { return };
                packet.ttl = ttl;
                if self.rng.chance(self.faults.loss) {
                    self.note(format!("lost {}", packet.describe()));
                    return;
                }
                let jitter = self.jitter();
                if packet.dst == SERVER {
                    self.queue
                        .push(now + SERVER_DELAY + jitter, Delivery::Server(packet));
                    return;
                }
                let ip = packet.dst.ip();
                let to = (0..self.hosts.len()).find_map(|j| match &self.nats[j] {
                    Some(nat) if nat.ip == ip => Some(Delivery::NatIn(j, packet.clone())),
                    None if self.hosts[j].local.ip() == ip => {
                        Some(Delivery::Host(j, packet.clone()))
                    }
                    _ => None,
                });
                match to {
                    Some(d) => {
                        let j = match &d {
                            Delivery::NatIn(j, _) | Delivery::Host(j, _) => *j,
                            _ => unreachable!(),
                        };
                        self.queue.push(now + self.access[j] + jitter, d);
                    }
                    None => self.note(format!("no route for {}", packet.describe())),
                }
            }
            Delivery::NatIn(i, mut packet) => {
                let nat = self.nats[i].as_mut().expect("a NAT");
                match nat.inbound(now, packet.src, packet.dst) {
                    Inbound::Forward(inside) => {
                        let Some(ttl) = self.hop(&packet) else { return };
                        packet.ttl = ttl;
                        packet.dst = inside;
                        self.queue.push(now + LAN_DELAY, Delivery::Host(i, packet));
                    }
                    Inbound::Filtered => self.note(format!(
                        "NAT of {} filters {}",
                        self.hosts[i].name,
                        packet.describe()
                    )),
                    Inbound::Trapped => self.note(format!(
                        "NAT of {} keeps a trap entry for {}",
                        self.hosts[i].name,
                        packet.describe()
                    )),
                }
            }
            Delivery::Host(i, packet) => self.receive(i, packet),
            Delivery::Server(packet) => {
                let Payload::Discovery(datagram) = &packet.payload else {
                    return;
                };
                for (dst, datagram) in self.server_outgoing(packet.src, datagram) {
                    let reply = Packet {
                        src: SERVER,
                        dst,
                        ttl: DEFAULT_TTL,
                        payload: Payload::Discovery(datagram),
                    };
                    self.queue.push(now + SERVER_DELAY, Delivery::Core(reply));
                }
            }
        }
    }

    /// Everything the server sends after receiving `datagram` from `from`: the reply, then the
    /// pushes it queued for other clients.
    fn server_outgoing(&mut self, from: SocketAddr, datagram: &[u8]) -> Vec<(SocketAddr, Vec<u8>)> {
        let (now, wall) = (self.clock.now(), self.clock.wall());
        let mut out = Vec::new();
        if let Some(reply) = self.server.handle(now, wall, from, datagram) {
            out.push((from, reply));
        }
        while let Some(push) = self.server.poll_transmit() {
            out.push((push.destination, push.datagram));
        }
        out
    }

    fn receive(&mut self, i: usize, packet: Packet) {
        let (now, wall) = (self.clock.now(), self.clock.wall());
        self.note(format!(
            "{} receives {}",
            self.hosts[i].name,
            packet.describe()
        ));
        if packet.dst != self.hosts[i].local {
            return;
        }
        match packet.payload {
            Payload::Discovery(datagram) if packet.src == SERVER => {
                self.hosts[i].receive_discovery(now, wall, &datagram);
            }
            Payload::WireGuard(message) => {
                let answer = self.hosts[i].wg.receive(now, wall, packet.src, message);
                if let Some((dst, message)) = answer {
                    self.send_wireguard(i, dst, message);
                }
            }
            Payload::Discovery(_) | Payload::Punch => {}
        }
    }

    /// One router hop: the TTL left, or `None` when the packet dies here.
    fn hop(&self, packet: &Packet) -> Option<u8> {
        let ttl = packet.ttl.saturating_sub(1);
        if ttl == 0 {
            self.note(format!("TTL ran out: {}", packet.describe()));
            return None;
        }
        Some(ttl)
    }

    fn jitter(&mut self) -> Duration {
        let max = self.faults.jitter.as_millis() as u64;
        if max == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(self.rng.range(0, max))
        }
    }
}
