//! The server's command line, in the library so that man pages, shell completions and tests can
//! use the same definition as the binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use wgpunch_common::server::legacy::{LegacyConfig, LegacyConsent};

/// The UDP port served when none is given.
pub const DEFAULT_PORT: u16 = 51818;

/// wgpunch discovery server: tells WireGuard peers behind NATs where to find each other.
///
/// Clients authenticate with their WireGuard keys (Noise IK); the server records the public
/// address and port it sees each client's registration come from, and answers a client's lookup
/// for a peer only when both list each other as WireGuard peers. It needs no privileges.
///
/// With `--compat natpunch-go` it also serves natpunch-go clients on the same port, and takes
/// natpunch-go's command line (`PORT`); natpunch-go's `PRIVATE_KEY` argument is refused in favour
/// of `--key-file`.
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
    #[arg(value_name = "PORT", default_value_t = DEFAULT_PORT, conflicts_with = "listen", env = "WGPUNCH_PORT", value_parser = PortParser)]
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

    /// A second UDP port, on the same addresses as the main one, that answers only "where do you
    /// see me" requests of connected clients: comparing both answers tells a client whether its
    /// NAT gives every destination its own port (symmetric). 0 turns it off. Default: the main
    /// port plus one (51819).
    #[arg(long, value_name = "PORT", env = "WGPUNCH_MAPPING_PORT")]
    pub mapping_port: Option<u16>,

    /// Also answer those requests at this address and port, another public address of this
    /// host, which also tells clients whether their NAT maps each destination address apart.
    /// Clients are given it as it is. Default: none.
    #[arg(long, value_name = "ADDR:PORT", env = "WGPUNCH_MAPPING_ADDRESS")]
    pub mapping_address: Option<SocketAddr>,

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

    /// Also serve clients of another protocol on the same port. natpunch-go: its clients send no
    /// peer list, so they can only be found with the operator's consent: this needs
    /// --allowed-keys (every listed client may find every natpunch-go client) or
    /// --compat-trust-all. Default: off.
    #[arg(long, value_enum, value_name = "PROTOCOL", env = "WGPUNCH_COMPAT")]
    pub compat: Option<Compat>,

    /// With --compat natpunch-go: every client that completes a handshake may find every
    /// natpunch-go client, as on a natpunch-go server. Default: off.
    #[arg(long, requires_if("true", "compat"), env = "WGPUNCH_COMPAT_TRUST_ALL")]
    pub compat_trust_all: bool,

    /// natpunch-go's second argument, a private key: refused with an explanation, never kept.
    #[arg(value_name = "PRIVATE_KEY", hide = true, value_parser = refuse_key)]
    pub private_key: Option<KeyOnCommandLine>,

    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(
        long,
        value_name = "FILTER",
        env = "WGPUNCH_LOG",
        default_value = "info"
    )]
    pub log: String,
}

impl Cli {
    /// The port of the main listen addresses (the first one's, with --listen).
    pub fn main_port(&self) -> u16 {
        self.listen.first().map_or(self.port, SocketAddr::port)
    }

    /// The second port to bind: --mapping-port, or the main port plus one (any free port when
    /// the main port is 0, any free one too); `None` when turned off.
    pub fn second_port(&self) -> Option<u16> {
        match (self.mapping_port, self.main_port()) {
            (Some(0), _) => None,
            (Some(port), _) => Some(port),
            (None, 0) => Some(0),
            (None, main) => main.checked_add(1),
        }
    }
}

/// Protocols the server can serve besides its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// natpunch-go's clients (its wire protocol, on the same port).
    NatpunchGo,
}

/// Reads PORT without ever repeating a bad value: a private key given in its place (natpunch-go's
/// `PORT PRIVATE_KEY` with the port left out) must not be echoed to the terminal or a log.
#[derive(Debug, Clone, Copy)]
struct PortParser;

impl clap::builder::TypedValueParser for PortParser {
    type Value = u16;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<u16, clap::Error> {
        value.to_str().and_then(|v| v.parse().ok()).ok_or_else(|| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                "PORT must be a number from 0 to 65535 (the value given is not shown: it may \
                     be a private key, which is never taken on the command line; use --key-file)\n",
            )
        })
    }
}

/// Stands for a private key given on the command line; holds nothing of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOnCommandLine;

fn refuse_key(_: &str) -> Result<KeyOnCommandLine, std::convert::Infallible> {
    Ok(KeyOnCommandLine)
}

/// A command line clap accepts but the server refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    /// natpunch-go's `PORT PRIVATE_KEY` form.
    #[error(
        "refusing a private key on the command line: every user of this machine can read it \
         with `ps`, and it stays in your shell history. Put the key in a file only you can read \
         and give its path instead (the key is not shown here):\n  \
         (umask 077; cat > /var/lib/wgpunch/server.key)   # paste the key, then press Ctrl-D\n  \
         wgpunch-server --key-file /var/lib/wgpunch/server.key PORT\n\
         and remove the old command from your shell history. Without --key-file a new key is \
         made in ./wgpunch-server.key (mode 0600)."
    )]
    KeyOnCommandLine,
    /// `--compat natpunch-go` without a source of consent.
    #[error(
        "--compat natpunch-go needs --allowed-keys FILE or --compat-trust-all: natpunch-go \
         clients send no peer list, so only the operator can say who may find them. With \
         --allowed-keys every listed client may find every natpunch-go client; \
         --compat-trust-all lets anyone who completes a handshake find them, as natpunch-go's \
         own server does."
    )]
    CompatNeedsConsent,
}

impl Cli {
    /// Checks what clap cannot: no private key argument, and a source of consent for
    /// natpunch-go clients.
    pub fn check(&self) -> Result<(), UsageError> {
        if self.private_key.is_some() {
            return Err(UsageError::KeyOnCommandLine);
        }
        if self.compat.is_some() && self.allowed_keys.is_none() && !self.compat_trust_all {
            return Err(UsageError::CompatNeedsConsent);
        }
        Ok(())
    }

    /// The core's natpunch-go settings: `None` unless `--compat natpunch-go`.
    pub fn natpunch_go(&self) -> Option<LegacyConfig> {
        let Some(Compat::NatpunchGo) = self.compat else {
            return None;
        };
        let consent = if self.compat_trust_all {
            LegacyConsent::TrustAll
        } else {
            LegacyConsent::AllowedKeys
        };
        Some(LegacyConfig {
            consent,
            ..LegacyConfig::default()
        })
    }
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

    const KEY: &str = "SGb+ojrRNDuMePufwtIYhXzA//k6wF3R21tEBgKlzlM=";

    #[test]
    fn a_private_key_argument_is_refused_and_never_shown() {
        let cli = Cli::try_parse_from(["wgpunch-server", "12345", KEY]).unwrap();
        assert_eq!(cli.port, 12345);
        let err = cli.check().unwrap_err();
        assert_eq!(err, UsageError::KeyOnCommandLine);
        let text = err.to_string();
        assert!(text.contains("--key-file") && text.contains("ps"), "{text}");
        assert!(!text.contains(&KEY[..8]), "{text}");
        assert!(
            !format!("{cli:?}").contains(&KEY[..8]),
            "the key is not kept"
        );
    }

    #[test]
    fn a_key_in_the_place_of_the_port_is_not_echoed() {
        let err = Cli::try_parse_from(["wgpunch-server", KEY]).unwrap_err();
        let text = err.render().to_string();
        assert!(text.contains("PORT must be a number"), "{text}");
        assert!(!text.contains(&KEY[..8]), "{text}");
        assert!(Cli::try_parse_from(["wgpunch-server", "70000"]).is_err());
    }

    #[test]
    fn natpunch_go_command_line_port_works() {
        let cli = Cli::try_parse_from(["wgpunch-server", "12345"]).unwrap();
        assert_eq!(cli.port, 12345);
        assert_eq!(cli.check(), Ok(()));
        assert_eq!(cli.natpunch_go(), None, "compatibility is off by default");
    }

    #[test]
    fn compat_needs_allowed_keys_or_an_explicit_trust_all() {
        let bare = Cli::try_parse_from(["wgpunch-server", "--compat", "natpunch-go"]).unwrap();
        assert_eq!(bare.check(), Err(UsageError::CompatNeedsConsent));
        let allowed = Cli::try_parse_from([
            "wgpunch-server",
            "--compat",
            "natpunch-go",
            "--allowed-keys",
            "keys",
        ])
        .unwrap();
        assert_eq!(allowed.check(), Ok(()));
        assert_eq!(
            allowed.natpunch_go().map(|c| c.consent),
            Some(LegacyConsent::AllowedKeys)
        );
        let all = Cli::try_parse_from([
            "wgpunch-server",
            "--compat",
            "natpunch-go",
            "--compat-trust-all",
        ])
        .unwrap();
        assert_eq!(all.check(), Ok(()));
        assert_eq!(
            all.natpunch_go().map(|c| c.consent),
            Some(LegacyConsent::TrustAll)
        );
        assert!(
            Cli::try_parse_from(["wgpunch-server", "--compat-trust-all"]).is_err(),
            "trust-all means nothing without --compat"
        );
        assert!(Cli::try_parse_from(["wgpunch-server", "--compat", "wireguard"]).is_err());
    }

    #[test]
    fn listen_takes_a_comma_separated_list() {
        let cli = Cli::try_parse_from(["wgpunch-server", "-l", "0.0.0.0:1,[::1]:2"]).unwrap();
        assert_eq!(cli.listen.len(), 2);
    }
}
