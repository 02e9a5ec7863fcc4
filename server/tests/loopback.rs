//! The real `wgpunch-server` binary on loopback, driven by test clients built from the shared
//! client state machine over ordinary UDP sockets.

mod support;

use std::fs;
use std::net::UdpSocket;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use wgpunch_common::keys::PrivateKey;

use support::client::TestClient;
use support::{print_public_key, temp_dir, ServerProcess, BIN};

/// Steps both clients, asking for each other every 200 ms, until both resolved or 10 s passed.
fn resolve_each_other(a: &mut TestClient, b: &mut TestClient) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut next_lookup = Instant::now();
    while a.resolved(2).is_none() || b.resolved(1).is_none() {
        assert!(
            Instant::now() < deadline,
            "no resolution within 10 s: a {:?}, b {:?}",
            a.events,
            b.events
        );
        if Instant::now() >= next_lookup {
            a.client
                .lookup([PrivateKey::from_bytes([2; 32]).public_key()]);
            b.client
                .lookup([PrivateKey::from_bytes([1; 32]).public_key()]);
            next_lookup = Instant::now() + Duration::from_millis(200);
        }
        a.step();
        b.step();
    }
}

#[test]
fn two_clients_resolve_each_other_through_the_real_server() {
    let server = ServerProcess::start("resolve", &[]);
    let mut a = TestClient::new(1, &server, &[2]);
    let mut b = TestClient::new(2, &server, &[1]);
    resolve_each_other(&mut a, &mut b);
    assert_eq!(a.resolved(2), Some(b.socket.local_addr().unwrap()));
    assert_eq!(b.resolved(1), Some(a.socket.local_addr().unwrap()));
}

#[test]
fn garbage_does_not_stop_the_server() {
    let server = ServerProcess::start("garbage", &[]);
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.send_to(&[], server.addr).unwrap();
    for byte in 0..=255u8 {
        attacker.send_to(&[byte], server.addr).unwrap();
        attacker.send_to(&[byte; 144], server.addr).unwrap();
        attacker.send_to(&[byte; 1500], server.addr).unwrap();
    }
    attacker
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        attacker.recv(&mut [0u8; 2048]).is_err(),
        "garbage must get no answer"
    );
    let mut a = TestClient::new(1, &server, &[2]);
    let mut b = TestClient::new(2, &server, &[1]);
    resolve_each_other(&mut a, &mut b);
}

#[test]
fn print_public_key_matches_the_key_file() {
    let dir = temp_dir("print");
    let key_file = dir.join("server.key");
    let output = print_public_key(&key_file);
    assert!(output.status.success());
    let text = fs::read_to_string(&key_file).unwrap();
    let expected = PrivateKey::from_base64(&text)
        .unwrap()
        .public_key()
        .to_string();
    assert_eq!(String::from_utf8(output.stdout).unwrap().trim(), expected);
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_exposed_key_file_is_refused_with_a_clear_error() {
    let dir = temp_dir("exposed");
    let key_file = dir.join("server.key");
    assert!(print_public_key(&key_file).status.success());
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o644)).unwrap();
    let output = print_public_key(&key_file);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("chmod 600"), "{stderr}");
    fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_private_key_on_the_command_line_is_a_usage_error() {
    let output = Command::new(BIN)
        .args(["51818", "SGb+ojrRNDuMePufwtIYhXzA//k6wF3R21tEBgKlzlM="])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn compat_trust_all_set_to_false_in_the_environment_needs_no_compat() {
    let dir = temp_dir("trust-all-false");
    let run = |value: &str| {
        Command::new(BIN)
            .args(["--print-public-key", "--key-file"])
            .arg(dir.join("server.key"))
            .env("WGPUNCH_COMPAT_TRUST_ALL", value)
            .output()
            .unwrap()
    };
    let off = run("false");
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    assert_eq!(
        run("true").status.code(),
        Some(2),
        "true still needs --compat"
    );
    fs::remove_dir_all(dir).unwrap();
}
