//! `Probe::parse`, as the client applies it to every datagram its probe sockets hear on the
//! WireGuard port: never panics, and accepts only bytes that `Probe::emit` writes back
//! identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_common::wire::probe::Probe;

fuzz_target!(|data: &[u8]| {
    if let Ok(probe) = Probe::parse(data) {
        assert_eq!(
            probe.emit(),
            data,
            "non-canonical probe accepted: {probe:?}"
        );
    }
});
