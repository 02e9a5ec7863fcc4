//! The sans-IO core of wgpunch: keys, wire codecs, Noise sessions and the client's and server's
//! protocol state machines. Nothing here touches sockets, clocks or OS randomness: time and random
//! seeds come in as arguments, datagrams go out as return values.

pub mod addr;
pub mod agent;
mod backoff;
pub mod client;
pub mod cookie;
pub mod handshake;
pub mod keys;
pub mod legacy;
pub mod mac;
pub mod mapping;
pub mod noise;
pub mod replay;
pub mod server;
pub mod session;
pub mod wire;
