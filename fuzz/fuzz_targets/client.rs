//! The client's whole datagram handling, answered by a real server and an input-driven puppet
//! server, with lost, replayed, corrupted and raw datagrams in between. See
//! `wgpunch_fuzz::client_sim` for the input format and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgpunch_fuzz::client_sim::run(data);
});
