//! The wgpunch discovery server: an unprivileged UDP service that records where each
//! authenticated WireGuard key is and tells consenting peers.

pub mod allowed;
pub mod cli;
pub mod keyfile;
pub mod serve;
