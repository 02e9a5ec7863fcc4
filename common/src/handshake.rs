//! The two handshake messages: building and reading them on either side.
//!
//! The client sends Noise IK message 1 carrying its 8-byte timestamp, framed with its session index
//! and mac1; the server answers with message 2 carrying its own index. Both then hold a [`Session`].

use std::time::{SystemTime, UNIX_EPOCH};

use snow::HandshakeState;

use crate::cookie::{self, Cookie};
use crate::keys::{PrivateKey, PublicKey};
use crate::mac::Mac1Key;
use crate::noise::{self, Seed};
use crate::session::Session;
use crate::wire::packet::{
    HandshakeInit, HandshakeResponse, MAC1_OFFSET, MAC_LEN, NOISE_INIT_LEN, NOISE_RESPONSE_LEN,
};

/// Length of the timestamp carried in the initiation's payload.
pub const TIMESTAMP_LEN: usize = 8;

/// Why a handshake message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Noise rejected the message: wrong key, forged or corrupted bytes.
    #[error("noise handshake message rejected")]
    Noise,
    /// The payload is not what the protocol puts there.
    #[error("unexpected handshake payload")]
    Payload,
    /// The response does not answer our initiation.
    #[error("response for another initiation")]
    WrongIndex,
}

impl From<snow::Error> for HandshakeError {
    fn from(_: snow::Error) -> Self {
        HandshakeError::Noise
    }
}

/// Nanoseconds since the Unix epoch (0 for clocks set before 1970), the initiation timestamp.
pub fn unix_nanos(wall: SystemTime) -> u64 {
    wall.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The client's half-finished handshake, waiting for the server's response.
pub struct Initiation {
    state: HandshakeState,
    /// The index the response must echo.
    pub sender_index: u32,
    /// The timestamp sent.
    pub timestamp: u64,
    /// The mac1 sent: a cookie reply to this initiation is bound to it.
    pub mac1: [u8; MAC_LEN],
}

impl std::fmt::Debug for Initiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiation")
            .field("sender_index", &self.sender_index)
            .finish_non_exhaustive()
    }
}

impl Initiation {
    /// Builds an initiation to `server` and its datagram.
    pub fn start(
        local: &PrivateKey,
        server: &PublicKey,
        sender_index: u32,
        timestamp: u64,
        seed: Seed,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        Self::start_with_cookie(local, server, sender_index, timestamp, seed, None)
    }

    /// Like [`Initiation::start`], with mac2 made from the server's `cookie` when there is one.
    pub fn start_with_cookie(
        local: &PrivateKey,
        server: &PublicKey,
        sender_index: u32,
        timestamp: u64,
        seed: Seed,
        cookie: Option<&Cookie>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut state = noise::initiator(local, server, seed)?;
        let noise = noise::write_handshake::<NOISE_INIT_LEN>(&mut state, &timestamp.to_be_bytes())?;
        let mut message = HandshakeInit {
            sender_index,
            noise,
            mac1: [0; MAC_LEN],
            mac2: [0; MAC_LEN],
        };
        let mut datagram = Vec::new();
        message.emit(&mut datagram);
        message.mac1 =
            Mac1Key::for_server(server).compute(datagram.get(..MAC1_OFFSET).unwrap_or_default());
        if let Some(cookie) = cookie {
            datagram.clear();
            message.emit(&mut datagram);
            message.mac2 = cookie::mac2(cookie, &datagram);
        }
        datagram.clear();
        message.emit(&mut datagram);
        let mac1 = message.mac1;
        Ok((
            Self {
                state,
                sender_index,
                timestamp,
                mac1,
            },
            datagram,
        ))
    }

    /// Reads the server's response and returns the established session.
    pub fn complete(self, response: &HandshakeResponse) -> Result<Session, HandshakeError> {
        if response.receiver_index != self.sender_index {
            return Err(HandshakeError::WrongIndex);
        }
        let transport = noise::read_response(self.state, &response.noise)?;
        Ok(Session::new(
            transport,
            self.sender_index,
            response.sender_index,
        ))
    }
}

/// An initiation the server has authenticated, before it decides whether to answer.
pub struct Accepted {
    state: HandshakeState,
    /// The client's static key: its WireGuard public key, now proven.
    pub client: PublicKey,
    /// The client's timestamp, to check for freshness and replay.
    pub timestamp: u64,
    /// The client's session index.
    pub sender_index: u32,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("client", &self.client)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl Accepted {
    /// Reads an initiation (whose mac1 the caller has checked) with the server's static key.
    pub fn read(
        local: &PrivateKey,
        init: &HandshakeInit,
        seed: Seed,
    ) -> Result<Self, HandshakeError> {
        let mut state = noise::responder(local, seed)?;
        let (timestamp, client) =
            noise::read_initiation::<_, { TIMESTAMP_LEN + 1 }>(&mut state, &init.noise, |p| {
                <[u8; TIMESTAMP_LEN]>::try_from(p)
                    .ok()
                    .map(u64::from_be_bytes)
            })?;
        Ok(Self {
            state,
            client,
            timestamp,
            sender_index: init.sender_index,
        })
    }

    /// Answers the initiation, giving the session the server-side index `local_index`.
    pub fn respond(self, local_index: u32) -> Result<(Session, Vec<u8>), HandshakeError> {
        let (noise, transport) = noise::write_response::<NOISE_RESPONSE_LEN>(self.state)?;
        let mut datagram = Vec::new();
        HandshakeResponse {
            sender_index: local_index,
            receiver_index: self.sender_index,
            noise,
        }
        .emit(&mut datagram);
        Ok((
            Session::new(transport, local_index, self.sender_index),
            datagram,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Packet, Transport};

    fn keys() -> (PrivateKey, PrivateKey) {
        (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        )
    }

    fn initiation(
        client: &PrivateKey,
        server: &PrivateKey,
    ) -> (Initiation, HandshakeInit, Vec<u8>) {
        let (pending, datagram) =
            Initiation::start(client, &server.public_key(), 77, 123_456, [3; 32]).unwrap();
        let Ok(Packet::HandshakeInit(init)) = Packet::parse(&datagram) else {
            panic!("not an initiation")
        };
        (pending, init, datagram)
    }

    #[test]
    fn both_sides_agree_on_keys_and_identities() {
        let (client, server) = keys();
        let (pending, init, datagram) = initiation(&client, &server);
        assert!(
            Mac1Key::for_server(&server.public_key()).verify(&datagram[..MAC1_OFFSET], &init.mac1)
        );
        let accepted = Accepted::read(&server, &init, [4; 32]).unwrap();
        assert_eq!(accepted.client, client.public_key());
        assert_eq!(accepted.timestamp, 123_456);
        let (mut server_session, response) = accepted.respond(99).unwrap();
        let Ok(Packet::HandshakeResponse(response)) = Packet::parse(&response) else {
            panic!("not a response")
        };
        let mut client_session = pending.complete(&response).unwrap();
        assert_eq!(client_session.remote_index, 99);

        let mut datagram = Vec::new();
        client_session.seal(b"hello server", &mut datagram).unwrap();
        let Ok(Packet::Transport(message)) = Packet::parse(&datagram) else {
            panic!("not transport")
        };
        assert_eq!(message.receiver_index, 99);
        let mut plain = [0u8; 1200];
        let len = server_session.open(&message, &mut plain).unwrap();
        assert_eq!(&plain[..len], b"hello server");
        assert_eq!(
            server_session.open(&message, &mut plain),
            Err(crate::session::SessionError::Replay)
        );
    }

    #[test]
    fn an_initiation_for_another_server_is_rejected() {
        let (client, server) = keys();
        let (_, init, _) = initiation(&client, &server);
        let other = PrivateKey::from_bytes([5; 32]);
        assert_eq!(
            Accepted::read(&other, &init, [4; 32]).unwrap_err(),
            HandshakeError::Noise
        );
    }

    #[test]
    fn forged_transport_does_not_move_the_window() {
        let (client, server) = keys();
        let (pending, init, _) = initiation(&client, &server);
        let (mut server_session, response) = Accepted::read(&server, &init, [4; 32])
            .unwrap()
            .respond(9)
            .unwrap();
        let Ok(Packet::HandshakeResponse(response)) = Packet::parse(&response) else {
            panic!()
        };
        let mut client_session = pending.complete(&response).unwrap();
        let mut datagram = Vec::new();
        client_session.seal(&[0u8; 32], &mut datagram).unwrap();
        let Ok(Packet::Transport(good)) = Packet::parse(&datagram) else {
            panic!()
        };
        let forged_bytes = vec![0xAA; good.ciphertext.len()];
        let forged = Transport {
            ciphertext: &forged_bytes,
            ..good
        };
        let mut plain = [0u8; 1200];
        assert_eq!(
            server_session.open(&forged, &mut plain),
            Err(crate::session::SessionError::Decrypt)
        );
        assert!(
            server_session.open(&good, &mut plain).is_ok(),
            "the real message with the same counter still opens"
        );
    }

    #[test]
    fn a_response_to_another_initiation_is_rejected() {
        let (client, server) = keys();
        let (pending, init, _) = initiation(&client, &server);
        let (_, response) = Accepted::read(&server, &init, [4; 32])
            .unwrap()
            .respond(9)
            .unwrap();
        let Ok(Packet::HandshakeResponse(mut response)) = Packet::parse(&response) else {
            panic!()
        };
        response.receiver_index ^= 1;
        assert_eq!(
            pending.complete(&response).unwrap_err(),
            HandshakeError::WrongIndex
        );
    }
}
