//! `Request::parse`, as the server applies it to every decrypted plaintext: never panics, and
//! accepts only bytes that `Request::emit` writes back identically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wgpunch_common::wire::Request;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::parse(data) {
        let mut again = Vec::new();
        request
            .emit(&mut again)
            .expect("a parsed request must be emittable");
        assert_eq!(again, data, "non-canonical request accepted: {request:?}");
    }
});
