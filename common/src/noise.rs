//! Noise IK (`Noise_IK_25519_ChaChaPoly_BLAKE2s`) through `snow`, with randomness supplied by the
//! caller so the core stays deterministic under test.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};

use crate::keys::{PrivateKey, PublicKey};

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The prologue both sides mix into the handshake, binding it to this protocol and version.
pub const PROLOGUE: &[u8] = b"wgpunch discovery v1";

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

fn builder(seed: Seed) -> Result<Builder<'static>, snow::Error> {
    builder_with_prologue(seed, PROLOGUE)
}

/// A `Noise_IK_25519_ChaChaPoly_BLAKE2s` builder with seeded randomness and the given prologue
/// (the natpunch-go compatibility mode uses its own).
pub(crate) fn builder_with_prologue(
    seed: Seed,
    prologue: &'static [u8],
) -> Result<Builder<'static>, snow::Error> {
    let params = NOISE_PARAMS.parse()?;
    Builder::with_resolver(params, Box::new(SeededResolver(seed))).prologue(prologue)
}

/// Starts the client's side of a handshake with the server whose static key is `server`.
pub fn initiator(
    local: &PrivateKey,
    server: &PublicKey,
    seed: Seed,
) -> Result<HandshakeState, snow::Error> {
    builder(seed)?
        .local_private_key(local.as_bytes())?
        .remote_public_key(server.as_bytes())?
        .build_initiator()
}

/// Starts the server's side of a handshake.
pub fn responder(local: &PrivateKey, seed: Seed) -> Result<HandshakeState, snow::Error> {
    builder(seed)?
        .local_private_key(local.as_bytes())?
        .build_responder()
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
