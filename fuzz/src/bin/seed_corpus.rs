//! Writes the seed corpus: valid inputs of every kind for each fuzz target, built only through
//! the project's public APIs, so the fuzzers start from deep inside the parsers and protocols.
//!
//! Usage: `seed_corpus DIR` writes `DIR/<target>/seed-<name>` files (overwriting earlier seeds,
//! leaving everything else in `DIR` alone). `scripts/fuzz` runs it before fuzzing.

#![forbid(unsafe_code)]

// Links libFuzzer, which defines the coverage callbacks the instrumented code of this program
// calls when it is built without a sanitizer runtime (`cargo fuzz build --sanitizer none`).
use libfuzzer_sys as _;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use wgpunch_client::packet::emit_udp;
use wgpunch_common::cookie::CookieJar;
use wgpunch_common::handshake::{Accepted, Initiation};
use wgpunch_common::keys::PublicKey;
use wgpunch_common::session::Session;
use wgpunch_common::wire::packet::COOKIE_NONCE_LEN;
use wgpunch_common::wire::probe::{Probe, ProbeKind};
use wgpunch_common::wire::{
    CandidatesReply, CandidatesRequest, Lookup, LookupReply, ObserveReply, ObserveRequest, Packet,
    Push, PushAck, Register, RegisterAck, Reply, Request, Sighting,
};
use wgpunch_fuzz::agent_sim::{self, AgentOp};
use wgpunch_fuzz::client_sim::{self, ClientOp};
use wgpunch_fuzz::legacy_client_sim::{self, LegacyClientOp};
use wgpunch_fuzz::peers_sim::{self, PeerOp};
use wgpunch_fuzz::server_sim::{self, ServerOp};
use wgpunch_fuzz::world;

/// Named seeds for one target.
struct Seeds {
    target: &'static str,
    seeds: Vec<(String, Vec<u8>)>,
}

impl Seeds {
    fn new(target: &'static str) -> Self {
        Self {
            target,
            seeds: Vec::new(),
        }
    }

    fn add(&mut self, name: &str, bytes: Vec<u8>) {
        self.seeds.push((name.to_owned(), bytes));
    }

    fn write(&self, dir: &Path) -> std::io::Result<usize> {
        let dir = dir.join(self.target);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in &self.seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
        }
        Ok(self.seeds.len())
    }
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(a)), port)
}

fn v6(last: u16, port: u16) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last)),
        port,
    )
}

fn keys(n: u16) -> Vec<PublicKey> {
    (0..n).map(world::peer).collect()
}

fn lookup(request_id: u32, peers: Vec<PublicKey>, punched: u32) -> Request {
    Request::Lookup(Lookup {
        request_id,
        peers,
        punched,
    })
}

fn requests() -> Vec<(&'static str, Request)> {
    let register = |part, parts, peers, local_addrs| {
        Request::Register(Register {
            request_id: 0x0102_0304,
            generation: 1,
            part,
            parts,
            peers,
            local_addrs,
            watch: part == 0,
            hard_nat: false,
        })
    };
    vec![
        ("register-empty", register(0, 1, vec![], vec![])),
        (
            "register-peers-addrs",
            register(
                0,
                1,
                keys(3),
                vec![v4([192, 168, 1, 20], 51820), v6(0x20, 51820)],
            ),
        ),
        ("register-part-1-of-2", register(1, 2, keys(32), vec![])),
        ("lookup-one", lookup(7, keys(1), 0)),
        ("lookup-full", lookup(8, keys(32), 0x8000_0001)),
        ("push-ack", Request::PushAck(PushAck { acked: 3 })),
        (
            "candidates",
            Request::Candidates(CandidatesRequest {
                request_id: 9,
                peer: world::peer(0),
            }),
        ),
        (
            "observe",
            Request::Observe(ObserveRequest { request_id: 10 }),
        ),
    ]
}

fn replies() -> Vec<(&'static str, Reply)> {
    let sighting = |endpoint, peer_has_yours| {
        Some(Sighting {
            endpoint,
            age_secs: 5,
            peer_has_yours,
        })
    };
    vec![
        (
            "ack-v4",
            Reply::RegisterAck(RegisterAck {
                request_id: 1,
                part: 0,
                ttl_secs: 120,
                observed: v4([203, 0, 113, 10], 40001),
            }),
        ),
        (
            "ack-v6",
            Reply::RegisterAck(RegisterAck {
                request_id: 2,
                part: 1,
                ttl_secs: 120,
                observed: v6(1, 40001),
            }),
        ),
        (
            "lookup-reply",
            Reply::LookupReply(LookupReply {
                request_id: 3,
                entries: vec![
                    sighting(v4([198, 51, 100, 20], 51820), false),
                    None,
                    sighting(v6(2, 9), true),
                ],
            }),
        ),
        (
            "push",
            Reply::Push(Push {
                sequence: 1,
                peer: world::peer(0),
                sighting: Sighting {
                    endpoint: v4([198, 51, 100, 20], 51820),
                    age_secs: 0,
                    peer_has_yours: true,
                },
            }),
        ),
        (
            "candidates-reply",
            Reply::Candidates(CandidatesReply {
                request_id: 9,
                peer: world::peer(0),
                known: true,
                same_public: true,
                hard_nat: false,
                candidates: vec![v4([192, 168, 1, 30], 51820), v6(3, 51820)],
            }),
        ),
        (
            "observe-reply",
            Reply::Observed(ObserveReply {
                request_id: 10,
                observed: v4([203, 0, 113, 10], 40001),
                alternates: vec![v4([0, 0, 0, 0], 51819), v6(4, 51818)],
            }),
        ),
    ]
}

/// A ping and its pong, as clients send them between WireGuard ports.
fn probe_seeds() -> Seeds {
    let mut seeds = Seeds::new("probe");
    let ping = Probe {
        kind: ProbeKind::Ping,
        txid: 0x0102_0304_0506_0708,
        sender: world::peer(0),
        receiver: world::peer(1),
    };
    seeds.add("ping", ping.emit());
    seeds.add("pong", ping.pong().emit());
    seeds
}

fn emit_request(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    request
        .emit(&mut out)
        .expect("seed requests are within limits");
    out
}

fn emit_reply(reply: &Reply) -> Vec<u8> {
    let mut out = Vec::new();
    reply.emit(&mut out);
    out
}

/// A real handshake between a client and the server: its two datagrams and both sessions.
fn handshake() -> (Vec<u8>, Vec<u8>, Session, Session) {
    let server = world::server_key();
    let (initiation, init) = Initiation::start(
        &world::client_key(),
        &server.public_key(),
        0x1111_2222,
        wgpunch_common::handshake::unix_nanos(world::wall_start()),
        [5; 32],
    )
    .expect("initiation");
    let Ok(Packet::HandshakeInit(parsed)) = Packet::parse(&init) else {
        panic!("the initiation does not parse");
    };
    let (server_session, response) = Accepted::read(&server, &parsed, [6; 32])
        .and_then(|a| a.respond(0x3333_4444))
        .expect("response");
    let Ok(Packet::HandshakeResponse(parsed)) = Packet::parse(&response) else {
        panic!("the response does not parse");
    };
    let client_session = initiation.complete(&parsed).expect("session");
    (init, response, client_session, server_session)
}

/// The cookie reply a server under load sends for `init`.
fn cookie_reply(init: &[u8]) -> Vec<u8> {
    let Ok(Packet::HandshakeInit(parsed)) = Packet::parse(init) else {
        panic!("the initiation does not parse");
    };
    let jar = CookieJar::new(&world::server_public(), [8; 32], std::time::Instant::now());
    let source = v4([203, 0, 113, 10], 40001);
    let reply = jar
        .reply(
            source,
            parsed.sender_index,
            &parsed.mac1,
            [9; COOKIE_NONCE_LEN],
        )
        .expect("cookie reply");
    let mut out = Vec::new();
    reply.emit(&mut out);
    out
}

fn sealed(session: &mut Session, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    session.seal(plaintext, &mut out).expect("seal");
    out
}

fn wire_seeds() -> Vec<Seeds> {
    let (init, response, mut client, mut server) = handshake();
    let mut packet = Seeds::new("packet");
    packet.add("cookie-reply", cookie_reply(&init));
    packet.add("handshake-init", init);
    packet.add("handshake-response", response);
    let mut request = Seeds::new("request");
    for (name, r) in requests() {
        let bytes = emit_request(&r);
        packet.add(&format!("transport-{name}"), sealed(&mut client, &bytes));
        request.add(name, bytes);
    }
    let mut reply = Seeds::new("reply");
    for (name, r) in replies() {
        let bytes = emit_reply(&r);
        packet.add(&format!("transport-{name}"), sealed(&mut server, &bytes));
        reply.add(name, bytes);
    }
    vec![packet, request, reply]
}

/// natpunch-go's four datagrams from a real legacy handshake, and the plaintexts they carry.
fn legacy_seeds() -> Seeds {
    use wgpunch_common::legacy::packet::{parse_from_server, FromServer};
    use wgpunch_common::legacy::plaintext::{emit_answer, emit_timestamp};
    use wgpunch_common::legacy::{Accepted, FromClient, Initiation, LookupRequest};
    let client = world::client_key();
    let server = world::server_key();
    let mut seeds = Seeds::new("legacy");
    let (pending, init) =
        Initiation::start(&client, &server.public_key(), 7, 1_700_000_000, [1; 32])
            .expect("legacy initiation");
    let Ok(FromClient::HandshakeInit(parsed)) =
        wgpunch_common::legacy::packet::parse_from_client(&init)
    else {
        panic!("legacy initiation does not parse")
    };
    let (mut server_session, response) = Accepted::read(&server, &parsed, [2; 32])
        .and_then(|a| a.respond(9))
        .expect("legacy response");
    let Ok(FromServer::HandshakeResponse(parsed)) = parse_from_server(&response) else {
        panic!("legacy response does not parse")
    };
    let mut client_session = pending.complete(&parsed).expect("legacy session");
    let request = LookupRequest {
        client: client.public_key(),
        target: world::peer(2),
    };
    seeds.add("initiation", init);
    seeds.add("response", response);
    seeds.add(
        "lookup",
        client_session.seal_lookup(&request).expect("legacy lookup"),
    );
    seeds.add(
        "answer-empty",
        server_session.seal_answer(None).expect("legacy answer"),
    );
    seeds.add(
        "answer-found",
        server_session
            .seal_answer(Some("203.0.113.10:51820".parse().expect("address")))
            .expect("legacy answer"),
    );
    seeds.add("plain-lookup", request.emit().to_vec());
    seeds.add("plain-timestamp", emit_timestamp(1_700_000_000).to_vec());
    let mut endpoint = Vec::new();
    emit_answer(
        Some("203.0.113.10:51820".parse().expect("address")),
        &mut endpoint,
    );
    seeds.add("plain-endpoint", endpoint);
    seeds
}

/// An IPv4 header with `options` (a multiple of 4 bytes) in front of `udp`, as a raw socket
/// delivers it. The checksum is left zero: the parser trusts the kernel to have checked it.
fn ipv4_packet(source: [u8; 4], destination: [u8; 4], options: &[u8], udp: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let total = u16::try_from(header_len + udp.len()).expect("small packet");
    let ihl = u8::try_from(header_len / 4).expect("at most 15 words");
    let mut p = vec![0x40 | ihl, 0];
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, 64, 17, 0, 0]); // id, DF, TTL, UDP
    p.extend_from_slice(&source);
    p.extend_from_slice(&destination);
    p.extend_from_slice(options);
    p.extend_from_slice(udp);
    p
}

fn raw_seeds() -> Vec<Seeds> {
    let (_, response, _, mut server) = handshake();
    let ack = sealed(&mut server, &emit_reply(&replies()[0].1));
    let (from, to) = ([192, 0, 2, 1], [10, 0, 0, 2]);
    let udp4 = |payload: &[u8]| emit_udp(v4(from, 3478), v4(to, 51820), payload).expect("udp");
    let mut ipv4 = Seeds::new("raw_ipv4");
    ipv4.add("empty", ipv4_packet(from, to, &[], &udp4(b"")));
    ipv4.add("response", ipv4_packet(from, to, &[], &udp4(&response)));
    ipv4.add(
        "ack-options",
        ipv4_packet(from, to, &[0x94, 4, 0, 0], &udp4(&ack)),
    );
    ipv4.add(
        "max-options",
        ipv4_packet(from, to, &[1; 40], &udp4(b"reply")),
    );
    let udp6 = |payload: &[u8]| emit_udp(v6(1, 3478), v6(2, 51820), payload).expect("udp");
    let mut udp = Seeds::new("raw_udp");
    udp.add("empty", udp6(b""));
    udp.add("response", udp6(&response));
    udp.add("ack", udp6(&ack));
    vec![ipv4, udp]
}

fn server_seeds() -> Seeds {
    use ServerOp::*;
    let mut seeds = Seeds::new("server");
    let step = |port| ClientStep { port, flip: 0 };
    let send = |who, port, request: &Request| PuppetSend {
        who,
        port,
        plaintext: emit_request(request),
    };
    let handshake = |who, index, port| PuppetHandshake {
        who,
        index,
        skew_centis: 0,
        port,
    };
    let register = |peers| {
        Request::Register(Register {
            request_id: 100,
            generation: 1,
            part: 0,
            parts: 1,
            peers,
            local_addrs: vec![v4([10, 0, 0, 5], 51820)],
            watch: true,
            hard_nat: false,
        })
    };
    let ask = |peers, punched| lookup(200, peers, punched);
    // The client (peer 3) and puppets 0 and 1 register, declaring each other, then look each
    // other up.
    let mesh = vec![
        handshake(0, 10, 4),
        send(0, 4, &register(vec![world::peer(1), world::peer(3)])),
        handshake(1, 11, 8),
        send(1, 8, &register(vec![world::peer(0), world::peer(3)])),
        send(0, 4, &ask(keys(4), 0b0010)),
        ClientLookup { mask: 0b11 },
        Advance { centis: 1 },
        step(0),
        Advance { centis: 100 },
        step(0),
    ];
    seeds.add("mesh", server_sim::script(false, &mesh));
    seeds.add("mesh-tight", server_sim::script(true, &mesh));
    let multipart = |part, parts, peers| {
        Request::Register(Register {
            request_id: 300 + u32::from(part),
            generation: 2,
            part,
            parts,
            peers,
            local_addrs: vec![],
            watch: true,
            hard_nat: false,
        })
    };
    seeds.add(
        "multipart",
        server_sim::script(
            false,
            &[
                handshake(2, 12, 2),
                send(2, 2, &multipart(0, 2, keys(32))),
                send(2, 3, &multipart(1, 2, keys(8))),
                send(2, 3, &multipart(1, 2, keys(8))),
                ClientSetPeers { count: 70 },
                step(1),
                Advance { centis: 1 },
                step(1),
                step(1),
            ],
        ),
    );
    seeds.add(
        "expiry",
        server_sim::script(
            true,
            &[
                handshake(0, 1, 0),
                Advance { centis: 200 },
                handshake(1, 2, 1),
                Advance { centis: 200 },
                handshake(2, 3, 2),
                Advance { centis: 2500 },
                Expire,
                step(5),
                Advance { centis: 1 },
                step(5),
                StepWall { secs: -30 },
                handshake(0, 4, 0),
            ],
        ),
    );
    // More initiations a second than the tight threshold: cookie replies (paid from the source's
    // bucket), then retries with mac2 from the same source, and rate limits.
    seeds.add(
        "load",
        server_sim::script(
            true,
            &[
                handshake(0, 1, 0),
                handshake(1, 2, 4),
                handshake(0, 3, 0),
                handshake(0, 4, 0),
                handshake(1, 5, 4),
                handshake(1, 6, 4),
                // Long enough for the source's bucket to pay for a cookie and a handshake.
                Advance { centis: 300 },
                handshake(0, 7, 0),
                handshake(0, 8, 0),
                step(0),
            ],
        ),
    );
    seeds.add(
        "corrupt",
        server_sim::script(
            false,
            &[
                ClientLookup { mask: 1 },
                Advance { centis: 1 },
                ClientStep { port: 0, flip: 200 },
                Resend {
                    index: 0,
                    flip: 0,
                    port: 6,
                },
                Resend {
                    index: 3,
                    flip: 1000,
                    port: 7,
                },
                Raw {
                    port: 1,
                    bytes: vec![0x14, 0, 0, 0, 1, 2, 3, 4],
                },
            ],
        ),
    );
    // natpunch-go puppets: handshakes, lookups that find each other, a lookup naming another
    // key, a replayed lookup, and raw legacy-typed bytes.
    let legacy_handshake = |who, index, port| LegacyHandshake {
        who,
        index,
        skew_centis: 0,
        port,
    };
    let legacy_lookup = |who, port, target, claim| LegacyLookup {
        who,
        port,
        target,
        claim,
    };
    for tight in [false, true] {
        seeds.add(
            if tight { "legacy-tight" } else { "legacy" },
            server_sim::script(
                tight,
                &[
                    legacy_handshake(0, 1, 1),
                    legacy_handshake(1, 1, 2),
                    legacy_lookup(0, 1, 1, 0),
                    legacy_lookup(1, 2, 0, 0),
                    legacy_lookup(0, 3, 1, 0),
                    legacy_lookup(1, 2, 3, 0),
                    legacy_lookup(1, 2, 0, 3),
                    Resend {
                        index: 3,
                        flip: 0,
                        port: 5,
                    },
                    ClientLookup { mask: 1 },
                    step(0),
                    Raw {
                        port: 1,
                        bytes: vec![3; 93],
                    },
                    Raw {
                        port: 1,
                        bytes: vec![1; 109],
                    },
                    Advance { centis: 100 },
                    legacy_handshake(0, 7, 1),
                    legacy_lookup(0, 1, 1, 0),
                ],
            ),
        );
    }
    seeds
}

fn agent_seeds() -> Seeds {
    let mut seeds = Seeds::new("agent");
    let connect = agent_sim::connect();
    seeds.add("connect-one-shot", agent_sim::script(false, &connect));
    let mut moved = connect.clone();
    moved.extend([
        AgentOp::Interface {
            peer: 0,
            ago: 0,
            rx: 148,
            tx: 92,
        },
        AgentOp::Advance { centis: 50 },
        // Our NAT moves us: the next exchanges come from another source.
        AgentOp::Advance { centis: 2100 },
        AgentOp::Transmit { port: 9, flip: 0 },
        AgentOp::Deliver { count: 16 },
        AgentOp::Peer { port: 1 },
        AgentOp::Transmit { port: 9, flip: 0 },
        AgentOp::Deliver { count: 16 },
    ]);
    seeds.add("moved-continuous", agent_sim::script(true, &moved));
    let mut probed = agent_sim::exchanges(6);
    probed.push(AgentOp::Answer { index: 0 });
    seeds.add("lan-candidate-answered", agent_sim::script(false, &probed));
    seeds
}

fn peers_seeds() -> Seeds {
    let mut seeds = Seeds::new("peers");
    let answer = |peer, has_yours| PeerOp::Resolved {
        peer,
        ip: [198, 51, 100, 20],
        port: 51820,
        has_yours,
    };
    let handshake = |peer| PeerOp::Handshake {
        peer,
        ago: 0,
        bytes: 148,
    };
    let barrier = [
        PeerOp::Observe,
        answer(0, false),
        PeerOp::Wait { millis: 500 },
        answer(0, true),
        handshake(0),
        PeerOp::Observe,
    ];
    seeds.add("barrier-one-shot", peers_sim::script(false, &barrier));
    let mut dead_path = barrier.to_vec();
    dead_path.extend([
        PeerOp::Wait { millis: 65_000 },
        PeerOp::Observe,
        PeerOp::Wait { millis: 36_000 },
        PeerOp::Observe,
        answer(0, true),
        PeerOp::StepWall { secs: -30 },
        handshake(0),
        PeerOp::Observe,
    ]);
    seeds.add("dead-path-continuous", peers_sim::script(true, &dead_path));
    let churn = [
        PeerOp::Toggle { peer: 1 },
        PeerOp::Observe,
        answer(1, true),
        PeerOp::Toggle { peer: 1 },
        answer(1, true),
        PeerOp::Observe,
        PeerOp::Wait { millis: 16_000 },
        PeerOp::Observe,
    ];
    seeds.add("peer-churn", peers_sim::script(true, &churn));
    seeds
}

fn client_seeds() -> Seeds {
    use ClientOp::*;
    let mut seeds = Seeds::new("client");
    let to_server = Transmit {
        to_server: 1,
        flip: 0,
    };
    let to_puppet = Transmit {
        to_server: 0,
        flip: 0,
    };
    let answer = |mode| PuppetAnswer {
        mode,
        ttl_secs: 120,
        port: 51820,
        age_secs: 3,
        known: 0b101,
    };
    seeds.add(
        "real-server",
        client_sim::script(&[
            to_server.clone(),
            Deliver { count: 4 },
            Advance { centis: 1 },
            to_server.clone(),
            Deliver { count: 4 },
            Lookup { mask: 0b1111 },
            Advance { centis: 1 },
            to_server.clone(),
            Deliver { count: 4 },
            Advance { centis: 6000 },
            to_server.clone(),
            Lose,
            Advance { centis: 100 },
            to_server.clone(),
            Deliver { count: 4 },
        ]),
    );
    seeds.add(
        "puppet",
        client_sim::script(&[
            to_puppet.clone(),
            PuppetAccept { index: 77, flip: 0 },
            Advance { centis: 1 },
            to_puppet.clone(),
            answer(0),
            Lookup { mask: 0b111 },
            Advance { centis: 1 },
            to_puppet.clone(),
            answer(0),
            Lookup { mask: 0b11000 },
            Advance { centis: 1 },
            to_puppet.clone(),
            answer(2),
            answer(4),
            answer(8),
            answer(16),
            answer(0),
        ]),
    );
    let mut sealed_replies = vec![
        to_puppet.clone(),
        PuppetAccept { index: 78, flip: 0 },
        Advance { centis: 1 },
        to_puppet.clone(),
    ];
    for (_, reply) in replies() {
        sealed_replies.push(PuppetSeal {
            plaintext: emit_reply(&reply),
        });
    }
    seeds.add("puppet-sealed", client_sim::script(&sealed_replies));
    seeds.add(
        "puppet-cookie",
        client_sim::script(&[
            to_puppet.clone(),
            PuppetCookie { flip: 0 },
            Advance { centis: 1 },
            to_puppet.clone(),
            PuppetAccept { index: 79, flip: 0 },
            Advance { centis: 1 },
            to_puppet.clone(),
            answer(0),
        ]),
    );
    seeds.add(
        "multipart-corrupt",
        client_sim::script(&[
            SetPeers { count: 70 },
            to_server.clone(),
            Deliver { count: 1 },
            Resend { index: 0, flip: 9 },
            Advance { centis: 1 },
            Transmit {
                to_server: 1,
                flip: 300,
            },
            Deliver { count: 8 },
            Resend { index: 1, flip: 0 },
            Raw {
                bytes: vec![0x12, 0, 0, 0, 1, 2, 3, 4],
            },
            StepWall { secs: -600 },
            Advance { centis: 100 },
            to_server.clone(),
            Deliver { count: 8 },
            ServerExpire,
        ]),
    );
    seeds
}

/// Scripts for the `legacy_client` target (see `wgpunch_fuzz::legacy_client_sim`).
fn legacy_client_seeds() -> Seeds {
    use LegacyClientOp::*;
    let mut seeds = Seeds::new("legacy_client");
    let accept = [Transmit, Accept { index: 7, flip: 0 }, Transmit];
    let answer = |found| {
        [
            Answer {
                which: 0,
                found,
                ip: 0xc633_6414,
                port: 51820,
            },
            Transmit,
        ]
    };
    let mut found = vec![Lookup { mask: 0b11 }];
    found.extend(accept.clone());
    found.extend(answer(true));
    found.extend(answer(true));
    found.extend(answer(false));
    seeds.add("found", legacy_client_sim::script(&found));

    let mut retried = vec![Lookup { mask: 0b1 }];
    retried.extend(accept.clone());
    // The self-lookup goes unanswered for a second and is sent again; both sends are answered.
    retried.extend([Advance { centis: 100 }, Transmit]);
    retried.extend(answer(true));
    retried.extend(answer(true));
    // The next lookup needs a new session; the old one's answers are replayed at it.
    retried.extend(accept.clone());
    retried.extend([Replay { which: 1, flip: 0 }, Replay { which: 2, flip: 9 }]);
    retried.extend(answer(false));
    seeds.add("retried", legacy_client_sim::script(&retried));

    let mut silent = vec![Lookup { mask: 0b100 }];
    silent.extend(accept.clone());
    for _ in 0..6 {
        silent.extend([Advance { centis: 900 }, Transmit]);
    }
    silent.extend([Raw { bytes: vec![3; 25] }, StepWall { secs: -30 }]);
    silent.extend(accept);
    silent.extend(answer(true));
    seeds.add("server-silent", legacy_client_sim::script(&silent));
    seeds
}

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: seed_corpus DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let mut all = wire_seeds();
    all.extend(raw_seeds());
    all.push(legacy_seeds());
    all.push(server_seeds());
    all.push(client_seeds());
    all.push(peers_seeds());
    all.push(legacy_client_seeds());
    all.push(agent_seeds());
    all.push(probe_seeds());
    for seeds in &all {
        match seeds.write(&dir) {
            Ok(n) => println!("seed_corpus: {n} seeds for {}", seeds.target),
            Err(e) => {
                eprintln!(
                    "seed_corpus: writing {}: {e}",
                    dir.join(seeds.target).display()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpunch_common::client::Event;

    fn seed(seeds: &Seeds, name: &str) -> Vec<u8> {
        let found = seeds.seeds.iter().find(|(n, _)| n == name);
        found.map(|(_, bytes)| bytes.clone()).expect("seed exists")
    }

    #[test]
    fn wire_seeds_parse() {
        let all = wire_seeds();
        for (_, bytes) in &all[0].seeds {
            assert!(Packet::parse(bytes).is_ok());
        }
        for (_, bytes) in &all[1].seeds {
            assert!(Request::parse(bytes).is_ok());
        }
        for (_, bytes) in &all[2].seeds {
            assert!(Reply::parse(bytes).is_ok());
        }
    }

    #[test]
    fn legacy_seeds_parse() {
        use wgpunch_common::legacy::packet::{parse_from_client, parse_from_server};
        let seeds = legacy_seeds();
        let packets = seeds
            .seeds
            .iter()
            .filter(|(name, _)| !name.starts_with("plain-"));
        for (name, bytes) in packets {
            let client = parse_from_client(bytes).is_ok();
            let server = parse_from_server(bytes).is_ok();
            assert!(client || server, "{name}");
        }
    }

    #[test]
    fn legacy_server_seeds_reach_answers() {
        let seeds = server_seeds();
        for name in ["legacy", "legacy-tight"] {
            let sim = server_sim::run(&seed(&seeds, name));
            let stats = sim.server().legacy_stats();
            assert!(stats.handshakes >= 3, "{name}: {stats:?}");
            assert!(stats.found >= 2, "{name}: {stats:?}");
            assert!(stats.wrong_client_key >= 1, "{name}: {stats:?}");
        }
    }

    #[test]
    fn raw_seeds_parse() {
        let all = raw_seeds();
        for (_, bytes) in &all[0].seeds {
            assert!(wgpunch_client::packet::parse_ipv4_udp(bytes).is_ok());
        }
        for (_, bytes) in &all[1].seeds {
            assert!(wgpunch_client::packet::parse_udp(bytes).is_ok());
        }
    }

    #[test]
    fn server_seeds_reach_registrations_and_lookups() {
        let seeds = server_seeds();
        let mesh = server_sim::run(&seed(&seeds, "mesh"));
        assert_eq!(mesh.puppets_connected(), 2);
        let stats = mesh.server().stats();
        assert!(stats.registrations >= 3, "{stats:?}");
        assert!(stats.lookups >= 2, "{stats:?}");
        let multipart = server_sim::run(&seed(&seeds, "multipart"));
        let stats = multipart.server().stats();
        assert!(stats.registrations >= 5, "{stats:?}");
        assert!(multipart.client().is_registered());
        let expiry = server_sim::run(&seed(&seeds, "expiry"));
        let stats = expiry.server().stats();
        assert!(stats.sessions_full >= 1, "{stats:?}");
        assert!(stats.not_allowed >= 1, "{stats:?}");
        let load = server_sim::run(&seed(&seeds, "load"));
        let stats = load.server().stats();
        assert!(stats.cookie_replies >= 1, "{stats:?}");
        assert!(stats.handshakes >= 3, "{stats:?}");
        let corrupt = server_sim::run(&seed(&seeds, "corrupt"));
        assert!(corrupt.server().stats().bad_transport >= 1);
    }

    #[test]
    fn legacy_client_seeds_reach_answers_and_new_sessions() {
        use wgpunch_common::legacy::client::LegacyEvent;
        let seeds = legacy_client_seeds();
        let found = legacy_client_sim::run(&seed(&seeds, "found"));
        let has = |test: fn(&LegacyEvent) -> bool| found.iter().any(test);
        assert!(has(|e| matches!(e, LegacyEvent::Observed(_))), "{found:?}");
        assert!(has(|e| matches!(e, LegacyEvent::Found { .. })), "{found:?}");
        assert!(
            has(|e| matches!(e, LegacyEvent::NotFound { .. })),
            "{found:?}"
        );
        for name in ["retried", "server-silent"] {
            let events = legacy_client_sim::run(&seed(&seeds, name));
            let sessions = events
                .iter()
                .filter(|e| **e == LegacyEvent::Connected)
                .count();
            assert_eq!(sessions, 2, "{name} makes a second session: {events:?}");
        }
    }

    #[test]
    fn agent_seeds_set_the_peers_endpoint() {
        let seeds = agent_seeds();
        for name in ["connect-one-shot", "moved-continuous"] {
            let report = agent_sim::run(&seed(&seeds, name));
            assert!(!report.endpoints_set.is_empty(), "{name}: {report:?}");
        }
    }

    #[test]
    fn peers_seeds_set_endpoints_behind_the_barrier() {
        let seeds = peers_seeds();
        let outcome = peers_sim::run(&seed(&seeds, "barrier-one-shot"));
        assert_eq!(outcome.connected, 1, "{outcome:?}");
        let outcome = peers_sim::run(&seed(&seeds, "dead-path-continuous"));
        assert_eq!(outcome.endpoints_set.len(), 2, "{outcome:?}");
    }

    #[test]
    fn client_seeds_get_registered_and_answered() {
        let seeds = client_seeds();
        for (name, answer) in [
            ("real-server", "Unknown"),
            ("puppet", "Resolved"),
            ("puppet-cookie", "Registered"),
        ] {
            let sim = client_sim::run(&seed(&seeds, name));
            let events = sim.events();
            assert!(
                events.iter().any(|e| matches!(e, Event::Registered { .. })),
                "{name}: {events:?}"
            );
            assert!(
                events.iter().any(|e| format!("{e:?}").starts_with(answer)),
                "{name}: {events:?}"
            );
        }
    }
}
