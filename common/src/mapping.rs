//! How our NAT maps the WireGuard port: the check that asks the server's main address and its
//! mapping addresses (a second port, maybe a second address) where they see us, and what the
//! answers say about the NAT.
//!
//! A NAT that gives one mapping for every destination (endpoint-independent) lets a peer reach us
//! at the address the server saw. One that maps each destination to its own port (symmetric), or
//! each destination address (address-dependent), shows the peer a port it cannot use: a direct
//! path then works only towards a peer that needs no punch (no NAT, no firewall).

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::wire::endpoint::canonical;
use crate::wire::observe::MAX_ALTERNATES;

/// Sends of each observe request to a mapping address.
pub const MAPPING_SENDS: u32 = 3;
/// Time between those sends; after the last, as long again for its answer.
pub const MAPPING_INTERVAL: Duration = Duration::from_millis(250);

/// What the check found: where the server's addresses saw us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingReport {
    /// Where the main address saw us; `None` when it never answered (an older server).
    pub main: Option<SocketAddr>,
    /// Each mapping address asked, and where it saw us (`None`: no answer).
    pub others: Vec<(SocketAddr, Option<SocketAddr>)>,
}

/// The NAT's mapping behaviour, as far as the check could tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatMapping {
    /// The server has no mapping address, or none of them answered.
    Unknown,
    /// The server sees our own address and port: no NAT in front of us.
    NoNat,
    /// One mapping for every destination: peers can reach us at what the server saw.
    EndpointIndependent {
        /// The NAT kept our WireGuard port.
        port_preserved: bool,
    },
    /// The same mapping towards another port of the server, another towards its other address.
    AddressDependent,
    /// Another mapping towards another port of the same address: a symmetric NAT.
    EndpointDependent,
}

impl NatMapping {
    /// True when a peer behind a NAT of its own can hope to reach us directly.
    pub fn allows_direct(self) -> bool {
        matches!(
            self,
            Self::Unknown | Self::NoNat | Self::EndpointIndependent { .. }
        )
    }
}

impl fmt::Display for NatMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Unknown => {
                "NAT behaviour unknown (the server has no second port, or it did not answer)"
            }
            Self::NoNat => "no NAT: the server sees our own address, so peers can reach us",
            Self::EndpointIndependent {
                port_preserved: true,
            } => "a NAT with one mapping for every destination, keeping our port: direct paths work",
            Self::EndpointIndependent {
                port_preserved: false,
            } => "a NAT with one mapping for every destination, on another port: direct paths work",
            Self::AddressDependent => {
                "a NAT that maps each destination address to its own port: direct paths work only to peers without NAT or firewall"
            }
            Self::EndpointDependent => {
                "a symmetric NAT (each destination gets its own port): direct paths work only to peers without NAT or firewall"
            }
        })
    }
}

impl MappingReport {
    /// What the answers say about a NAT in front of `local` (our WireGuard address and port as
    /// the host sees it) towards the server at `server`.
    pub fn classify(&self, local: SocketAddr, server: SocketAddr) -> NatMapping {
        let Some(main) = self.main.map(canonical) else {
            return NatMapping::Unknown;
        };
        if main == canonical(local) {
            return NatMapping::NoNat;
        }
        let server_ip = canonical(server).ip();
        let mut answered = false;
        let mut other_address_differs = false;
        for (asked, seen) in &self.others {
            let Some(seen) = seen.map(canonical) else {
                continue;
            };
            answered = true;
            if seen != main {
                if canonical(*asked).ip() == server_ip {
                    return NatMapping::EndpointDependent;
                }
                other_address_differs = true;
            }
        }
        if other_address_differs {
            NatMapping::AddressDependent
        } else if answered {
            NatMapping::EndpointIndependent {
                port_preserved: main.port() == local.port(),
            }
        } else {
            NatMapping::Unknown
        }
    }
}

/// One observe request to a mapping address.
#[derive(Debug, Clone)]
struct Ask {
    to: SocketAddr,
    request_id: u32,
    seen: Option<SocketAddr>,
    sends: u32,
    next_send: Instant,
}

/// A check in progress, once the main address has answered.
#[derive(Debug, Clone)]
pub struct MappingCheck {
    main: SocketAddr,
    asks: Vec<Ask>,
}

impl MappingCheck {
    /// Starts asking the `alternates` the main address listed (at most [`MAX_ALTERNATES`]; an
    /// unspecified IP is `server`'s, at that port) after it saw us at `main`. `ids` gives each
    /// request its id.
    pub fn new(
        server: SocketAddr,
        main: SocketAddr,
        alternates: &[SocketAddr],
        mut ids: impl FnMut() -> u32,
        now: Instant,
    ) -> Self {
        let server = canonical(server);
        let mut asks: Vec<Ask> = Vec::new();
        for alternate in alternates.iter().take(MAX_ALTERNATES) {
            let to = if alternate.ip().is_unspecified() {
                SocketAddr::new(server.ip(), alternate.port())
            } else {
                canonical(*alternate)
            };
            // Only another port or address of the server, of the family we talk to it in, says
            // anything; no port 0.
            if to == server
                || to.port() == 0
                || to.is_ipv4() != server.is_ipv4()
                || asks.iter().any(|a| a.to == to)
            {
                continue;
            }
            asks.push(Ask {
                to,
                request_id: ids(),
                seen: None,
                sends: 0,
                next_send: now,
            });
        }
        Self { main, asks }
    }

    /// Takes the answer to one of our requests; false when `request_id` is none of ours.
    pub fn on_reply(&mut self, request_id: u32, seen: SocketAddr) -> bool {
        match self.asks.iter_mut().find(|a| a.request_id == request_id) {
            Some(ask) => {
                ask.seen.get_or_insert(seen);
                true
            }
            None => false,
        }
    }

    /// The next request due at `now`: where it goes, and its id.
    pub fn due(&mut self, now: Instant) -> Option<(SocketAddr, u32)> {
        let ask = self
            .asks
            .iter_mut()
            .find(|a| a.seen.is_none() && a.sends < MAPPING_SENDS && a.next_send <= now)?;
        ask.sends += 1;
        ask.next_send = now + MAPPING_INTERVAL;
        Some((ask.to, ask.request_id))
    }

    /// When [`MappingCheck::due`] or [`MappingCheck::finished`] next has something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.asks
            .iter()
            .filter(|a| a.seen.is_none())
            .map(|a| a.next_send)
            .min()
    }

    /// The report, once every mapping address answered or had its last send answered in time.
    pub fn finished(&self, now: Instant) -> Option<MappingReport> {
        let done = self
            .asks
            .iter()
            .all(|a| a.seen.is_some() || (a.sends >= MAPPING_SENDS && a.next_send <= now));
        done.then(|| MappingReport {
            main: Some(self.main),
            others: self.asks.iter().map(|a| (a.to, a.seen)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const LOCAL: &str = "192.168.1.20:51820";
    const SERVER: &str = "198.51.100.2:51818";

    fn report(main: &str, others: &[(&str, Option<&str>)]) -> MappingReport {
        MappingReport {
            main: Some(addr(main)),
            others: others
                .iter()
                .map(|(asked, seen)| (addr(asked), seen.map(addr)))
                .collect(),
        }
    }

    fn classify(r: &MappingReport) -> NatMapping {
        r.classify(addr(LOCAL), addr(SERVER))
    }

    #[test]
    fn answers_classify_the_nat() {
        let port = ("198.51.100.2:51819", Some("203.0.113.7:51820"));
        assert_eq!(
            classify(&report("203.0.113.7:51820", &[port])),
            NatMapping::EndpointIndependent {
                port_preserved: true
            }
        );
        assert_eq!(
            classify(&report(
                "203.0.113.7:40001",
                &[("198.51.100.2:51819", Some("203.0.113.7:40001"))]
            )),
            NatMapping::EndpointIndependent {
                port_preserved: false
            }
        );
        assert_eq!(
            classify(&report(
                "203.0.113.7:40001",
                &[("198.51.100.2:51819", Some("203.0.113.7:40002"))]
            )),
            NatMapping::EndpointDependent
        );
        assert_eq!(
            classify(&report(
                "203.0.113.7:51820",
                &[port, ("198.51.100.3:51818", Some("203.0.113.7:40002"))]
            )),
            NatMapping::AddressDependent
        );
        assert_eq!(
            classify(&report(LOCAL, &[("198.51.100.2:51819", Some(LOCAL))])),
            NatMapping::NoNat
        );
        assert_eq!(
            classify(&report(
                "203.0.113.7:51820",
                &[("198.51.100.2:51819", None)]
            )),
            NatMapping::Unknown,
            "no answer from the second port tells nothing"
        );
        assert_eq!(
            classify(&MappingReport {
                main: None,
                others: vec![]
            }),
            NatMapping::Unknown
        );
        assert!(!NatMapping::EndpointDependent.allows_direct());
        assert!(NatMapping::Unknown.allows_direct());
    }

    #[test]
    fn a_check_asks_each_alternate_a_few_times_then_reports() {
        let now = Instant::now();
        let mut id = 10;
        let mut check = MappingCheck::new(
            addr(SERVER),
            addr("203.0.113.7:51820"),
            &[
                addr("0.0.0.0:51819"),
                addr("198.51.100.3:51818"),
                addr("0.0.0.0:51819"),
            ],
            || {
                id += 1;
                id
            },
            now,
        );
        assert_eq!(check.due(now), Some((addr("198.51.100.2:51819"), 11)));
        assert_eq!(check.due(now), Some((addr("198.51.100.3:51818"), 12)));
        assert_eq!(check.due(now), None, "the repeat is asked once");
        assert!(check.on_reply(11, addr("203.0.113.7:51820")));
        assert!(!check.on_reply(99, addr("203.0.113.7:1")));
        assert_eq!(check.finished(now), None);
        let mut at = now;
        let mut sends = 1;
        while check.finished(at).is_none() {
            at += MAPPING_INTERVAL;
            if check.due(at).is_some() {
                sends += 1;
            }
            assert!(at < now + Duration::from_secs(5), "the check never ends");
        }
        assert_eq!(sends, MAPPING_SENDS);
        assert_eq!(
            check.finished(at),
            Some(report(
                "203.0.113.7:51820",
                &[
                    ("198.51.100.2:51819", Some("203.0.113.7:51820")),
                    ("198.51.100.3:51818", None)
                ]
            ))
        );
    }

    #[test]
    fn a_check_without_alternates_reports_at_once() {
        let now = Instant::now();
        let check = MappingCheck::new(
            addr(SERVER),
            addr("203.0.113.7:51820"),
            &[addr(SERVER), addr("0.0.0.0:0")],
            || 1,
            now,
        );
        assert_eq!(
            check.finished(now).map(|r| classify(&r)),
            Some(NatMapping::Unknown),
            "the server's own address and port 0 are no alternates"
        );
    }
}
