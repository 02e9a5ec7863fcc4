//! `parse_udp`, applied to everything the client's raw IPv6 socket receives: never panics, and
//! whatever it accepts is a UDP header whose length field covers exactly the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_client::packet::{parse_udp, UDP_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if let Ok(datagram) = parse_udp(data) {
        assert_eq!(UDP_HEADER_LEN + datagram.payload.len(), data.len());
        assert_eq!(
            usize::from(u16::from_be_bytes([data[4], data[5]])),
            data.len()
        );
    }
});
