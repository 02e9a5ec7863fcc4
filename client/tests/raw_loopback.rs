//! The raw UDP path against ordinary UDP sockets on loopback, for IPv4 and IPv6.
//!
//! Raw sockets need CAP_NET_RAW: without it these tests fail (they never skip) and say so.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use wgpunch_client::raw::{RawError, RawUdp};
use wgpunch_client::{bpf, sys};

/// Longest any single wait in these tests may take.
const WAIT: Duration = Duration::from_millis(1500);
/// How long a test waits to be sure that something does not arrive.
const QUIET: Duration = Duration::from_millis(300);

const V4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const V6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

/// A UDP socket bound to `ip` on a kernel-chosen port, with a bounded read timeout.
fn udp_socket(ip: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("binding UDP on {ip}: {e}"));
    socket
        .set_read_timeout(Some(WAIT))
        .unwrap_or_else(|e| panic!("setting a read timeout: {e}"));
    socket
}

/// A port on `ip` that no socket is bound to (it was free a moment ago).
fn unused_port(ip: IpAddr) -> u16 {
    let socket = udp_socket(ip);
    socket
        .local_addr()
        .unwrap_or_else(|e| panic!("reading a local address: {e}"))
        .port()
}

/// Opens the raw path to `server` from `port`, failing the test with the reason if it cannot.
fn open(server: SocketAddr, port: u16) -> RawUdp {
    match RawUdp::open(server, port) {
        Ok(raw) => raw,
        Err(e @ RawError::NeedCapNetRaw) => {
            panic!("this test needs root or CAP_NET_RAW to open raw sockets: {e}")
        }
        Err(e) => panic!("opening the raw path to {server} from port {port}: {e}"),
    }
}

/// A "server" socket on `ip` and a raw path to it from an unused port.
fn setup(ip: IpAddr) -> (UdpSocket, RawUdp, SocketAddr) {
    let server = udp_socket(ip);
    let server_addr = server
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the server address: {e}"));
    let port = unused_port(ip);
    let raw = open(server_addr, port);
    (server, raw, SocketAddr::new(ip, port))
}

/// Receives with a `len`-byte buffer and returns the payload, or `None` on timeout.
fn recv(raw: &RawUdp, len: usize, timeout: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let started = Instant::now();
    let got = raw
        .recv(&mut buf, timeout)
        .unwrap_or_else(|e| panic!("raw recv failed: {e}"));
    assert!(
        started.elapsed() < timeout + Duration::from_millis(200),
        "recv overran its timeout"
    );
    got.map(|n| buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default())
}

fn send_to(socket: &UdpSocket, payload: &[u8], to: SocketAddr) {
    socket
        .send_to(payload, to)
        .unwrap_or_else(|e| panic!("sending to {to}: {e}"));
}

fn sent_datagram_arrives_from_the_local_port(ip: IpAddr) {
    let (server, raw, local) = setup(ip);
    assert_eq!(raw.local_addr(), local);
    assert_eq!(raw.server(), server.local_addr().ok().unwrap_or(local));
    raw.send(b"hello")
        .unwrap_or_else(|e| panic!("raw send failed: {e}"));
    let mut buf = [0u8; 64];
    let (n, from) = server
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the server got nothing (is the UDP checksum right?): {e}"));
    assert_eq!(buf.get(..n), Some(&b"hello"[..]));
    assert_eq!(from, local);
}

fn servers_reply_is_received(ip: IpAddr) {
    let (server, raw, local) = setup(ip);
    send_to(&server, b"welcome", local);
    assert_eq!(recv(&raw, 1500, WAIT).as_deref(), Some(&b"welcome"[..]));
    assert_eq!(raw.dropped(), 0);
}

fn datagram_from_another_source_port_is_not_returned(ip: IpAddr) {
    let (server, raw, local) = setup(ip);
    let stranger = udp_socket(ip);
    send_to(&stranger, b"spoofed", local);
    assert_eq!(recv(&raw, 1500, QUIET), None);
    send_to(&stranger, b"spoofed again", local);
    send_to(&server, b"genuine", local);
    assert_eq!(recv(&raw, 1500, WAIT).as_deref(), Some(&b"genuine"[..]));
}

fn payload_longer_than_the_buffer_is_skipped(ip: IpAddr) {
    let (server, raw, local) = setup(ip);
    send_to(&server, &[0x5a; 2000], local);
    send_to(&server, b"fits", local);
    assert_eq!(recv(&raw, 1500, WAIT).as_deref(), Some(&b"fits"[..]));
    assert_eq!(raw.dropped(), 1);
    send_to(&server, &[0x5a; 2000], local);
    assert_eq!(recv(&raw, 1500, QUIET), None);
}

fn round_trip_works_while_the_port_is_bound(ip: IpAddr) {
    // As with WireGuard: an ordinary socket owns the port, the raw path talks from it.
    let wireguard = udp_socket(ip);
    let local = wireguard
        .local_addr()
        .unwrap_or_else(|e| panic!("reading a local address: {e}"));
    let server = udp_socket(ip);
    let server_addr = server
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the server address: {e}"));
    let raw = open(server_addr, local.port());
    raw.send(b"register")
        .unwrap_or_else(|e| panic!("raw send failed: {e}"));
    let mut buf = [0u8; 64];
    let (n, from) = server
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the server got nothing: {e}"));
    assert_eq!((buf.get(..n), from), (Some(&b"register"[..]), local));
    send_to(&server, b"registered", local);
    assert_eq!(recv(&raw, 1500, WAIT).as_deref(), Some(&b"registered"[..]));
    // The bound socket gets its own copy; the raw path took nothing away from it.
    let (n, _) = wireguard
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the bound socket got nothing: {e}"));
    assert_eq!(buf.get(..n), Some(&b"registered"[..]));
}

#[test]
fn ipv4_sent_datagram_arrives_from_the_local_port() {
    sent_datagram_arrives_from_the_local_port(V4);
}

#[test]
fn ipv6_sent_datagram_arrives_from_the_local_port() {
    sent_datagram_arrives_from_the_local_port(V6);
}

#[test]
fn ipv4_servers_reply_is_received() {
    servers_reply_is_received(V4);
}

#[test]
fn ipv6_servers_reply_is_received() {
    servers_reply_is_received(V6);
}

#[test]
fn ipv4_datagram_from_another_source_port_is_not_returned() {
    datagram_from_another_source_port_is_not_returned(V4);
}

#[test]
fn ipv6_datagram_from_another_source_port_is_not_returned() {
    datagram_from_another_source_port_is_not_returned(V6);
}

#[test]
fn ipv4_payload_longer_than_the_buffer_is_skipped() {
    payload_longer_than_the_buffer_is_skipped(V4);
}

#[test]
fn ipv6_payload_longer_than_the_buffer_is_skipped() {
    payload_longer_than_the_buffer_is_skipped(V6);
}

#[test]
fn ipv4_round_trip_works_while_the_port_is_bound() {
    round_trip_works_while_the_port_is_bound(V4);
}

#[test]
fn ipv6_round_trip_works_while_the_port_is_bound() {
    round_trip_works_while_the_port_is_bound(V6);
}

#[test]
fn ipv4_datagram_from_another_address_with_the_servers_port_is_not_returned() {
    // 127.0.0.2 is a loopback address too, so a "stranger" can use the server's very port.
    let (server, raw, local) = setup(V4);
    let port = server
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the server address: {e}"))
        .port();
    let stranger = UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 2), port))
        .unwrap_or_else(|e| panic!("binding 127.0.0.2:{port}: {e}"));
    send_to(&stranger, b"spoofed", local);
    assert_eq!(recv(&raw, 1500, QUIET), None);
    send_to(&server, b"genuine", local);
    assert_eq!(recv(&raw, 1500, WAIT).as_deref(), Some(&b"genuine"[..]));
}

/// A mapping address, once heard, is talked to and heard from like the server; a stranger still
/// is not.
fn a_mapping_address_is_heard_once_added(ip: IpAddr) {
    let (server, mut raw, local) = setup(ip);
    let mapping = udp_socket(ip);
    let mapping_addr = mapping
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the mapping address: {e}"));
    send_to(&mapping, b"too early", local);
    assert_eq!(
        recv(&raw, 1500, QUIET),
        None,
        "not heard before it is added"
    );
    let heard = raw
        .hear_also(&[mapping_addr])
        .unwrap_or_else(|e| panic!("re-attaching the filter failed: {e}"))
        .to_vec();
    assert_eq!(heard, vec![mapping_addr]);
    raw.send_to(mapping_addr, b"observe")
        .unwrap_or_else(|e| panic!("raw send failed: {e}"));
    let mut buf = [0u8; 64];
    let (n, from) = mapping
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("the mapping address got nothing: {e}"));
    assert_eq!((buf.get(..n), from), (Some(&b"observe"[..]), local));
    send_to(&mapping, b"observed", local);
    assert_eq!(recv(&raw, 1500, WAIT).as_deref(), Some(&b"observed"[..]));
    send_to(&server, b"still the server", local);
    assert_eq!(
        recv(&raw, 1500, WAIT).as_deref(),
        Some(&b"still the server"[..])
    );
    let stranger = udp_socket(ip);
    send_to(&stranger, b"spoofed", local);
    assert_eq!(recv(&raw, 1500, QUIET), None);
}

#[test]
fn ipv4_a_mapping_address_is_heard_once_added() {
    a_mapping_address_is_heard_once_added(V4);
}

#[test]
fn ipv6_a_mapping_address_is_heard_once_added() {
    a_mapping_address_is_heard_once_added(V6);
}

#[test]
fn recv_times_out_when_nothing_comes() {
    let (_server, raw, _local) = setup(V4);
    let started = Instant::now();
    assert_eq!(recv(&raw, 1500, QUIET), None);
    assert!(started.elapsed() >= QUIET);
    assert_eq!(recv(&raw, 1500, Duration::ZERO), None);
}

/// A raw UDP socket for `ip`'s family running `program` in the kernel, unbound and unconnected so
/// that only the filter decides what it gets, with anything queued before the filter discarded.
fn filtered_raw_socket(ip: IpAddr, program: &[bpf::Insn]) -> Socket {
    let socket = Socket::new(
        Domain::for_address(SocketAddr::new(ip, 0)),
        Type::RAW,
        Some(Protocol::UDP),
    )
    .unwrap_or_else(|e| panic!("this test needs root or CAP_NET_RAW to open raw sockets: {e}"));
    sys::attach_filter(&socket, program)
        .unwrap_or_else(|e| panic!("the kernel refused the filter: {e}"));
    socket
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("making the raw socket non-blocking: {e}"));
    let mut scratch = [0u8; 64];
    while sys::recv_from(&socket, &mut scratch).is_ok() {}
    socket
}

/// Whether `socket` gets a packet ending in `marker` within `timeout`.
fn gets_packet_ending_in(socket: &Socket, marker: &[u8], timeout: Duration) -> bool {
    let started = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        match sys::recv_from(socket, &mut buf) {
            Ok((n, _)) if buf.get(..n).is_some_and(|d| d.ends_with(marker)) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("raw receive failed: {e}"),
        }
        let remaining = timeout.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return false;
        }
        sys::wait_readable(socket, remaining).unwrap_or_else(|e| panic!("poll failed: {e}"));
    }
}

/// Checks in the kernel that the filter for `server` passes the server's datagram and the filter
/// for `other` (same ports) does not.
fn kernel_filter_checks_the_source_address(server_ip: IpAddr, other_ip: IpAddr) {
    let server = udp_socket(server_ip);
    let server_port = server
        .local_addr()
        .unwrap_or_else(|e| panic!("reading the server address: {e}"))
        .port();
    let port = unused_port(server_ip);
    let program = |ip: IpAddr| match ip {
        IpAddr::V4(ip) => bpf::ipv4_program(ip, server_port, port),
        IpAddr::V6(ip) => bpf::ipv6_program(ip, server_port, port),
    };
    let right = filtered_raw_socket(server_ip, &program(server_ip));
    let wrong = filtered_raw_socket(server_ip, &program(other_ip));
    let marker = b"kernel filter probe";
    send_to(&server, marker, SocketAddr::new(server_ip, port));
    assert!(
        gets_packet_ending_in(&right, marker, WAIT),
        "the matching filter dropped the datagram"
    );
    assert!(
        !gets_packet_ending_in(&wrong, marker, QUIET),
        "the filter let another source through"
    );
}

#[test]
fn ipv4_kernel_filter_checks_the_source_address() {
    kernel_filter_checks_the_source_address(V4, IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
}

#[test]
fn ipv6_kernel_filter_checks_the_source_address() {
    // The IPv6 program reads the source address through SKF_NET_OFF, outside the data it sees.
    kernel_filter_checks_the_source_address(V6, IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 2)));
}

/// Sending to a closed port draws ICMP port unreachable, which the kernel reports as a pending
/// ECONNREFUSED on raw sockets; neither the next send nor a receive may fail because of it.
fn icmp_errors_do_not_break_send_or_recv(ip: IpAddr) {
    let closed = SocketAddr::new(ip, unused_port(ip));
    let raw = open(closed, unused_port(ip));
    for _ in 0..3 {
        raw.send(b"anyone there?")
            .unwrap_or_else(|e| panic!("send after an ICMP error failed: {e}"));
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(recv(&raw, 1500, QUIET), None);
    raw.send(b"still sending")
        .unwrap_or_else(|e| panic!("send after an ICMP error failed: {e}"));
}

#[test]
fn ipv4_icmp_errors_do_not_break_send_or_recv() {
    icmp_errors_do_not_break_send_or_recv(V4);
}

#[test]
fn ipv6_icmp_errors_do_not_break_send_or_recv() {
    icmp_errors_do_not_break_send_or_recv(V6);
}
