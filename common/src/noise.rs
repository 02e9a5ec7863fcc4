//! Noise IK (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) through `snow`, with randomness supplied by the
//! caller so the core stays deterministic under test.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState, StatelessTransportState};

use crate::handshake::HandshakeError;
use crate::keys::{PrivateKey, PublicKey, KEY_LEN};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The prologue both sides mix into the handshake, binding it to this protocol and version.
pub const PROLOGUE: &[u8] = b"wgpunch discovery v2";

/// A seed for the randomness of one handshake (its ephemeral key).
pub type Seed = [u8; 32];

/// Hands snow a ChaCha20 generator seeded by the caller instead of the OS generator.
struct SeededResolver(Seed);

struct SeededRandom(ChaCha20Rng);

impl Random for SeededRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRandom(ChaCha20Rng::from_seed(self.0))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// A `Noise_IK_25519_ChaChaPoly_BLAKE2s` builder with seeded randomness and the given prologue.
fn builder(seed: Seed, prologue: &'static [u8]) -> Result<Builder<'static>, snow::Error> {
    let params = NOISE_PARAMS.parse()?;
    Builder::with_resolver(params, Box::new(SeededResolver(seed))).prologue(prologue)
}

/// Starts the client's side of a handshake with the server whose static key is `server`.
pub fn initiator(
    local: &PrivateKey,
    server: &PublicKey,
    seed: Seed,
) -> Result<HandshakeState, snow::Error> {
    initiator_with_prologue(local, server, seed, PROLOGUE)
}

/// Starts the server's side of a handshake.
pub fn responder(local: &PrivateKey, seed: Seed) -> Result<HandshakeState, snow::Error> {
    responder_with_prologue(local, seed, PROLOGUE)
}

/// [`initiator`] with another prologue (the natpunch-go compatibility mode uses its own).
pub(crate) fn initiator_with_prologue(
    local: &PrivateKey,
    server: &PublicKey,
    seed: Seed,
    prologue: &'static [u8],
) -> Result<HandshakeState, snow::Error> {
    builder(seed, prologue)?
        .local_private_key(local.as_bytes())?
        .remote_public_key(server.as_bytes())?
        .build_initiator()
}

/// [`responder`] with another prologue (the natpunch-go compatibility mode uses its own).
pub(crate) fn responder_with_prologue(
    local: &PrivateKey,
    seed: Seed,
    prologue: &'static [u8],
) -> Result<HandshakeState, snow::Error> {
    builder(seed, prologue)?
        .local_private_key(local.as_bytes())?
        .build_responder()
}

/// Writes the next handshake message, carrying `payload`, which must come out exactly `N` bytes
/// long (the protocols' framing has a fixed size for each message).
pub(crate) fn write_handshake<const N: usize>(
    state: &mut HandshakeState,
    payload: &[u8],
) -> Result<[u8; N], HandshakeError> {
    let mut message = [0u8; N];
    let len = state.write_message(payload, &mut message)?;
    if len != N {
        return Err(HandshakeError::Noise);
    }
    Ok(message)
}

/// The responder writes the response (IK message 2), `N` bytes with no payload, which ends the
/// handshake, and moves on to transport.
pub(crate) fn write_response<const N: usize>(
    mut state: HandshakeState,
) -> Result<([u8; N], StatelessTransportState), HandshakeError> {
    let message = write_handshake::<N>(&mut state, &[])?;
    Ok((message, state.into_stateless_transport_mode()?))
}

/// The responder reads the initiation (IK message 1): the payload (`parse` must accept it; it is
/// at most `N - 1` bytes, or Noise refuses the message) and the initiator's static key, which the
/// message has now authenticated.
pub(crate) fn read_initiation<T, const N: usize>(
    state: &mut HandshakeState,
    message: &[u8],
    parse: impl FnOnce(&[u8]) -> Option<T>,
) -> Result<(T, PublicKey), HandshakeError> {
    let mut payload = [0u8; N];
    let len = state.read_message(message, &mut payload)?;
    let value = payload
        .get(..len)
        .and_then(parse)
        .ok_or(HandshakeError::Payload)?;
    let client: [u8; KEY_LEN] = state
        .get_remote_static()
        .and_then(|s| s.try_into().ok())
        .ok_or(HandshakeError::Noise)?;
    Ok((value, PublicKey(client)))
}

/// The initiator reads the response (IK message 2), which carries no payload and ends the
/// handshake, and moves on to transport.
pub(crate) fn read_response(
    mut state: HandshakeState,
    message: &[u8],
) -> Result<StatelessTransportState, HandshakeError> {
    let mut payload = [0u8; 0];
    let len = state.read_message(message, &mut payload)?;
    if len != 0 || !state.is_handshake_finished() {
        return Err(HandshakeError::Payload);
    }
    Ok(state.into_stateless_transport_mode()?)
}

/// A seeded source of the core's random numbers: session indexes, request ids, handshake seeds.
#[derive(Debug, Clone)]
pub struct Rng(ChaCha20Rng);

impl Rng {
    /// A generator seeded with 32 bytes the IO layer took from the OS (or a test fixed).
    pub fn from_seed(seed: Seed) -> Self {
        Self(ChaCha20Rng::from_seed(seed))
    }

    /// A random `u32`.
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// A random `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A fresh seed for one handshake.
    pub fn seed(&mut self) -> Seed {
        let mut seed = [0u8; 32];
        self.0.fill_bytes(&mut seed);
        seed
    }
}
