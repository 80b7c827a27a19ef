//! What a client does with every frame a gateway sends: any bytes decode to a
//! frame or an error, and a frame that decodes re-encodes to the same frame.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_wire::{WireError, decode_server, encode_server};

fuzz_target!(|data: &[u8]| {
    match decode_server(data) {
        Ok(kind) => {
            let again = encode_server(kind.clone());
            assert_eq!(decode_server(&again), Ok(kind));
        }
        Err(WireError::Malformed(_) | WireError::EmptyFrame) => {}
        Err(e) => panic!("a frame decoder returned a non-frame error: {e:?}"),
    }
});
