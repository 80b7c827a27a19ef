//! The gateway's metrics (`tern_gateway_*`, `tern_room_*`), listed in
//! [`GATEWAY`] for the node to render.

use tern_core::metrics::{
    BATCH_BUCKETS, Counter, Family, Gauge, Histogram, LATENCY_BUCKETS, LabeledCounter,
};

pub static CONNECTIONS: Gauge = Gauge::new(
    "tern_gateway_connections",
    "Client connections open on this gateway.",
);
pub static LOGINS: Counter = Counter::new("tern_gateway_logins_total", "Successful logins.");
pub static SENDS: Counter = Counter::new(
    "tern_gateway_sends_total",
    "Sends accepted and appended to the inbound log.",
);
pub static PUSHES: Counter = Counter::new(
    "tern_gateway_pushes_total",
    "Push frames written (re-sends included).",
);
pub static PUSHED_MESSAGES: Counter = Counter::new(
    "tern_gateway_pushed_messages_total",
    "Messages in push frames sent for the first time.",
);
pub static PUSH_PAYLOAD_BYTES: Counter = Counter::new(
    "tern_gateway_push_payload_bytes_total",
    "Push payload bytes after compression.",
);
pub static PUSH_RAW_BYTES: Counter = Counter::new(
    "tern_gateway_push_raw_bytes_total",
    "Push payload bytes before compression (the ratio is the compression ratio).",
);
pub static ACKS: Counter = Counter::new("tern_gateway_acks_total", "Push ACKs received.");
pub static ACK_LATENCY: Histogram = Histogram::new(
    "tern_gateway_ack_latency_seconds",
    "From a push frame's first write to its connection to the client's ACK covering it.",
    LATENCY_BUCKETS,
);
pub static SEND_RECEIPT: Histogram = Histogram::new(
    "tern_gateway_send_receipt_seconds",
    "From receiving a send frame to writing its successful receipt back.",
    LATENCY_BUCKETS,
);
pub static PUSH_BATCH: Histogram = Histogram::new(
    "tern_gateway_push_batch_messages",
    "Messages per push frame sent for the first time (empty frames aside).",
    BATCH_BUCKETS,
);
pub static GROUP_FEED_POSTS: Counter = Counter::new(
    "tern_gateway_group_feed_posts_total",
    "Large-group messages read from the group feed.",
);
pub static GROUP_FEED_FRAMES: Counter = Counter::new(
    "tern_gateway_group_feed_frames_total",
    "Large-group messages handed to a member's connection.",
);
pub static GROUP_FEED_DROPPED: Counter = Counter::new(
    "tern_gateway_group_feed_dropped_total",
    "Large-group messages not pushed to a connection whose queues were full (it pages history).",
);
pub static BODY_CACHE_HITS: Counter = Counter::new(
    "tern_gateway_body_cache_hits_total",
    "Message bodies for pushes and pages found in the gateway's cache.",
);
pub static BODY_CACHE_MISSES: Counter = Counter::new(
    "tern_gateway_body_cache_misses_total",
    "Message bodies for pushes and pages read from the store.",
);
pub static DISCONNECTS: LabeledCounter = LabeledCounter::new(
    "tern_gateway_disconnects_total",
    "Connections closed by the gateway, by reason.",
    "reason",
);
pub static GATEWAY_LIMITED: LabeledCounter = LabeledCounter::new(
    "tern_gateway_limited_total",
    "Requests a gateway limit refused or slowed down, by limit.",
    "limit",
);
pub static ROOM_VIEWERS: Gauge = Gauge::new(
    "tern_gateway_room_viewers",
    "Connections in a live room on this gateway.",
);
pub static ROOM_MESSAGES: Counter = Counter::new(
    "tern_gateway_room_messages_total",
    "Room messages read from the rooms topic.",
);
pub static ROOM_BATCHES: Counter = Counter::new(
    "tern_gateway_room_batches_total",
    "Merged room batches fanned out (one per room per merge window).",
);
pub static ROOM_ENCODES: Counter = Counter::new(
    "tern_gateway_room_encodes_total",
    "Room batches encoded (once per batch and codec, whatever the viewer count).",
);
pub static ROOM_FRAMES: Counter = Counter::new(
    "tern_gateway_room_frames_total",
    "Room batch frames handed to viewers.",
);
pub static ROOM_DROPPED: Counter = Counter::new(
    "tern_gateway_room_dropped_total",
    "Room batch frames dropped because a viewer could not keep up.",
);
pub static ROOM_PAYLOAD_BYTES: Counter = Counter::new(
    "tern_gateway_room_payload_bytes_total",
    "Room batch payload bytes after compression, per encoding.",
);
pub static ROOM_RAW_BYTES: Counter = Counter::new(
    "tern_gateway_room_raw_bytes_total",
    "Room batch payload bytes before compression, per encoding.",
);

/// Every metric of the gateway.
pub static GATEWAY: Family = Family {
    gauges: &[&CONNECTIONS, &ROOM_VIEWERS],
    counters: &[
        &LOGINS,
        &SENDS,
        &PUSHES,
        &PUSHED_MESSAGES,
        &PUSH_PAYLOAD_BYTES,
        &PUSH_RAW_BYTES,
        &ACKS,
        &GROUP_FEED_POSTS,
        &GROUP_FEED_FRAMES,
        &GROUP_FEED_DROPPED,
        &BODY_CACHE_HITS,
        &BODY_CACHE_MISSES,
        &ROOM_MESSAGES,
        &ROOM_BATCHES,
        &ROOM_ENCODES,
        &ROOM_FRAMES,
        &ROOM_DROPPED,
        &ROOM_PAYLOAD_BYTES,
        &ROOM_RAW_BYTES,
    ],
    labeled_counters: &[&DISCONNECTS, &GATEWAY_LIMITED],
    labeled_gauges: &[],
    histograms: &[&ACK_LATENCY, &SEND_RECEIPT, &PUSH_BATCH],
    labeled_histograms: &[],
};
