//! `Reply::parse`, as the client applies it to every decrypted plaintext: never panics, and
//! accepts only bytes that `Reply::emit` writes back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_common::wire::Reply;

fuzz_target!(|data: &[u8]| {
    if let Ok(reply) = Reply::parse(data) {
        let mut again = Vec::new();
        reply.emit(&mut again);
        assert_eq!(again, data, "non-canonical reply accepted: {reply:?}");
    }
});
