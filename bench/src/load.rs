//! The load: N clients in pairs, each with its own UDP socket, register with the server and look
//! each other up; every answer is checked against the socket addresses we know.
//!
//! `sockets / 2` pair slots run at once. A slot takes pairs `slot`, `slot + slots`, ... in turn:
//! it binds two fresh sockets on its own two loopback addresses (port 0, so each pair gets new
//! ports), drives both clients until each has `lookups` answers, then closes the sockets. The
//! server keeps the registrations of finished pairs (start it with a long `--registration-ttl`),
//! so its tables grow to N keys.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use tokio::net::UdpSocket;
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PublicKey;

use crate::identity::{client_key, client_public, client_seed, socket_ip};
use crate::stats::Latencies;

/// What the load is asked to do.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The server's address (loopback).
    pub server: SocketAddr,
    /// The server's public key.
    pub server_key: PublicKey,
    /// Number of clients (even).
    pub clients: u64,
    /// Lookup answers each client waits for.
    pub lookups: u32,
    /// Sockets in use at once (even): `sockets / 2` pairs run concurrently.
    pub sockets: usize,
    /// No pair starts after this, and pairs still running are abandoned at it.
    pub deadline: Instant,
    /// Longest time one pair may take.
    pub pair_timeout: Duration,
}

/// What happened, counted over all pairs.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Handshakes completed (Connected events).
    pub handshakes: u64,
    /// Registrations acknowledged whose observed address was our socket's.
    pub registrations: u64,
    /// Lookups asked.
    pub lookups_sent: u64,
    /// Lookup answers that named the partner's socket address.
    pub verified_answers: u64,
    /// Registrations acknowledged with an observed address that is not our socket's.
    pub wrong_observed: u64,
    /// Lookup answers with an endpoint that is not the partner's socket address.
    pub wrong_endpoint: u64,
    /// Lookup answers saying the partner is unknown.
    pub unknown: u64,
    /// Pairs that did not finish within the pair timeout or the run's deadline.
    pub timed_out_pairs: u64,
    /// Pairs never started because the run's deadline passed.
    pub skipped_pairs: u64,
    /// Pairs that finished with every answer in.
    pub finished_pairs: u64,
    /// From a client's first handshake initiation to its Connected event.
    pub handshake_latency: Latencies,
    /// From a lookup being asked to its answer.
    pub lookup_latency: Latencies,
}

impl Outcome {
    /// Errors of every kind.
    pub fn errors(&self) -> u64 {
        self.wrong_observed + self.wrong_endpoint + self.unknown + self.timed_out_pairs
    }

    fn merge(&mut self, other: Outcome) {
        self.handshakes += other.handshakes;
        self.registrations += other.registrations;
        self.lookups_sent += other.lookups_sent;
        self.verified_answers += other.verified_answers;
        self.wrong_observed += other.wrong_observed;
        self.wrong_endpoint += other.wrong_endpoint;
        self.unknown += other.unknown;
        self.timed_out_pairs += other.timed_out_pairs;
        self.skipped_pairs += other.skipped_pairs;
        self.finished_pairs += other.finished_pairs;
        self.handshake_latency.merge(other.handshake_latency);
        self.lookup_latency.merge(other.lookup_latency);
    }
}

/// Runs the load to the end (all pairs done or the deadline), printing progress to stderr.
pub async fn run(config: &LoadConfig) -> Result<Outcome> {
    let pairs = config.clients / 2;
    let slots = (config.sockets / 2).max(1);
    let done = Rc::new(Cell::new(0u64));
    let local = tokio::task::LocalSet::new();
    let mut tasks = Vec::with_capacity(slots);
    for slot in 0..slots {
        let config = config.clone();
        let done = Rc::clone(&done);
        tasks.push(local.spawn_local(async move { run_slot(&config, slot, slots, &done).await }));
    }
    let progress = local.spawn_local(report_progress(Rc::clone(&done), pairs));
    let mut outcome = Outcome::default();
    local
        .run_until(async {
            for task in tasks {
                let slot = task.await.context("joining a pair slot")??;
                outcome.merge(slot);
            }
            Ok::<_, anyhow::Error>(())
        })
        .await?;
    progress.abort();
    Ok(outcome)
}

async fn report_progress(done: Rc<Cell<u64>>, pairs: u64) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.tick().await;
    loop {
        tick.tick().await;
        let n = done.get();
        eprintln!(
            "wgpunch-bench: {:>4.0} s: {} of {} clients done",
            start.elapsed().as_secs_f64(),
            n * 2,
            pairs * 2
        );
    }
}

async fn run_slot(
    config: &LoadConfig,
    slot: usize,
    slots: usize,
    done: &Cell<u64>,
) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let pairs = config.clients / 2;
    let mut pair = slot as u64;
    while pair < pairs {
        if Instant::now() >= config.deadline {
            outcome.skipped_pairs += (pairs - pair).div_ceil(slots as u64);
            break;
        }
        run_pair(config, slot, pair, &mut outcome).await?;
        done.set(done.get() + 1);
        pair += slots as u64;
    }
    Ok(outcome)
}

/// One client of a pair and what we know about it.
struct Side {
    client: Client,
    socket: UdpSocket,
    local: SocketAddr,
    public: PublicKey,
    handshake_started: Option<Instant>,
    registered: bool,
    lookup_asked: Option<Instant>,
    answers: u32,
}

impl Side {
    async fn new(
        config: &LoadConfig,
        slot: usize,
        index: u64,
        public: PublicKey,
        partner: PublicKey,
    ) -> Result<Self> {
        let socket = socket_towards(config.server, slot).await?;
        let local = socket.local_addr().context("reading a socket's address")?;
        let client = Client::new(
            client_key(index),
            config.server_key,
            vec![partner],
            vec![],
            ClientConfig::default(),
            client_seed(index),
        );
        Ok(Self {
            client,
            socket,
            local,
            public,
            handshake_started: None,
            registered: false,
            lookup_asked: None,
            answers: 0,
        })
    }

    /// Sends everything due.
    async fn transmit(&mut self, now: Instant, wall: SystemTime) -> Result<()> {
        while let Some(datagram) = self.client.poll_transmit(now, wall) {
            if !self.client.is_connected() && self.handshake_started.is_none() {
                self.handshake_started = Some(now);
            }
            self.socket
                .send(&datagram)
                .await
                .context("sending to the server")?;
        }
        Ok(())
    }

    /// Handles whatever else is already waiting on the socket.
    fn drain(&mut self, buf: &mut [u8]) {
        while let Ok(len) = self.socket.try_recv(buf) {
            self.client
                .handle_datagram(Instant::now(), buf.get(..len).unwrap_or_default());
        }
    }

    fn ask(&mut self, partner: PublicKey, now: Instant, outcome: &mut Outcome) {
        self.client.lookup([partner]);
        self.lookup_asked = Some(now);
        outcome.lookups_sent += 1;
    }

    /// Checks the events against what we know; asks the next lookup after each answer.
    fn check_events(
        &mut self,
        partner: (PublicKey, SocketAddr),
        lookups: u32,
        outcome: &mut Outcome,
    ) {
        let now = Instant::now();
        while let Some(event) = self.client.poll_event() {
            match event {
                Event::Candidates { .. } | Event::Mapping(_) => {}
                Event::Connected => {
                    outcome.handshakes += 1;
                    if let Some(started) = self.handshake_started.take() {
                        outcome.handshake_latency.record(now - started);
                    }
                }
                Event::Registered { observed, .. } => {
                    if observed == self.local {
                        outcome.registrations += 1;
                        self.registered = true;
                    } else {
                        outcome.wrong_observed += 1;
                    }
                }
                Event::Resolved { peer, endpoint, .. } => {
                    self.answered(now, outcome);
                    if peer == partner.0 && endpoint == partner.1 {
                        outcome.verified_answers += 1;
                    } else {
                        outcome.wrong_endpoint += 1;
                    }
                    if self.answers < lookups {
                        self.ask(partner.0, now, outcome);
                    }
                }
                Event::Unknown { .. } => {
                    self.answered(now, outcome);
                    outcome.unknown += 1;
                    if self.answers < lookups {
                        self.ask(partner.0, now, outcome);
                    }
                }
            }
        }
    }

    fn answered(&mut self, now: Instant, outcome: &mut Outcome) {
        self.answers += 1;
        if let Some(asked) = self.lookup_asked.take() {
            outcome.lookup_latency.record(now - asked);
        }
    }
}

/// Drives clients `2 * pair` and `2 * pair + 1` on slot `slot`'s two addresses to the end.
async fn run_pair(
    config: &LoadConfig,
    slot: usize,
    pair: u64,
    outcome: &mut Outcome,
) -> Result<()> {
    let (ia, ib) = (2 * pair, 2 * pair + 1);
    // Each public key costs a scalar multiplication: derive each once.
    let (pa, pb) = (client_public(ia), client_public(ib));
    let mut a = Side::new(config, 2 * slot, ia, pa, pb).await?;
    let mut b = Side::new(config, 2 * slot + 1, ib, pb, pa).await?;
    let deadline = (Instant::now() + config.pair_timeout).min(config.deadline);
    let mut lookups_started = false;
    let (mut buf_a, mut buf_b) = ([0u8; 2048], [0u8; 2048]);
    loop {
        let (now, wall) = (Instant::now(), SystemTime::now());
        a.transmit(now, wall).await?;
        b.transmit(now, wall).await?;
        let wake = [a.client.poll_timeout(), b.client.poll_timeout()]
            .into_iter()
            .flatten()
            .chain([deadline])
            .min()
            .unwrap_or(deadline);
        tokio::select! {
            received = a.socket.recv(&mut buf_a) => {
                if let Ok(len) = received {
                    a.client.handle_datagram(Instant::now(), buf_a.get(..len).unwrap_or_default());
                }
                a.drain(&mut buf_a);
            }
            received = b.socket.recv(&mut buf_b) => {
                if let Ok(len) = received {
                    b.client.handle_datagram(Instant::now(), buf_b.get(..len).unwrap_or_default());
                }
                b.drain(&mut buf_b);
            }
            () = tokio::time::sleep_until(wake.into()) => {}
        }
        a.check_events((b.public, b.local), config.lookups, outcome);
        b.check_events((a.public, a.local), config.lookups, outcome);
        if !lookups_started && a.registered && b.registered {
            lookups_started = true;
            let now = Instant::now();
            a.ask(b.public, now, outcome);
            b.ask(a.public, now, outcome);
        }
        if a.registered
            && b.registered
            && a.answers >= config.lookups
            && b.answers >= config.lookups
        {
            outcome.finished_pairs += 1;
            return Ok(());
        }
        if Instant::now() >= deadline {
            outcome.timed_out_pairs += 1;
            return Ok(());
        }
    }
}

/// A fresh UDP socket on slot `slot`'s loopback address (any port), connected to `server`.
pub async fn socket_towards(server: SocketAddr, slot: usize) -> Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(socket_ip(slot), 0))
        .await
        .with_context(|| format!("binding a UDP socket on {}", socket_ip(slot)))?;
    socket
        .connect(server)
        .await
        .with_context(|| format!("connecting a UDP socket to {server}"))?;
    Ok(socket)
}
