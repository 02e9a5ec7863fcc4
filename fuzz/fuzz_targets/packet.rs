//! `Packet::parse`, the first thing the client and the server do with any datagram: never panics,
//! and accepts only bytes that the matching `emit` writes back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_common::wire::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(data) {
        let mut again = Vec::new();
        packet.emit(&mut again);
        assert_eq!(again, data, "non-canonical datagram accepted: {packet:?}");
    }
});
