//! Client and server state machines joined in memory by a simulated network: a clock, loss,
//! duplication, reordering, and NATs that rewrite each client's source address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::{PrivateKey, PublicKey};
use wgpunch_common::noise::Rng;
use wgpunch_common::server::{Server, ServerConfig, Transmit, PUSH_WINDOW};
use wgpunch_common::wire::Packet;

/// How the simulated network mistreats datagrams, in percent.
#[derive(Clone, Copy, Default)]
struct Faults {
    loss: u64,
    duplicate: u64,
    reorder: u64,
}

struct Node {
    client: Client,
    /// The address the NAT maps this client to; the server sees this.
    public: SocketAddr,
    events: Vec<Event>,
    /// While set, the client sends nothing (it has not started yet).
    paused: bool,
    /// When clear, the server's pushes to this client are lost on the way (so it never acks).
    takes_pushes: bool,
}

struct Net {
    server: Server,
    nodes: Vec<Node>,
    start: Instant,
    now: Instant,
    wall: SystemTime,
    rng: Rng,
    faults: Faults,
    /// Every datagram a client sent, with the address the server saw it from.
    sent_to_server: Vec<(SocketAddr, Vec<u8>)>,
    /// Every push the server sent.
    pushes: Vec<Transmit>,
}

fn key(n: u8) -> PrivateKey {
    PrivateKey::from_bytes([n; 32])
}

impl Net {
    fn new(server_key: PrivateKey, faults: Faults) -> Self {
        let now = Instant::now();
        Self {
            server: Server::new(server_key, ServerConfig::default(), [9; 32]),
            nodes: Vec::new(),
            start: now,
            now,
            wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            rng: Rng::from_seed([7; 32]),
            faults,
            sent_to_server: Vec::new(),
            pushes: Vec::new(),
        }
    }

    /// Adds a client with key `n` behind a NAT that maps it to `public`, declaring `peers`.
    fn add(&mut self, n: u8, public: &str, peers: &[u8]) -> usize {
        let peers: Vec<PublicKey> = peers.iter().map(|&p| key(p).public_key()).collect();
        let client = Client::new(
            key(n),
            self.server.public_key(),
            peers,
            vec![],
            ClientConfig::default(),
            [n; 32],
        );
        self.nodes.push(Node {
            client,
            public: public.parse().unwrap(),
            events: Vec::new(),
            paused: false,
            takes_pushes: true,
        });
        self.nodes.len() - 1
    }

    fn roll(&mut self, percent: u64) -> bool {
        percent > 0 && self.rng.next_u64() % 100 < percent
    }

    /// Runs the network for `duration` of simulated time in 10 ms steps.
    fn run(&mut self, duration: Duration) {
        let end = self.now + duration;
        while self.now < end {
            // Client to server.
            let mut to_server = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if node.paused {
                    continue;
                }
                while let Some(datagram) = node.client.poll_transmit(self.now, self.wall) {
                    to_server.push((i, node.public, datagram));
                }
            }
            let mut to_clients = Vec::new();
            for (i, from, datagram) in self.mistreat(to_server) {
                self.sent_to_server.push((from, datagram.clone()));
                if let Some(reply) = self.server.handle(self.now, self.wall, from, &datagram) {
                    assert!(reply.len() <= datagram.len(), "the server amplified");
                    to_clients.push((i, from, reply));
                }
            }
            // Pushes; the NAT maps them back to whoever it maps to that address now.
            while let Some(push) = self.server.poll_transmit() {
                assert!(
                    self.sent_to_server
                        .iter()
                        .any(|(from, _)| *from == push.destination),
                    "a push to an address no message came from"
                );
                self.pushes.push(push.clone());
                if let Some(i) = self
                    .nodes
                    .iter()
                    .position(|n| n.public == push.destination && n.takes_pushes)
                {
                    to_clients.push((i, push.destination, push.datagram));
                }
            }
            // Server to client; the NAT maps the public address back to the client.
            for (i, _, reply) in self.mistreat(to_clients) {
                self.nodes[i].client.handle_datagram(self.now, &reply);
            }
            for node in &mut self.nodes {
                while let Some(event) = node.client.poll_event() {
                    node.events.push(event);
                }
            }
            self.now += Duration::from_millis(10);
            self.wall += Duration::from_millis(10);
            if (self.now - self.start).as_millis().is_multiple_of(1000) {
                self.server.expire(self.now);
            }
        }
    }

    fn mistreat(
        &mut self,
        datagrams: Vec<(usize, SocketAddr, Vec<u8>)>,
    ) -> Vec<(usize, SocketAddr, Vec<u8>)> {
        let mut out = Vec::new();
        for d in datagrams {
            if self.roll(self.faults.loss) {
                continue;
            }
            if self.roll(self.faults.duplicate) {
                out.push(d.clone());
            }
            out.push(d);
        }
        if out.len() > 1 && self.roll(self.faults.reorder) {
            out.reverse();
        }
        out
    }

    fn resolved(&self, node: usize) -> HashMap<PublicKey, SocketAddr> {
        self.nodes[node]
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Resolved { peer, endpoint, .. } => Some((*peer, *endpoint)),
                _ => None,
            })
            .collect()
    }

    /// Asks every client for all of its peers, the way the client binary retries every few seconds.
    fn lookup_all(&mut self, peers: &[(usize, &[u8])]) {
        for &(node, keys) in peers {
            self.nodes[node]
                .client
                .lookup(keys.iter().map(|&k| key(k).public_key()));
        }
    }
}

/// Runs lookups every 2 s until both nodes resolved each other or `limit` passes.
fn converge(net: &mut Net, limit: Duration) -> Duration {
    let start = net.now;
    while net.now - start < limit {
        net.lookup_all(&[(0, &[2]), (1, &[1])]);
        net.run(Duration::from_secs(2));
        if net.resolved(0).contains_key(&key(2).public_key())
            && net.resolved(1).contains_key(&key(1).public_key())
        {
            return net.now - start;
        }
    }
    panic!("did not converge within {limit:?}");
}

#[test]
fn two_clients_behind_nats_find_each_others_public_endpoints() {
    let mut net = Net::new(key(100), Faults::default());
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "198.51.100.20:51820", &[1]);
    converge(&mut net, Duration::from_secs(10));
    assert_eq!(
        net.resolved(0)[&key(2).public_key()],
        "198.51.100.20:51820".parse().unwrap()
    );
    assert_eq!(
        net.resolved(1)[&key(1).public_key()],
        "203.0.113.10:40001".parse().unwrap()
    );
    let registered = net.nodes[0].events.iter().find_map(|e| match e {
        Event::Registered { observed, .. } => Some(*observed),
        _ => None,
    });
    assert_eq!(
        registered,
        Some("203.0.113.10:40001".parse().unwrap()),
        "the server tells the client what it observed"
    );
    assert_eq!(
        net.server.stats().malformed + net.server.stats().bad_transport,
        0
    );
}

#[test]
fn converges_despite_loss_duplication_and_reordering() {
    let faults = Faults {
        loss: 30,
        duplicate: 20,
        reorder: 30,
    };
    let mut net = Net::new(key(100), faults);
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(120));
    assert_eq!(
        net.resolved(0)[&key(2).public_key()],
        "203.0.113.20:40002".parse().unwrap()
    );
}

#[test]
fn a_peer_that_does_not_list_us_stays_unknown() {
    let mut net = Net::new(key(100), Faults::default());
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[3]);
    net.lookup_all(&[(0, &[2])]);
    net.run(Duration::from_secs(2));
    net.lookup_all(&[(0, &[2])]);
    net.run(Duration::from_secs(2));
    assert!(net.resolved(0).is_empty());
    assert!(net.nodes[0].events.contains(&Event::Unknown {
        peer: key(2).public_key()
    }));
}

#[test]
fn a_replayed_initiation_from_elsewhere_moves_nothing() {
    let mut net = Net::new(key(100), Faults::default());
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(10));
    let (_, initiation) = net
        .sent_to_server
        .iter()
        .find(|(from, d)| {
            *from == net.nodes[0].public && matches!(Packet::parse(d), Ok(Packet::HandshakeInit(_)))
        })
        .cloned()
        .unwrap();
    let attacker: SocketAddr = "198.51.100.66:6666".parse().unwrap();
    let before = net.server.stats().clone();
    assert_eq!(
        net.server.handle(net.now, net.wall, attacker, &initiation),
        None
    );
    assert_eq!(
        net.server.stats().replayed_initiation,
        before.replayed_initiation + 1
    );
    let a = key(1).public_key();
    assert_eq!(
        net.server.registry().get(&a, net.now).unwrap().endpoint,
        net.nodes[0].public
    );
    // Replayed transport packets from elsewhere are refused too.
    let (_, transport) = net
        .sent_to_server
        .iter()
        .rev()
        .find(|(from, d)| {
            *from == net.nodes[0].public && matches!(Packet::parse(d), Ok(Packet::Transport(_)))
        })
        .cloned()
        .unwrap();
    assert_eq!(
        net.server.handle(net.now, net.wall, attacker, &transport),
        None
    );
    assert_eq!(
        net.server.registry().get(&a, net.now).unwrap().endpoint,
        net.nodes[0].public
    );
}

#[test]
fn a_new_nat_mapping_is_seen_on_the_next_message() {
    let mut net = Net::new(key(100), Faults::default());
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(10));
    net.nodes[1].public = "203.0.113.20:50000".parse().unwrap();
    net.nodes[0].events.clear();
    net.nodes[1].client.lookup([key(1).public_key()]);
    net.run(Duration::from_secs(1));
    net.nodes[0].client.lookup([key(2).public_key()]);
    net.run(Duration::from_secs(1));
    assert_eq!(
        net.resolved(0)[&key(2).public_key()],
        "203.0.113.20:50000".parse().unwrap()
    );
}

#[test]
fn clients_recover_after_a_server_restart_and_keep_working_across_rekeys() {
    let mut net = Net::new(key(100), Faults::default());
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(10));
    // The server loses all state; clients notice the silence and handshake again.
    net.server = Server::new(key(100), ServerConfig::default(), [10; 32]);
    for node in &mut net.nodes {
        node.events.clear();
    }
    let took = converge(&mut net, Duration::from_secs(60));
    assert!(took < Duration::from_secs(60));
    // Run past several rekeys and registration refreshes; lookups keep working.
    net.run(Duration::from_secs(400));
    for node in &mut net.nodes {
        node.events.clear();
    }
    converge(&mut net, Duration::from_secs(10));
    assert!(
        net.server.session_count() <= 2 * net.nodes.len(),
        "old sessions are dropped: {}",
        net.server.session_count()
    );
}

#[test]
fn a_long_peer_list_registers_in_parts() {
    let mut net = Net::new(
        key(100),
        Faults {
            loss: 10,
            duplicate: 10,
            reorder: 10,
        },
    );
    let many: Vec<u8> = (2..=99).collect();
    net.add(1, "203.0.113.10:40001", &many);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(60));
    let registration = net
        .server
        .registry()
        .get(&key(1).public_key(), net.now)
        .unwrap();
    assert_eq!(registration.peers.len(), many.len());
}

#[test]
fn a_client_of_another_server_gets_silence() {
    let mut net = Net::new(key(100), Faults::default());
    let wrong_server = key(101).public_key();
    net.nodes.push(Node {
        client: Client::new(
            key(1),
            wrong_server,
            vec![],
            vec![],
            ClientConfig::default(),
            [1; 32],
        ),
        public: "203.0.113.10:40001".parse().unwrap(),
        events: Vec::new(),
        paused: false,
        takes_pushes: true,
    });
    net.run(Duration::from_secs(5));
    assert!(net.nodes[0].events.is_empty());
    assert!(net.server.stats().bad_mac1 > 0);
    assert_eq!(net.server.stats().handshakes, 0);
}

#[test]
fn a_closed_server_ignores_keys_not_on_its_list_and_keeps_no_state_for_them() {
    let mut net = Net::new(key(100), Faults::default());
    let allowed = [key(1).public_key(), key(2).public_key()]
        .into_iter()
        .collect();
    net.server = Server::new(
        key(100),
        ServerConfig {
            allowed_keys: Some(allowed),
            ..ServerConfig::default()
        },
        [9; 32],
    );
    net.add(1, "203.0.113.10:40001", &[2, 3]);
    net.add(2, "203.0.113.20:40002", &[1, 3]);
    net.add(3, "203.0.113.30:40003", &[1, 2]);
    converge(&mut net, Duration::from_secs(10));
    assert!(
        net.nodes[2].events.is_empty(),
        "the outsider heard nothing: {:?}",
        net.nodes[2].events
    );
    assert!(net.server.stats().not_allowed > 0);
    assert_eq!(
        net.server.session_count(),
        2,
        "sessions only for the allowed keys"
    );
    assert!(net
        .server
        .registry()
        .get(&key(3).public_key(), net.now)
        .is_none());
    net.nodes[0].events.clear();
    net.nodes[0].client.lookup([key(3).public_key()]);
    net.run(Duration::from_secs(1));
    assert!(net.nodes[0].events.contains(&Event::Unknown {
        peer: key(3).public_key()
    }));
}

#[test]
fn clients_get_through_a_server_that_wants_cookies_from_everyone() {
    let mut net = Net::new(
        key(100),
        Faults {
            loss: 10,
            duplicate: 0,
            reorder: 10,
        },
    );
    net.server = Server::new(
        key(100),
        ServerConfig {
            load_threshold: 0,
            ..ServerConfig::default()
        },
        [9; 32],
    );
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(30));
    assert!(
        net.server.stats().cookie_replies >= 2,
        "{:?}",
        net.server.stats()
    );
}

#[test]
fn a_handshake_flood_from_one_source_does_not_lock_out_other_clients() {
    let mut net = Net::new(key(100), Faults::default());
    net.server = Server::new(
        key(100),
        ServerConfig {
            load_threshold: 20,
            ..ServerConfig::default()
        },
        [9; 32],
    );
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    // 200 real clients with their own keys, all behind one address, handshaking at once and
    // receiving their cookies (a flood that does not need to spoof).
    for n in 0..200u8 {
        let attacker = key(n.wrapping_add(30));
        net.nodes.push(Node {
            client: Client::new(
                attacker,
                net.server.public_key(),
                vec![],
                vec![],
                ClientConfig::default(),
                [n; 32],
            ),
            public: "198.51.100.66:6666".parse().unwrap(),
            events: Vec::new(),
            paused: false,
            takes_pushes: true,
        });
    }
    converge(&mut net, Duration::from_secs(30));
    let stats = net.server.stats().clone();
    assert!(
        stats.rate_limited > 0 && stats.cookie_replies > 0,
        "{stats:?}"
    );
    // The flooding source got no more handshakes than its budget: a burst, then its rate.
    assert!(stats.handshakes < 2 + 20 + 20 * 30, "{stats:?}");
}

/// A network whose server counts as under load above `threshold` initiations a second.
fn loaded_net(threshold: u32) -> Net {
    let mut net = Net::new(key(100), Faults::default());
    net.server = Server::new(
        key(100),
        ServerConfig {
            load_threshold: threshold,
            ..ServerConfig::default()
        },
        [9; 32],
    );
    net
}

/// A client with no peers that only makes handshake initiations for an attacker.
fn throwaway_client(net: &Net) -> Client {
    Client::new(
        key(50),
        net.server.public_key(),
        vec![],
        vec![],
        ClientConfig::default(),
        [50; 32],
    )
}

#[test]
fn a_spoofed_initiation_flood_costs_no_diffie_hellman_under_load() {
    let mut net = loaded_net(10);
    // Valid initiations (the attacker knows the server's public key), each from a new source
    // that never answers: without the cookies of those sources, none can carry a valid mac2.
    let mut spoofer = throwaway_client(&net);
    let mut start = net.now;
    for n in 0..1000u32 {
        start += Duration::from_secs(3600);
        let datagram = spoofer.poll_transmit(start, net.wall).unwrap();
        let source = std::net::SocketAddr::new(
            std::net::Ipv4Addr::from(0xC633_6400 | (n & 0xff)).into(),
            1 + n as u16,
        );
        let reply = net.server.handle(net.now, net.wall, source, &datagram);
        if let Some(reply) = reply.filter(|_| n >= 10) {
            assert!(
                matches!(Packet::parse(&reply), Ok(Packet::CookieReply(_))),
                "under load only cookies go out"
            );
            assert!(reply.len() < datagram.len());
        }
    }
    let stats = net.server.stats();
    assert_eq!(
        stats.handshakes, 10,
        "only the initiations before the load threshold cost a handshake: {stats:?}"
    );
    assert_eq!(stats.cookie_replies, 990);
}

#[test]
fn a_one_source_flood_under_load_gets_a_burst_of_cookies_then_silence() {
    let mut net = loaded_net(10);
    let mut flooder = throwaway_client(&net);
    // 5000 valid initiations within one second from one address, never using a cookie: each
    // reply would cost the server an encryption and a send, so only the source's budget is paid.
    let source: std::net::SocketAddr = "198.51.100.66:6666".parse().unwrap();
    let mut start = net.now;
    let mut replies = 0;
    for _ in 0..5000u32 {
        start += Duration::from_secs(3600);
        let datagram = flooder.poll_transmit(start, net.wall).unwrap();
        net.now += Duration::from_micros(200);
        replies += usize::from(
            net.server
                .handle(net.now, net.wall, source, &datagram)
                .is_some(),
        );
    }
    let stats = net.server.stats();
    let budget = 20 + 20 + 10;
    assert!(
        replies <= budget,
        "{replies} replies to one source in one second: {stats:?}"
    );
    assert!(stats.rate_limited >= 5000 - budget as u64, "{stats:?}");
}

#[test]
fn spoofed_sources_that_fill_the_cookie_table_do_not_lock_out_new_clients() {
    let mut net = Net::new(key(100), Faults::default());
    net.server = Server::new(
        key(100),
        ServerConfig {
            load_threshold: 0,
            max_sources: 8,
            ..ServerConfig::default()
        },
        [9; 32],
    );
    // Valid initiations from 100 made-up sources, none of which ever proves its address: they
    // fill the (small) cookie table many times over, and each gets its cookie.
    let mut spoofer = throwaway_client(&net);
    let mut start = net.now;
    for n in 0..100u8 {
        start += Duration::from_secs(3600);
        let datagram = spoofer.poll_transmit(start, net.wall).unwrap();
        let source = SocketAddr::new(std::net::Ipv4Addr::new(198, 51, 100, n).into(), 9);
        let reply = net.server.handle(net.now, net.wall, source, &datagram);
        assert!(reply.is_some(), "no cookie for made-up source {n}");
    }
    assert_eq!(net.server.stats().cookie_replies, 100);
    // Two real clients from new addresses still get their cookies, handshakes and answers.
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(30));
    let stats = net.server.stats();
    assert_eq!(stats.handshakes, 2, "{stats:?}");
}

#[test]
fn full_tables_refuse_new_keys_and_keep_the_registered_ones() {
    let mut net = Net::new(key(100), Faults::default());
    let config = ServerConfig {
        max_keys: 2,
        max_sessions: 2,
        max_registrations: 2,
        ..ServerConfig::default()
    };
    net.server = Server::new(key(100), config, [9; 32]);
    net.add(1, "203.0.113.10:40001", &[2]);
    net.add(2, "203.0.113.20:40002", &[1]);
    converge(&mut net, Duration::from_secs(10));
    // A crowd of new keys arrives; there is no room for them, and nobody already in is evicted.
    for n in 0..20u8 {
        let newcomer = key(n.wrapping_add(30));
        net.nodes.push(Node {
            client: Client::new(
                newcomer,
                net.server.public_key(),
                vec![],
                vec![],
                ClientConfig::default(),
                [n; 32],
            ),
            public: std::net::SocketAddr::new(
                std::net::Ipv4Addr::new(198, 51, 100, n + 1).into(),
                7000,
            ),
            events: Vec::new(),
            paused: false,
            takes_pushes: true,
        });
    }
    net.run(Duration::from_secs(5));
    assert!(net.server.stats().sessions_full > 0);
    assert!(
        net.nodes[2..].iter().all(|n| n.events.is_empty()),
        "newcomers got nothing"
    );
    for node in &mut net.nodes[..2] {
        node.events.clear();
    }
    converge(&mut net, Duration::from_secs(10));
}

/// The `Resolved` events of `node` about `peer` since its events were last cleared.
fn resolutions(net: &Net, node: usize, peer: u8) -> Vec<(SocketAddr, bool)> {
    net.nodes[node]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Resolved {
                peer: p,
                endpoint,
                peer_has_yours,
                ..
            } if *p == key(peer).public_key() => Some((*endpoint, *peer_has_yours)),
            _ => None,
        })
        .collect()
}

/// A watching client 1 that registered and found 2 unknown, and a client 2 not started yet.
fn waiting_pair(peers_of_2: &[u8]) -> Net {
    let mut net = Net::new(key(100), Faults::default());
    net.add(1, "203.0.113.10:40001", &[2]);
    let b = net.add(2, "198.51.100.20:51820", peers_of_2);
    net.nodes[b].paused = true;
    net.lookup_all(&[(0, &[2])]);
    net.run(Duration::from_secs(2));
    assert!(net.nodes[0].client.is_registered());
    assert!(net.nodes[0].events.contains(&Event::Unknown {
        peer: key(2).public_key()
    }));
    net.nodes[0].events.clear();
    net.nodes[b].paused = false;
    net
}

#[test]
fn a_watching_client_is_told_at_once_when_its_peer_registers_confirms_and_moves() {
    let mut net = waiting_pair(&[1]);
    let lookups = net.server.stats().lookups;
    // 2 registers: 1 hears of it without asking again.
    net.run(Duration::from_millis(500));
    assert_eq!(
        resolutions(&net, 0, 2),
        [("198.51.100.20:51820".parse().unwrap(), false)]
    );
    assert_eq!(net.server.stats().lookups, lookups, "no lookup by anyone");
    // 2 learns 1's endpoint, punches and says so: 1's barrier opens, pushed.
    net.nodes[0].events.clear();
    net.lookup_all(&[(1, &[1])]);
    net.run(Duration::from_millis(200));
    assert!(resolutions(&net, 0, 2).is_empty(), "nothing new for 1 yet");
    net.nodes[1]
        .client
        .lookup_with([(key(1).public_key(), true)]);
    net.run(Duration::from_millis(200));
    assert_eq!(
        resolutions(&net, 0, 2),
        [("198.51.100.20:51820".parse().unwrap(), true)]
    );
    // 2's NAT maps it elsewhere; its next message (a refresh, at once) moves it, and 1 is told.
    net.nodes[0].events.clear();
    net.nodes[1].public = "198.51.100.20:60000".parse().unwrap();
    net.nodes[1].client.refresh();
    net.run(Duration::from_millis(200));
    let moved = resolutions(&net, 0, 2);
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].0, "198.51.100.20:60000".parse().unwrap());
    assert_eq!(net.server.stats().pushes, 3);
    assert!(net.server.stats().push_acks >= 1, "1 acknowledged");
    assert_eq!(net.server.stats().pushes_over_budget, 0);
}

#[test]
fn forged_replayed_and_stale_session_pushes_give_no_event() {
    let mut net = waiting_pair(&[1]);
    net.run(Duration::from_millis(500));
    assert_eq!(resolutions(&net, 0, 2).len(), 1);
    let push = net.pushes.last().cloned().unwrap();
    assert_eq!(push.destination, net.nodes[0].public);
    let a = &mut net.nodes[0];
    a.events.clear();
    // Replayed.
    a.client.handle_datagram(net.now, &push.datagram);
    // Forged: every single bit flipped in turn.
    for bit in 0..push.datagram.len() * 8 {
        let mut forged = push.datagram.clone();
        forged[bit / 8] ^= 1 << (bit % 8);
        a.client.handle_datagram(net.now, &forged);
    }
    assert_eq!(a.client.poll_event(), None);
    // A later push, after 1's session was replaced by a new one, is refused on the old one.
    net.run(Duration::from_secs(125));
    net.nodes[1].public = "198.51.100.20:60000".parse().unwrap();
    net.nodes[1].client.refresh();
    net.run(Duration::from_millis(200));
    let fresh = net.pushes.last().cloned().unwrap();
    assert_ne!(fresh, push);
    net.nodes[0].events.clear();
    net.nodes[0].client.handle_datagram(net.now, &push.datagram);
    assert_eq!(net.nodes[0].client.poll_event(), None, "old session");
    assert_eq!(resolutions(&net, 0, 2), []);
}

#[test]
fn a_client_that_never_acknowledges_gets_at_most_a_window_of_pushes() {
    let mut net = waiting_pair(&[1]);
    net.nodes[0].takes_pushes = false;
    for port in 0..30u16 {
        net.nodes[1].public = format!("198.51.100.20:{}", 60000 + port).parse().unwrap();
        net.nodes[1].client.refresh();
        net.run(Duration::from_secs(1));
    }
    let to_a = net
        .pushes
        .iter()
        .filter(|p| p.destination == net.nodes[0].public)
        .count();
    assert_eq!(to_a, PUSH_WINDOW as usize);
    assert_eq!(net.server.stats().push_acks, 0);
    assert!(net.server.stats().pushes_over_budget > 0);
}

#[test]
fn a_peer_that_does_not_list_us_never_causes_a_push() {
    let mut net = waiting_pair(&[]);
    for port in 0..5u16 {
        net.nodes[1].public = format!("198.51.100.20:{}", 60000 + port).parse().unwrap();
        net.nodes[1].client.refresh();
        net.nodes[1]
            .client
            .lookup_with([(key(1).public_key(), true)]);
        net.run(Duration::from_secs(1));
    }
    assert!(net.pushes.is_empty());
    assert_eq!(net.server.stats().pushes, 0);
    assert!(resolutions(&net, 0, 2).is_empty());
}

#[test]
fn a_refresh_in_flight_does_not_keep_the_client_awake() {
    let mut net = Net::new(key(100), Faults::default());
    let a = net.add(1, "203.0.113.1:40001", &[]);
    net.run(Duration::from_secs(1));
    assert!(net.nodes[a].client.is_registered());
    // Past the refresh time, the refresh goes out and gets lost.
    net.nodes[a].paused = true;
    net.now += Duration::from_secs(25);
    let now = net.now;
    let sent = std::iter::from_fn(|| net.nodes[a].client.poll_transmit(now, net.wall)).count();
    assert!(sent >= 1, "the refresh went out");
    let next = net.nodes[a]
        .client
        .poll_timeout()
        .expect("a retransmission is due later");
    assert!(
        next > now,
        "poll_timeout must lie ahead while the refresh is in flight, not at the passed refresh time"
    );
}
