//! Codecs for every byte the protocol puts on the wire.

pub mod candidates;
pub mod endpoint;
pub mod message;
pub mod observe;
pub mod packet;
pub mod probe;
pub mod reader;

pub use candidates::{CandidatesReply, CandidatesRequest};
pub use message::{
    Lookup, LookupReply, Push, PushAck, Register, RegisterAck, Reply, Request, Sighting,
};
pub use observe::{ObserveReply, ObserveRequest};
pub use packet::{CookieReply, HandshakeInit, HandshakeResponse, Packet, Transport};

/// Why bytes were not accepted as a protocol message. Bad input is dropped, never answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the message's fields need.
    #[error("message truncated")]
    Truncated,
    /// The length does not match what the type and counts require.
    #[error("wrong message length")]
    Length,
    /// The type or kind byte is not one this protocol defines.
    #[error("unknown message type")]
    UnknownType,
    /// A reserved or padding byte is not zero.
    #[error("reserved bytes are not zero")]
    Reserved,
    /// A field holds a value outside its allowed range.
    #[error("field out of range")]
    Field,
}

/// Checks that what is left in `r` is exactly `len` zero bytes: a request's padding.
fn zero_padding(r: &mut reader::Reader<'_>, len: usize) -> Result<(), WireError> {
    let rest = r.take_rest();
    if rest.len() != len {
        return Err(WireError::Length);
    }
    if rest.iter().any(|&b| b != 0) {
        return Err(WireError::Reserved);
    }
    Ok(())
}
