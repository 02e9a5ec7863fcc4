//! The server integration tests' shared harness: the real `wgpunch-server` binary started on a
//! free loopback port with a key file in a temporary directory, killed and cleaned up on drop.
//! [`client`] holds the native test client and [`attack`] the bad-input tests' world.
//!
//! Each test binary includes it with `mod support;` and uses what it needs.

#![allow(dead_code)]

pub mod attack;
pub mod client;

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use wgpunch_common::keys::{PrivateKey, PublicKey};

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_wgpunch-server");

/// Arguments that turn natpunch-go compatibility on, allowing keys 1 to 9 (see
/// [`ServerProcess::start`]).
pub const COMPAT: &[&str] = &["--compat", "natpunch-go", "--allowed-keys", "{allowed}"];

/// The public key of the test key `[n; 32]`.
pub fn public(n: u8) -> PublicKey {
    PrivateKey::from_bytes([n; 32]).public_key()
}

/// A fresh, empty directory for the test `name` of this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("wgpunch-server-test-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A loopback UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `wgpunch-server --print-public-key --key-file KEY_FILE` (which creates the key file when
/// it is missing).
pub fn print_public_key(key_file: &Path) -> Output {
    Command::new(BIN)
        .arg("--print-public-key")
        .arg("--key-file")
        .arg(key_file)
        .output()
        .unwrap()
}

/// A running `wgpunch-server` on `127.0.0.1`, killed and its directory removed on drop.
pub struct ServerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub public: PublicKey,
    pub dir: PathBuf,
    args: Vec<String>,
}

impl ServerProcess {
    /// Starts the server with `args` after the listen address and key file; `{allowed}` in `args`
    /// is replaced with the path of an allowed-keys file listing the keys `[1..=9; 32]`.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let dir = temp_dir(name);
        let key_file = dir.join("server.key");
        let output = print_public_key(&key_file);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let public: PublicKey = String::from_utf8(output.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let allowed = dir.join("allowed");
        if args.iter().any(|a| a.contains("{allowed}")) {
            let keys: Vec<String> = (1..=9).map(|n| self::public(n).to_string()).collect();
            fs::write(&allowed, keys.join("\n")).unwrap();
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| a.replace("{allowed}", &allowed.display().to_string()))
            .collect();
        let child = Self::spawn(addr, &dir, &args);
        Self {
            child,
            addr,
            public,
            dir,
            args,
        }
    }

    fn spawn(addr: SocketAddr, dir: &Path, args: &[String]) -> Child {
        // The default second port (main + 1) could be another test's: none unless asked for.
        let mapping: &[&str] = if args.iter().any(|a| a == "--mapping-port") {
            &[]
        } else {
            &["--mapping-port", "0"]
        };
        let child = Command::new(BIN)
            .arg("--listen")
            .arg(addr.to_string())
            .arg("--key-file")
            .arg(dir.join("server.key"))
            .args(mapping)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        child
    }

    /// Kills the process and starts it again with the same key file, port and arguments.
    pub fn restart(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(self.addr, &self.dir, &self.args);
    }

    /// Fails the test if the server process has exited.
    pub fn assert_running(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the server process exited"
        );
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
