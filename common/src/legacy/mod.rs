//! natpunch-go's wire protocol, for the compatibility mode: its four datagrams, their plaintexts,
//! its Noise IK handshake (same pattern as wgpunch's, with natpunch-go's prologue) and its
//! transport encryption with explicit nonces and an anti-replay window.
//!
//! This is natpunch-go's format, not one this project chose: no mac1, no cookies, no request ids,
//! IPv4-only answers. `docs/PROTOCOL.md` ("natpunch-go compatibility") lists every byte.
//!
//! - [`packet`]: checked `parse_from_client` / `parse_from_server` and `emit` of the datagrams.
//!   The answer shares type byte 3 with the lookup, so parsing is direction-specific.
//! - [`plaintext`]: the handshake timestamp, the lookup's two keys and the answer's endpoint.
//! - [`handshake`]: both sides of the Noise IK handshake, with seeded randomness.
//! - [`session`]: transport encryption of lookups and answers.

pub mod client;
pub mod handshake;
pub mod packet;
pub mod plaintext;
pub mod session;

pub use handshake::{Accepted, Initiation};
pub use packet::{Answer, FromClient, FromServer, HandshakeInit, HandshakeResponse, Lookup};
pub use plaintext::LookupRequest;
pub use session::LegacySession;

/// The prologue natpunch-go mixes into its handshake (26 ASCII bytes).
pub const PROLOGUE: &[u8] = b"natpunch-go is the best :)";

const _: () = assert!(PROLOGUE.len() == 26);
