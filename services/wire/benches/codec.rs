//! The client protocol's hot frames through tern-wire, encoded and decoded:
//!
//! - `push_batch`: a Push of 32 messages with ~100-byte chat-like bodies,
//!   as the gateway pushes a merged batch and the client reads it. Encode
//!   is `pack_batch` (batch encoding, compression when it pays) +
//!   `encode_server` + the TCP length prefix; decode is the prefix +
//!   `decode_server` + `unpack_batch`. Once per codec: none, zstd, deflate.
//! - `send`: one Send frame with a ~100-byte body, client → gateway.
//! - `ack`: one PushAck frame, client → gateway.
//!
//! Inputs are built once, deterministically; owned inputs (the encoders
//! take their messages by value) are cloned outside the timed part.
//!
//! ```sh
//! cargo bench -p tern-wire --bench codec -- --measurement-time 2 --warm-up-time 1
//! ```

// Bench code: a failed unwrap is a broken bench, not a server panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tern_proto::client::{
    Codec, Message, Push, PushAck, Send as SendFrame, client_frame, send, server_frame,
};
use tern_wire::{
    DEFAULT_COMPRESS_MIN, DEFAULT_MAX_FRAME, LengthPrefixed, decode_client, decode_server,
    encode_client, encode_server, pack_batch, unpack_batch,
};

/// Messages in the pushed batch: a merge window's worth for a busy user.
const BATCH: usize = 32;
/// Average body size: the load tool's 1:1 messages are 100 bytes.
const BODY_BYTES: usize = 100;

/// Words the bodies are made of: chat-like text compresses like chat, where
/// repeated filler would flatter the compressed codecs.
const WORDS: &[&str] = &[
    "ok", "yes", "no", "see", "you", "at", "the", "station", "tomorrow", "tonight", "lunch",
    "meeting", "moved", "to", "three", "pm", "can", "we", "talk", "later", "sent", "file",
    "thanks", "great", "idea", "what", "about", "friday", "running", "late", "sorry", "call", "me",
    "when", "free", "done", "deploy", "passed", "failed", "review", "please", "merge", "coffee",
    "train", "delayed", "home", "soon", "love", "it", "haha", "really", "sure",
];

/// A deterministic pseudo-random sequence (an LCG): the same bodies on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) as usize
    }
}

fn body(rng: &mut Lcg) -> Vec<u8> {
    let mut s = String::with_capacity(BODY_BYTES + 16);
    while s.len() < BODY_BYTES {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.next() % WORDS.len()]);
    }
    s.into_bytes()
}

/// A stored 1:1 message as the gateway pushes it.
fn message(rng: &mut Lcg, i: u64) -> Message {
    let id = (0x0193_0000_0000_7000_8000_0000_0000_0000_u128 | u128::from(i)).to_be_bytes();
    Message {
        message_id: id.to_vec().into(),
        conversation: "d:alice:bob".into(),
        seq: 1_000 + i,
        sender_user: "alice".into(),
        sender_device: "phone".into(),
        content_type: "text/plain".into(),
        body: body(rng).into(),
        sent_at_ms: 1_796_000_000_000 + i * 37,
        client_msg_id: format!("c-{:016x}", rng.next()),
        cursor: 50_000 + i,
    }
}

/// One Push frame of `messages` with the TCP prefix, as the gateway writes it.
fn push_frame(messages: Vec<Message>, codec: Codec, framing: &LengthPrefixed) -> BytesMut {
    let first_cursor = messages.first().map_or(0, |m| m.cursor);
    let last_cursor = messages.last().map_or(0, |m| m.cursor);
    let (used, payload) = pack_batch(messages, codec, DEFAULT_COMPRESS_MIN);
    let frame = encode_server(server_frame::Kind::Push(Push {
        first_cursor,
        last_cursor,
        codec: used as i32,
        payload,
        more_pending: false,
        older_not_pushed: false,
        gap: false,
    }));
    let mut out = BytesMut::with_capacity(frame.len() + 4);
    framing.encode(&frame, &mut out).unwrap();
    out
}

/// Takes one Push off a TCP read buffer and unpacks its messages, as the
/// client library does.
fn read_push(framing: &LengthPrefixed, buf: &mut BytesMut) -> Vec<Message> {
    let frame = framing.decode(buf).unwrap().unwrap();
    let server_frame::Kind::Push(push) = decode_server(&frame).unwrap() else {
        panic!("not a push");
    };
    unpack_batch(push.codec, &push.payload, DEFAULT_MAX_FRAME).unwrap()
}

fn push_batch(c: &mut Criterion) {
    let mut rng = Lcg(42);
    let messages: Vec<Message> = (0..BATCH as u64).map(|i| message(&mut rng, i)).collect();
    let framing = LengthPrefixed::default();
    let mut group = c.benchmark_group("push_batch");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, codec) in [
        ("none", Codec::None),
        ("zstd", Codec::Zstd),
        ("deflate", Codec::Deflate),
    ] {
        let wire = push_frame(messages.clone(), codec, &framing);
        // Sizes, for the record (criterion prints only times).
        let mut check = wire.clone();
        assert_eq!(read_push(&framing, &mut check), messages);
        println!(
            "push_batch/{name}: {BATCH} messages, {} bytes on the wire",
            wire.len()
        );
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter_batched(
                || messages.clone(),
                |m| push_frame(m, black_box(codec), &framing),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter_batched(
                || wire.clone(),
                |mut buf| read_push(&framing, black_box(&mut buf)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn send_frame(c: &mut Criterion) {
    let mut rng = Lcg(7);
    let send = SendFrame {
        client_msg_id: format!("c-{:016x}", rng.next()),
        target: Some(send::Target::ToUser("bob".into())),
        content_type: "text/plain".into(),
        body: body(&mut rng).into(),
    };
    let framing = LengthPrefixed::default();
    let mut wire = BytesMut::new();
    framing
        .encode(
            &encode_client(client_frame::Kind::Send(send.clone())),
            &mut wire,
        )
        .unwrap();
    println!("send: {} bytes on the wire", wire.len());
    let mut group = c.benchmark_group("send");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter_batched(
            || send.clone(),
            |s| {
                let mut out = BytesMut::new();
                framing
                    .encode(&encode_client(client_frame::Kind::Send(s)), &mut out)
                    .unwrap();
                out
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("decode", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let frame = framing.decode(black_box(&mut buf)).unwrap().unwrap();
                decode_client(&frame).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn ack_frame(c: &mut Criterion) {
    let ack = PushAck { cursor: 50_031 };
    let framing = LengthPrefixed::default();
    let mut wire = BytesMut::new();
    framing
        .encode(&encode_client(client_frame::Kind::PushAck(ack)), &mut wire)
        .unwrap();
    println!("ack: {} bytes on the wire", wire.len());
    let mut group = c.benchmark_group("ack");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            framing
                .encode(
                    &encode_client(client_frame::Kind::PushAck(black_box(ack))),
                    &mut out,
                )
                .unwrap();
            out
        })
    });
    group.bench_function("decode", |b| {
        b.iter_batched(
            || wire.clone(),
            |mut buf| {
                let frame = framing.decode(black_box(&mut buf)).unwrap().unwrap();
                decode_client(&frame).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, push_batch, send_frame, ack_frame);
criterion_main!(benches);
