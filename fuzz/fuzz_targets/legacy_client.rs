//! The natpunch-go client's whole datagram handling against a puppet natpunch-go server the input
//! drives. See `wgpunch_fuzz::legacy_client_sim` for the input format and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgpunch_fuzz::legacy_client_sim::run(data);
});
