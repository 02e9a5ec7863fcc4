//! The server's command line, in the library so that man pages, shell completions and tests can
//! use the same definition as the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The UDP port served when none is given.
pub const DEFAULT_PORT: u16 = 51818;

/// wgpunch discovery server: tells WireGuard peers behind NATs where to find each other.
///
/// Clients authenticate with their WireGuard keys (Noise IK); the server records the public
/// address and port it sees each client's registration come from, and answers a client's lookup
/// for a peer only when both list each other as WireGuard peers. It needs no privileges.
///
/// Exit status: 0 after a clean shutdown (SIGINT or SIGTERM), 1 on an error, 2 on a usage error.
#[derive(Debug, Parser)]
#[command(
    name = "wgpunch-server",
    version,
    about,
    long_about,
    after_help = "Example:\n  wgpunch-server --key-file /var/lib/wgpunch/server.key 51818"
)]
pub struct Cli {
    /// UDP port to listen on, on every IPv6 and IPv4 address.
    #[arg(value_name = "PORT", default_value_t = DEFAULT_PORT, conflicts_with = "listen", env = "WGPUNCH_PORT")]
    pub port: u16,

    /// Listen on this address and port instead (repeat, or separate with commas, for several),
    /// e.g. 0.0.0.0:51818 or [::1]:51818. Default: the PORT on every address.
    #[arg(
        short,
        long,
        value_name = "ADDR:PORT",
        value_delimiter = ',',
        env = "WGPUNCH_LISTEN"
    )]
    pub listen: Vec<SocketAddr>,

    /// The server's private key, in WireGuard's base64 form (`wg genkey`). Created with mode 0600
    /// if missing; refused if other users can read it. Default: $STATE_DIRECTORY/server.key under
    /// systemd, else ./wgpunch-server.key.
    #[arg(short, long, value_name = "PATH", env = "WGPUNCH_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Print the server's public key (creating the key file if missing) and exit.
    #[arg(long)]
    pub print_public_key: bool,

    /// Serve only the WireGuard public keys listed in this file (one per line, `#` comments).
    /// Other keys get silence and leave no state on the server. Default: any key may register;
    /// lookups are answered only between peers that list each other.
    #[arg(long, value_name = "FILE", env = "WGPUNCH_ALLOWED_KEYS")]
    pub allowed_keys: Option<PathBuf>,

    /// Seconds a registration stays valid after its client was last heard from.
    #[arg(long, value_name = "SECS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(10..=3600), env = "WGPUNCH_REGISTRATION_TTL")]
    pub registration_ttl: u64,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long,
        value_name = "FILTER",
        env = "WGPUNCH_LOG",
        default_value = "info"
    )]
    pub log: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["wgpunch-server"]).unwrap();
        assert_eq!(cli.port, DEFAULT_PORT);
        assert_eq!(cli.registration_ttl, 120);
        assert!(cli.listen.is_empty());
    }

    #[test]
    fn port_conflicts_with_listen() {
        assert!(Cli::try_parse_from(["wgpunch-server", "-l", "[::1]:1", "5000"]).is_err());
    }

    #[test]
    fn listen_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["wgpunch-server", "-l", "0.0.0.0:1,[::1]:2"]).unwrap();
        assert_eq!(cli.listen.len(), 2);
    }
}
