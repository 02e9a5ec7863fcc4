//! natpunch-go compatibility of the real `wgpunch-server` binary on loopback: a test-only
//! natpunch-go client (snow directly, exactly the documented bytes) registers and resolves through
//! `wgpunch-server --compat natpunch-go`, legacy and native clients find each other, and the
//! command line keeps natpunch-go's shape where that is safe.

mod legacy_client;
mod support;

use std::fs;
use std::net::{SocketAddr, SocketAddrV4};
use std::process::Command;

use legacy_client::LegacyClient;
use support::client::TestClient;
use support::{public, temp_dir, ServerProcess, BIN, COMPAT};

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(v4) => v4,
        SocketAddr::V6(_) => panic!("loopback tests use IPv4"),
    }
}

#[test]
fn natpunch_go_clients_register_and_resolve_through_the_real_server() {
    let server = ServerProcess::start("legacy", COMPAT);
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
    let server = ServerProcess::start("mixed", COMPAT);
    let mut legacy = LegacyClient::new(1, server.addr, server.public);
    let mut native = TestClient::new(2, &server, &[1]);
    let mut stranger = TestClient::new(3, &server, &[]);
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
    let server = ServerProcess::start(
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
    let server = ServerProcess::start("allowed", COMPAT);
    let mut outsider = LegacyClient::new(10, server.addr, server.public);
    assert!(!outsider.handshake(), "key 10 is not on the allowed list");
}

#[test]
fn compatibility_is_off_by_default() {
    let server = ServerProcess::start("off", &[]);
    let mut legacy = LegacyClient::new(1, server.addr, server.public);
    assert!(
        !legacy.handshake(),
        "a natpunch-go initiation got an answer"
    );
    let mut a = TestClient::new(1, &server, &[2]);
    let mut b = TestClient::new(2, &server, &[1]);
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
