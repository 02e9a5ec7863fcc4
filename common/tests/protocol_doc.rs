//! `docs/PROTOCOL.md` must describe the code: its tables are checked against the constants here.

use wgpunch_common::agent::probing::{PROBE_BUDGET, PROBE_INTERVAL, PROBE_WAIT};
use wgpunch_common::keys::KEY_LEN;
use wgpunch_common::mac::MAC1_LABEL;
use wgpunch_common::mapping::{MAPPING_INTERVAL, MAPPING_SENDS};
use wgpunch_common::noise::{NOISE_PARAMS, PROLOGUE};
use wgpunch_common::replay::WINDOW_SIZE;
use wgpunch_common::server::{MAX_QUEUED_PUSHES, PUSH_BURST, PUSH_RATE, PUSH_WINDOW};
use wgpunch_common::wire::candidates::*;
use wgpunch_common::wire::endpoint::ENDPOINT_LEN;
use wgpunch_common::wire::message::*;
use wgpunch_common::wire::observe::*;
use wgpunch_common::wire::packet::*;
use wgpunch_common::wire::probe::{PROBE_LEN, PROBE_MAGIC};

fn doc() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md");
    std::fs::read_to_string(path).expect("docs/PROTOCOL.md exists")
}

fn assert_documented(doc: &str, line: &str) {
    assert!(
        doc.contains(line),
        "docs/PROTOCOL.md should contain:\n{line}"
    );
}

#[test]
fn datagram_table_matches_the_code() {
    let doc = doc();
    assert_documented(&doc, &format!("| `0x{TYPE_HANDSHAKE_INIT:02x}` | handshake initiation | client → server | {HANDSHAKE_INIT_LEN} |"));
    assert_documented(&doc, &format!("| `0x{TYPE_HANDSHAKE_RESPONSE:02x}` | handshake response | server → client | {HANDSHAKE_RESPONSE_LEN} |"));
    assert_documented(
        &doc,
        &format!("| `0x{TYPE_COOKIE_REPLY:02x}` | cookie reply"),
    );
    assert_documented(&doc, &format!("| `0x{TYPE_TRANSPORT:02x}` | transport message | both | {TRANSPORT_MIN_LEN} to {TRANSPORT_MAX_LEN} |"));
    assert_documented(
        &doc,
        &format!(
            "| {MAC1_OFFSET} | 16 | mac1 over bytes 0 to {} |",
            MAC1_OFFSET - 1
        ),
    );
    assert_documented(&doc, &format!("| {MAC2_OFFSET} | 16 | mac2"));
    assert_documented(
        &doc,
        &format!("| 8 | {NOISE_INIT_LEN} | Noise IK message 1"),
    );
    assert_documented(
        &doc,
        &format!("| 12 | {NOISE_RESPONSE_LEN} | Noise IK message 2"),
    );
    assert_documented(
        &doc,
        &format!("A plaintext is 8 to {MAX_PLAINTEXT_LEN} bytes"),
    );
    assert_documented(&doc, &format!("window** of {WINDOW_SIZE} counters"));
}

#[test]
fn plaintext_table_matches_the_code() {
    let doc = doc();
    assert_documented(&doc, &format!("| `0x{KIND_REGISTER:02x}` | register | max({REGISTER_HEADER_LEN} + 32·k + {ENDPOINT_LEN}·a, {MIN_REQUEST_LEN}); at most {MAX_PLAINTEXT_LEN} |"));
    assert_documented(
        &doc,
        &format!("| `0x{KIND_REGISTER_ACK:02x}` | register ack | {REGISTER_ACK_LEN} |"),
    );
    assert_documented(&doc, &format!("| `0x{KIND_LOOKUP:02x}` | lookup | {LOOKUP_HEADER_LEN} + 32·k, k from 1 to {MAX_KEYS_PER_LOOKUP} |"));
    assert_documented(&doc, &format!("| `0x{KIND_LOOKUP_REPLY:02x}` | lookup reply | {LOOKUP_REPLY_HEADER_LEN} + {LOOKUP_ENTRY_LEN}·k, k from 1 to {MAX_KEYS_PER_LOOKUP} |"));
    assert_documented(
        &doc,
        &format!("| `0x{KIND_PUSH:02x}` | push | {PUSH_LEN} |"),
    );
    assert_documented(
        &doc,
        &format!(
            "| `0x{KIND_PUSH_ACK:02x}` | push ack | {PUSH_ACK_LEN}, padded to {MIN_REQUEST_LEN} |"
        ),
    );
    assert_documented(
        &doc,
        &format!(
            "its transport\ndatagram is {TRANSPORT_HEADER_LEN} + {PUSH_LEN} + {TAG_LEN} = {PUSH_DATAGRAM_LEN} bytes"
        ),
    );
    assert_documented(
        &doc,
        &format!("| 14 | 2 | flags: bit 0 (`0x{FLAG_WATCH:04x}`) = *watch*"),
    );
    assert_documented(&doc, &format!("| 8 | {KEY_LEN} | the peer's public key |"));
    assert_documented(
        &doc,
        &format!(
            "| {} | {LOOKUP_ENTRY_LEN} | a lookup reply entry",
            PUSH_HEADER_LEN + KEY_LEN
        ),
    );
    assert_documented(&doc, &format!("at least **{MIN_REQUEST_LEN}** bytes"));
    assert_documented(
        &doc,
        &format!("number of local addresses, at most {MAX_LOCAL_ADDRS}"),
    );
    assert_documented(
        &doc,
        &format!("number of peer keys in this part, at most {MAX_KEYS_PER_PART}"),
    );
}

#[test]
fn candidates_and_probes_match_the_code() {
    let doc = doc();
    assert_documented(
        &doc,
        &format!("| `0x{KIND_CANDIDATES:02x}` | candidates | {CANDIDATES_REQUEST_LEN} |"),
    );
    assert_documented(&doc, &format!("| `0x{KIND_CANDIDATES_REPLY:02x}` | candidates reply | {CANDIDATES_REPLY_HEADER_LEN} + {ENDPOINT_LEN}·c, c from 0 to {MAX_CANDIDATES} |"));
    assert_documented(
        &doc,
        &format!("### Candidates (`0x{KIND_CANDIDATES:02x}`, {CANDIDATES_REQUEST_LEN} bytes)"),
    );
    assert_documented(&doc, &format!("| 1 | 1 | flags: bit 0 (`0x{FLAG_KNOWN:02x}`) = *known*, bit 1 (`0x{FLAG_SAME_PUBLIC:02x}`) = *same public*"));
    assert_documented(
        &doc,
        &format!("| 2 | 2 | c: number of candidates, at most {MAX_CANDIDATES} |"),
    );
    assert_documented(
        &doc,
        &format!("A probe is one {PROBE_LEN}-byte UDP payload"),
    );
    let magic: Vec<String> = PROBE_MAGIC.iter().map(|b| format!("{b:02x}")).collect();
    assert_documented(&doc, &format!("| 0 | 4 | magic `{}`", magic.join(" ")));
    assert_documented(
        &doc,
        &format!(
            "every {} ms for up to {} s",
            PROBE_INTERVAL.as_millis(),
            PROBE_WAIT.as_secs_f64()
        ),
    );
    assert_documented(&doc, &format!("one budget of {PROBE_BUDGET} a second"));
}

#[test]
fn the_mapping_check_matches_the_code() {
    let doc = doc();
    assert_documented(
        &doc,
        &format!("| `0x{KIND_OBSERVE:02x}` | observe | {OBSERVE_REQUEST_LEN} |"),
    );
    assert_documented(&doc, &format!("| `0x{KIND_OBSERVE_REPLY:02x}` | observe reply | {OBSERVE_REPLY_HEADER_LEN} + {ENDPOINT_LEN}·n, n from 0 to {MAX_ALTERNATES} |"));
    assert_documented(
        &doc,
        &format!("### Observe (`0x{KIND_OBSERVE:02x}`, {OBSERVE_REQUEST_LEN} bytes)"),
    );
    assert_documented(
        &doc,
        &format!(
            "bit 1 (`0x{:04x}`) = *hard NAT*",
            wgpunch_common::wire::message::FLAG_HARD_NAT
        ),
    );
    assert_documented(
        &doc,
        &format!(
            "bit 2 (`0x{:02x}`) = *hard NAT*",
            wgpunch_common::wire::candidates::FLAG_HARD_NAT
        ),
    );
    assert_documented(
        &doc,
        &format!(
            "{MAPPING_SENDS} times {} ms apart",
            MAPPING_INTERVAL.as_millis()
        ),
    );
}

#[test]
fn push_limits_match_the_code() {
    let doc = doc();
    assert_documented(
        &doc,
        &format!("At most **{PUSH_WINDOW}** pushes of a session"),
    );
    assert_documented(
        &doc,
        &format!("token bucket of **{PUSH_RATE}** pushes a second, bursts of {PUSH_BURST}"),
    );
    assert_documented(&doc, &format!("at most **{MAX_QUEUED_PUSHES}** datagrams"));
    assert_documented(&doc, &format!("at most {PUSH_WINDOW} pushes per session"));
}

#[test]
fn cryptographic_parameters_match_the_code() {
    let doc = doc();
    assert_documented(&doc, &format!("`{NOISE_PARAMS}`"));
    let prologue = std::str::from_utf8(PROLOGUE).unwrap();
    assert_documented(
        &doc,
        &format!("the {} ASCII bytes `{prologue}`", PROLOGUE.len()),
    );
    let label = std::str::from_utf8(MAC1_LABEL).unwrap();
    assert_documented(
        &doc,
        &format!(
            "BLAKE2s-256(\"{label}\" ‖ server public key)` ({}-byte label)",
            MAC1_LABEL.len()
        ),
    );
}
