//! The client's per-peer state machine under any sequence of interface snapshots, server answers
//! and clock steps. See `wgpunch_fuzz::peers_sim` for the input format and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgpunch_fuzz::peers_sim::run(data);
});
