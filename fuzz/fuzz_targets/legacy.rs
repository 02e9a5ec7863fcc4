//! natpunch-go's parsers (`wgpunch_common::legacy`): both directions' datagram parsers and the
//! plaintext parsers never panic, and accept only bytes that the matching `emit` writes back
//! identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_common::legacy::packet::{parse_from_client, parse_from_server};
use wgpunch_common::legacy::plaintext::{emit_answer, parse_answer, parse_timestamp};
use wgpunch_common::legacy::LookupRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(packet) = parse_from_client(data) {
        let mut again = Vec::new();
        packet.emit(&mut again);
        assert_eq!(
            again, data,
            "non-canonical client datagram accepted: {packet:?}"
        );
    }
    if let Ok(packet) = parse_from_server(data) {
        let mut again = Vec::new();
        packet.emit(&mut again);
        assert_eq!(
            again, data,
            "non-canonical server datagram accepted: {packet:?}"
        );
    }
    if let Ok(request) = LookupRequest::parse(data) {
        assert_eq!(request.emit().as_slice(), data);
    }
    if let Ok(endpoint) = parse_answer(data) {
        let mut again = Vec::new();
        emit_answer(endpoint, &mut again);
        assert_eq!(again, data);
    }
    if let Ok(timestamp) = parse_timestamp(data) {
        assert_eq!(timestamp.to_be_bytes().as_slice(), data);
    }
});
