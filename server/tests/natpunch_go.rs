//! natpunch-go compatibility of the real `wgpunch-server` binary on loopback: a test-only
//! natpunch-go client (snow directly, exactly the documented bytes) registers and resolves through
//! `wgpunch-server --compat natpunch-go`, legacy and native clients find each other, and the
//! command line keeps natpunch-go's shape where that is safe.

mod legacy_client;

use std::fs;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use legacy_client::LegacyClient;
use wgpunch_common::client::{Client, ClientConfig, Event};
use wgpunch_common::keys::{PrivateKey, PublicKey};

const BIN: &str = env!("CARGO_BIN_EXE_wgpunch-server");

fn public(n: u8) -> PublicKey {
    PrivateKey::from_bytes([n; 32]).public_key()
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("loopback tests use IPv4"),
    }
}

struct ServerProcess {
    child: Child,
    addr: SocketAddr,
    public: PublicKey,
    dir: PathBuf,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wgpunch-server-natpunch-{name}-{}",
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts the server with `args` after the listen address and key file; `{allowed}` in `args`
/// is replaced with the path of an allowed-keys file listing the keys `[1..=9; 32]`.
fn start(name: &str, args: &[&str]) -> ServerProcess {
    let dir = temp_dir(name);
    let key_file = dir.join("server.key");
    let allowed = dir.join("allowed");
    let keys: Vec<String> = (1..=9).map(|n| public(n).to_string()).collect();
    fs::write(&allowed, keys.join("\n")).unwrap();
    let output = Command::new(BIN)
        .arg("--print-public-key")
        .arg("--key-file")
        .arg(&key_file)
        .output()
        .unwrap();
    assert!(output.status.success());
    let public: PublicKey = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{allowed}", &allowed.display().to_string()))
        .collect();
    let child = Command::new(BIN)
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--key-file")
        .arg(&key_file)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    ServerProcess {
        child,
        addr,
        public,
        dir,
    }
}

const COMPAT: &[&str] = &["--compat", "natpunch-go", "--allowed-keys", "{allowed}"];

/// A native client (the project's client state machine) over a UDP socket.
struct NativeClient {
    client: Client,
    socket: UdpSocket,
    events: Vec<Event>,
}

impl NativeClient {
    fn new(n: u8, server: &ServerProcess, peers: &[u8]) -> Self {
        let client = Client::new(
            PrivateKey::from_bytes([n; 32]),
            server.public,
            peers.iter().map(|&p| public(p)).collect(),
            vec![],
            ClientConfig::default(),
            [n; 32],
        );
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(server.addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        Self {
            client,
            socket,
            events: Vec::new(),
        }
    }

    fn step(&mut self) {
        while let Some(datagram) = self.client.poll_transmit(Instant::now(), SystemTime::now()) {
            self.socket.send(&datagram).unwrap();
        }
        let mut buf = [0u8; 2048];
        while let Ok(len) = self.socket.recv(&mut buf) {
            self.client.handle_datagram(Instant::now(), &buf[..len]);
        }
        while let Some(event) = self.client.poll_event() {
            self.events.push(event);
        }
    }

    fn register(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.client.is_registered() {
            assert!(Instant::now() < deadline, "no registration within 10 s");
            self.step();
        }
    }

    /// One lookup round for `peer`: its endpoint, or `None` when the server cannot tell.
    fn lookup(&mut self, peer: u8) -> Option<SocketAddr> {
        let key = public(peer);
        self.events.clear();
        self.client.lookup([key]);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no answer: {:?}", self.events);
            self.step();
            for event in &self.events {
                match event {
                    Event::Resolved { peer, endpoint, .. } if *peer == key => {
                        return Some(*endpoint)
                    }
                    Event::Unknown { peer } if *peer == key => return None,
                    _ => {}
                }
            }
        }
    }
}

#[test]
fn natpunch_go_clients_register_and_resolve_through_the_real_server() {
    let server = start("legacy", COMPAT);
    let mut a = LegacyClient::new(1, server.addr, server.public);
    let mut b = LegacyClient::new(2, server.addr, server.public);
    assert!(a.handshake(), "no handshake response");
    assert!(b.handshake(), "no handshake response");
    assert_ne!(a.index, b.index, "the server keeps indexes apart");
    // B has not looked anything up yet: the server has no endpoint for it.
    assert_eq!(a.lookup(&b.public), Some(None));
    assert_eq!(b.lookup(&a.public), Some(Some(v4(a.addr()))));
    assert_eq!(a.lookup(&b.public), Some(Some(v4(b.addr()))));
    // An unknown key: an empty answer.
    assert_eq!(a.lookup(&public(9)), Some(None));
    // A re-handshake (natpunch-go does one every 5 minutes) keeps working.
    assert!(a.handshake());
    assert_eq!(a.lookup(&b.public), Some(Some(v4(b.addr()))));
}

#[test]
fn a_natpunch_go_client_and_a_native_client_resolve_each_other() {
    let server = start("mixed", COMPAT);
    let mut legacy = LegacyClient::new(1, server.addr, server.public);
    let mut native = NativeClient::new(2, &server, &[1]);
    let mut stranger = NativeClient::new(3, &server, &[]);
    native.register();
    stranger.register();
    assert!(legacy.handshake());
    assert_eq!(
        legacy.lookup(&public(2)),
        Some(Some(v4(native.socket.local_addr().unwrap()))),
        "the native client lists the legacy one"
    );
    assert_eq!(
        legacy.lookup(&public(3)),
        Some(None),
        "a native client that does not list the legacy one is not found"
    );
    assert_eq!(native.lookup(1), Some(legacy.addr()));
    assert_eq!(
        stranger.lookup(1),
        None,
        "a native client finds only the peers it lists"
    );
}

#[test]
fn trust_all_serves_natpunch_go_clients_without_an_allowed_list() {
    let server = start(
        "trust-all",
        &["--compat", "natpunch-go", "--compat-trust-all"],
    );
    let mut a = LegacyClient::new(11, server.addr, server.public);
    let mut b = LegacyClient::new(12, server.addr, server.public);
    assert!(a.handshake());
    assert!(b.handshake());
    assert_eq!(a.lookup(&b.public), Some(None));
    assert_eq!(b.lookup(&a.public), Some(Some(v4(a.addr()))));
}

#[test]
fn the_allowed_list_applies_to_natpunch_go_clients() {
    let server = start("allowed", COMPAT);
    let mut outsider = LegacyClient::new(10, server.addr, server.public);
    assert!(!outsider.handshake(), "key 10 is not on the allowed list");
}

#[test]
fn compatibility_is_off_by_default() {
    let server = start("off", &[]);
    let mut legacy = LegacyClient::new(1, server.addr, server.public);
    assert!(
        !legacy.handshake(),
        "a natpunch-go initiation got an answer"
    );
    let mut a = NativeClient::new(1, &server, &[2]);
    let mut b = NativeClient::new(2, &server, &[1]);
    a.register();
    b.register();
    assert_eq!(a.lookup(2), Some(b.socket.local_addr().unwrap()));
}

#[test]
fn compat_without_consent_refuses_to_start_and_says_why() {
    let dir = temp_dir("no-consent");
    let output = Command::new(BIN)
        .args(["--compat", "natpunch-go", "--key-file"])
        .arg(dir.join("server.key"))
        .arg("0")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--allowed-keys") && stderr.contains("--compat-trust-all"),
        "{stderr}"
    );
    let _ = fs::remove_dir_all(dir);
}

#[test]
fn natpunch_go_server_command_line_private_key_is_refused_and_not_echoed() {
    let key = "SGb+ojrRNDuMePufwtIYhXzA//k6wF3R21tEBgKlzlM=";
    let output = Command::new(BIN).args(["51818", key]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stderr.contains("--key-file"), "{stderr}");
    assert!(stderr.contains("ps"), "{stderr}");
    for part in [&key[..12], &key[12..24], &key[24..]] {
        assert!(!stderr.contains(part) && !stdout.contains(part), "{stderr}");
    }
}
