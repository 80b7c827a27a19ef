//! Round-trips through every codec in tern-wire: whatever one end encodes,
//! the other decodes to the same value, however TCP splits the bytes and
//! whichever compression codec was negotiated.
//!
//! Malformed and hostile input is in `malformed.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::{Bytes, BytesMut};
use common::{client_kind, codec, message, server_kind};
use proptest::collection::vec;
use proptest::prelude::*;
use prost::Message as _;
use tern_proto::client::{Codec, Message, MessageBatch, Push, server_frame};
use tern_wire::{
    DEFAULT_COMPRESS_MIN, LengthPrefixed, WireError, compress, decode_client, decode_server,
    decompress, encode_client, encode_server, pack_batch, unpack_batch,
};

/// Enough cases to hit every frame kind and codec many times while keeping
/// the whole wire suite to a few seconds on a 2-core machine.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    }
}

/// Appends `stream` to a read buffer `chunks[i]` bytes at a time (cycling
/// through `chunks`), as TCP reads would, taking every whole frame off after
/// each read. Returns the frames and whatever was left unread in the buffer.
fn read_in_chunks(
    framing: &LengthPrefixed,
    stream: &[u8],
    chunks: &[usize],
) -> Result<(Vec<Bytes>, BytesMut), WireError> {
    let mut src = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = stream;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().expect("at least one chunk size")).min(rest.len());
        src.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(frame) = framing.decode(&mut src)? {
            frames.push(frame);
        }
    }
    Ok((frames, src))
}

/// Read sizes from one byte (a slow link) up to several frames at once.
fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    vec(prop_oneof![1..8usize, 8..256usize, 256..4096usize], 1..16)
}

fn length_prefix(frames: &[impl AsRef<[u8]>], framing: &LengthPrefixed) -> BytesMut {
    let mut stream = BytesMut::new();
    for frame in frames {
        framing
            .encode(frame.as_ref(), &mut stream)
            .expect("frame within the limit");
    }
    stream
}

proptest! {
    #![proptest_config(config())]

    /// What a client encodes, the gateway decodes to the same frame.
    #[test]
    fn client_frames_round_trip(kind in client_kind()) {
        let bytes = encode_client(kind.clone());
        prop_assert_eq!(decode_client(&bytes), Ok(kind));
    }

    /// What a gateway encodes, the client decodes to the same frame.
    #[test]
    fn server_frames_round_trip(kind in server_kind()) {
        let bytes = encode_server(kind.clone());
        prop_assert_eq!(decode_server(&bytes), Ok(kind));
    }

    /// However the TCP stream is cut into reads, the reader gets exactly the
    /// frames that were written, in order, and nothing is left over.
    #[test]
    fn length_prefixed_frames_survive_any_read_split(
        frames in vec(vec(any::<u8>(), 0..600), 0..16),
        chunks in chunk_sizes(),
    ) {
        let framing = LengthPrefixed::new(1024);
        let stream = length_prefix(&frames, &framing);
        let expected: usize = frames.iter().map(|f| f.len() + tern_wire::PREFIX_LEN).sum();
        prop_assert_eq!(stream.len(), expected);

        let (got, left) = read_in_chunks(&framing, &stream, &chunks)?;
        prop_assert!(left.is_empty(), "{} bytes left unread", left.len());
        prop_assert_eq!(got.len(), frames.len());
        for (got, sent) in got.iter().zip(&frames) {
            prop_assert_eq!(&got[..], &sent[..]);
        }
    }

    /// A session's client frames on a TCP connection: framed, split into
    /// reads, unframed and decoded, they are the frames the client sent.
    #[test]
    fn client_frames_survive_tcp_framing(
        kinds in vec(client_kind(), 1..12),
        chunks in chunk_sizes(),
    ) {
        let framing = LengthPrefixed::default();
        let encoded: Vec<Bytes> = kinds.iter().cloned().map(encode_client).collect();
        let stream = length_prefix(&encoded, &framing);

        let (frames, left) = read_in_chunks(&framing, &stream, &chunks)?;
        prop_assert!(left.is_empty());
        let decoded: Result<Vec<_>, _> = frames.iter().map(|f| decode_client(f)).collect();
        prop_assert_eq!(decoded, Ok(kinds));
    }

    /// A batch packed with any codec unpacks to the same messages. Batches
    /// under the threshold stay plain; a claimed codec always saved bytes.
    #[test]
    fn batches_round_trip_with_every_codec(
        messages in vec(message(1024), 0..12),
        codec in codec(),
        min_size in prop_oneof![Just(DEFAULT_COMPRESS_MIN), Just(0usize), 0..4096usize],
    ) {
        let raw_len = MessageBatch { messages: messages.clone() }.encoded_len();
        let (used, payload) = pack_batch(messages.clone(), codec, min_size);

        if raw_len < min_size || codec == Codec::None {
            prop_assert_eq!(used, Codec::None);
        }
        if used == Codec::None {
            prop_assert_eq!(payload.len(), raw_len);
        } else {
            prop_assert_eq!(used, codec);
            prop_assert!(payload.len() < raw_len, "{used:?} grew {raw_len} to {}", payload.len());
        }

        // The tightest limit that fits the batch still lets it through.
        prop_assert_eq!(unpack_batch(used as i32, &payload, raw_len), Ok(messages));
    }

    /// `compress` either claims the requested codec and returns fewer bytes
    /// that decompress to the input, or says `None` and returns the input.
    #[test]
    fn compress_never_grows_a_payload_it_claims(
        data in prop_oneof![
            vec(any::<u8>(), 0..4096),
            (any::<u8>(), 0..8192usize).prop_map(|(b, n)| vec![b; n]),
            vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..4096),
        ],
        codec in codec(),
        min_size in 0..1024usize,
    ) {
        let (used, out) = compress(codec, &data, min_size);
        if used == Codec::None {
            prop_assert_eq!(&out[..], &data[..]);
        } else {
            prop_assert_eq!(used, codec);
            prop_assert!(data.len() >= min_size);
            prop_assert!(out.len() < data.len(), "{used:?} grew {} to {}", data.len(), out.len());
            let back = decompress(used as i32, &out, data.len())?;
            prop_assert_eq!(&back[..], &data[..]);
        }
    }

    /// What the client sees of a push: the gateway packs a batch into a Push
    /// frame on TCP; the client unframes, decodes and unpacks the same messages.
    #[test]
    fn pushed_batches_reach_the_client_intact(
        messages in vec(message(512), 1..8),
        codec in codec(),
        first_cursor in any::<u64>(),
        chunks in chunk_sizes(),
    ) {
        let (used, payload) = pack_batch(messages.clone(), codec, DEFAULT_COMPRESS_MIN);
        let push = Push {
            first_cursor,
            last_cursor: first_cursor.wrapping_add(messages.len() as u64 - 1),
            codec: used as i32,
            payload,
            more_pending: false,
            older_not_pushed: false,
            gap: false,
        };
        let framing = LengthPrefixed::default();
        let stream = length_prefix(&[encode_server(server_frame::Kind::Push(push.clone()))], &framing);

        let (frames, _) = read_in_chunks(&framing, &stream, &chunks)?;
        prop_assert_eq!(frames.len(), 1);
        let server_frame::Kind::Push(got) = decode_server(&frames[0])? else {
            return Err(TestCaseError::fail("not a push"));
        };
        prop_assert_eq!(&got, &push);
        let unpacked = unpack_batch(got.codec, &got.payload, tern_wire::DEFAULT_MAX_FRAME)?;
        prop_assert_eq!(unpacked, messages);
    }
}

/// Proptest draws mostly mixed bodies; make sure both sides of the threshold
/// are exercised for each real codec, whatever the draw.
#[test]
fn compression_applies_above_the_threshold_only() {
    let chatty = Message {
        conversation: "dm:alice:bob".into(),
        sender_user: "alice".into(),
        content_type: "text/plain".into(),
        body: Bytes::from("see you at the station at six ".repeat(8)),
        ..Message::default()
    };
    let above: Vec<Message> = (1..=20)
        .map(|seq| Message {
            seq,
            cursor: seq,
            ..chatty.clone()
        })
        .collect();
    let below = vec![Message {
        body: Bytes::from_static(b"ok"),
        ..chatty.clone()
    }];
    assert!(
        MessageBatch {
            messages: below.clone()
        }
        .encoded_len()
            < DEFAULT_COMPRESS_MIN
    );

    for codec in [Codec::Zstd, Codec::Deflate] {
        let (used, payload) = pack_batch(above.clone(), codec, DEFAULT_COMPRESS_MIN);
        assert_eq!(used, codec, "a chatty batch is worth compressing");
        assert_eq!(
            unpack_batch(used as i32, &payload, 1 << 20).as_deref(),
            Ok(&above[..])
        );

        let (used, payload) = pack_batch(below.clone(), codec, DEFAULT_COMPRESS_MIN);
        assert_eq!(used, Codec::None, "a tiny batch is sent plain");
        assert_eq!(
            unpack_batch(used as i32, &payload, 1 << 20).as_deref(),
            Ok(&below[..])
        );
    }
}

/// An empty batch (nothing new in the inbox) is a valid, empty payload.
#[test]
fn empty_batch_round_trips() {
    for codec in [Codec::None, Codec::Zstd, Codec::Deflate] {
        let (used, payload) = pack_batch(Vec::new(), codec, 0);
        assert_eq!(used, Codec::None, "nothing to gain compressing zero bytes");
        assert!(payload.is_empty());
        assert_eq!(unpack_batch(used as i32, &payload, 0), Ok(Vec::new()));
    }
}

/// A caller with no limit of its own may pass `usize::MAX`. This used to
/// overflow `max + 1` (a panic in debug builds, an empty payload in release).
#[test]
fn unlimited_decompression_returns_the_whole_payload() {
    let data = "hello hello hello hello ".repeat(64).into_bytes();
    for codec in [Codec::None, Codec::Zstd, Codec::Deflate] {
        let (used, packed) = compress(codec, &data, 0);
        assert_eq!(used, codec);
        let back = decompress(used as i32, &packed, usize::MAX).expect("decompresses");
        assert_eq!(&back[..], &data[..]);
    }
}
