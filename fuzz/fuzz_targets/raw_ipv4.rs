//! `parse_ipv4_udp`, applied to everything the client's raw IPv4 socket receives: never panics,
//! and whatever it accepts has header, UDP and payload lengths that add up to the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_client::packet::{parse_ipv4_udp, UDP_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = parse_ipv4_udp(data) {
        let header_len = usize::from(data[0] & 0x0f) * 4;
        assert_eq!(
            header_len + UDP_HEADER_LEN + packet.udp.payload.len(),
            data.len()
        );
    }
});
