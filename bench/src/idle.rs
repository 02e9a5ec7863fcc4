//! The idle load: N clients in pairs stay registered and do nothing but what an idle client does
//! (refresh its registration every 20 s, a new handshake every 120 s), and the server's CPU time
//! over that idle window is measured.
//!
//! The clients share S sockets (N/S each, one loopback address per socket), so a run of 100,000
//! clients needs no more file descriptors than S. Datagrams from the server are routed to their
//! client by receiver index: each client's initiation names its sender index, and the server's
//! responses, cookie replies and transport messages carry it back.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, Result};
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PublicKey;
use wgpunch_common::wire::packet::TRANSPORT_MAX_LEN;
use wgpunch_common::wire::Packet;

use crate::identity::{client_key, client_public, client_seed};
use crate::load::socket_towards;

/// Handshakes in flight at once over all sockets while the clients register: as many as the
/// server's per-source limits let through without every client retrying at once.
const RAMP_WINDOW: usize = 1024;

/// Longest time one socket's task sleeps while nothing is due.
const MAX_NAP: Duration = Duration::from_millis(50);

/// What the idle load is asked to do.
#[derive(Debug, Clone)]
pub struct IdleConfig {
    /// The server's address (loopback).
    pub server: SocketAddr,
    /// The server's public key.
    pub server_key: PublicKey,
    /// Number of clients (even).
    pub clients: u64,
    /// Sockets the clients share.
    pub sockets: usize,
    /// The clients ask the server to push changes of their peers (protocol v2's watch flag).
    pub watch: bool,
    /// Longest time for every client to register.
    pub ramp_limit: Duration,
    /// How long the idle window lasts once every client is registered.
    pub idle: Duration,
}

/// What happened.
#[derive(Debug, Default, Clone)]
pub struct IdleOutcome {
    /// Clients registered when the idle window began.
    pub registered: u64,
    /// How long registering everyone took.
    pub ramp: Duration,
    /// Datagrams the clients sent during the idle window.
    pub sent: u64,
    /// Datagrams the clients received during the idle window.
    pub received: u64,
    /// Answers or pushes about peers during the idle window (pushes: nothing was asked).
    pub resolved: u64,
    /// Registrations acknowledged during the idle window (refreshes).
    pub refreshes: u64,
    /// Handshakes completed during the idle window (rekeys).
    pub rekeys: u64,
}

/// Shared progress of the socket tasks.
#[derive(Debug, Default)]
struct Progress {
    registered: Cell<u64>,
    /// Set once everyone registered: counting starts.
    idle: Cell<bool>,
    /// Set when the idle window is over.
    done: Cell<bool>,
}

/// Runs the idle load; the caller reads the server's CPU time around [`IdleConfig::idle`], which
/// `on_idle` marks the start of.
pub async fn run(config: &IdleConfig, on_idle: impl FnOnce()) -> Result<IdleOutcome> {
    let local = tokio::task::LocalSet::new();
    let progress = Rc::new(Progress::default());
    let mut tasks = Vec::new();
    let sockets = config.sockets.max(1);
    for slot in 0..sockets {
        let config = config.clone();
        let progress = Rc::clone(&progress);
        tasks.push(
            local.spawn_local(async move { run_socket(&config, slot, sockets, &progress).await }),
        );
    }
    let outcome = local
        .run_until(async {
            let start = Instant::now();
            while progress.registered.get() < config.clients && start.elapsed() < config.ramp_limit
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let ramp = start.elapsed();
            let registered = progress.registered.get();
            on_idle();
            progress.idle.set(true);
            tokio::time::sleep(config.idle).await;
            progress.done.set(true);
            let mut outcome = IdleOutcome {
                registered,
                ramp,
                ..IdleOutcome::default()
            };
            for task in tasks {
                let part = task.await.context("a socket task failed")??;
                outcome.sent += part.sent;
                outcome.received += part.received;
                outcome.resolved += part.resolved;
                outcome.refreshes += part.refreshes;
                outcome.rekeys += part.rekeys;
            }
            Ok::<_, anyhow::Error>(outcome)
        })
        .await?;
    Ok(outcome)
}

/// One socket and its clients: `slot`, `slot + sockets`, ... (partners 2i and 2i+1 may sit on
/// different sockets; the server does not care).
async fn run_socket(
    config: &IdleConfig,
    slot: usize,
    sockets: usize,
    progress: &Progress,
) -> Result<IdleOutcome> {
    let socket = socket_towards(config.server, slot).await?;
    let ids: Vec<u64> = (slot as u64..config.clients).step_by(sockets).collect();
    let client_config = ClientConfig {
        watch: config.watch,
        ..ClientConfig::default()
    };
    let mut clients: Vec<(Client, bool)> = ids
        .iter()
        .map(|&i| {
            let partner = i ^ 1;
            let client = Client::new(
                client_key(i),
                config.server_key,
                vec![client_public(partner)],
                vec![],
                client_config.clone(),
                client_seed(i),
            );
            (client, false)
        })
        .collect();
    let mut route: HashMap<u32, usize> = HashMap::new();
    // Clients start a few at a time; each registration starts the next one.
    let mut timers = Timers::new(clients.len());
    let window = (RAMP_WINDOW / sockets).max(1);
    let mut unstarted = 0..clients.len();
    for c in unstarted.by_ref().take(window) {
        timers.schedule(c, Instant::now());
    }
    let mut outcome = IdleOutcome::default();
    let mut buf = vec![0u8; TRANSPORT_MAX_LEN + 1];
    while !progress.done.get() {
        let now = Instant::now();
        let counting = progress.idle.get();
        while let Some(c) = timers.pop_due(now) {
            let Some((client, _)) = clients.get_mut(c) else {
                continue;
            };
            while let Some(datagram) = client.poll_transmit(now, SystemTime::now()) {
                if let Ok(Packet::HandshakeInit(init)) = Packet::parse(&datagram) {
                    route.insert(init.sender_index, c);
                }
                // A full buffer loses the datagram like the network could; the client retries.
                if socket.try_send(&datagram).is_ok() && counting {
                    outcome.sent += 1;
                }
            }
            if let Some(next) = client.poll_timeout() {
                // A due time already past would be popped again at once, with no time for an
                // answer to arrive: look again a little later.
                timers.schedule(c, next.max(now + Duration::from_millis(1)));
            }
        }
        if route.len() > 4 * clients.len() {
            // Old indexes of finished handshakes pile up: keep the latest of each client.
            let mut latest: HashMap<usize, u32> = HashMap::new();
            for (index, c) in &route {
                latest
                    .entry(*c)
                    .and_modify(|i| *i = (*i).max(*index))
                    .or_insert(*index);
            }
            route.retain(|index, c| latest.get(c) == Some(index));
        }
        let nap = timers
            .next()
            .map_or(MAX_NAP, |at| at.saturating_duration_since(Instant::now()))
            .min(MAX_NAP);
        let Ok(Ok(len)) = tokio::time::timeout(nap, socket.recv(&mut buf)).await else {
            continue;
        };
        // Then whatever else is queued, without waiting.
        let mut len = Some(len);
        while let Some(n) = len.take() {
            let datagram = buf.get(..n).unwrap_or_default();
            let delivered = deliver(
                datagram,
                &route,
                &mut clients,
                counting,
                progress,
                &mut outcome,
            );
            if let Some((c, first_registration)) = delivered {
                timers.schedule(c, Instant::now());
                if first_registration {
                    if let Some(next) = unstarted.next() {
                        timers.schedule(next, Instant::now());
                    }
                }
            }
            len = socket.try_recv(&mut buf).ok();
        }
    }
    Ok(outcome)
}

/// Hands a datagram from the server to the client it names; returns that client, and whether
/// this was its first registration.
fn deliver(
    datagram: &[u8],
    route: &HashMap<u32, usize>,
    clients: &mut [(Client, bool)],
    counting: bool,
    progress: &Progress,
    outcome: &mut IdleOutcome,
) -> Option<(usize, bool)> {
    let index = match Packet::parse(datagram) {
        Ok(Packet::HandshakeResponse(r)) => r.receiver_index,
        Ok(Packet::CookieReply(r)) => r.receiver_index,
        Ok(Packet::Transport(m)) => m.receiver_index,
        Ok(Packet::HandshakeInit(_)) | Err(_) => return None,
    };
    let c = route.get(&index).copied()?;
    let (client, registered) = clients.get_mut(c)?;
    client.handle_datagram(Instant::now(), datagram);
    if counting {
        outcome.received += 1;
    }
    let mut first = false;
    while let Some(event) = client.poll_event() {
        match event {
            Event::Registered { .. } => {
                if !*registered {
                    *registered = true;
                    first = true;
                    progress.registered.set(progress.registered.get() + 1);
                } else if counting {
                    outcome.refreshes += 1;
                }
            }
            Event::Connected if counting => outcome.rekeys += 1,
            Event::Resolved { .. } if counting => outcome.resolved += 1,
            _ => {}
        }
    }
    Some((c, first))
}

/// When each client of a socket is due next: one live entry per client in a heap, older ones
/// skipped when they come up, so the heap never holds more than a few entries per client.
struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
    at: Vec<Option<Instant>>,
}

impl Timers {
    /// `count` clients, none due yet.
    fn new(count: usize) -> Self {
        Self {
            heap: BinaryHeap::new(),
            at: vec![None; count],
        }
    }

    /// Client `c` is due at `at`, unless it is due sooner already.
    fn schedule(&mut self, c: usize, at: Instant) {
        if let Some(slot) = self.at.get_mut(c) {
            if slot.is_none_or(|s| at < s) {
                *slot = Some(at);
                self.heap.push(Reverse((at, c)));
            }
        }
    }

    /// The next client due at or before `now`.
    fn pop_due(&mut self, now: Instant) -> Option<usize> {
        while let Some(Reverse((at, c))) = self.heap.peek().copied() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(slot) = self.at.get_mut(c) {
                if *slot == Some(at) {
                    *slot = None;
                    return Some(c);
                }
            }
        }
        None
    }

    /// The earliest time some client is due.
    fn next(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, c))) = self.heap.peek().copied() {
            if self.at.get(c).copied().flatten() == Some(at) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }
}
