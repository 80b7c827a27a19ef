//! The gateway's push side without sockets, Kafka or a store:
//!
//! - `room_fan_out`: [`Rooms::fan_out`], the gateway's batch packing for
//!   live rooms: a merged batch of 32 messages encoded (and compressed when
//!   it pays) once per codec, then the same bytes handed to every viewer's
//!   queue. With 1 viewer it is the cost of packing one batch for one
//!   connection; with 1,000 it shows what encoding once saves.
//! - `push_path`: a push record as the push consumer receives it (the
//!   encoded `PushRecord` of 32 inbox refs for one user), decoded, handed
//!   to the user's connection through the [`Hub`] (`dispatch`), and then
//!   turned into the bytes the connection writes (`record_to_wire`): the
//!   messages with their cursors, packed into Push frames within the frame
//!   budget (`tern_wire::pack_batch`, `encode_server`), each with its TCP
//!   length prefix ([`LengthCodec`]).
//!
//! What `push_path` cannot reach from outside the crate, it mirrors: the
//! consumer's dispatch (`pusher::run`: `user_conns` + `offer`) and the
//! frame split and Push fields of `Session::catch_up` / `Session::push`
//! (`session/delivery.rs`), which are interleaved there with the inbox read
//! and the push window. The inbox and body reads are a map lookup here
//! (about what a body-cache hit costs); the store is not measured. The
//! metric counters `Session::push` bumps are left out.
//!
//! ```sh
//! cargo bench -p tern-gateway --bench push -- --measurement-time 2 --warm-up-time 1
//! ```

// Bench code: a failed unwrap is a broken bench, not a server panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use tern_core::ids::MessageId;
use tern_core::proto::client::{Codec, Message, Push, server_frame};
use tern_core::proto::records::{Deliveries, InboxRef, PushRecord, StoredMessage, push_record};
use tern_core::store::client_message;
use tern_gateway::GatewayConfig;
use tern_gateway::hub::{ConnHandle, Hub, SessionEvent};
use tern_gateway::rooms::{RoomFrame, Rooms, Viewer};
use tern_gateway::transport::LengthCodec;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Encoder as _;

/// Messages in a batch: a merge window's worth for a busy user or room.
const BATCH: usize = 32;
/// Average body size: the load tool's messages are 100 bytes.
const BODY_BYTES: usize = 100;
/// `session::FRAME_OVERHEAD` (private): room left in a frame around its messages.
const FRAME_OVERHEAD: usize = 1024;

/// Words the bodies are made of: chat-like text compresses like chat.
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

fn body(rng: &mut Lcg) -> Bytes {
    let mut s = String::with_capacity(BODY_BYTES + 16);
    while s.len() < BODY_BYTES {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rng.next() % WORDS.len()]);
    }
    s.into()
}

/// A stored message as the store (or the body cache) returns it.
fn stored(rng: &mut Lcg, i: u64) -> StoredMessage {
    let id = MessageId(0x0193_0000_0000_7000_8000_0000_0000_0000_u128 | u128::from(i));
    StoredMessage {
        message_id: id.to_bytes().to_vec().into(),
        conversation: "d:alice:bob".into(),
        seq: 1_000 + i,
        sender_user: "alice".into(),
        sender_device: "phone".into(),
        client_msg_id: format!("c-{:016x}", rng.next()),
        content_type: "text/plain".into(),
        body: body(rng),
        sent_at_ms: 1_796_000_000_000 + i * 37,
    }
}

const CODECS: [(&str, Codec); 2] = [("none", Codec::None), ("zstd", Codec::Zstd)];

fn room_fan_out(c: &mut Criterion) {
    let config = GatewayConfig::default();
    let mut rng = Lcg(42);
    let messages: Vec<Message> = (0..BATCH as u64)
        .map(|i| client_message(stored(&mut rng, i), 0))
        .collect();
    // Batches timed between two drains of the viewers' queues: the queues
    // never fill, so every viewer is reached (the dropping path is cheaper).
    let chunk = config.room_queue as u64;
    let mut group = c.benchmark_group("room_fan_out");
    for (name, codec) in CODECS {
        for viewers in [1_u64, 1_000] {
            let rooms = Rooms::default();
            let mut queues: Vec<mpsc::Receiver<RoomFrame>> = (0..viewers)
                .map(|conn| {
                    let (queue, rx) = mpsc::channel(config.room_queue);
                    let viewer = Viewer {
                        epoch: 1,
                        codec,
                        queue,
                    };
                    rooms.join("lobby", conn, viewer);
                    rx
                })
                .collect();
            // Deliveries: one message reaching one viewer.
            group.throughput(Throughput::Elements(viewers * BATCH as u64));
            let id = BenchmarkId::new(name, format!("{viewers}_viewers"));
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(chunk);
                        let start = Instant::now();
                        for _ in 0..n {
                            let (reached, dropped) = rooms.fan_out(
                                "lobby",
                                black_box(&messages),
                                config.compress_min_bytes,
                            );
                            debug_assert_eq!((reached, dropped), (viewers, 0));
                        }
                        timed += start.elapsed();
                        for rx in &mut queues {
                            while rx.try_recv().is_ok() {}
                        }
                        left -= n;
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

/// What the push path starts from: the push record's bytes on the log, the
/// hub with the user's connection, and the bodies of the entries.
struct PushPath {
    record: Bytes,
    hub: Hub,
    mailbox: mpsc::Receiver<SessionEvent>,
    /// Stand-in for the inbox and body reads (the store is not measured).
    bodies: HashMap<u128, StoredMessage>,
    /// `frame_budget` of the default config.
    max_bytes: usize,
    max_messages: usize,
    compress_min: usize,
    codec: LengthCodec,
}

impl PushPath {
    fn new(codec: Codec) -> Self {
        let config = GatewayConfig::default();
        let mut rng = Lcg(42);
        let messages: Vec<StoredMessage> = (0..BATCH as u64).map(|i| stored(&mut rng, i)).collect();
        let refs = messages
            .iter()
            .enumerate()
            .map(|(i, m)| InboxRef {
                cursor: 50_000 + i as u64,
                message_id: m.message_id.clone(),
                traceparent: String::new(),
            })
            .collect();
        let record = PushRecord {
            kind: Some(push_record::Kind::Deliveries(Deliveries {
                user: "bob".into(),
                refs,
            })),
        }
        .encode_to_vec()
        .into();
        let bodies = messages
            .into_iter()
            .map(|m| (MessageId::from_slice(&m.message_id).unwrap().0, m))
            .collect();
        let hub = Hub::new();
        let (tx, mailbox) = mpsc::channel(config.mailbox);
        // Nobody watches for a kick here: the mailbox never fills.
        let (kick, _) = watch::channel(None);
        hub.insert(
            1,
            ConnHandle {
                user: "bob".into(),
                device: "phone".into(),
                codec,
                token_issued_at_ms: 0,
                mailbox: tx,
                kick,
            },
            true,
        );
        PushPath {
            record,
            hub,
            mailbox,
            bodies,
            max_bytes: config
                .push_max_bytes
                .min(config.max_frame_bytes.saturating_sub(FRAME_OVERHEAD))
                .max(1),
            max_messages: config.push_max_messages,
            compress_min: config.compress_min_bytes,
            codec: LengthCodec(tern_wire::LengthPrefixed::new(config.max_frame_bytes), None),
        }
    }

    /// The push consumer's part: decode the record (as
    /// `topics::consume_push_topic` does) and offer its refs to each of
    /// the user's connections (as `pusher::run` does); then the session
    /// takes them from its mailbox.
    fn dispatch(&mut self) -> Vec<InboxRef> {
        let record = PushRecord::decode(self.record.clone()).unwrap();
        let Some(push_record::Kind::Deliveries(deliveries)) = record.kind else {
            panic!("not deliveries");
        };
        let conns = self.hub.user_conns(&deliveries.user);
        if let Some((last, rest)) = conns.split_last() {
            for c in rest {
                c.offer(SessionEvent::Deliveries(deliveries.refs.clone()));
            }
            last.offer(SessionEvent::Deliveries(deliveries.refs));
        }
        match self.mailbox.try_recv() {
            Ok(SessionEvent::Deliveries(refs)) => refs,
            _ => panic!("nothing in the mailbox"),
        }
    }

    /// The session's part: the entries' messages packed into as few Push
    /// frames as fit the budget, as `Session::catch_up` and `Session::push`
    /// do, each written to `out` with its length prefix.
    fn frames(&mut self, refs: &[InboxRef], codec: Codec, out: &mut BytesMut) {
        let mut frame: Vec<Message> = Vec::new();
        let mut frame_bytes = 0;
        let read_to = refs.last().map_or(0, |r| r.cursor);
        for r in refs {
            let Some(id) = MessageId::from_slice(&r.message_id) else {
                continue;
            };
            let Some(m) = self.bodies.get(&id.0) else {
                continue;
            };
            let m = client_message(m.clone(), r.cursor);
            let len = m.encoded_len() + 4;
            if !frame.is_empty()
                && (frame_bytes + len > self.max_bytes || frame.len() >= self.max_messages)
            {
                let through = frame.last().map_or(read_to, |m| m.cursor);
                self.push(std::mem::take(&mut frame), through, true, codec, out);
                frame_bytes = 0;
            }
            frame_bytes += len;
            frame.push(m);
        }
        if !frame.is_empty() {
            self.push(frame, read_to, false, codec, out);
        }
    }

    fn push(
        &mut self,
        messages: Vec<Message>,
        through: u64,
        more_pending: bool,
        codec: Codec,
        out: &mut BytesMut,
    ) {
        let first_cursor = messages.first().map_or(through, |m| m.cursor);
        let (used, payload) = tern_wire::pack_batch(messages, codec, self.compress_min);
        let frame = tern_wire::encode_server(server_frame::Kind::Push(Push {
            first_cursor,
            last_cursor: through,
            codec: used as i32,
            payload,
            more_pending,
            older_not_pushed: false,
            gap: false,
        }));
        self.codec.encode(frame, out).unwrap();
    }
}

fn push_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("push_path");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut path = PushPath::new(Codec::None);
    group.bench_function("dispatch", |b| b.iter(|| path.dispatch()));
    for (name, codec) in CODECS {
        let mut path = PushPath::new(codec);
        let mut out = BytesMut::new();
        let refs = path.dispatch();
        path.frames(&refs, codec, &mut out);
        println!(
            "push_path/{name}: {BATCH} messages, {} bytes written",
            out.len()
        );
        group.bench_function(BenchmarkId::new("record_to_wire", name), |b| {
            b.iter(|| {
                // A write buffer drained by the socket between pushes.
                out.clear();
                let refs = path.dispatch();
                path.frames(&refs, black_box(codec), &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, room_fan_out, push_path);
criterion_main!(benches);
