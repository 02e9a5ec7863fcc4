//! The server's second port against the live binary: it tells a client where it sees it, which
//! is how the client learns its NAT's mapping behaviour, and it answers nothing else.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PrivateKey;
use wgpunch_common::mapping::{MappingReport, NatMapping};

use support::client::TestClient;
use support::{free_port, public, ServerProcess};

/// Runs a mapping check from one ordinary UDP socket; returns the report.
fn check(server: &ServerProcess) -> (MappingReport, SocketAddr) {
    let mut client = Client::new(
        PrivateKey::from_bytes([1; 32]),
        server.public,
        vec![public(2)],
        vec![],
        ClientConfig::default(),
        [1; 32],
    );
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    client.check_mapping(server.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 2048];
    loop {
        assert!(Instant::now() < deadline, "no mapping report within 10 s");
        let now = Instant::now();
        while let Some(datagram) = client.poll_transmit(now, SystemTime::now()) {
            socket.send_to(&datagram, server.addr).unwrap();
        }
        while let Some((to, datagram)) = client.poll_mapping_transmit(now) {
            socket.send_to(&datagram, to).unwrap();
        }
        while let Ok((len, _)) = socket.recv_from(&mut buf) {
            client.handle_datagram(Instant::now(), &buf[..len]);
        }
        client.finish_mapping(Instant::now());
        while let Some(event) = client.poll_event() {
            if let Event::Mapping(report) = event {
                return (report, socket.local_addr().unwrap());
            }
        }
    }
}

#[test]
fn the_second_port_sees_the_same_mapping_as_the_main_one() {
    let second = free_port();
    let server = ServerProcess::start("mapping", &["--mapping-port", &second.to_string()]);
    let (report, local) = check(&server);
    assert_eq!(report.main, Some(local));
    assert_eq!(
        report.others,
        vec![(SocketAddr::new(server.addr.ip(), second), Some(local))]
    );
    assert_eq!(report.classify(local, server.addr), NatMapping::NoNat);
}

#[test]
fn without_a_second_port_the_nat_is_unknown() {
    let server = ServerProcess::start("no-mapping", &["--mapping-port", "0"]);
    let (report, local) = check(&server);
    assert_eq!(report.main, Some(local));
    assert!(report.others.is_empty());
    let nat = MappingReport {
        main: Some("203.0.113.7:40000".parse().unwrap()),
        ..report
    };
    assert_eq!(nat.classify(local, server.addr), NatMapping::Unknown);
}

#[test]
fn the_second_port_answers_no_other_request_and_garbage_not_at_all() {
    let second = free_port();
    let server = ServerProcess::start("mapping-refuses", &["--mapping-port", &second.to_string()]);
    let to = SocketAddr::new(server.addr.ip(), second);
    let mut a = TestClient::new(1, &server, &[2]);
    a.register();
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    // Every datagram the registered client sent, handshake and registration included, replayed
    // to the second port, and garbage: no answer.
    for datagram in &a.sent {
        attacker.send_to(datagram, to).unwrap();
    }
    for byte in 0..=255u8 {
        attacker.send_to(&[byte; 64], to).unwrap();
    }
    attacker.send_to(&[], to).unwrap();
    assert!(
        attacker.recv(&mut [0u8; 2048]).is_err(),
        "the second port answered something other than an observe request"
    );
    // The client is still registered where it was, and the server still answers.
    let mut b = TestClient::new(2, &server, &[1]);
    b.register();
    assert_eq!(b.lookup(1), Some(a.addr()));
}
