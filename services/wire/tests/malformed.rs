//! Malformed and hostile input: every bad frame or payload is an error the
//! caller can act on, never a panic and never unbounded memory.
//!
//! Test names say who meets the input: the gateway decodes client frames and
//! reads the client's TCP stream; the client decodes server frames and
//! unpacks push and sync payloads. Where the protocol names the error frame
//! the gateway answers with (`ErrorCode` in client.proto), the test says so.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{BufMut, BytesMut};
use common::{client_kind, server_kind};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message as _;
use tern_proto::client::{ClientFrame, Codec, Message, ServerFrame, server_frame};
use tern_wire::{
    DEFAULT_MAX_FRAME, LengthPrefixed, PREFIX_LEN, WireError, compress, decode_client,
    decode_server, decompress, encode_client, encode_server, pack_batch, unpack_batch,
};

const MIB: usize = 1 << 20;

/// 10 MiB of zeros packed with `codec`: a few hundred bytes (zstd) or a few
/// dozen KiB (deflate) that a naive reader would inflate to 10 MiB.
fn bomb(codec: Codec) -> Vec<u8> {
    let (used, packed) = compress(codec, &vec![0u8; 10 * MIB], 0);
    assert_eq!(used, codec, "zeros compress");
    assert!(
        packed.len() < 64 * 1024,
        "{codec:?} bomb is {} bytes",
        packed.len()
    );
    packed.to_vec()
}

/// Only the errors a bad frame can cause: anything else would mean the
/// decoder confused a frame problem with a payload problem.
fn is_frame_error(e: &WireError) -> bool {
    matches!(e, WireError::Malformed(_) | WireError::EmptyFrame)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The gateway survives any bytes in a frame: it gets a frame or
    /// `Malformed`/`EmptyFrame` (and answers MALFORMED_FRAME), never a panic.
    #[test]
    fn gateway_sees_a_frame_or_an_error_for_random_garbage(bytes in vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode_client(&bytes) {
            prop_assert!(is_frame_error(&e), "{e:?}");
        }
    }

    /// The client survives any bytes from a (broken or hostile) gateway.
    #[test]
    fn client_sees_a_frame_or_an_error_for_random_garbage(bytes in vec(any::<u8>(), 0..512)) {
        if let Err(e) = decode_server(&bytes) {
            prop_assert!(is_frame_error(&e), "{e:?}");
        }
    }

    /// Either end reading a garbage TCP stream gets frames within the limit
    /// or `FrameTooLarge`, and never holds more than the limit for a frame.
    #[test]
    fn reader_sees_bounded_frames_or_frame_too_large_for_a_garbage_stream(
        stream in vec(any::<u8>(), 0..1024),
        max_frame in 0..256usize,
    ) {
        let framing = LengthPrefixed::new(max_frame);
        let mut src = BytesMut::from(&stream[..]);
        loop {
            match framing.decode(&mut src) {
                Ok(Some(frame)) => prop_assert!(frame.len() <= max_frame),
                Ok(None) => break,
                Err(WireError::FrameTooLarge { len, max }) => {
                    prop_assert!(len > max_frame);
                    prop_assert_eq!(max, max_frame);
                    break;
                }
                Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
            }
        }
    }

    /// The client survives any payload under any codec number: it gets
    /// messages or an error, and never more than its limit in memory.
    #[test]
    fn client_sees_messages_or_an_error_for_a_garbage_payload(
        codec in prop_oneof![-2..5i32, any::<i32>()],
        payload in vec(any::<u8>(), 0..1024),
    ) {
        let max = 64 * 1024;
        match decompress(codec, &payload, max) {
            Ok(raw) => prop_assert!(raw.len() <= max),
            Err(WireError::UnknownCodec(n)) => prop_assert_eq!(n, codec),
            Err(WireError::BadPayload { .. } | WireError::PayloadTooLarge { .. }) => {}
            Err(e) => return Err(TestCaseError::fail(format!("unexpected {e:?}"))),
        }
        let _ = unpack_batch(codec, &payload, max);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A frame cut short anywhere (a bug in a client's framing) is
    /// `Malformed` at the gateway, which answers MALFORMED_FRAME and closes.
    #[test]
    fn gateway_sees_malformed_for_a_truncated_frame(kind in client_kind(), cut in any::<Index>()) {
        let bytes = encode_client(kind);
        let cut = 1 + cut.index(bytes.len() - 1);
        prop_assert!(matches!(decode_client(&bytes[..cut]), Err(WireError::Malformed(_))));
    }

    /// A gateway frame cut short anywhere is `Malformed` at the client.
    #[test]
    fn client_sees_malformed_for_a_truncated_frame(kind in server_kind(), cut in any::<Index>()) {
        let bytes = encode_server(kind);
        let cut = 1 + cut.index(bytes.len() - 1);
        prop_assert!(matches!(decode_server(&bytes[..cut]), Err(WireError::Malformed(_))));
    }
}

/// Zero bytes carry no kind: the gateway sees `EmptyFrame`, not a default
/// frame it might act on. This is also what a zero-length TCP frame gives.
#[test]
fn gateway_sees_empty_frame_for_an_empty_buffer() {
    assert!(ClientFrame { kind: None }.encode_to_vec().is_empty());
    assert!(ServerFrame { kind: None }.encode_to_vec().is_empty());
    assert_eq!(decode_client(&[]), Err(WireError::EmptyFrame));
    assert_eq!(decode_server(&[]), Err(WireError::EmptyFrame));

    let mut src = BytesMut::from(&[0u8, 0, 0, 0][..]);
    let frame = LengthPrefixed::default()
        .decode(&mut src)
        .expect("a zero-length frame is within any limit")
        .expect("the whole frame is there");
    assert_eq!(decode_client(&frame), Err(WireError::EmptyFrame));
}

/// A newer client's frame kind (field 15 here) is skipped as an unknown
/// field, so the gateway sees `EmptyFrame` rather than guessing.
#[test]
fn gateway_sees_empty_frame_for_a_kind_it_does_not_know() {
    // Field 15, varint, value 1; then field 16, length-delimited, 2 bytes.
    let frame = [15 << 3, 1, 0x82, 0x01, 2, b'h', b'i'];
    assert_eq!(decode_client(&frame), Err(WireError::EmptyFrame));
    assert_eq!(decode_server(&frame), Err(WireError::EmptyFrame));
}

/// Bytes that are protobuf-shaped but wrong: the gateway sees `Malformed`.
#[test]
fn gateway_sees_malformed_for_invalid_protobuf() {
    // PushAck (field 4) whose cursor is a varint that never ends.
    let endless_varint = [[(4 << 3) | 2, 11, 1 << 3].as_slice(), &[0xFF; 10]].concat();
    let cases: [(&str, &[u8]); 4] = [
        // Login (field 1) sent as a varint instead of a message.
        ("wrong wire type", &[1 << 3, 1]),
        // Login whose token (field 1) is not UTF-8.
        ("token not utf-8", &[(1 << 3) | 2, 3, (1 << 3) | 2, 1, 0xFF]),
        // A Send whose length runs past the end of the frame.
        ("length past the end", &[(3 << 3) | 2, 100, 0]),
        ("endless varint", &endless_varint),
    ];
    for (what, bytes) in cases {
        assert!(
            matches!(decode_client(bytes), Err(WireError::Malformed(_))),
            "{what}: {:?}",
            decode_client(bytes)
        );
    }
}

/// A prefix announcing a frame over the limit is `FrameTooLarge` as soon as
/// the 4 prefix bytes are in: the gateway answers FRAME_TOO_LARGE and closes
/// without waiting for (or making room for) the announced body.
#[test]
fn gateway_sees_frame_too_large_before_the_body_arrives() {
    let framing = LengthPrefixed::default();
    for announced in [DEFAULT_MAX_FRAME + 1, 64 * MIB, u32::MAX as usize] {
        let mut src = BytesMut::with_capacity(64);
        src.put_u32(announced as u32);
        src.put_slice(b"the first few body bytes");
        let buffered = src.len();

        assert_eq!(
            framing.decode(&mut src),
            Err(WireError::FrameTooLarge {
                len: announced,
                max: DEFAULT_MAX_FRAME
            })
        );
        assert!(
            src.capacity() <= 64,
            "buffer grew to {} for {announced}",
            src.capacity()
        );
        assert_eq!(src.len(), buffered, "nothing consumed");
        // A second read attempt fails the same way rather than waiting.
        assert!(matches!(
            framing.decode(&mut src),
            Err(WireError::FrameTooLarge { .. })
        ));
    }
}

/// A frame of exactly the limit is fine; one byte more is not, on either end.
#[test]
fn frame_of_exactly_the_limit_is_accepted() {
    let framing = LengthPrefixed::new(1024);
    let mut stream = BytesMut::new();
    framing
        .encode(&[7; 1024], &mut stream)
        .expect("at the limit");

    let mut src = BytesMut::from(&stream[..PREFIX_LEN + 1000]);
    assert_eq!(framing.decode(&mut src), Ok(None), "waits for the rest");
    src.put_slice(&stream[PREFIX_LEN + 1000..]);
    let frame = framing
        .decode(&mut src)
        .expect("within the limit")
        .expect("complete");
    assert_eq!(&frame[..], &[7; 1024][..]);

    let mut src = BytesMut::new();
    src.put_u32(1025);
    assert_eq!(
        framing.decode(&mut src),
        Err(WireError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    );
}

/// Fewer than 4 bytes is not an error, just not a frame yet.
#[test]
fn reader_waits_for_a_whole_prefix() {
    let framing = LengthPrefixed::new(16);
    for len in 0..PREFIX_LEN {
        let mut src = BytesMut::from(&[0xFFu8; 3][..len]);
        assert_eq!(framing.decode(&mut src), Ok(None));
    }
}

/// The sending side refuses an oversized frame before writing anything, so
/// the stream is never left with half a frame in it.
#[test]
fn sender_sees_frame_too_large_and_writes_nothing() {
    let framing = LengthPrefixed::new(1024);
    let mut dst = BytesMut::new();
    assert_eq!(
        framing.encode(&[0; 1025], &mut dst),
        Err(WireError::FrameTooLarge {
            len: 1025,
            max: 1024
        })
    );
    assert!(dst.is_empty());
}

/// 10 MiB of zeros in a small payload, read with a 1 MiB limit: the client
/// sees `PayloadTooLarge` after inflating at most the limit.
#[test]
fn client_sees_payload_too_large_for_a_compression_bomb() {
    let zstd_without_declared_size =
        zstd::stream::encode_all(&vec![0u8; 10 * MIB][..], 3).expect("zstd compresses");
    let bombs = [
        (Codec::Zstd, bomb(Codec::Zstd)),
        (Codec::Zstd, zstd_without_declared_size),
        (Codec::Deflate, bomb(Codec::Deflate)),
    ];
    for (codec, packed) in bombs {
        assert_eq!(
            decompress(codec as i32, &packed, MIB),
            Err(WireError::PayloadTooLarge { max: MIB }),
            "{codec:?}"
        );
        assert_eq!(
            unpack_batch(codec as i32, &packed, MIB),
            Err(WireError::PayloadTooLarge { max: MIB }),
            "{codec:?}"
        );
    }
}

/// The limit is inclusive: exactly `max` bytes out is fine, one more is not.
#[test]
fn payload_of_exactly_the_limit_is_accepted() {
    let data = vec![0u8; MIB];
    for codec in [Codec::None, Codec::Zstd, Codec::Deflate] {
        let (used, packed) = compress(codec, &data, 0);
        assert_eq!(used, codec);
        let out = decompress(used as i32, &packed, MIB).expect("at the limit");
        assert_eq!(out.len(), MIB);
        assert_eq!(
            decompress(used as i32, &packed, MIB - 1),
            Err(WireError::PayloadTooLarge { max: MIB - 1 }),
            "{codec:?}"
        );
    }
}

/// A plain payload is held to the same limit as a compressed one, so the
/// client's limit means the same thing whatever codec the gateway chose.
#[test]
fn client_sees_payload_too_large_for_an_oversized_plain_payload() {
    let (used, payload) = pack_batch(
        vec![Message {
            body: vec![1; 4096].into(),
            ..Message::default()
        }],
        Codec::None,
        0,
    );
    assert_eq!(used, Codec::None);
    assert_eq!(
        unpack_batch(Codec::None as i32, &payload, 1024),
        Err(WireError::PayloadTooLarge { max: 1024 })
    );
}

/// Bytes that are not zstd, labelled zstd: the client sees `BadPayload`.
#[test]
fn client_sees_bad_payload_for_garbage_zstd() {
    let garbage = b"this is certainly not a zstd frame";
    for result in [
        decompress(Codec::Zstd as i32, garbage, MIB).map(|_| ()),
        unpack_batch(Codec::Zstd as i32, garbage, MIB).map(|_| ()),
    ] {
        assert!(
            matches!(result, Err(WireError::BadPayload { codec: "zstd", .. })),
            "{result:?}"
        );
    }
}

/// Bytes that are not deflate, labelled deflate (0xFF starts a block of the
/// reserved type 3): the client sees `BadPayload`.
#[test]
fn client_sees_bad_payload_for_garbage_deflate() {
    let result = unpack_batch(Codec::Deflate as i32, &[0xFF; 16], MIB);
    assert!(
        matches!(
            result,
            Err(WireError::BadPayload {
                codec: "deflate",
                ..
            })
        ),
        "{result:?}"
    );
}

/// A compressed payload cut short is `BadPayload`, not a shorter batch the
/// client would take for the whole push.
#[test]
fn client_sees_bad_payload_for_a_truncated_compressed_payload() {
    let messages: Vec<Message> = (1..=30)
        .map(|seq| Message {
            seq,
            body: format!("message number {seq} of thirty")
                .into_bytes()
                .into(),
            ..Message::default()
        })
        .collect();
    for codec in [Codec::Zstd, Codec::Deflate] {
        let (used, payload) = pack_batch(messages.clone(), codec, 0);
        assert_eq!(used, codec);
        for cut in [0, 1, payload.len() / 2, payload.len() - 1] {
            let result = unpack_batch(used as i32, &payload[..cut], MIB);
            assert!(
                matches!(result, Err(WireError::BadPayload { .. })),
                "{codec:?} cut at {cut}/{}: {result:?}",
                payload.len()
            );
        }
    }
}

/// A payload that inflates fine but is not a `MessageBatch`: `Malformed`.
#[test]
fn client_sees_malformed_for_a_payload_that_is_not_a_batch() {
    // A varint that never ends, repeated: not protobuf at all.
    let not_a_batch = vec![0xFF; 1000];
    for codec in [Codec::None, Codec::Zstd, Codec::Deflate] {
        let (used, payload) = compress(codec, &not_a_batch, 0);
        assert_eq!(used, codec);
        let result = unpack_batch(used as i32, &payload, MIB);
        assert!(
            matches!(result, Err(WireError::Malformed(_))),
            "{codec:?}: {result:?}"
        );
    }
}

/// A codec number this build does not know (a newer gateway, or garbage):
/// the client sees `UnknownCodec` with the number, not a decode attempt.
#[test]
fn client_sees_unknown_codec_for_a_codec_number_it_does_not_know() {
    for n in [3, 7, -1, i32::MIN, i32::MAX] {
        assert_eq!(
            decompress(n, b"payload", MIB),
            Err(WireError::UnknownCodec(n))
        );
        assert_eq!(
            unpack_batch(n, b"payload", MIB),
            Err(WireError::UnknownCodec(n))
        );
    }

    // The same through a whole Push frame, as the client would meet it.
    let push = encode_server(server_frame::Kind::Push(tern_proto::client::Push {
        codec: 7,
        payload: b"from the future".to_vec().into(),
        ..Default::default()
    }));
    let Ok(server_frame::Kind::Push(push)) = decode_server(&push) else {
        panic!("a push with an unknown codec is still a valid frame");
    };
    assert_eq!(
        unpack_batch(push.codec, &push.payload, MIB),
        Err(WireError::UnknownCodec(7))
    );
}
