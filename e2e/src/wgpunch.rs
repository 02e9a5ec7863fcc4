//! Running the binaries under test: the server as `nobody`, the client as root.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::bins::{binary, client_binary};
use crate::cmd::Cmd;
use crate::netns::Netns;
use crate::process::Process;
use crate::tempdir::{chown_to_nobody, write_secret_file, TempDir};
use crate::wg::WgKeys;

/// The port the tests run the server on.
pub const SERVER_PORT: u16 = 51818;

/// How long the server may take to bind its sockets.
pub const SERVER_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server run as `nobody` reads, in a directory owned by `nobody` so that it can whatever
/// the permissions on the path to the workspace: a copy of its binary and a fresh private key
/// from `wg genkey` in a file of mode 0600.
#[derive(Debug)]
pub struct ServerFiles {
    /// The directory, removed on drop.
    pub dir: TempDir,
    /// The copy of the binary, mode 0755.
    pub program: PathBuf,
    /// The server's keys.
    pub keys: WgKeys,
    /// The file holding the private key (`server.key`).
    pub key_file: PathBuf,
}

impl ServerFiles {
    /// Copies the workspace's binary `name` (see [`binary`]) into a new directory labelled
    /// `label`, next to a new key file.
    pub fn stage(name: &str, label: &str) -> Result<Self> {
        let source = binary(name)?;
        let dir = TempDir::new(label)?;
        dir.chown_to_nobody()?;
        let program = dir.join(name);
        std::fs::copy(&source, &program)
            .with_context(|| format!("copying {} to {}", source.display(), program.display()))?;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", program.display()))?;

        let keys = WgKeys::generate()?;
        let key_file = dir.join("server.key");
        write_secret_file(&key_file, &format!("{}\n", keys.private()))?;
        chown_to_nobody(&key_file)?;
        Ok(Self {
            dir,
            program,
            keys,
            key_file,
        })
    }
}

/// A running `wgpunch-server`, unprivileged, with a key from `wg genkey`.
#[derive(Debug)]
pub struct Server {
    process: Process,
    listen: Vec<SocketAddr>,
    keys: WgKeys,
    _dir: TempDir,
}

impl Server {
    /// Starts `wgpunch-server --listen ADDR... --key-file KEY` in `ns` as `nobody` (through
    /// `setpriv`) and waits until it listens on every address's port.
    ///
    /// The key file (mode 0600) and a copy of the binary sit in a directory owned by `nobody`, so
    /// the server can read them whatever the permissions on the path to the workspace.
    pub fn start(ns: &Netns, listen: &[SocketAddr]) -> Result<Self> {
        Self::start_with_args(ns, listen, &[])
    }

    /// Like [`Server::start`], with more arguments (`--compat natpunch-go --allowed-keys F`, ...).
    /// Files they name must be readable by `nobody`.
    pub fn start_with_args(ns: &Netns, listen: &[SocketAddr], args: &[&str]) -> Result<Self> {
        let ServerFiles {
            dir,
            program,
            keys,
            key_file,
        } = ServerFiles::stage(crate::bins::SERVER, "server")?;
        let mut cmd = ns
            .cmd(program.to_str().context("non-UTF-8 temporary path")?)?
            .as_nobody();
        for addr in listen {
            cmd = cmd.arg("--listen").arg(addr.to_string());
        }
        cmd = cmd.arg("--key-file").arg(&key_file).args(args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd = cmd.env("RUST_LOG", "debug");
        }
        let mut process = cmd.spawn(&format!("wgpunch-server in {}", ns.label()))?;
        for addr in listen {
            ns.wait_udp_listen(addr.port(), SERVER_STARTUP_TIMEOUT, &mut process)?;
        }
        Ok(Self {
            process,
            listen: listen.to_vec(),
            keys,
            _dir: dir,
        })
    }

    /// The server's public key, base64 (from `wg pubkey`).
    pub fn public_key(&self) -> &str {
        self.keys.public()
    }

    /// The addresses it was told to listen on.
    pub fn listen(&self) -> &[SocketAddr] {
        &self.listen
    }

    /// The server process (for its log, or to stop it).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// What the server printed on stderr so far, labelled, for error messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// `wgpunch-client OPTIONS... IFACE SERVER PUBKEY` inside `ns`, as root. Logs at debug level
/// unless `RUST_LOG` is set.
pub fn client_cmd(
    ns: &Netns,
    options: &[&str],
    iface: &str,
    server: SocketAddr,
    server_public_key: &str,
) -> Result<Cmd> {
    let binary = client_binary()?;
    let mut cmd = ns
        .cmd(binary.to_str().context("non-UTF-8 binary path")?)?
        .args(options)
        .args([iface, &server.to_string(), server_public_key]);
    if std::env::var_os("RUST_LOG").is_none() {
        cmd = cmd.env("RUST_LOG", "debug");
    }
    Ok(cmd)
}
