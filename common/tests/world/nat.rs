//! NAT routers as conntrack-like tables of UDP flows, including the Linux conntrack trap.
//!
//! An entry holds one flow: the inside source, the remote, and the public `ip:port` it is
//! mapped to. It lives 30 s until a reply came, 120 s after. Inbound packets must match an
//! entry exactly (address- and port-dependent filtering). An unmatched inbound packet that no
//! firewall drops leaves a *trap* entry `remote -> public ip:port` behind (30 s, refreshed by
//! further such packets); an outbound flow whose reply tuple would be that entry's gets another
//! public port, exactly as Linux conntrack resolves the clash.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::sim::Rng;

/// How long an entry without a reply lives.
pub const UNREPLIED: Duration = Duration::from_secs(30);
/// How long an entry that saw a reply lives.
pub const REPLIED: Duration = Duration::from_secs(120);

/// How a NAT picks the public port of a new flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Linux masquerade: the source port is kept unless that would clash.
    Masquerade,
    /// Endpoint-independent to another port: random in the NAT's range, reused for every
    /// destination while some entry from that source exists.
    Remap,
    /// A new random port for every destination.
    Symmetric,
}

/// One flow in the table.
#[derive(Debug, Clone)]
struct Flow {
    /// The inside source; `None` for a trap entry (an unsolicited packet to the router itself).
    inside: Option<SocketAddr>,
    remote: SocketAddr,
    public: SocketAddr,
    replied: bool,
    expires: Instant,
}

/// What the NAT did with an inbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Forwarded to this inside address.
    Forward(SocketAddr),
    /// Dropped by the firewall.
    Filtered,
    /// Dropped, leaving (or refreshing) a trap entry.
    Trapped,
}

/// A NAT router with its conntrack table.
#[derive(Debug)]
pub struct Nat {
    /// How new flows get their public port.
    pub mapping: Mapping,
    /// A stateful firewall drops unsolicited inbound before conntrack records it: no trap.
    pub firewall: bool,
    /// The public address.
    pub ip: IpAddr,
    /// Ports for [`Mapping::Remap`] and [`Mapping::Symmetric`] (and masquerade after a remap).
    range: Option<(u16, u16)>,
    flows: Vec<Flow>,
    /// Outbound flows that had to take another port because a trap entry held theirs.
    pub trap_clashes: u32,
}

impl Nat {
    /// A NAT at `ip`.
    pub fn new(mapping: Mapping, firewall: bool, ip: IpAddr) -> Self {
        let range = (mapping != Mapping::Masquerade).then_some((40000, 40999));
        Self {
            mapping,
            firewall,
            ip,
            range,
            flows: Vec::new(),
            trap_clashes: 0,
        }
    }

    fn expire(&mut self, now: Instant) {
        self.flows.retain(|f| f.expires > now);
    }

    /// The public address `inside` is mapped to towards `remote` right now, if any.
    pub fn mapped(
        &mut self,
        now: Instant,
        inside: SocketAddr,
        remote: SocketAddr,
    ) -> Option<SocketAddr> {
        self.expire(now);
        self.flows
            .iter()
            .find(|f| f.inside == Some(inside) && f.remote == remote)
            .map(|f| f.public)
    }

    /// Translates an outbound packet from `inside` to `remote`: returns the public source.
    pub fn outbound(
        &mut self,
        now: Instant,
        rng: &mut Rng,
        inside: SocketAddr,
        remote: SocketAddr,
    ) -> SocketAddr {
        self.expire(now);
        if let Some(flow) = self
            .flows
            .iter_mut()
            .find(|f| f.inside == Some(inside) && f.remote == remote)
        {
            flow.expires = now + if flow.replied { REPLIED } else { UNREPLIED };
            return flow.public;
        }
        let preferred = match (self.mapping, self.range) {
            (Mapping::Symmetric, _) => None,
            (Mapping::Masquerade, None) => Some(inside.port()),
            (_, Some(_)) => self
                .flows
                .iter()
                .find(|f| f.inside == Some(inside))
                .map(|f| f.public.port()),
            (Mapping::Remap, None) => None,
        };
        let port = match preferred {
            Some(port) if !self.taken(port, remote) => port,
            other => {
                if let Some(port) = other {
                    if self.trapped(port, remote) {
                        self.trap_clashes += 1;
                    }
                }
                self.fresh_port(rng, remote)
            }
        };
        let public = SocketAddr::new(self.ip, port);
        self.flows.push(Flow {
            inside: Some(inside),
            remote,
            public,
            replied: false,
            expires: now + UNREPLIED,
        });
        public
    }

    /// Handles an inbound packet from `remote` to our public `public`.
    pub fn inbound(&mut self, now: Instant, remote: SocketAddr, public: SocketAddr) -> Inbound {
        self.expire(now);
        if let Some(flow) = self
            .flows
            .iter_mut()
            .find(|f| f.public == public && f.remote == remote)
        {
            if let Some(inside) = flow.inside {
                flow.replied = true;
                flow.expires = now + REPLIED;
                return Inbound::Forward(inside);
            }
            flow.expires = now + UNREPLIED;
            return Inbound::Trapped;
        }
        if self.firewall {
            return Inbound::Filtered;
        }
        self.flows.push(Flow {
            inside: None,
            remote,
            public,
            replied: false,
            expires: now + UNREPLIED,
        });
        Inbound::Trapped
    }

    /// Forgets every flow and maps new flows into a new port range.
    pub fn remap(&mut self) {
        self.flows.clear();
        let (low, _) = self.range.unwrap_or((40000, 40999));
        let low = if low >= 60000 { 41000 } else { low + 1000 };
        self.range = Some((low, low + 999));
    }

    /// Takes a new public address and forgets every flow.
    pub fn change_address(&mut self, ip: IpAddr) {
        self.flows.clear();
        self.ip = ip;
    }

    /// True when a trap entry from `remote` holds `port`.
    fn trapped(&self, port: u16, remote: SocketAddr) -> bool {
        self.flows
            .iter()
            .any(|f| f.inside.is_none() && f.public.port() == port && f.remote == remote)
    }

    /// True when a flow towards `remote` holds `port` already: its reply tuple would clash.
    fn taken(&self, port: u16, remote: SocketAddr) -> bool {
        self.flows
            .iter()
            .any(|f| f.public.port() == port && f.remote == remote)
    }

    fn fresh_port(&self, rng: &mut Rng, remote: SocketAddr) -> u16 {
        let (low, high) = self.range.unwrap_or((32768, 60999));
        loop {
            let port = rng.range(u64::from(low), u64::from(high)) as u16;
            if !self.taken(port, remote) {
                return port;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_unsolicited_packet_makes_masquerade_pick_another_port() {
        let now = Instant::now();
        let mut rng = Rng::new(1);
        let mut nat = Nat::new(Mapping::Masquerade, false, "203.0.113.1".parse().unwrap());
        let peer = addr("203.0.113.2:51820");
        assert_eq!(
            nat.inbound(now, peer, addr("203.0.113.1:51820")),
            Inbound::Trapped
        );
        let public = nat.outbound(now, &mut rng, addr("10.0.0.2:51820"), peer);
        assert_ne!(public.port(), 51820);
        assert_eq!(nat.trap_clashes, 1);
        let mut walled = Nat::new(Mapping::Masquerade, true, "203.0.113.1".parse().unwrap());
        assert_eq!(
            walled.inbound(now, peer, addr("203.0.113.1:51820")),
            Inbound::Filtered
        );
        let public = walled.outbound(now, &mut rng, addr("10.0.0.2:51820"), peer);
        assert_eq!(public.port(), 51820);
    }
}
