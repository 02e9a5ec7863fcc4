//! The client's whole decision core against a real server and peer, under lost, replayed,
//! corrupted and invented datagrams, interface changes and clock steps. See
//! `wgpunch_fuzz::agent_sim` for the input format and every check.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    wgpunch_fuzz::agent_sim::run(data);
});
