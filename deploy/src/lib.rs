//! Deployment helpers: man pages and shell completions generated from the client's and server's
//! clap definitions ([`docs`]), and a reader for the systemd units the project ships ([`unit`]),
//! which the tests use to hold the units to the binaries' real command lines.

pub mod docs;
pub mod unit;
