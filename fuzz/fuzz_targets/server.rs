//! The discovery server's whole datagram handling, fed by a real client, input-driven puppet
//! clients with real keys, and raw or corrupted bytes; the server never amplifies. See
//! `wgpunch_fuzz::server_sim` for the input format and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgpunch_fuzz::server_sim::run(data);
});
