//! The client's main loop: the sans-IO [`Client`] driven over the raw UDP path, with the
//! WireGuard interface read before and written as answers arrive.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use tracing::{debug, info, warn};
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PublicKey;
use wgpunch_common::wire::packet::TRANSPORT_MAX_LEN;

use crate::cli::{Cli, EXIT_NO_SERVER, EXIT_OK, EXIT_UNRESOLVED};
use crate::iface::{self, Interface};
use crate::raw::RawUdp;

/// How often continuous mode re-reads the interface for new peers and stale handshakes.
const REREAD_EVERY: Duration = Duration::from_secs(10);

/// In continuous mode, how long without a server before a warning is logged.
const SILENCE_WARNING: Duration = Duration::from_secs(30);

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

/// The state of one peer the client looks after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    /// Needs an endpoint from the server.
    Wanted,
    /// Has a recent handshake; left alone.
    Connected,
    /// Its endpoint was set from the server's answer.
    Resolved(SocketAddr),
}

/// Runs the client until one-shot mode is done or for ever in continuous mode; returns the exit
/// status.
pub fn run(cli: &Cli) -> Result<u8> {
    let server_key: PublicKey = cli
        .server_key
        .parse()
        .map_err(|e| anyhow!("SERVER_PUBKEY {:?} is not a valid key: {e}", cli.server_key))?;
    let server = resolve_server(&cli.server)?;
    let mut iface = iface::read(&cli.interface, cli.backend)?;
    info!(iface = %cli.interface, backend = %iface.backend, listen_port = iface.listen_port, peers = iface.peers.len(), "read interface");

    let raw = RawUdp::open(server, iface.listen_port)
        .with_context(|| format!("opening raw UDP sockets towards {server}"))?;
    info!(server = %server, local = %raw.local_addr(), "talking to the server from the WireGuard port");

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("OS random generator failed: {e}"))?;
    let peer_keys: Vec<PublicKey> = iface.peers.iter().map(|p| p.key).collect();
    let mut client = Client::new(
        iface.private_key.clone(),
        server_key,
        peer_keys,
        vec![raw.local_addr()],
        ClientConfig::default(),
        seed,
    );

    let mut peers = classify_peers(&iface, SystemTime::now());
    let started = Instant::now();
    let deadline = (!cli.continuous).then(|| started + cli.timeout());
    let mut next_lookup = started;
    let mut next_reread = started + REREAD_EVERY;
    let mut last_contact: Option<Instant> = None;
    let mut warned_silence = false;
    let mut registered = false;
    let mut buf = vec![0u8; TRANSPORT_MAX_LEN + 1];

    loop {
        let now = Instant::now();
        if cli.continuous && now >= next_reread {
            next_reread = now + REREAD_EVERY;
            match iface::read(&cli.interface, cli.backend) {
                Ok(fresh) => {
                    refresh_peers(&mut peers, &fresh, SystemTime::now());
                    client.set_peers(fresh.peers.iter().map(|p| p.key).collect());
                    iface = fresh;
                }
                Err(e) => warn!(error = %e, "re-reading the interface failed"),
            }
        }
        if now >= next_lookup {
            next_lookup = now + cli.delay();
            let wanted: Vec<PublicKey> = wanted(&peers).collect();
            client.lookup(wanted);
        }
        while let Some(datagram) = client.poll_transmit(now, SystemTime::now()) {
            raw.send(&datagram).context("sending to the server")?;
        }
        while let Some(event) = client.poll_event() {
            last_contact = Some(Instant::now());
            warned_silence = false;
            match event {
                Event::Connected => debug!(server = %server, "handshake with the server complete"),
                Event::Registered { observed, ttl } => {
                    if !registered {
                        info!(observed = %observed, ttl_secs = ttl.as_secs(), "registered; the server sees this WireGuard port as {observed}");
                    }
                    registered = true;
                }
                Event::Resolved {
                    peer,
                    endpoint,
                    age,
                } => on_resolved(cli, &iface, &mut peers, peer, endpoint, age)?,
                Event::Unknown { peer } => {
                    debug!(peer = %peer, "server does not know this peer yet")
                }
            }
        }
        if !cli.continuous && registered && wanted(&peers).next().is_none() {
            info!(peers = peers.len(), "every peer resolved");
            return Ok(EXIT_OK);
        }
        if let Some(deadline) = deadline {
            if now >= deadline {
                return Ok(give_up(cli, server, last_contact.is_some(), &peers));
            }
        }
        if cli.continuous
            && !warned_silence
            && now.saturating_duration_since(last_contact.unwrap_or(started)) >= SILENCE_WARNING
        {
            warn!(server = %server, "no answer from the server for {} s; still trying", SILENCE_WARNING.as_secs());
            warned_silence = true;
        }
        let wake = [
            client.poll_timeout(),
            Some(next_lookup),
            deadline,
            cli.continuous.then_some(next_reread),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + cli.delay());
        let wait = wake
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        if let Some(len) = raw
            .recv(&mut buf, wait)
            .context("receiving from the server")?
        {
            client.handle_datagram(Instant::now(), buf.get(..len).unwrap_or_default());
        }
    }
}

fn classify_peers(iface: &Interface, now: SystemTime) -> BTreeMap<PublicKey, PeerState> {
    iface
        .peers
        .iter()
        .map(|p| {
            (
                p.key,
                if p.has_fresh_handshake(now) {
                    PeerState::Connected
                } else {
                    PeerState::Wanted
                },
            )
        })
        .collect()
}

/// Brings the peer table in line with a fresh read of the interface: new peers are wanted, removed
/// ones forgotten, and peers whose handshake went stale are wanted again.
fn refresh_peers(peers: &mut BTreeMap<PublicKey, PeerState>, iface: &Interface, now: SystemTime) {
    let current: BTreeSet<PublicKey> = iface.peers.iter().map(|p| p.key).collect();
    peers.retain(|k, _| current.contains(k));
    for peer in &iface.peers {
        let state = if peer.has_fresh_handshake(now) {
            PeerState::Connected
        } else {
            PeerState::Wanted
        };
        let entry = peers.entry(peer.key).or_insert(state);
        if state == PeerState::Connected || *entry == PeerState::Connected {
            *entry = state;
        }
    }
}

fn wanted(peers: &BTreeMap<PublicKey, PeerState>) -> impl Iterator<Item = PublicKey> + '_ {
    peers
        .iter()
        .filter(|(_, s)| **s == PeerState::Wanted)
        .map(|(k, _)| *k)
}

fn on_resolved(
    cli: &Cli,
    iface: &Interface,
    peers: &mut BTreeMap<PublicKey, PeerState>,
    peer: PublicKey,
    endpoint: SocketAddr,
    age: Duration,
) -> Result<()> {
    let Some(state) = peers.get_mut(&peer) else {
        return Ok(());
    };
    if *state != PeerState::Wanted {
        return Ok(());
    }
    // Re-check just before writing: WireGuard may have found a path while we were asking.
    let current = iface::read(&cli.interface, cli.backend)?;
    let Some(now_peer) = current.peers.iter().find(|p| p.key == peer) else {
        return Ok(());
    };
    if now_peer.has_fresh_handshake(SystemTime::now()) {
        // WireGuard already has a working path (the peer reached us first): keep its endpoint,
        // but make sure the keepalive holds the NAT mappings open from this side too.
        if now_peer.keepalive != Some(cli.keepalive) {
            iface::update_peer(iface, &peer, None, cli.keepalive)?;
        }
        info!(peer = %peer, endpoint = ?now_peer.endpoint, "peer already connected; kept its endpoint");
        *state = PeerState::Connected;
        return Ok(());
    }
    if now_peer.endpoint != Some(endpoint) || now_peer.keepalive != Some(cli.keepalive) {
        iface::update_peer(iface, &peer, Some(endpoint), cli.keepalive)?;
    }
    info!(peer = %peer, endpoint = %endpoint, seen_secs_ago = age.as_secs(), "set peer endpoint");
    *state = PeerState::Resolved(endpoint);
    Ok(())
}

fn give_up(
    cli: &Cli,
    server: SocketAddr,
    heard_from_server: bool,
    peers: &BTreeMap<PublicKey, PeerState>,
) -> u8 {
    if !heard_from_server {
        eprintln!(
            "wgpunch-client: no answer from the server {server} ({}) within {} s: check the address and port, that \
             wgpunch-server runs there and UDP reaches it, and that SERVER_PUBKEY is its public key \
             (a server ignores clients that use a wrong key)",
            cli.server, cli.timeout
        );
        return EXIT_NO_SERVER;
    }
    let unresolved: Vec<String> = wanted(peers).map(|k| k.to_string()).collect();
    eprintln!(
        "wgpunch-client: {} of {} peers unresolved after {} s (not registered with the server, or they do not list \
         this interface's key as a peer):",
        unresolved.len(),
        peers.len(),
        cli.timeout
    );
    for key in &unresolved {
        eprintln!("  {key}");
    }
    EXIT_UNRESOLVED
}
