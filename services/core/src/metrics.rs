//! Prometheus metrics: named counters and gauges every service updates,
//! rendered in the text exposition format at `/metrics`. Names follow
//! `tern_<service>_<what>[_total]`; labels carry only small fixed sets
//! (stage names, disconnect reasons), never user ids.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Counter {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

pub struct Gauge {
    name: &'static str,
    help: &'static str,
    value: AtomicI64,
}

impl Gauge {
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Gauge {
            name,
            help,
            value: AtomicI64::new(0),
        }
    }

    pub fn inc(&self) {
        self.value.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.value.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn set(&self, v: i64) {
        self.value.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// A counter with one label (e.g. `reason`), for small fixed label sets.
pub struct LabeledCounter {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Mutex<BTreeMap<&'static str, u64>>,
}

impl LabeledCounter {
    pub const fn new(name: &'static str, help: &'static str, label: &'static str) -> Self {
        LabeledCounter {
            name,
            help,
            label,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn add(&self, value: &'static str, n: u64) {
        *self
            .values
            .lock()
            .expect("metric poisoned")
            .entry(value)
            .or_default() += n;
    }

    pub fn inc(&self, value: &'static str) {
        self.add(value, 1);
    }

    pub fn get(&self, value: &str) -> u64 {
        self.values
            .lock()
            .expect("metric poisoned")
            .get(value)
            .copied()
            .unwrap_or(0)
    }
}

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
pub static STAGE_BATCHES: LabeledCounter = LabeledCounter::new(
    "tern_stage_batches_total",
    "Batches handled and committed, by stage.",
    "stage",
);
pub static STAGE_RECORDS: LabeledCounter = LabeledCounter::new(
    "tern_stage_records_total",
    "Records handled and committed, by stage.",
    "stage",
);
pub static STAGE_RETRIES: LabeledCounter = LabeledCounter::new(
    "tern_stage_retries_total",
    "Batches that failed and were retried, by stage.",
    "stage",
);

pub static ARCHIVE_OPEN_RECORDS: Gauge = Gauge::new(
    "tern_archive_open_records",
    "Messages in the archive segment not closed yet.",
);
pub static ARCHIVE_SEGMENTS: Counter = Counter::new(
    "tern_archive_segments_total",
    "Archive segments closed and written.",
);
pub static ARCHIVE_RECORDS: Counter = Counter::new(
    "tern_archive_records_total",
    "Messages written to the archive.",
);
pub static ARCHIVE_BYTES: Counter = Counter::new(
    "tern_archive_bytes_total",
    "Archive segment bytes written (compressed).",
);
pub static ARCHIVE_RAW_BYTES: Counter = Counter::new(
    "tern_archive_raw_bytes_total",
    "Archive segment bytes before compression.",
);
pub static ARCHIVE_REPLAYS_SKIPPED: Counter = Counter::new(
    "tern_archive_replays_skipped_total",
    "Archive records skipped because the archive already holds their inbound position.",
);
pub static ARCHIVE_WRITE_ERRORS: Counter = Counter::new(
    "tern_archive_write_errors_total",
    "Failed attempts to write a segment (retried).",
);

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every metric in the Prometheus text format.
pub fn render() -> String {
    let mut out = String::new();
    for g in [&CONNECTIONS, &ROOM_VIEWERS, &ARCHIVE_OPEN_RECORDS] {
        header(&mut out, g.name, g.help, "gauge");
        let _ = writeln!(out, "{} {}", g.name, g.get());
    }
    for c in [
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
        &ARCHIVE_SEGMENTS,
        &ARCHIVE_RECORDS,
        &ARCHIVE_BYTES,
        &ARCHIVE_RAW_BYTES,
        &ARCHIVE_REPLAYS_SKIPPED,
        &ARCHIVE_WRITE_ERRORS,
    ] {
        header(&mut out, c.name, c.help, "counter");
        let _ = writeln!(out, "{} {}", c.name, c.get());
    }
    for l in [&DISCONNECTS, &STAGE_BATCHES, &STAGE_RECORDS, &STAGE_RETRIES] {
        header(&mut out, l.name, l.help, "counter");
        for (value, n) in l.values.lock().expect("metric poisoned").iter() {
            let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", l.name, l.label);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_prometheus_text() {
        super::SENDS.inc();
        super::STAGE_RECORDS.add("router", 3);
        let text = super::render();
        assert!(text.contains("# TYPE tern_gateway_sends_total counter"));
        assert!(text.contains("tern_stage_records_total{stage=\"router\"} "));
        assert!(text.contains("tern_gateway_connections "));
    }
}
