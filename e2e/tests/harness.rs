//! Self-test of the test bed: two `wireguard-go` peers on a switch, endpoints set by hand, ping
//! through the tunnel both ways, and everything gone after drop.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{ensure, Result};
use wgpunch_e2e::{expect_ok, netns_exists, socket_path, Netns, Switch, WgInterface};

/// Budget for a ping across a fresh tunnel, handshake included.
const PING_TIMEOUT: Duration = Duration::from_secs(15);

struct TwoPeers {
    _switch: Switch,
    a: Netns,
    b: Netns,
    wg_a: WgInterface,
    wg_b: WgInterface,
}

fn two_peers_on_a_switch() -> Result<TwoPeers> {
    let switch = Switch::new("sw")?;
    let a = Netns::new("a")?;
    let b = Netns::new("b")?;
    switch.attach(&a, "eth0", &["198.51.100.2/24", "2001:db8::2/64"])?;
    switch.attach(&b, "eth0", &["198.51.100.3/24", "2001:db8::3/64"])?;
    let wg_a = WgInterface::start(&a, "192.0.2.1/24", None)?;
    let wg_b = WgInterface::start(&b, "192.0.2.2/24", None)?;
    ensure!(
        wg_a.listen_port() != wg_b.listen_port(),
        "listen ports must differ"
    );
    wg_a.add_peer(wg_b.public_key(), &["192.0.2.2/32"])?;
    wg_b.add_peer(wg_a.public_key(), &["192.0.2.1/32"])?;
    Ok(TwoPeers {
        _switch: switch,
        a,
        b,
        wg_a,
        wg_b,
    })
}

fn check_manual_endpoints_carry_pings(t: &TwoPeers) -> Result<()> {
    // Underlay first, so a tunnel failure is not mistaken for a wiring one.
    t.a.ping_until("198.51.100.3", Duration::from_secs(5))?;

    ensure!(
        t.wg_a.endpoint(t.wg_b.public_key())?.is_none(),
        "no endpoint before it is set"
    );
    ensure!(
        t.wg_a.latest_handshakes()?[t.wg_b.public_key()].is_none(),
        "no handshake before any traffic"
    );

    let b_endpoint: SocketAddr = format!("198.51.100.3:{}", t.wg_b.listen_port()).parse()?;
    let a_endpoint: SocketAddr = format!("198.51.100.2:{}", t.wg_a.listen_port()).parse()?;
    t.wg_a.set_endpoint(t.wg_b.public_key(), b_endpoint)?;
    t.wg_b.set_endpoint(t.wg_a.public_key(), a_endpoint)?;
    ensure!(t.wg_a.endpoint(t.wg_b.public_key())? == Some(b_endpoint));

    let took = t.a.ping_until("192.0.2.2", PING_TIMEOUT)?;
    t.b.ping_until("192.0.2.1", PING_TIMEOUT)?;
    eprintln!("harness: first ping through the tunnel after {took:?}");

    t.wg_a
        .wait_handshake(t.wg_b.public_key(), Duration::from_secs(5))?;
    t.wg_b
        .wait_handshake(t.wg_a.public_key(), Duration::from_secs(5))?;
    ensure!(
        t.wg_a.persistent_keepalives()?[t.wg_b.public_key()].is_none(),
        "keepalive stays off unless set"
    );
    Ok(())
}

#[test]
fn two_wireguard_go_peers_with_manual_endpoints_ping_through_the_tunnel() {
    let t = expect_ok(two_peers_on_a_switch());
    expect_ok(check_manual_endpoints_carry_pings(&t));

    let namespaces = [t.a.name().to_owned(), t.b.name().to_owned()];
    let sockets = [socket_path(t.wg_a.name()), socket_path(t.wg_b.name())];
    drop(t);
    for ns in &namespaces {
        assert!(!expect_ok(netns_exists(ns)), "namespace {ns} left behind");
    }
    for socket in &sockets {
        assert!(!socket.exists(), "{} left behind", socket.display());
    }
}

#[test]
fn namespace_and_processes_are_cleaned_up_on_panic() {
    let created = Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let ns = expect_ok(Netns::new("doomed"));
        let wg = expect_ok(WgInterface::start(&ns, "192.0.2.9/24", None));
        let sleeper = expect_ok(ns.spawn("sleeper", "sleep", ["30"]));
        *created.lock().unwrap() =
            Some((ns.name().to_owned(), wg.name().to_owned(), sleeper.pid()));
        panic!("deliberate panic with a namespace, wireguard-go and a sleeper alive");
    });
    assert!(result.is_err(), "the closure panics");
    let (ns, iface, pid) = created
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .expect("the closure got as far as the panic");
    assert!(!expect_ok(netns_exists(&ns)), "namespace {ns} left behind");
    assert!(
        !socket_path(&iface).exists(),
        "socket of {iface} left behind"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} left running"
    );
}
