//! `Packet::parse`, the first thing the client and the server do with any datagram: never panics,
//! and accepts only bytes that the matching `emit` writes back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_common::wire::{Packet, Transport};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = Packet::parse(data) {
        let mut again = Vec::new();
        match &packet {
            Packet::HandshakeInit(p) => p.emit(&mut again),
            Packet::HandshakeResponse(p) => p.emit(&mut again),
            Packet::CookieReply(p) => p.emit(&mut again),
            Packet::Transport(t) => {
                Transport::emit_header(t.receiver_index, t.counter, &mut again);
                again.extend_from_slice(t.ciphertext);
            }
        }
        assert_eq!(again, data, "non-canonical datagram accepted: {packet:?}");
    }
});
