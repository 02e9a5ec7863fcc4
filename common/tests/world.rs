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
