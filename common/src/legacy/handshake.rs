//! natpunch-go's handshake: Noise IK with its prologue, the client's timestamp as the only payload.
//!
//! The client sends message 1 framed with an index it chose; the server answers with message 2
//! framed with the index lookups must carry. Unlike wgpunch's own handshake there is no mac1 and
//! the response does not echo the client's index.

use snow::HandshakeState;

use crate::handshake::HandshakeError;
use crate::keys::{PrivateKey, PublicKey};
use crate::noise::{self, Seed};

use super::packet::{HandshakeInit, HandshakeResponse, NOISE_INIT_LEN, NOISE_RESPONSE_LEN};
use super::plaintext::{emit_timestamp, parse_timestamp, TIMESTAMP_LEN};
use super::session::LegacySession;
use super::PROLOGUE;

/// The Noise IK initiator natpunch-go's client uses, with randomness from `seed`.
pub fn initiator(
    local: &PrivateKey,
    server: &PublicKey,
    seed: Seed,
) -> Result<HandshakeState, snow::Error> {
    noise::initiator_with_prologue(local, server, seed, PROLOGUE)
}

/// The Noise IK responder natpunch-go's server uses, with randomness from `seed`.
pub fn responder(local: &PrivateKey, seed: Seed) -> Result<HandshakeState, snow::Error> {
    noise::responder_with_prologue(local, seed, PROLOGUE)
}

/// The client's half-finished handshake, waiting for the server's response.
pub struct Initiation {
    state: HandshakeState,
    /// The index proposed in the initiation.
    pub index: u32,
    /// The timestamp sent.
    pub timestamp: u64,
}

impl std::fmt::Debug for Initiation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiation")
            .field("index", &self.index)
            .field("timestamp", &self.timestamp)
            .finish_non_exhaustive()
    }
}

impl Initiation {
    /// Builds an initiation to `server` proposing `index`, and its datagram.
    pub fn start(
        local: &PrivateKey,
        server: &PublicKey,
        index: u32,
        timestamp: u64,
        seed: Seed,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut state = initiator(local, server, seed)?;
        let noise =
            noise::write_handshake::<NOISE_INIT_LEN>(&mut state, &emit_timestamp(timestamp))?;
        let mut datagram = Vec::new();
        HandshakeInit { index, noise }.emit(&mut datagram);
        Ok((
            Self {
                state,
                index,
                timestamp,
            },
            datagram,
        ))
    }

    /// Reads the server's response and returns the session, which uses the response's index.
    pub fn complete(self, response: &HandshakeResponse) -> Result<LegacySession, HandshakeError> {
        let transport = noise::read_response(self.state, &response.noise)?;
        Ok(LegacySession::new(transport, response.index))
    }
}

/// An initiation the server has authenticated, before it decides whether to answer.
pub struct Accepted {
    state: HandshakeState,
    /// The client's static key (its WireGuard public key), now proven.
    pub client: PublicKey,
    /// The client's timestamp, nanoseconds since the Unix epoch.
    pub timestamp: u64,
    /// The index the client proposed.
    pub index: u32,
}

impl std::fmt::Debug for Accepted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accepted")
            .field("client", &self.client)
            .field("timestamp", &self.timestamp)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Accepted {
    /// Reads an initiation with the server's static key.
    pub fn read(
        local: &PrivateKey,
        init: &HandshakeInit,
        seed: Seed,
    ) -> Result<Self, HandshakeError> {
        let mut state = responder(local, seed)?;
        let (timestamp, client) =
            noise::read_initiation::<_, { TIMESTAMP_LEN + 1 }>(&mut state, &init.noise, |p| {
                parse_timestamp(p).ok()
            })?;
        Ok(Self {
            state,
            client,
            timestamp,
            index: init.index,
        })
    }

    /// Answers the initiation with session index `index` (the client's own unless taken).
    pub fn respond(self, index: u32) -> Result<(LegacySession, Vec<u8>), HandshakeError> {
        let (noise, transport) = noise::write_response::<NOISE_RESPONSE_LEN>(self.state)?;
        let mut datagram = Vec::new();
        HandshakeResponse { index, noise }.emit(&mut datagram);
        Ok((LegacySession::new(transport, index), datagram))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::legacy::packet::{parse_from_client, parse_from_server, FromClient, FromServer};
    use crate::legacy::plaintext::LookupRequest;
    use crate::session::SessionError;
    use proptest::prelude::*;

    fn keys() -> (PrivateKey, PrivateKey) {
        (
            PrivateKey::from_bytes([1; 32]),
            PrivateKey::from_bytes([2; 32]),
        )
    }

    /// Runs a whole handshake; returns the client's and the server's sessions.
    fn pair(index: u32, timestamp: u64) -> (LegacySession, LegacySession, Accepted) {
        let (client, server) = keys();
        let (pending, datagram) =
            Initiation::start(&client, &server.public_key(), index, timestamp, [3; 32]).unwrap();
        let Ok(FromClient::HandshakeInit(init)) = parse_from_client(&datagram) else {
            panic!("not an initiation")
        };
        let accepted = Accepted::read(&server, &init, [4; 32]).unwrap();
        let seen = Accepted::read(&server, &init, [4; 32]).unwrap();
        let (server_session, response) = accepted.respond(index ^ 1).unwrap();
        let Ok(FromServer::HandshakeResponse(response)) = parse_from_server(&response) else {
            panic!("not a response")
        };
        let client_session = pending.complete(&response).unwrap();
        (client_session, server_session, seen)
    }

    #[test]
    fn server_learns_key_timestamp_and_index() {
        let (client, server, accepted) = pair(77, 123_456);
        assert_eq!(accepted.client, keys().0.public_key());
        assert_eq!(accepted.timestamp, 123_456);
        assert_eq!(accepted.index, 77);
        assert_eq!(client.index, 76, "the client uses the server's index");
        assert_eq!(server.index, 76);
    }

    #[test]
    fn lookups_and_answers_cross_and_replays_are_refused() {
        let (mut client, mut server, _) = pair(5, 1);
        let request = LookupRequest {
            client: keys().0.public_key(),
            target: PublicKey([9; 32]),
        };
        let datagram = client.seal_lookup(&request).unwrap();
        let Ok(FromClient::Lookup(lookup)) = parse_from_client(&datagram) else {
            panic!("not a lookup")
        };
        assert_eq!((lookup.index, lookup.nonce), (5 ^ 1, 0));
        assert_eq!(server.open_lookup(&lookup), Ok(request));
        assert_eq!(server.open_lookup(&lookup), Err(SessionError::Replay));

        for endpoint in [None, Some("198.51.100.4:4000".parse().unwrap())] {
            let answer = server.seal_answer(endpoint).unwrap();
            let Ok(FromServer::Answer(answer)) = parse_from_server(&answer) else {
                panic!("not an answer")
            };
            assert_eq!(client.open_answer(&answer), Ok(endpoint));
            assert_eq!(client.open_answer(&answer), Err(SessionError::Replay));
        }
    }

    #[test]
    fn forged_lookups_do_not_move_the_window() {
        let (mut client, mut server, _) = pair(5, 1);
        let request = LookupRequest {
            client: PublicKey([1; 32]),
            target: PublicKey([2; 32]),
        };
        let datagram = client.seal_lookup(&request).unwrap();
        let Ok(FromClient::Lookup(good)) = parse_from_client(&datagram) else {
            panic!()
        };
        let mut forged = good.clone();
        forged.ciphertext[0] ^= 1;
        assert_eq!(server.open_lookup(&forged), Err(SessionError::Decrypt));
        let mut later = good.clone();
        later.nonce = 1000;
        assert_eq!(server.open_lookup(&later), Err(SessionError::Decrypt));
        assert_eq!(server.open_lookup(&good), Ok(request));
    }

    #[test]
    fn an_initiation_for_another_server_or_prologue_is_rejected() {
        let (client, server) = keys();
        let (_, datagram) =
            Initiation::start(&client, &server.public_key(), 1, 2, [3; 32]).unwrap();
        let Ok(FromClient::HandshakeInit(init)) = parse_from_client(&datagram) else {
            panic!()
        };
        let other = PrivateKey::from_bytes([5; 32]);
        assert_eq!(
            Accepted::read(&other, &init, [4; 32]).unwrap_err(),
            HandshakeError::Noise
        );
        // wgpunch's own responder uses another prologue and must not accept it either.
        let mut native = crate::noise::responder(&server, [4; 32]).unwrap();
        let mut out = [0u8; 64];
        assert!(native.read_message(&init.noise, &mut out).is_err());
    }

    proptest! {
        #[test]
        fn any_index_and_timestamp_survive_the_handshake(index: u32, timestamp: u64) {
            let (client, _, accepted) = pair(index, timestamp);
            prop_assert_eq!(accepted.timestamp, timestamp);
            prop_assert_eq!(accepted.index, index);
            prop_assert_eq!(client.index, index ^ 1);
        }
    }
}
