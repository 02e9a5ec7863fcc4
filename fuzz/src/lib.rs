//! Harnesses for wgpunch's fuzz targets: the operation scripts and simulated peers that drive the
//! client and server state machines, shared by the targets in `fuzz_targets/` and by the seed
//! corpus writer in `src/bin/seed_corpus.rs`.
//!
//! Run the targets with `scripts/fuzz`; each target's file says what it checks.

#![forbid(unsafe_code)]

pub mod agent_sim;
pub mod client_sim;
pub mod input;
pub mod legacy_client_sim;
pub mod peers_sim;
pub mod server_sim;
pub mod world;
