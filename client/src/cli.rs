//! The client's command line.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use wgpunch_common::agent::local::{Family, Prefix};

/// Exit status when every peer was resolved (or already connected).
pub const EXIT_OK: u8 = 0;
/// Exit status on an error (the message says which).
pub const EXIT_ERROR: u8 = 1;
/// Exit status on a usage error.
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the timeout passed with peers still unresolved.
pub const EXIT_UNRESOLVED: u8 = 3;
/// Exit status when the server never answered within the timeout.
pub const EXIT_NO_SERVER: u8 = 4;
/// Exit status when endpoints were set but no WireGuard handshake followed with some peers.
pub const EXIT_NO_HANDSHAKE: u8 = 5;

const AFTER_HELP: &str = "\
Exit status:
  0  every peer was resolved (or already had a working handshake)
  1  error: missing privileges, unknown interface, unknown server name, ...
  2  usage error, such as a malformed option or server key
  3  the timeout passed with peers unresolved (they are listed)
  4  the server never answered within the timeout
  5  endpoints were set but no WireGuard handshake followed with some peers
     (listed): no direct path, most likely a NAT that maps per destination

Talking to a natpunch-go server (--protocol natpunch-go):
  The command line stays natpunch-go's, so each machine can switch to wgpunch-client before the
  server moves to wgpunch-server. natpunch-go's server only says where a key was last seen, not
  whether the peer already knows our endpoint, so the punch barrier becomes a timed one: a found
  peer gets TTL-limited punches at once and its endpoint once the server has given the same
  endpoint for --delay + 1 s (by then the peer's own client has found us and punched, if it uses
  the same --delay). The client still waits for the WireGuard handshake (exit 5 when none comes,
  e.g. a stale entry: natpunch-go's server keeps entries for ever). Lookups go one at a time and
  answers are IPv4 only. The native protocol's barrier is exact, so switch to it once the server
  runs wgpunch-server.

Example:
  wgpunch-client wg0 discovery.example.net:51818 1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=
  wgpunch-client --protocol natpunch-go wg0 demo.example.net:12345 1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=";

/// wgpunch client: finds the public endpoints of a WireGuard interface's peers through a
/// wgpunch discovery server and sets them on the interface.
///
/// It registers with the server from the interface's own listen port (through a raw socket, so the
/// NAT mapping the server sees is the one WireGuard uses), looks up every peer, and sets each
/// peer's endpoint and persistent keepalive. Peers with a handshake in the last 180 seconds are
/// left alone. Needs CAP_NET_RAW (raw sockets) and CAP_NET_ADMIN (the interface), nothing else,
/// and gives up CAP_NET_RAW once its sockets are open. With userspace WireGuard it must also run as
/// the user that owns the UAPI socket: root when wg-quick started wireguard-go.
#[derive(Debug, Parser)]
#[command(name = "wgpunch-client", version, about, long_about, after_help = AFTER_HELP)]
pub struct Cli {
    /// The WireGuard interface, e.g. wg0.
    #[arg(value_name = "INTERFACE")]
    pub interface: String,

    /// The discovery server, as HOST:PORT (a name or an address; IPv6 in brackets).
    #[arg(value_name = "SERVER:PORT")]
    pub server: String,

    /// The server's public key (base64, as `wgpunch-server --print-public-key` prints it).
    #[arg(value_name = "SERVER_PUBKEY", value_parser = server_key)]
    pub server_key: String,

    /// Keep running: refresh the registration, pick up new peers, and follow a path that breaks
    /// (a NAT that remaps, a new public address) within seconds.
    /// Default: one-shot (resolve every peer once, then exit). WGPUNCH_CONTINUOUS takes true or
    /// false.
    #[arg(short, long, env = "WGPUNCH_CONTINUOUS")]
    pub continuous: bool,

    /// Fallback seconds between lookups of peers that are not resolved yet (the server pushes
    /// what they wait for at once; lookups of peers it does not know back off to 10 s).
    #[arg(short, long, value_name = "SECS", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600), env = "WGPUNCH_DELAY")]
    pub delay: u64,

    /// One-shot mode: give up after this many seconds (exit 3, or 4 if the server never answered).
    #[arg(short, long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400), env = "WGPUNCH_TIMEOUT")]
    pub timeout: u64,

    /// Seconds to wait for a WireGuard handshake with a peer after setting its endpoint.
    #[arg(long, value_name = "SECS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=600), env = "WGPUNCH_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: u64,

    /// IP TTL of the punches that open our own NAT towards a peer before WireGuard sends to it.
    /// They must pass our NAT but expire before the peer's. Default: 1 when the server sees our
    /// own address (no NAT), else 2 (one NAT in front of us).
    #[arg(long, value_name = "HOPS", value_parser = clap::value_parser!(u8).range(1..=64), env = "WGPUNCH_PUNCH_TTL")]
    pub punch_ttl: Option<u8>,

    /// Persistent keepalive, in seconds, set on every resolved peer (keeps NAT mappings open).
    #[arg(short, long, value_name = "SECS", default_value_t = 25, value_parser = clap::value_parser!(u16).range(1..), env = "WGPUNCH_KEEPALIVE")]
    pub keepalive: u16,

    /// How to reach the interface: kernel (netlink), userspace (UAPI socket of wireguard-go,
    /// boringtun, ...) or auto (userspace when its socket exists, else kernel).
    #[arg(short, long, value_enum, default_value_t = BackendChoice::Auto, env = "WGPUNCH_BACKEND")]
    pub backend: BackendChoice,

    /// The server's protocol: native (wgpunch-server) or natpunch-go (a natpunch-go server, or
    /// wgpunch-server in its compatibility mode), for migrating clients before the server.
    #[arg(long, value_enum, default_value_t = Protocol::Native, env = "WGPUNCH_PROTOCOL")]
    pub protocol: Protocol,

    /// Address families of the paths to peers: auto (IPv6 where both peers have a global IPv6
    /// address, else IPv4), 4 (IPv4 only) or 6 (IPv6 only). Registered candidates follow it.
    #[arg(long, value_enum, default_value_t = FamilyChoice::Auto, env = "WGPUNCH_FAMILY")]
    pub family: FamilyChoice,

    /// Register only the local addresses inside these prefixes as candidates where peers may
    /// reach us (comma-separated, e.g. 192.168.0.0/16,2001:db8::/32). Default: every address of
    /// the host's interfaces except loopback, link-local, the WireGuard interface's own and those
    /// of container and tunnel interfaces (docker*, br-*, veth*, virbr*, wg*, tun*, tap*, ...).
    #[arg(long, value_name = "PREFIXES", env = "WGPUNCH_ALLOW_CANDIDATES")]
    pub allow_candidates: Option<Prefixes>,

    /// Never register the local addresses inside these prefixes (comma-separated);
    /// 0.0.0.0/0,::/0 registers none, and peers then only ever use our public endpoint.
    /// Default: none denied beyond the interfaces left out by default (see --allow-candidates).
    #[arg(long, value_name = "PREFIXES", env = "WGPUNCH_DENY_CANDIDATES")]
    pub deny_candidates: Option<Prefixes>,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long,
        value_name = "FILTER",
        env = "WGPUNCH_LOG",
        default_value = "info"
    )]
    pub log: String,
}

/// A comma-separated list of IP prefixes; empty (as an env file's `NAME=` line) is no prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefixes(pub Vec<Prefix>);

impl std::str::FromStr for Prefixes {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| item.parse::<Prefix>().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// Accepts a server key only in WireGuard's base64 form, so a bad key is a usage error (exit 2).
fn server_key(text: &str) -> Result<String, String> {
    text.parse::<wgpunch_common::keys::PublicKey>()
        .map(|_| text.to_owned())
        .map_err(|e| e.to_string())
}

impl Cli {
    /// The retry delay.
    pub fn delay(&self) -> Duration {
        Duration::from_secs(self.delay)
    }

    /// The one-shot timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout)
    }

    /// The wait for a handshake after setting an endpoint.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
    }

    /// The prefixes of `--allow-candidates` (none: every address qualifies).
    pub fn allowed_candidates(&self) -> Vec<Prefix> {
        self.allow_candidates.clone().unwrap_or_default().0
    }

    /// The prefixes of `--deny-candidates`.
    pub fn denied_candidates(&self) -> Vec<Prefix> {
        self.deny_candidates.clone().unwrap_or_default().0
    }
}

/// Which address families paths to peers may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FamilyChoice {
    /// IPv6 where both peers have a global IPv6 address, else IPv4.
    Auto,
    /// IPv4 only.
    #[value(name = "4")]
    V4,
    /// IPv6 only.
    #[value(name = "6")]
    V6,
}

impl FamilyChoice {
    /// The agent's form of the choice.
    pub fn family(self) -> Family {
        match self {
            FamilyChoice::Auto => Family::Auto,
            FamilyChoice::V4 => Family::V4,
            FamilyChoice::V6 => Family::V6,
        }
    }
}

/// Which WireGuard implementation to talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// Userspace if its UAPI socket exists, else kernel.
    Auto,
    /// The kernel module, through netlink.
    Kernel,
    /// A userspace implementation, through its UAPI socket.
    Userspace,
}

/// Which discovery protocol the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// wgpunch's own protocol: authenticated registration, mutual consent, punch barrier.
    Native,
    /// natpunch-go's protocol: one lookup at a time, IPv4 answers, a timed punch barrier.
    NatpunchGo,
}

impl Protocol {
    /// The server program that speaks it, for error messages.
    pub fn server_program(self) -> &'static str {
        match self {
            Protocol::Native => "wgpunch-server",
            Protocol::NatpunchGo => {
                "a natpunch-go server (or wgpunch-server in compatibility mode)"
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_malformed_server_key_is_a_usage_error() {
        let err =
            Cli::try_parse_from(["wgpunch-client", "wg0", "demo.example:1", "PUBKEY"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
    }

    #[test]
    fn natpunch_go_command_lines_still_work() {
        let cli = Cli::try_parse_from([
            "wgpunch-client",
            "-c",
            "-d",
            "5",
            "wg0",
            "demo.example:12345",
            "1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=",
        ])
        .unwrap();
        assert!(cli.continuous);
        assert_eq!(cli.delay(), Duration::from_secs(5));
        assert_eq!(cli.interface, "wg0");
        assert_eq!(cli.protocol, Protocol::Native, "native by default");
        assert_eq!(cli.family, FamilyChoice::Auto);
        assert!(cli.allowed_candidates().is_empty() && cli.denied_candidates().is_empty());
    }

    #[test]
    fn natpunch_go_is_chosen_with_the_same_positional_arguments() {
        let cli = Cli::try_parse_from([
            "wgpunch-client",
            "--protocol",
            "natpunch-go",
            "wg0",
            "demo.example:12345",
            "1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=",
        ])
        .unwrap();
        assert_eq!(cli.protocol, Protocol::NatpunchGo);
        assert_eq!(cli.server, "demo.example:12345");
        assert!(
            Cli::try_parse_from(["wgpunch-client", "--protocol", "stun", "a", "b:1", "c"]).is_err()
        );
    }

    #[test]
    fn families_and_candidate_prefixes_are_parsed() {
        let key = "1rwvlEQkF6vL4jA1gRzlTM7I3tuZHtdq8qkLMwBs8Uw=";
        let cli = Cli::try_parse_from([
            "wgpunch-client",
            "--family",
            "6",
            "--allow-candidates",
            "192.168.0.0/16,2001:db8::/32",
            "--deny-candidates",
            "10.0.0.0/8",
            "wg0",
            "demo.example:1",
            key,
        ])
        .unwrap();
        assert_eq!(cli.family.family(), Family::V6);
        assert_eq!(cli.allowed_candidates().len(), 2);
        assert_eq!(cli.denied_candidates().len(), 1);
        assert_eq!(
            " , ".parse::<Prefixes>(),
            Ok(Prefixes::default()),
            "empty is none"
        );
        assert!("10.0.0.0/8,bogus".parse::<Prefixes>().is_err());
        let err = Cli::try_parse_from([
            "wgpunch-client",
            "--allow-candidates",
            "192.168.0.0/33",
            "wg0",
            "demo.example:1",
            key,
        ])
        .unwrap_err();
        assert_eq!(err.exit_code(), i32::from(EXIT_USAGE));
        assert!(Cli::try_parse_from(["wgpunch-client", "--family", "5", "a", "b:1", key]).is_err());
    }
}
