//! Golden natpunch-go packets: every message type built byte by byte by an independent
//! implementation here (snow used directly, with the documented prologue, fixed static keys and
//! fixed ephemeral keys, and the layouts of `docs/PROTOCOL.md` written out by hand), compared
//! with what `wgpunch_common::legacy` emits, and read back by it. The initiation is also pinned
//! as hex, so a change in any layer shows up here.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::{Builder, HandshakeState, StatelessTransportState};

use wgpunch_common::keys::{PrivateKey, PublicKey};
use wgpunch_common::legacy::packet::{parse_from_client, parse_from_server};
use wgpunch_common::legacy::{self, FromClient, FromServer, LookupRequest};

const PROLOGUE: &[u8] = b"natpunch-go is the best :)";
const PARAMS: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
const CLIENT_SEED: [u8; 32] = [0x11; 32];
const SERVER_SEED: [u8; 32] = [0x22; 32];
const INDEX: u32 = 0xdead_beef;
const SERVER_INDEX: u32 = 0x0102_0304;
const TIMESTAMP: u64 = 1_700_000_000_123_456_789;

fn client_key() -> PrivateKey {
    PrivateKey::from_bytes([0x41; 32])
}

fn server_key() -> PrivateKey {
    PrivateKey::from_bytes([0x42; 32])
}

fn target() -> PublicKey {
    PrivateKey::from_bytes([0x43; 32]).public_key()
}

/// The ephemeral private key a handshake seed gives: the first 32 bytes of ChaCha20 keyed by it
/// (the only randomness a Noise IK party draws).
fn ephemeral(seed: [u8; 32]) -> [u8; 32] {
    let mut e = [0u8; 32];
    ChaCha20Rng::from_seed(seed).fill_bytes(&mut e);
    e
}

/// The independent implementation: natpunch-go's bytes from snow and the documented layouts.
struct Independent {
    initiation: Vec<u8>,
    response: Vec<u8>,
    lookup: Vec<u8>,
    answer_empty: Vec<u8>,
    answer_found: Vec<u8>,
    client: StatelessTransportState,
    server: StatelessTransportState,
}

fn snow_initiator() -> HandshakeState {
    let e = ephemeral(CLIENT_SEED);
    let s = *client_key().as_bytes();
    let rs = *server_key().public_key().as_bytes();
    Builder::new(PARAMS.parse().unwrap())
        .prologue(PROLOGUE)
        .unwrap()
        .local_private_key(&s)
        .unwrap()
        .remote_public_key(&rs)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&e)
        .build_initiator()
        .unwrap()
}

fn snow_responder() -> HandshakeState {
    let e = ephemeral(SERVER_SEED);
    let s = *server_key().as_bytes();
    Builder::new(PARAMS.parse().unwrap())
        .prologue(PROLOGUE)
        .unwrap()
        .local_private_key(&s)
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(&e)
        .build_responder()
        .unwrap()
}

fn independent() -> Independent {
    let mut initiator = snow_initiator();
    let mut responder = snow_responder();
    let mut buf = [0u8; 256];

    let n = initiator
        .write_message(&TIMESTAMP.to_be_bytes(), &mut buf)
        .unwrap();
    assert_eq!(n, 104);
    let mut initiation = vec![0x01];
    initiation.extend_from_slice(&INDEX.to_be_bytes());
    initiation.extend_from_slice(&buf[..n]);

    let mut payload = [0u8; 64];
    let p = responder.read_message(&buf[..n], &mut payload).unwrap();
    assert_eq!(&payload[..p], &TIMESTAMP.to_be_bytes());
    let n = responder.write_message(&[], &mut buf).unwrap();
    assert_eq!(n, 48);
    let mut response = vec![0x02];
    response.extend_from_slice(&SERVER_INDEX.to_be_bytes());
    response.extend_from_slice(&buf[..n]);
    initiator.read_message(&buf[..n], &mut payload).unwrap();

    let client = initiator.into_stateless_transport_mode().unwrap();
    let server = responder.into_stateless_transport_mode().unwrap();

    let mut plain = Vec::new();
    plain.extend_from_slice(client_key().public_key().as_bytes());
    plain.extend_from_slice(target().as_bytes());
    let n = client.write_message(0, &plain, &mut buf).unwrap();
    assert_eq!(n, 80);
    let mut lookup = vec![0x03];
    lookup.extend_from_slice(&SERVER_INDEX.to_be_bytes());
    lookup.extend_from_slice(&0u64.to_be_bytes());
    lookup.extend_from_slice(&buf[..n]);

    let n = server.write_message(0, &[], &mut buf).unwrap();
    let mut answer_empty = vec![0x03];
    answer_empty.extend_from_slice(&0u64.to_be_bytes());
    answer_empty.extend_from_slice(&buf[..n]);

    let n = server
        .write_message(1, &[198, 51, 100, 9, 0xca, 0x6c], &mut buf)
        .unwrap();
    let mut answer_found = vec![0x03];
    answer_found.extend_from_slice(&1u64.to_be_bytes());
    answer_found.extend_from_slice(&buf[..n]);

    Independent {
        initiation,
        response,
        lookup,
        answer_empty,
        answer_found,
        client,
        server,
    }
}

/// This crate's initiation with the same keys, index, timestamp and seed as the independent one.
fn our_initiation() -> (legacy::Initiation, Vec<u8>) {
    legacy::Initiation::start(
        &client_key(),
        &server_key().public_key(),
        INDEX,
        TIMESTAMP,
        CLIENT_SEED,
    )
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn every_packet_is_byte_identical_to_the_independent_one() {
    let golden = independent();
    assert_eq!(golden.initiation.len(), 109);
    assert_eq!(golden.response.len(), 53);
    assert_eq!(golden.lookup.len(), 93);
    assert_eq!(golden.answer_empty.len(), 25);
    assert_eq!(golden.answer_found.len(), 31);

    let (pending, initiation) = our_initiation();
    assert_eq!(hex(&initiation), hex(&golden.initiation), "initiation");

    let Ok(FromClient::HandshakeInit(init)) = parse_from_client(&initiation) else {
        panic!("initiation does not parse")
    };
    let accepted = legacy::Accepted::read(&server_key(), &init, SERVER_SEED).unwrap();
    assert_eq!(accepted.client, client_key().public_key());
    assert_eq!(accepted.timestamp, TIMESTAMP);
    assert_eq!(accepted.index, INDEX);
    let (mut server, response) = accepted.respond(SERVER_INDEX).unwrap();
    assert_eq!(hex(&response), hex(&golden.response), "response");

    let Ok(FromServer::HandshakeResponse(response)) = parse_from_server(&response) else {
        panic!("response does not parse")
    };
    let mut client = pending.complete(&response).unwrap();
    let request = LookupRequest {
        client: client_key().public_key(),
        target: target(),
    };
    let lookup = client.seal_lookup(&request).unwrap();
    assert_eq!(hex(&lookup), hex(&golden.lookup), "lookup");

    let Ok(FromClient::Lookup(lookup)) = parse_from_client(&lookup) else {
        panic!("lookup does not parse")
    };
    assert_eq!(server.open_lookup(&lookup), Ok(request));
    let empty = server.seal_answer(None).unwrap();
    assert_eq!(hex(&empty), hex(&golden.answer_empty), "empty answer");
    let found = server
        .seal_answer(Some("198.51.100.9:51820".parse().unwrap()))
        .unwrap();
    assert_eq!(hex(&found), hex(&golden.answer_found), "found answer");
}

#[test]
fn the_codec_reads_the_independent_packets() {
    let golden = independent();
    let Ok(FromServer::HandshakeResponse(response)) = parse_from_server(&golden.response) else {
        panic!("response does not parse")
    };
    let (pending, _) = our_initiation();
    let mut client = pending.complete(&response).unwrap();
    assert_eq!(client.index, SERVER_INDEX);
    for (bytes, expected) in [
        (&golden.answer_empty, None),
        (
            &golden.answer_found,
            Some("198.51.100.9:51820".parse().unwrap()),
        ),
    ] {
        let Ok(FromServer::Answer(answer)) = parse_from_server(bytes) else {
            panic!("answer does not parse")
        };
        assert_eq!(client.open_answer(&answer), Ok(expected));
    }

    // The independent transports also agree with each other the documented way round: the
    // initiator's sending key is the responder's receiving key.
    let mut buf = [0u8; 64];
    let n = golden
        .server
        .read_message(0, &golden.lookup[13..], &mut buf)
        .unwrap();
    assert_eq!(&buf[..32], client_key().public_key().as_bytes());
    assert_eq!(n, 64);
    assert!(golden
        .client
        .read_message(0, &golden.lookup[13..], &mut buf)
        .is_err());
}

#[test]
fn the_initiation_is_pinned() {
    // Written out once from the independent implementation above; any change to the prologue,
    // the layout, the seeded ephemeral or the keys changes it.
    let golden = independent();
    assert_eq!(hex(&golden.initiation[..5]), "01deadbeef");
    assert_eq!(hex(&golden.initiation), PINNED_INITIATION);
}

const PINNED_INITIATION: &str = concat!(
    "01deadbeef20681f1ee31dfc240d0b0e9c48c2a30ab8e496248270d8f1ede02007ef1a3f5c94b0ea6a3ed7100880",
    "71a1459e4fb217679d3b1be1e682bccadbc9b76749c9c3b53289208e96c889eea6a4410cb8f741130b5e6fe3b2128c",
    "89371109f2f1ca9f1f200c48fbdceef4"
);

#[test]
fn the_protocol_document_describes_these_packets() {
    use wgpunch_common::legacy::packet::*;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    let doc = std::fs::read_to_string(path).expect("docs/PROTOCOL.md exists");
    let prologue = std::str::from_utf8(legacy::PROLOGUE).unwrap();
    for line in [
        format!("| `{TYPE_INITIATION}` | handshake initiation | client → server | type · index u32 · Noise message 1 ({NOISE_INIT_LEN}) | {INITIATION_LEN} |"),
        format!("| `{TYPE_RESPONSE}` | handshake response | server → client | type · index u32 · Noise message 2 ({NOISE_RESPONSE_LEN}) | {RESPONSE_LEN} |"),
        format!("| `{TYPE_LOOKUP}` | lookup | client → server | type · index u32 · nonce u64 · ciphertext {LOOKUP_PLAINTEXT_LEN} + tag {TAG_LEN} | {LOOKUP_LEN} |"),
        format!("| `{TYPE_ANSWER}` | answer | server → client | type · nonce u64 · ciphertext 0 or {ANSWER_ENDPOINT_LEN} + tag {TAG_LEN} | {ANSWER_EMPTY_LEN} or {ANSWER_FOUND_LEN} |"),
        format!("| prologue | the {} ASCII bytes `{prologue}` |", prologue.len()),
    ] {
        assert!(doc.contains(&line), "docs/PROTOCOL.md should contain:\n{line}");
    }
}
