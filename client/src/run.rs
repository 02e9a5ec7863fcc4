//! The client's main loop: the sans-IO protocol [`Client`] and per-peer [`Peers`] driven over the
//! raw UDP path and the WireGuard interface.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use tracing::{debug, info, warn};
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PublicKey;
use wgpunch_common::legacy::client::{LegacyClient, LegacyConfig};
use wgpunch_common::wire::packet::TRANSPORT_MAX_LEN;

use crate::cli::{Cli, Protocol, EXIT_NO_HANDSHAKE, EXIT_NO_SERVER, EXIT_OK, EXIT_UNRESOLVED};
use crate::discovery::{Discovery, Legacy};
use crate::iface::{self, Interface};
use crate::peers::{Action, PeerPolicy, Peers};
use crate::privileges;
use crate::raw::RawUdp;
use crate::sanity;

/// How often the interface is read while a peer waits for a handshake or parking to end.
const WATCH_CLOSELY: Duration = Duration::from_secs(1);

/// How often continuous mode reads the interface otherwise (new peers, dead paths).
const WATCH: Duration = Duration::from_secs(10);

/// How soon a first punch is confirmed to the server.
const CONFIRM_AFTER: Duration = Duration::from_millis(100);

/// Longest time between lookups while peers wait behind the barrier.
const MAX_LOOKUP_INTERVAL: Duration = Duration::from_secs(10);

/// natpunch-go: how much longer than the lookup interval a found endpoint waits before it is set,
/// so that the peer's client has looked us up and punched towards us (see `discovery`).
const NATPUNCH_GO_GRACE_SLACK: Duration = Duration::from_secs(1);

/// In continuous mode, how long without a server before a warning is logged.
const SILENCE_WARNING: Duration = Duration::from_secs(30);

/// How often peers are looked up: `--delay`, but at least every [`MAX_LOOKUP_INTERVAL`], since
/// punch confirmations count for 20 s on the server.
fn lookup_interval(cli: &Cli) -> Duration {
    cli.delay().min(MAX_LOOKUP_INTERVAL)
}

/// Resolves `HOST:PORT` to one socket address.
pub fn resolve_server(server: &str) -> Result<SocketAddr> {
    let mut addrs = server.to_socket_addrs().map_err(|e| {
        if server
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            anyhow!("server {server:?} must be HOST:PORT, e.g. discovery.example.net:51818")
        } else {
            anyhow!("cannot resolve server name {server:?}: {e}")
        }
    })?;
    addrs
        .next()
        .ok_or_else(|| anyhow!("server name {server:?} has no addresses"))
}

/// Everything the loop works with.
struct Driver<'a> {
    cli: &'a Cli,
    iface: Interface,
    raw: RawUdp,
    client: Discovery,
    peers: Peers,
    /// Our WireGuard port's public address as the server sees it.
    observed: Option<SocketAddr>,
    next_watch: Instant,
    /// A first punch towards some peer's endpoint went out: confirm it with a lookup soon.
    confirm_soon: bool,
    /// Endpoints refused (and warned about) already.
    refused: HashSet<(PublicKey, SocketAddr)>,
}

/// Runs the client until one-shot mode is done or for ever in continuous mode; returns the exit
/// status.
pub fn run(cli: &Cli) -> Result<u8> {
    let server_key: PublicKey = cli
        .server_key
        .parse()
        .map_err(|e| anyhow!("SERVER_PUBKEY {:?} is not a valid key: {e}", cli.server_key))?;
    let server = resolve_server(&cli.server)?;
    let iface = iface::read(&cli.interface, cli.backend)?;
    info!(iface = %cli.interface, backend = %iface.backend, listen_port = iface.listen_port, peers = iface.peers.len(), "read interface");

    let raw = RawUdp::open(server, iface.listen_port)
        .with_context(|| format!("opening raw UDP sockets towards {server}"))?;
    info!(server = %server, local = %raw.local_addr(), protocol = ?cli.protocol, "talking to the server from the WireGuard port");
    privileges::drop_net_raw().context("giving up CAP_NET_RAW after opening the raw sockets")?;
    debug!(
        still_has_net_raw = privileges::has_net_raw(),
        "raw sockets open; gave up CAP_NET_RAW"
    );

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("OS random generator failed: {e}"))?;
    let peer_keys: Vec<PublicKey> = iface.peers.iter().map(|p| p.key).collect();
    let client = match cli.protocol {
        Protocol::Native => Discovery::Native(Box::new(Client::new(
            iface.private_key.clone(),
            server_key,
            peer_keys,
            vec![raw.local_addr()],
            ClientConfig::default(),
            seed,
        ))),
        Protocol::NatpunchGo => Discovery::NatpunchGo(Box::new(Legacy::new(
            LegacyClient::new(
                iface.private_key.clone(),
                server_key,
                LegacyConfig::default(),
                seed,
            ),
            // The peer looks us up at least this often (if its delay is ours): see discovery.rs.
            lookup_interval(cli) + NATPUNCH_GO_GRACE_SLACK,
        ))),
    };
    let policy = PeerPolicy::new(cli.continuous, cli.keepalive, cli.handshake_timeout());
    let now = Instant::now();
    let peers = Peers::new(policy, &iface.peers, now, SystemTime::now());
    let mut driver = Driver {
        cli,
        iface,
        raw,
        client,
        peers,
        observed: None,
        next_watch: now,
        confirm_soon: false,
        refused: HashSet::new(),
    };
    driver.apply_actions()?;
    driver.run(server)
}

impl Driver<'_> {
    fn run(&mut self, server: SocketAddr) -> Result<u8> {
        let cli = self.cli;
        let started = Instant::now();
        let deadline = (!cli.continuous).then(|| started + cli.timeout());
        let mut next_lookup = started;
        let mut last_contact: Option<Instant> = None;
        let mut warned_silence = false;
        let mut buf = vec![0u8; TRANSPORT_MAX_LEN + 1];

        loop {
            let now = Instant::now();
            if now >= self.next_watch {
                self.watch(now)?;
            }
            if now >= next_lookup {
                next_lookup = now + lookup_interval(cli);
                let wanted: Vec<(PublicKey, bool)> = self.peers.wanted().collect();
                self.client.lookup_with(wanted);
            }
            while let Some(datagram) = self.client.poll_transmit(now, SystemTime::now()) {
                self.raw.send(&datagram).context("sending to the server")?;
            }
            let events: Vec<Event> = std::iter::from_fn(|| self.client.poll_event(now)).collect();
            if !events.is_empty() || (self.client.is_connected() && !self.client.is_waiting()) {
                last_contact = Some(Instant::now());
                warned_silence = false;
                self.on_events(events)?;
            }
            self.apply_actions()?;
            if std::mem::take(&mut self.confirm_soon) {
                next_lookup = next_lookup.min(Instant::now() + CONFIRM_AFTER);
            }

            // natpunch-go's server may not tell us our address: a handshake registers us there.
            let registered = self.observed.is_some() || self.client.is_registered();
            if !cli.continuous && registered && self.peers.is_settled() {
                return Ok(self.finish());
            }
            if deadline.is_some_and(|d| now >= d) {
                return Ok(self.give_up(server, last_contact.is_some()));
            }
            if cli.continuous
                && !warned_silence
                && now.saturating_duration_since(last_contact.unwrap_or(started)) >= SILENCE_WARNING
            {
                warn!(server = %server, "no answer from the server for {} s; still trying", SILENCE_WARNING.as_secs());
                warned_silence = true;
            }
            let wake = [
                self.client.poll_timeout(),
                Some(next_lookup),
                deadline,
                Some(self.next_watch),
                self.peers.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + cli.delay());
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            if let Some(len) = self
                .raw
                .recv(&mut buf, wait)
                .context("receiving from the server")?
            {
                self.client
                    .handle_datagram(Instant::now(), buf.get(..len).unwrap_or_default());
            }
        }
    }

    /// Reads the interface and lets the peers notice handshakes, dead paths and new peers.
    fn watch(&mut self, now: Instant) -> Result<()> {
        match iface::read(&self.cli.interface, self.cli.backend) {
            Ok(fresh) => {
                self.peers.observe(&fresh.peers, now, SystemTime::now());
                if self.cli.continuous {
                    self.client
                        .set_peers(fresh.peers.iter().map(|p| p.key).collect());
                }
                self.iface = fresh;
            }
            // One-shot mode needs the interface to the end; continuous mode waits for it to return.
            Err(e) if self.cli.continuous => warn!(error = %e, "re-reading the interface failed"),
            Err(e) => return Err(e.into()),
        }
        let every = if self.peers.is_busy() || !self.cli.continuous {
            WATCH_CLOSELY
        } else {
            WATCH
        };
        self.next_watch = now + every;
        Ok(())
    }

    fn on_events(&mut self, events: Vec<Event>) -> Result<()> {
        if events.iter().any(|e| matches!(e, Event::Resolved { .. })) {
            // Decide on what the interface shows right now: WireGuard may have found a path.
            self.iface = iface::read(&self.cli.interface, self.cli.backend)?;
        }
        for event in events {
            match event {
                Event::Connected => debug!("handshake with the server complete"),
                Event::Registered { observed, ttl } => {
                    if self.observed != Some(observed) {
                        info!(observed = %observed, ttl_secs = ttl.as_secs(), "registered; the server sees this WireGuard port as {observed}");
                    }
                    self.observed = Some(observed);
                }
                Event::Resolved {
                    peer,
                    endpoint,
                    age,
                    peer_has_yours,
                } => {
                    debug!(peer = %peer, endpoint = %endpoint, seen_secs_ago = age.as_secs(), peer_has_yours, "server answered");
                    let tunnel: Vec<(IpAddr, u8)> = self
                        .iface
                        .peers
                        .iter()
                        .flat_map(|p| p.allowed_ips.iter().copied())
                        .collect();
                    if let Err(reason) = sanity::check_endpoint(endpoint, &tunnel) {
                        if self.refused.insert((peer, endpoint)) {
                            warn!(peer = %peer, endpoint = %endpoint, "ignoring the server's endpoint for this peer: {reason}");
                        }
                        continue;
                    }
                    if let Some(view) = self.iface.peers.iter().find(|p| p.key == peer) {
                        self.peers.on_resolved(
                            peer,
                            endpoint,
                            peer_has_yours,
                            view,
                            Instant::now(),
                            SystemTime::now(),
                        );
                    }
                }
                Event::Unknown { peer } => {
                    debug!(peer = %peer, "server cannot tell where this peer is yet")
                }
            }
        }
        Ok(())
    }

    /// The punch TTL: passes our own NAT (if any) and expires before the peer's.
    fn punch_ttl(&self) -> u8 {
        self.cli.punch_ttl.unwrap_or(match self.observed {
            Some(observed) if observed.ip() == self.raw.local_addr().ip() => 1,
            _ => 2,
        })
    }

    fn apply_actions(&mut self) -> Result<()> {
        let keepalive = Some(self.cli.keepalive);
        while let Some(action) = self.peers.poll_action() {
            match action {
                Action::Punch {
                    peer,
                    endpoint,
                    first,
                } => {
                    if first && self.client.has_barrier() {
                        self.confirm_soon = true;
                    }
                    let ttl = self.punch_ttl();
                    match self.raw.punch(endpoint, ttl) {
                        Ok(()) => {
                            debug!(peer = %peer, endpoint = %endpoint, ttl, "punched our NAT open towards the peer")
                        }
                        Err(e) => {
                            debug!(peer = %peer, endpoint = %endpoint, error = %e, "punch failed")
                        }
                    }
                }
                Action::SetEndpoint { peer, endpoint } => {
                    iface::update_peer(&self.iface, &peer, Some(endpoint), keepalive)?;
                    info!(peer = %peer, endpoint = %endpoint, "set peer endpoint; waiting for a WireGuard handshake");
                    self.next_watch = self.next_watch.min(Instant::now() + WATCH_CLOSELY);
                }
                Action::SetKeepalive { peer } => {
                    iface::update_peer(&self.iface, &peer, None, keepalive)?;
                    info!(peer = %peer, "peer already connected; kept its endpoint, set the keepalive");
                }
                Action::Park { peer } => {
                    let parking = parking_endpoint(self.raw.local_addr(), self.iface.listen_port);
                    iface::update_peer(&self.iface, &peer, Some(parking), None)?;
                    info!(peer = %peer, "path to the peer is dead; parking it so stale NAT state expires, then finding it again");
                }
            }
        }
        Ok(())
    }

    fn finish(&self) -> u8 {
        let failed: Vec<(PublicKey, SocketAddr)> = self.peers.without_handshake().collect();
        if failed.is_empty() {
            info!(peers = self.peers.len(), "every peer connected");
            return EXIT_OK;
        }
        report_no_handshake(&failed, self.cli.handshake_timeout);
        EXIT_NO_HANDSHAKE
    }

    fn give_up(&self, server: SocketAddr, heard_from_server: bool) -> u8 {
        let cli = self.cli;
        if !heard_from_server {
            eprintln!(
                "wgpunch-client: no answer from the server {server} ({}) within {} s: check the address and port, that \
                 {} runs there and UDP reaches it, and that SERVER_PUBKEY is its public key \
                 (a server ignores clients that use a wrong key)",
                cli.server,
                cli.timeout,
                cli.protocol.server_program()
            );
            return EXIT_NO_SERVER;
        }
        let unresolved: Vec<String> = self.peers.unresolved().map(|k| k.to_string()).collect();
        let failed: Vec<(PublicKey, SocketAddr)> = self.peers.without_handshake().collect();
        if !failed.is_empty() {
            report_no_handshake(&failed, cli.handshake_timeout);
        }
        if unresolved.is_empty() {
            return if failed.is_empty() {
                EXIT_OK
            } else {
                EXIT_NO_HANDSHAKE
            };
        }
        eprintln!(
            "wgpunch-client: {} of {} peers unresolved after {} s (not registered with the server, or they do not list \
             this interface's key as a peer):",
            unresolved.len(),
            self.peers.len(),
            cli.timeout
        );
        for key in &unresolved {
            eprintln!("  {key}");
        }
        EXIT_UNRESOLVED
    }
}

fn report_no_handshake(failed: &[(PublicKey, SocketAddr)], waited: u64) {
    eprintln!(
        "wgpunch-client: no WireGuard handshake within {waited} s with {} peer(s) after setting their endpoints: no \
         direct path. Most likely this host's NAT or the peer's maps per destination (symmetric NAT), so the address \
         the server saw is not the one the peer's packets would reach; a relay is needed for these:",
        failed.len()
    );
    for (key, endpoint) in failed {
        eprintln!("  {key} (tried {endpoint})");
    }
}

/// Where a parked peer's endpoint points: our own WireGuard port on loopback, so that nothing
/// leaves the host towards the peer.
fn parking_endpoint(local: SocketAddr, listen_port: u16) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
    };
    SocketAddr::new(ip, listen_port)
}
