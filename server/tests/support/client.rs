//! A native test client: the project's client state machine over an ordinary UDP socket,
//! stepped by the test, keeping every event and a copy of every datagram it sends.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime};

use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PrivateKey;

use super::{public, ServerProcess};

/// A legitimate client of the server under test.
pub struct TestClient {
    pub client: Client,
    pub socket: UdpSocket,
    pub events: Vec<Event>,
    /// Every datagram sent, in order.
    pub sent: Vec<Vec<u8>>,
}

impl TestClient {
    /// A client with the key `[n; 32]` and the seed `[n; 32]`, listing the keys `peers`.
    pub fn new(n: u8, server: &ServerProcess, peers: &[u8]) -> Self {
        Self::with_seed(n, n, server, peers)
    }

    /// A client with the key `[n; 32]` and the seed `[seed; 32]`, listing the keys `peers`.
    pub fn with_seed(n: u8, seed: u8, server: &ServerProcess, peers: &[u8]) -> Self {
        let client = Client::new(
            PrivateKey::from_bytes([n; 32]),
            server.public,
            peers.iter().map(|&p| public(p)).collect(),
            vec![],
            ClientConfig::default(),
            [seed; 32],
        );
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        Self {
            client,
            socket,
            events: Vec::new(),
            sent: Vec::new(),
        }
    }

    /// Moves the client to a fresh socket (a new source port, as after a NAT remapping) and
    /// registers again from there at once.
    pub fn move_and_register(&mut self, server: &ServerProcess) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        self.socket = socket;
        self.client.refresh();
        self.step();
        self.register();
    }

    /// Every datagram that arrives within `quiet` of the previous one, without handing any to
    /// the client (so it acknowledges nothing).
    pub fn receive_raw(&self, quiet: Duration) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        let mut last = Instant::now();
        while last.elapsed() < quiet {
            if let Ok(len) = self.socket.recv(&mut buf) {
                got.push(buf[..len].to_vec());
                last = Instant::now();
            }
        }
        got
    }

    /// Hands `datagrams` to the client and keeps the events they give.
    pub fn deliver(&mut self, datagrams: &[Vec<u8>]) {
        for datagram in datagrams {
            self.client.handle_datagram(Instant::now(), datagram);
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    /// The client's own address.
    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Sends what is due and handles what arrives, for one short step.
    pub fn step(&mut self) {
        while let Some(datagram) = self.client.poll_transmit(Instant::now(), SystemTime::now()) {
            self.socket.send(&datagram).unwrap();
            self.sent.push(datagram);
        }
        let mut buf = [0u8; 2048];
        while let Ok(len) = self.socket.recv(&mut buf) {
            self.client.handle_datagram(Instant::now(), &buf[..len]);
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    /// Steps until the client's registration is acknowledged.
    pub fn register(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.client.is_registered() {
            assert!(Instant::now() < deadline, "no registration within 10 s");
            self.step();
        }
    }

    /// A fresh lookup round for `peer`: its endpoint, or `None` when the server cannot tell.
    pub fn lookup(&mut self, peer: u8) -> Option<SocketAddr> {
        let key = public(peer);
        self.events.clear();
        self.client.lookup([key]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer for peer {peer} within 10 s: {:?}",
                self.events
            );
            self.step();
            for event in &self.events {
                match event {
                    Event::Resolved { peer, endpoint, .. } if *peer == key => {
                        return Some(*endpoint)
                    }
                    Event::Unknown { peer } if *peer == key => return None,
                    _ => {}
                }
            }
        }
    }

    /// The endpoint of the first resolution of `peer` among the events so far.
    pub fn resolved(&self, peer: u8) -> Option<SocketAddr> {
        let key = public(peer);
        self.events.iter().find_map(|e| match e {
            Event::Resolved { peer, endpoint, .. } if *peer == key => Some(*endpoint),
            _ => None,
        })
    }

    /// The datagrams sent so far whose first byte is `kind`.
    pub fn captured(&self, kind: u8) -> Vec<Vec<u8>> {
        self.sent
            .iter()
            .filter(|d| d.first() == Some(&kind))
            .cloned()
            .collect()
    }
}
