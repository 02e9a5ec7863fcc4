//! The client's IO loop around the sans-IO [`Agent`]: raw UDP sockets towards the server, the
//! WireGuard interface, the clock, and the log. Every decision is the agent's.

use std::net::{SocketAddr, ToSocketAddrs as _};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, Context as _, Result};
use tracing::{debug, info, warn};
use wgpunch_common::agent::discovery::{Discovery, Legacy};
use wgpunch_common::agent::local::LocalAddr;
use wgpunch_common::agent::{Action, Agent, AgentConfig, Notice, Outcome};
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::PublicKey;
use wgpunch_common::legacy::client::{LegacyClient, LegacyConfig};
use wgpunch_common::mapping::NatMapping;
use wgpunch_common::wire::packet::TRANSPORT_MAX_LEN;

use crate::addrs::{self, CandidateFilter};
use crate::cli::{Cli, Protocol, EXIT_NO_HANDSHAKE, EXIT_NO_SERVER, EXIT_OK, EXIT_UNRESOLVED};
use crate::iface::{self, Interface};
use crate::probes::ProbeSockets;
use crate::raw::RawUdp;
use crate::watch::AddressWatch;
use crate::{privileges, sys};

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

/// The agent's settings from the command line.
fn agent_config(cli: &Cli) -> AgentConfig {
    AgentConfig {
        continuous: cli.continuous,
        keepalive: cli.keepalive,
        handshake_timeout: cli.handshake_timeout(),
        delay: cli.delay(),
        timeout: cli.timeout(),
        punch_ttl: cli.punch_ttl,
        family: cli.family.family(),
        server: None,
        seed: [0; 32],
    }
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
    let probes = ProbeSockets::open(iface.listen_port)
        .context("opening raw UDP sockets for probing the peers' candidates")?;
    let watch = AddressWatch::open().context("subscribing to the host's address changes")?;
    let filter = CandidateFilter {
        wireguard: cli.interface.clone(),
        allow: cli.allowed_candidates(),
        deny: cli.denied_candidates(),
        family: cli.family.family(),
    };
    let candidates = read_candidates(&filter)?;
    privileges::drop_net_raw().context("giving up CAP_NET_RAW after opening the raw sockets")?;
    debug!(
        still_has_net_raw = privileges::has_net_raw(),
        "raw sockets open; gave up CAP_NET_RAW"
    );

    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow!("OS random generator failed: {e}"))?;
    let mut config = agent_config(cli);
    config.server = Some(server);
    getrandom::fill(&mut config.seed).map_err(|e| anyhow!("OS random generator failed: {e}"))?;
    let discovery = match cli.protocol {
        Protocol::Native => Discovery::Native(Box::new(Client::new(
            iface.private_key.clone(),
            server_key,
            iface.peers.iter().map(|p| p.key).collect(),
            candidates
                .iter()
                .map(|a| SocketAddr::new(a.ip, iface.listen_port))
                .collect(),
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
            config.natpunch_go_grace(),
        ))),
    };
    let mut agent = Agent::new(
        config,
        discovery,
        raw.local_addr(),
        iface.snapshot(),
        Instant::now(),
        SystemTime::now(),
    );
    info!(candidates = %describe(&candidates), "registering these local addresses as candidates");
    agent.handle_addresses(
        raw.local_addr(),
        candidates,
        Instant::now(),
        SystemTime::now(),
    );
    Driver {
        cli,
        server,
        iface,
        raw,
        probes,
        watch,
        filter,
        agent,
    }
    .run()
}

/// The host's candidate addresses now.
fn read_candidates(filter: &CandidateFilter) -> Result<Vec<LocalAddr>> {
    let all = addrs::read().context("listing the host's addresses")?;
    Ok(filter.select(&all))
}

/// `192.168.1.20/24, 2001:db8::20/64`, or `none`.
fn describe(addrs: &[LocalAddr]) -> String {
    if addrs.is_empty() {
        return "none".to_owned();
    }
    addrs
        .iter()
        .map(|a| format!("{}/{}", a.ip, a.prefix))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The IO around the agent.
struct Driver<'a> {
    cli: &'a Cli,
    server: SocketAddr,
    iface: Interface,
    raw: RawUdp,
    probes: ProbeSockets,
    watch: AddressWatch,
    filter: CandidateFilter,
    agent: Agent,
}

impl Driver<'_> {
    fn run(&mut self) -> Result<u8> {
        let mut buf = vec![0u8; TRANSPORT_MAX_LEN + 1];
        loop {
            let now = Instant::now();
            self.agent.handle_timeout(now);
            while let Some(action) = self.agent.poll_action() {
                if let Some(code) = self.act(action)? {
                    return Ok(code);
                }
            }
            let now = Instant::now();
            while let Some(datagram) = self.agent.poll_transmit(now, SystemTime::now()) {
                if let Err(e) = self.raw.send(&datagram) {
                    // No route right now (a link went down; a laptop between networks): the
                    // datagram is lost like any other, and the agent sends it again.
                    warn!(server = %self.server, error = %e, "could not send to the server; trying again");
                }
            }
            while let Some((to, datagram)) = self.agent.poll_mapping_transmit(now) {
                self.send_mapping(to, &datagram);
            }
            let wake = self
                .agent
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(1));
            let wait = wake
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let ready = {
                let mut fds = vec![self.raw.fd(), self.watch.fd()];
                fds.extend(self.probes.fds());
                sys::wait_any(&fds, wait).context("waiting for the sockets")?
            };
            if ready.first() == Some(&true) {
                while let Some(len) = self
                    .raw
                    .try_recv(&mut buf)
                    .context("receiving from the server")?
                {
                    let datagram = buf.get(..len).unwrap_or_default();
                    self.agent
                        .handle_datagram(Instant::now(), SystemTime::now(), datagram);
                }
            }
            if ready.get(1) == Some(&true)
                && self.watch.drain().context("reading address changes")?
            {
                self.addresses_changed();
            }
            if ready.iter().skip(2).any(|r| *r) {
                for probe in self.probes.recv().context("receiving probes")? {
                    self.agent.handle_probe(
                        Instant::now(),
                        SystemTime::now(),
                        probe.from,
                        &probe.payload,
                    );
                }
            }
        }
    }

    /// Sends an observe request to a mapping address of the server, hearing that address first.
    fn send_mapping(&mut self, to: SocketAddr, datagram: &[u8]) {
        if !self.raw.heard().contains(&to) {
            let mut heard = self.raw.heard().to_vec();
            heard.push(to);
            if let Err(e) = self.raw.hear_also(&heard) {
                debug!(to = %to, error = %e, "cannot hear the server's mapping address");
                return;
            }
        }
        if let Err(e) = self.raw.send_to(to, datagram) {
            debug!(to = %to, error = %e, "could not send to the server's mapping address");
        }
    }

    /// The host's addresses may have changed: read them and the route to the server again.
    fn addresses_changed(&mut self) {
        let source = match self.raw.refresh_source() {
            Ok(source) => source,
            Err(e) => {
                // No route to the server right now (the link is down): keep the old source; the
                // next change brings the route back.
                debug!(error = %e, "no route to the server after an address change");
                self.raw.local_addr()
            }
        };
        match read_candidates(&self.filter) {
            Ok(candidates) => {
                self.agent
                    .handle_addresses(source, candidates, Instant::now(), SystemTime::now())
            }
            Err(e) => warn!(error = %e, "re-reading the host's addresses failed"),
        }
    }

    /// Carries out one action; returns the exit status when the run is over.
    fn act(&mut self, action: Action) -> Result<Option<u8>> {
        match action {
            Action::Punch {
                peer,
                endpoint,
                ttl,
            } => match self.raw.punch(endpoint, ttl) {
                Ok(()) => {
                    debug!(peer = %peer, endpoint = %endpoint, ttl, "punched our NAT open towards the peer")
                }
                Err(e) => debug!(peer = %peer, endpoint = %endpoint, error = %e, "punch failed"),
            },
            Action::SetEndpoint {
                peer,
                endpoint,
                keepalive,
            } => {
                iface::update_peer(&self.iface, &peer, Some(endpoint), Some(keepalive))?;
                info!(peer = %peer, endpoint = %endpoint, "set peer endpoint; waiting for WireGuard traffic from it");
            }
            Action::SetKeepalive { peer, keepalive } => {
                iface::update_peer(&self.iface, &peer, None, Some(keepalive))?;
                info!(peer = %peer, "peer already connected; kept its endpoint, set the keepalive");
            }
            Action::Park {
                peer,
                endpoint,
                reason,
            } => {
                iface::update_peer(&self.iface, &peer, Some(endpoint), None)?;
                info!(peer = %peer, "parking the peer for a while so that stale NAT state expires, then finding it again: {}", reason.describe());
            }
            Action::ReadInterface => match iface::read(&self.cli.interface, self.cli.backend) {
                Ok(fresh) => {
                    let snapshot = fresh.snapshot();
                    self.iface = fresh;
                    self.agent
                        .handle_interface(snapshot, Instant::now(), SystemTime::now());
                }
                Err(e) => {
                    if !self.agent.interface_unreadable(Instant::now()) {
                        return Err(e.into());
                    }
                    warn!(error = %e, "re-reading the interface failed");
                }
            },
            Action::Probe { peer, to, payload } => {
                if let Err(e) = self.probes.send(to, &payload) {
                    debug!(peer = %peer, to = %to, error = %e, "probe not sent");
                }
            }
            Action::Notice(notice) => self.log(notice),
            Action::Exit(outcome) => return Ok(Some(self.report(outcome))),
        }
        Ok(None)
    }

    fn log(&self, notice: Notice) {
        match notice {
            Notice::Heard(Event::Connected) => debug!("handshake with the server complete"),
            Notice::Registered {
                observed,
                ttl,
                previous: None,
            } => {
                info!(observed = %observed, ttl_secs = ttl.as_secs(), "registered; the server sees this WireGuard port as {observed}")
            }
            Notice::Registered {
                observed,
                previous: Some(previous),
                ..
            } => {
                info!(observed = %observed, previous = %previous, "our public address changed from {previous} to {observed}; telling the peers")
            }
            Notice::Heard(Event::Resolved {
                peer,
                endpoint,
                age,
                peer_has_yours,
            }) => {
                debug!(peer = %peer, endpoint = %endpoint, seen_secs_ago = age.as_secs(), peer_has_yours, "server answered")
            }
            Notice::Heard(Event::Unknown { peer }) => {
                debug!(peer = %peer, "server cannot tell where this peer is yet")
            }
            Notice::Heard(Event::Registered { .. } | Event::Mapping(_)) => {}
            Notice::EndpointRefused {
                peer,
                endpoint,
                reason,
            } => {
                warn!(peer = %peer, endpoint = %endpoint, "ignoring the server's endpoint for this peer: {reason}")
            }
            Notice::PathSuspect => {
                info!("traffic through the tunnel gets no answer; registering again to see whether our NAT mapping moved")
            }
            Notice::ServerSilent { silent } => {
                warn!(server = %self.server, "no answer from the server for {} s; still trying", silent.as_secs())
            }
            Notice::Heard(Event::Candidates {
                peer,
                known,
                same_public,
                hard_nat,
                candidates,
            }) => {
                debug!(peer = %peer, known, same_public, hard_nat, ?candidates, "server told the peer's candidates")
            }
            Notice::NoDirectPath { peer } => {
                warn!(peer = %peer, "this host's NAT and the peer's both give each destination its own port: no direct path can work, so not waiting for its handshake")
            }
            Notice::NatMapping { mapping, report } => {
                let seen: Vec<String> = report
                    .others
                    .iter()
                    .map(|(asked, seen)| match seen {
                        Some(seen) => format!("{asked} saw {seen}"),
                        None => format!("{asked} did not answer"),
                    })
                    .collect();
                info!(main = ?report.main, others = %seen.join(", "), "this host is behind {mapping}")
            }
            Notice::CandidateAnswered {
                peer,
                endpoint,
                rtt,
            } => {
                info!(peer = %peer, endpoint = %endpoint, rtt_ms = rtt.as_secs_f64() * 1e3, "the peer answered at its candidate {endpoint}; using that path")
            }
            Notice::CandidateFailed { peer, endpoint } => {
                warn!(peer = %peer, endpoint = %endpoint, "no WireGuard handshake came through the candidate {endpoint}; trying another path")
            }
            Notice::NoCandidateAnswered { peer } => {
                info!(peer = %peer, "none of the peer's candidates answered; trying its public endpoint")
            }
            Notice::AddressesChanged { addrs } => {
                let list: Vec<String> = addrs
                    .iter()
                    .map(|a| format!("{}/{}", a.ip, a.prefix))
                    .collect();
                info!(addresses = %list.join(", "), "local addresses changed; registering them again")
            }
        }
    }

    /// Says how the run ended and returns the exit status.
    fn report(&self, outcome: Outcome) -> u8 {
        let cli = self.cli;
        match outcome {
            Outcome::Connected { peers } => {
                info!(peers, "every peer connected");
                EXIT_OK
            }
            Outcome::NoHandshake { failed } => {
                report_no_handshake(&failed, cli.handshake_timeout, self.agent.nat_mapping());
                EXIT_NO_HANDSHAKE
            }
            Outcome::NoServer => {
                eprintln!(
                    "wgpunch-client: no answer from the server {} ({}) within {} s: check the address and port, that \
                     {} runs there and UDP reaches it, and that SERVER_PUBKEY is its public key \
                     (a server ignores clients that use a wrong key)",
                    self.server,
                    cli.server,
                    cli.timeout,
                    cli.protocol.server_program()
                );
                EXIT_NO_SERVER
            }
            Outcome::Unresolved {
                unresolved,
                failed,
                peers,
            } => {
                if !failed.is_empty() {
                    report_no_handshake(&failed, cli.handshake_timeout, self.agent.nat_mapping());
                }
                eprintln!(
                    "wgpunch-client: {} of {peers} peers unresolved after {} s (not registered with the server, or they \
                     do not list this interface's key as a peer):",
                    unresolved.len(),
                    cli.timeout
                );
                for key in &unresolved {
                    eprintln!("  {key}");
                }
                EXIT_UNRESOLVED
            }
        }
    }
}

fn report_no_handshake(failed: &[(PublicKey, SocketAddr)], waited: u64, nat: Option<NatMapping>) {
    let count = failed.len();
    match nat {
        // Peers behind such a NAT too were given up on at once; the others after the wait.
        Some(nat) if !nat.allows_direct() => eprintln!(
            "wgpunch-client: no direct path to {count} peer(s). This host is behind {nat}: its NAT maps per \
             destination, so the address the server saw is not the one a peer's packets would reach. Peers behind \
             such a NAT too were not waited for (the log names them); with the others no WireGuard handshake came \
             within {waited} s. A relay is needed for these:"
        ),
        Some(nat) => eprintln!(
            "wgpunch-client: no WireGuard handshake within {waited} s with {count} peer(s) after setting their \
             endpoints: no direct path. This host is behind {nat}; most likely the peer's NAT maps per \
             destination (symmetric NAT). A relay is needed for these:"
        ),
        None => eprintln!(
            "wgpunch-client: no WireGuard handshake within {waited} s with {count} peer(s) after setting their \
             endpoints: no direct path. Most likely this host's NAT or the peer's maps per destination \
             (symmetric NAT), so the address the server saw is not the one the peer's packets would reach; a \
             relay is needed for these:"
        ),
    }
    for (key, endpoint) in failed {
        eprintln!("  {key} (tried {endpoint})");
    }
}
