//! What a client does with a push or sync payload: any bytes under any codec
//! unpack to messages or an error, inflating to no more than the limit; and
//! messages that unpack re-pack (with any codec) to the same messages.
//!
//! Input: byte 0 picks the codec number (0..=3, 3 being unknown) and the
//! codec to re-pack with; the rest is the payload.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_proto::client::Codec;
use tern_wire::{WireError, decompress, pack_batch, unpack_batch};

/// Small enough that a bomb costs the fuzzer little, big enough to hold many messages.
const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let [selector, payload @ ..] = data else {
        return;
    };
    let codec = i32::from(selector % 4);
    let repack = [Codec::None, Codec::Zstd, Codec::Deflate][usize::from(selector / 4) % 3];

    match decompress(codec, payload, MAX) {
        Ok(raw) => assert!(raw.len() <= MAX),
        Err(WireError::UnknownCodec(n)) => assert_eq!(n, 3),
        Err(WireError::BadPayload { .. } | WireError::PayloadTooLarge { .. }) => {}
        Err(e) => panic!("decompress returned {e:?}"),
    }

    if let Ok(messages) = unpack_batch(codec, payload, MAX) {
        let (used, packed) = pack_batch(messages.clone(), repack, 0);
        assert_eq!(unpack_batch(used as i32, &packed, usize::MAX), Ok(messages));
    }
});
