//! The TCP reader on any byte stream, with any frame limit and read size.
//!
//! Input: byte 0 picks the frame limit, byte 1 the read size, the rest is the
//! stream. Checks that frames respect the limit, that reading in pieces gives
//! what reading all at once gives, and that the frames re-encode to exactly
//! the bytes they were read from.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tern_wire::{LengthPrefixed, PREFIX_LEN, WireError};

/// Frames read from `stream` in `read_size` pieces, and the error that
/// stopped reading, if any.
fn read(
    framing: &LengthPrefixed,
    stream: &[u8],
    read_size: usize,
) -> (Vec<Bytes>, Option<WireError>) {
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    for piece in stream.chunks(read_size) {
        src.extend_from_slice(piece);
        loop {
            match framing.decode(&mut src) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fuzz_target!(|data: &[u8]| {
    let [limit, read_size, stream @ ..] = data else {
        return;
    };
    // Limits from 0 to 1 KiB so that small inputs hit both sides of them.
    let framing = LengthPrefixed::new(usize::from(*limit) * 4);
    let (frames, error) = read(&framing, stream, stream.len().max(1));
    let (pieces, piece_error) = read(&framing, stream, 1 + usize::from(*read_size) % 64);

    assert_eq!(frames, pieces, "frames depend on how the stream was read");
    assert_eq!(error, piece_error);
    if let Some(e) = &error {
        assert!(
            matches!(e, WireError::FrameTooLarge { len, max } if len > max),
            "{e:?}"
        );
    }

    let mut again = BytesMut::new();
    for frame in &frames {
        assert!(frame.len() <= framing.max_frame);
        framing
            .encode(frame, &mut again)
            .expect("a frame read within the limit re-encodes");
    }
    let consumed: usize = frames.iter().map(|f| PREFIX_LEN + f.len()).sum();
    assert_eq!(&again[..], &stream[..consumed]);
});
