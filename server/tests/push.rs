//! Pushes from the real `wgpunch-server` binary on loopback: a watching client is pushed its
//! peer's new endpoints, never more than its session's window while it does not acknowledge, and
//! a push sent to the server is dropped like any other datagram it cannot use.

mod support;

use std::time::Duration;

use wgpunch_common::client::Event;
use wgpunch_common::server::PUSH_WINDOW;
use wgpunch_common::wire::message::PUSH_DATAGRAM_LEN;

use support::attack::{assert_silent, attacker, send_bit_flips};
use support::client::TestClient;
use support::{public, ServerProcess};

const QUIET: Duration = Duration::from_millis(500);

#[test]
fn a_watching_client_gets_pushes_within_its_window_and_a_push_sent_to_the_server_is_dropped() {
    let server = ServerProcess::start("push", &[]);
    let mut a = TestClient::new(1, &server, &[2]);
    a.register();
    let mut b = TestClient::new(2, &server, &[1]);
    b.register();
    // B's NAT keeps remapping it: every new source is a push to A, while A never acknowledges.
    for _ in 0..15 {
        b.move_and_register(&server);
    }
    let received = a.receive_raw(QUIET);
    assert!(
        received.iter().all(|d| d.len() == PUSH_DATAGRAM_LEN),
        "only pushes arrive unasked: {:?}",
        received.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(
        received.len(),
        PUSH_WINDOW as usize,
        "16 changes, a window of pushes"
    );

    // They are real pushes of A's session: A takes them as sightings of B.
    a.deliver(&received);
    let pushed: Vec<_> = a
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Resolved { peer, endpoint, .. } if *peer == public(2) => Some(*endpoint),
            _ => None,
        })
        .collect();
    assert_eq!(pushed.len(), PUSH_WINDOW as usize);

    // A push sent to the server, as is or with any bit flipped, gets nothing back.
    let mallory = attacker();
    mallory.send_to(&received[0], server.addr).unwrap();
    send_bit_flips(&mallory, &received[0], server.addr);
    assert_silent(&mallory, "a push sent to the server");

    // The server still serves: A acknowledges (its next step), then learns B's latest endpoint,
    // pushed or looked up.
    a.events.clear();
    b.move_and_register(&server);
    let latest = b.addr();
    assert_eq!(a.lookup(2), Some(latest));
    let mut server = server;
    server.assert_running();
}
