//! What the gateway does with every frame a client sends: any bytes decode to
//! a frame or an error, and a frame that decodes re-encodes to one that
//! decodes the same (so the gateway never acts on something it cannot echo).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_wire::{WireError, decode_client, encode_client};

fuzz_target!(|data: &[u8]| {
    match decode_client(data) {
        Ok(kind) => {
            let again = encode_client(kind.clone());
            assert_eq!(decode_client(&again), Ok(kind));
        }
        Err(WireError::Malformed(_) | WireError::EmptyFrame) => {}
        Err(e) => panic!("a frame decoder returned a non-frame error: {e:?}"),
    }
});
