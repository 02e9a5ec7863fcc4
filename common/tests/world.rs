//! Whole scenarios of the client's agent in an in-memory world: WireGuard hosts behind modelled
//! NATs (including the Linux conntrack trap), the real discovery server, virtual time. Each test
//! prints the virtual time its scenario took; `WORLD_TRACE=1` prints every delivery and action.

#[path = "world/mod.rs"]
mod world;

use std::time::Duration;

use wgpunch_common::agent::Outcome;
use world::nat::Mapping;
use world::net::Faults;
use world::{config, Site, World};

const MASQUERADE: Site = Site::Nat(Mapping::Masquerade, false);

/// Starts two one-shot clients together and runs until both exited; returns the time it took.
fn one_shot_pair(world: &mut World) -> Duration {
    world.start(0, config(false), Duration::ZERO);
    world.start(1, config(false), Duration::ZERO);
    world
        .run_until(Duration::from_secs(90), |w| {
            w.hosts.iter().all(|h| h.outcome.is_some())
        })
        .expect("both clients exit")
}

/// Asserts both one-shot clients exited connected, and the tunnel works: sessions, the right
/// endpoints, and pings both ways.
fn assert_connected_pair(world: &mut World, label: &str) {
    let took = one_shot_pair(world);
    for host in &world.hosts {
        let (outcome, _) = host.outcome.as_ref().unwrap();
        assert_eq!(
            *outcome,
            Outcome::Connected { peers: 1 },
            "{label}: {}",
            host.name
        );
    }
    assert!(
        world.connected(0, 1),
        "{label}: sessions and endpoints match the NATs"
    );
    let since = world.now();
    world.ping(true);
    let ping = world
        .run_until(Duration::from_secs(5), |w| w.pinged_since(0, 1, since))
        .expect("a ping crosses both ways");
    println!(
        "{label}: both exit Connected after {took:?} (virtual), ping both ways {ping:?} later"
    );
}

#[test]
fn one_shot_clients_behind_masquerade_connect_without_tripping_the_trap() {
    let mut world = World::new(1, Faults::default(), &[MASQUERADE, MASQUERADE]);
    assert_connected_pair(&mut world, "masquerade/masquerade");
    assert_eq!(world.trap_clashes(), 0, "no trap entry took a mapping");
}

#[test]
fn one_shot_clients_connect_behind_remapping_nats_firewalls_and_from_a_public_address() {
    let cases = [
        ("remap/remap", [Site::Nat(Mapping::Remap, false); 2]),
        (
            "firewall/firewall",
            [Site::Nat(Mapping::Masquerade, true); 2],
        ),
        (
            "remap+firewall/remap+firewall",
            [Site::Nat(Mapping::Remap, true); 2],
        ),
        ("public/masquerade", [Site::Public, MASQUERADE]),
        ("masquerade/public", [MASQUERADE, Site::Public]),
    ];
    for (label, sites) in cases {
        let mut world = World::new(2, Faults::default(), &sites);
        assert_connected_pair(&mut world, label);
    }
}

#[test]
fn symmetric_against_masquerade_ends_in_no_handshake_naming_the_peer() {
    let mut world = World::new(
        3,
        Faults::default(),
        &[Site::Nat(Mapping::Symmetric, false), MASQUERADE],
    );
    let took = one_shot_pair(&mut world);
    for (i, host) in world.hosts.iter().enumerate() {
        let peer = world.key(1 - i);
        match &host.outcome.as_ref().unwrap().0 {
            Outcome::NoHandshake { failed } => {
                assert_eq!(failed.len(), 1, "{}", host.name);
                assert_eq!(failed[0].0, peer, "{} names the peer", host.name);
            }
            other => panic!("{}: expected NoHandshake, got {other:?}", host.name),
        }
    }
    println!("symmetric/masquerade: both exit NoHandshake after {took:?} (virtual)");
}

/// Starts two continuous clients (the second `late` after the first) and runs until they are
/// connected and pings cross; returns the time from the second start.
fn continuous_pair(world: &mut World, late: Duration) -> Duration {
    world.start(0, config(true), Duration::ZERO);
    world.start(1, config(true), late);
    world.ping(true);
    world.run_for(late);
    let since = world.now();
    world
        .run_until(Duration::from_secs(120), |w| {
            w.connected(0, 1) && w.pinged_since(0, 1, since)
        })
        .expect("the continuous clients connect")
}

#[test]
fn a_late_peer_connects_to_a_continuous_client() {
    let mut world = World::new(4, Faults::default(), &[MASQUERADE, MASQUERADE]);
    let took = continuous_pair(&mut world, Duration::from_secs(20));
    assert_eq!(world.trap_clashes(), 0, "no trap entry took a mapping");
    println!("late peer: connected and pinging {took:?} (virtual) after B started");
}

/// Connects a continuous pair, lets it settle, applies `event`, and returns how long until pings
/// cross both ways again over a correct path.
fn recovery(world: &mut World, label: &str, event: impl FnOnce(&mut World)) -> Duration {
    continuous_pair(world, Duration::ZERO);
    world.run_for(Duration::from_secs(30));
    assert!(world.connected(0, 1), "{label}: settled before the event");
    let at = world.elapsed();
    event(world);
    let since = world.now();
    let took = world
        .run_until(Duration::from_secs(300), |w| {
            w.pinged_since(0, 1, since) && w.connected(0, 1)
        })
        .unwrap_or_else(|| panic!("{label}: no recovery within 300 s"));
    println!("{label}: event at {at:?}, pings cross again {took:?} (virtual) after it");
    took
}

#[test]
fn continuous_clients_recover_when_a_firewalled_nat_changes_its_address() {
    let sites = [Site::Nat(Mapping::Masquerade, true); 2];
    let mut world = World::new(5, Faults::default(), &sites);
    recovery(&mut world, "firewall, A's address changes", |w| {
        w.change_address(0)
    });
}

/// The design target: a few seconds after a NAT moves, not the silence limit plus the parking.
/// A notices its unanswered pings and registers again from its new address; the server pushes
/// the new endpoint to B, which punches towards it and confirms; A's barrier opens and both
/// sides' traffic gets through again.
#[test]
fn continuous_clients_recover_from_an_address_change_within_a_few_seconds() {
    let sites = [Site::Nat(Mapping::Masquerade, true); 2];
    let mut world = World::new(5, Faults::default(), &sites);
    let took = recovery(&mut world, "firewall, A's address changes (target)", |w| {
        w.change_address(0)
    });
    assert!(took <= Duration::from_secs(10), "recovery took {took:?}");
}

#[test]
fn continuous_clients_recover_from_a_firewalled_remap_and_the_peers_address_change() {
    let sites = [Site::Nat(Mapping::Remap, true); 2];
    let mut world = World::new(6, Faults::default(), &sites);
    recovery(&mut world, "firewall+remap, A's NAT remaps", |w| w.remap(0));
    let sites = [Site::Nat(Mapping::Masquerade, true); 2];
    let mut world = World::new(6, Faults::default(), &sites);
    recovery(&mut world, "firewall, B's address changes", |w| {
        w.change_address(1)
    });
}

#[test]
fn continuous_clients_recover_from_a_remap_behind_unfiltered_masquerade() {
    let mut world = World::new(7, Faults::default(), &[MASQUERADE, MASQUERADE]);
    recovery(&mut world, "masquerade (trap), A's NAT remaps", |w| {
        w.remap(0)
    });
}

#[test]
fn one_shot_clients_connect_through_loss_and_reordering() {
    for seed in 8..12 {
        let faults = Faults {
            loss: 10,
            jitter: Duration::from_millis(40),
        };
        let mut world = World::new(seed, faults, &[MASQUERADE, MASQUERADE]);
        assert_connected_pair(&mut world, &format!("10 % loss, reordering, seed {seed}"));
    }
}

#[test]
fn three_one_shot_clients_connect_every_pair() {
    let mut world = World::new(
        9,
        Faults::default(),
        &[MASQUERADE, Site::Nat(Mapping::Remap, true), Site::Public],
    );
    for i in 0..3 {
        world.start(i, config(false), Duration::ZERO);
    }
    let took = world
        .run_until(Duration::from_secs(90), |w| {
            w.hosts.iter().all(|h| h.outcome.is_some())
        })
        .expect("every client exits");
    for host in &world.hosts {
        assert_eq!(
            host.outcome.as_ref().unwrap().0,
            Outcome::Connected { peers: 2 },
            "{}",
            host.name
        );
    }
    let since = world.now();
    world.ping(true);
    world.run_for(Duration::from_secs(2));
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        assert!(world.connected(a, b), "{a}-{b} connected");
        assert!(world.pinged_since(a, b, since), "{a}-{b} ping");
    }
    assert_eq!(world.trap_clashes(), 0);
    println!("mesh of three: every client exits Connected after {took:?} (virtual)");
}
