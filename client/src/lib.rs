//! The wgpunch client: reads a WireGuard interface, registers with the discovery server from the
//! WireGuard listen port through raw sockets, and sets the endpoints of the peers it finds.

pub mod addrs;
pub mod bpf;
pub mod cli;
pub mod iface;
pub mod packet;
pub mod privileges;
pub mod probes;
pub mod raw;
pub mod run;
pub mod sys;
pub mod watch;
