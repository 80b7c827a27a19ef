//! Prometheus metrics: named counters, gauges and histograms every service
//! updates, rendered in the text exposition format at `/metrics`. Names
//! follow `tern_<service>_<what>[_total]` (histograms end in their unit:
//! `_seconds`, `_messages`, `_records`); labels carry only small fixed sets
//! (stage names, disconnect reasons), never user ids. Every name is
//! described for operators in `docs/metrics.md`; a ternd test keeps the two
//! in step.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::sync;

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
        *sync::lock(&self.values).entry(value).or_default() += n;
    }

    pub fn inc(&self, value: &'static str) {
        self.add(value, 1);
    }

    pub fn get(&self, value: &str) -> u64 {
        sync::lock(&self.values).get(value).copied().unwrap_or(0)
    }
}

/// A gauge with one label (e.g. `stage`), for small fixed label sets.
pub struct LabeledGauge {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    values: Mutex<BTreeMap<&'static str, i64>>,
}

impl LabeledGauge {
    pub const fn new(name: &'static str, help: &'static str, label: &'static str) -> Self {
        LabeledGauge {
            name,
            help,
            label,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set(&self, value: &'static str, v: i64) {
        sync::lock(&self.values).insert(value, v);
    }

    /// None until the first `set` for `value`.
    pub fn get(&self, value: &str) -> Option<i64> {
        sync::lock(&self.values).get(value).copied()
    }
}

/// Most bucket bounds a histogram takes (the `+Inf` bucket aside). Fixed,
/// so that a histogram is a `static` with its counters inline.
const MAX_BOUNDS: usize = 24;

/// Observation counts per bucket and their sum, updated with atomics only:
/// cheap enough for every push and every ACK on the gateway.
struct Buckets {
    /// Upper bounds (`le`), increasing.
    bounds: &'static [f64],
    /// Observations per bucket, not cumulative (rendering adds them up, so
    /// the `+Inf` bucket always equals the count); index `bounds.len()`
    /// is the `+Inf` bucket.
    counts: [AtomicU64; MAX_BOUNDS + 1],
    /// Sum of the observations, as `f64` bits (0 is 0.0).
    sum: AtomicU64,
}

impl Buckets {
    const fn new(bounds: &'static [f64]) -> Self {
        // Checked at compile time for the statics below.
        assert!(bounds.len() <= MAX_BOUNDS, "too many histogram buckets");
        let mut i = 1;
        while i < bounds.len() {
            assert!(bounds[i - 1] < bounds[i], "histogram bounds must increase");
            i += 1;
        }
        Buckets {
            bounds,
            counts: [const { AtomicU64::new(0) }; MAX_BOUNDS + 1],
            sum: AtomicU64::new(0),
        }
    }

    fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        // The first bucket whose bound is at or above v (`le` is inclusive).
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }

    fn count(&self) -> u64 {
        self.counts[..=self.bounds.len()]
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    /// `_bucket` (cumulative, ending with `+Inf`), `_sum` and `_count`
    /// lines; `label` is the one label of a labeled histogram.
    fn render(&self, out: &mut String, name: &str, label: Option<(&str, &str)>) {
        let (inner, braced) = match label {
            Some((l, v)) => (format!("{l}=\"{v}\","), format!("{{{l}=\"{v}\"}}")),
            None => (String::new(), String::new()),
        };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{inner}le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{inner}le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "{name}_sum{braced} {}", self.sum());
        let _ = writeln!(out, "{name}_count{braced} {cumulative}");
    }
}

/// A histogram with fixed bucket bounds.
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    buckets: Buckets,
}

impl Histogram {
    /// `bounds`: the buckets' upper bounds, increasing, at most 24 of them.
    pub const fn new(name: &'static str, help: &'static str, bounds: &'static [f64]) -> Self {
        Histogram {
            name,
            help,
            buckets: Buckets::new(bounds),
        }
    }

    pub fn observe(&self, v: f64) {
        self.buckets.observe(v);
    }

    /// Observes a duration in seconds (histograms of time are `_seconds`).
    pub fn observe_duration(&self, d: std::time::Duration) {
        self.observe(d.as_secs_f64());
    }

    pub fn count(&self) -> u64 {
        self.buckets.count()
    }

    pub fn sum(&self) -> f64 {
        self.buckets.sum()
    }
}

/// A histogram with one label (e.g. `stage`), for small fixed label sets.
/// A short lock per observation: meant for per-batch use, not per message.
pub struct LabeledHistogram {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    bounds: &'static [f64],
    /// Read-locked on the hot path (each label's buckets are atomics);
    /// write-locked only to add a label the first time it is seen.
    values: RwLock<BTreeMap<&'static str, Buckets>>,
}

impl LabeledHistogram {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        label: &'static str,
        bounds: &'static [f64],
    ) -> Self {
        // Checks the bounds at compile time, as for `Histogram`.
        let _ = Buckets::new(bounds);
        LabeledHistogram {
            name,
            help,
            label,
            bounds,
            values: RwLock::new(BTreeMap::new()),
        }
    }

    /// Called for every backend operation: shared access unless the label
    /// is new.
    pub fn observe(&self, value: &'static str, v: f64) {
        if let Some(b) = sync::read(&self.values).get(value) {
            b.observe(v);
            return;
        }
        sync::write(&self.values)
            .entry(value)
            .or_insert_with(|| Buckets::new(self.bounds))
            .observe(v);
    }

    pub fn count(&self, value: &str) -> u64 {
        sync::read(&self.values)
            .get(value)
            .map_or(0, Buckets::count)
    }
}

/// Bucket bounds of latencies, seconds: a millisecond to a minute. A push
/// the client missed is re-sent after `ack_timeout` (5 s), and a send is
/// answered within `receipt_timeout` (10 s), so both fit well inside.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds of batch sizes (messages or records): a push frame holds
/// at most `push_max_messages` (500), a stage batch at most 512 records.
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

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
/// Backend operations, much faster than end-to-end latencies: from 100 µs.
pub const OP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
pub static STORE_OP_SECONDS: LabeledHistogram = LabeledHistogram::new(
    "tern_store_op_seconds",
    "Time of each message-store operation, by operation (the trait method).",
    "op",
    OP_BUCKETS,
);
pub static STORE_ERRORS: LabeledCounter = LabeledCounter::new(
    "tern_store_errors_total",
    "Message-store operations that failed, by operation.",
    "op",
);
pub static LOG_OP_SECONDS: LabeledHistogram = LabeledHistogram::new(
    "tern_log_op_seconds",
    "Time of each event-log operation (append, append_many, subscribe, commit), by operation.",
    "op",
    OP_BUCKETS,
);
pub static LOG_ERRORS: LabeledCounter = LabeledCounter::new(
    "tern_log_errors_total",
    "Event-log operations that failed (poll included), by operation.",
    "op",
);
pub static ROUTES_OP_SECONDS: LabeledHistogram = LabeledHistogram::new(
    "tern_routes_op_seconds",
    "Time of each route-directory operation, by operation.",
    "op",
    OP_BUCKETS,
);
pub static ROUTES_ERRORS: LabeledCounter = LabeledCounter::new(
    "tern_routes_errors_total",
    "Route-directory operations that failed, by operation.",
    "op",
);
pub static CQL_STATEMENTS: Counter = Counter::new(
    "tern_cql_statements_total",
    "CQL statements (and batches: one round trip each) the CQL store executed.",
);
pub static GATEWAY_LIMITED: LabeledCounter = LabeledCounter::new(
    "tern_gateway_limited_total",
    "Requests a gateway limit refused or slowed down, by limit.",
    "limit",
);
pub static API_LIMITED: LabeledCounter = LabeledCounter::new(
    "tern_api_limited_total",
    "API calls a limit refused, by limit.",
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
pub static STAGE_BATCH_RECORDS: LabeledHistogram = LabeledHistogram::new(
    "tern_stage_batch_records",
    "Records per batch handled and committed, by stage.",
    "stage",
    BATCH_BUCKETS,
);
pub static STAGE_CONSUMER_LAG: LabeledGauge = LabeledGauge::new(
    "tern_stage_consumer_lag",
    "Records in the partitions this process consumes not yet committed by the stage's group, by stage.",
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
        &CQL_STATEMENTS,
    ] {
        header(&mut out, c.name, c.help, "counter");
        let _ = writeln!(out, "{} {}", c.name, c.get());
    }
    for l in [
        &DISCONNECTS,
        &GATEWAY_LIMITED,
        &API_LIMITED,
        &STORE_ERRORS,
        &LOG_ERRORS,
        &ROUTES_ERRORS,
        &STAGE_BATCHES,
        &STAGE_RECORDS,
        &STAGE_RETRIES,
    ] {
        header(&mut out, l.name, l.help, "counter");
        for (value, n) in sync::lock(&l.values).iter() {
            let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", l.name, l.label);
        }
    }
    let g = &STAGE_CONSUMER_LAG;
    header(&mut out, g.name, g.help, "gauge");
    for (value, n) in sync::lock(&g.values).iter() {
        let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", g.name, g.label);
    }
    for h in [&ACK_LATENCY, &SEND_RECEIPT, &PUSH_BATCH] {
        render_histogram(&mut out, h);
    }
    for h in [
        &STAGE_BATCH_RECORDS,
        &STORE_OP_SECONDS,
        &LOG_OP_SECONDS,
        &ROUTES_OP_SECONDS,
    ] {
        render_labeled_histogram(&mut out, h);
    }
    out
}

fn render_histogram(out: &mut String, h: &Histogram) {
    header(out, h.name, h.help, "histogram");
    h.buckets.render(out, h.name, None);
}

fn render_labeled_histogram(out: &mut String, h: &LabeledHistogram) {
    header(out, h.name, h.help, "histogram");
    for (value, b) in sync::read(&h.values).iter() {
        b.render(out, h.name, Some((h.label, value)));
    }
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
        assert!(text.contains("# TYPE tern_gateway_ack_latency_seconds histogram"));
        assert!(text.contains("# TYPE tern_stage_consumer_lag gauge"));
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn a_histogram_renders_cumulative_buckets_sum_and_count() {
        static H: super::Histogram =
            super::Histogram::new("tern_test_latency_seconds", "Test.", &[0.1, 1.0, 10.0]);
        // On a bound counts in that bucket (`le` is inclusive); past the
        // last bound only in +Inf; NaN nowhere.
        for v in [0.05, 0.1, 0.5, 2.0, 3.0, 100.0, f64::NAN] {
            H.observe(v);
        }
        let mut out = String::new();
        super::render_histogram(&mut out, &H);
        assert_eq!(
            lines(&out),
            vec![
                "# HELP tern_test_latency_seconds Test.",
                "# TYPE tern_test_latency_seconds histogram",
                "tern_test_latency_seconds_bucket{le=\"0.1\"} 2",
                "tern_test_latency_seconds_bucket{le=\"1\"} 3",
                "tern_test_latency_seconds_bucket{le=\"10\"} 5",
                "tern_test_latency_seconds_bucket{le=\"+Inf\"} 6",
                "tern_test_latency_seconds_sum 105.65",
                "tern_test_latency_seconds_count 6",
            ]
        );
        assert_eq!((H.count(), H.sum()), (6, 105.65));
    }

    #[test]
    fn an_empty_histogram_renders_zeros() {
        static H: super::Histogram = super::Histogram::new("tern_test_empty", "Test.", &[1.0]);
        let mut out = String::new();
        super::render_histogram(&mut out, &H);
        assert!(out.contains("tern_test_empty_bucket{le=\"1\"} 0\n"));
        assert!(out.contains("tern_test_empty_bucket{le=\"+Inf\"} 0\n"));
        assert!(out.contains("tern_test_empty_sum 0\n"));
        assert!(out.contains("tern_test_empty_count 0\n"));
    }

    #[test]
    fn a_labeled_histogram_renders_one_series_per_label_value() {
        static H: super::LabeledHistogram =
            super::LabeledHistogram::new("tern_test_batch_records", "Test.", "stage", &[1.0, 10.0]);
        H.observe("router", 1.0);
        H.observe("router", 5.0);
        H.observe("persister", 50.0);
        let mut out = String::new();
        super::render_labeled_histogram(&mut out, &H);
        assert_eq!(
            lines(&out)[2..],
            [
                "tern_test_batch_records_bucket{stage=\"persister\",le=\"1\"} 0",
                "tern_test_batch_records_bucket{stage=\"persister\",le=\"10\"} 0",
                "tern_test_batch_records_bucket{stage=\"persister\",le=\"+Inf\"} 1",
                "tern_test_batch_records_sum{stage=\"persister\"} 50",
                "tern_test_batch_records_count{stage=\"persister\"} 1",
                "tern_test_batch_records_bucket{stage=\"router\",le=\"1\"} 1",
                "tern_test_batch_records_bucket{stage=\"router\",le=\"10\"} 2",
                "tern_test_batch_records_bucket{stage=\"router\",le=\"+Inf\"} 2",
                "tern_test_batch_records_sum{stage=\"router\"} 6",
                "tern_test_batch_records_count{stage=\"router\"} 2",
            ]
        );
        assert_eq!((H.count("router"), H.count("archiver")), (2, 0));
    }

    #[test]
    fn concurrent_observations_are_all_counted() {
        static H: super::Histogram = super::Histogram::new("tern_test_concurrent", "Test.", &[1.0]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        H.observe(0.5);
                    }
                });
            }
        });
        assert_eq!(H.count(), 40_000);
        assert_eq!(H.sum(), 20_000.0);
    }

    #[test]
    fn a_labeled_gauge_keeps_the_last_value_per_label() {
        let g = super::LabeledGauge::new("tern_test_lag", "Test.", "stage");
        assert_eq!(g.get("router"), None);
        g.set("router", 7);
        g.set("router", 3);
        assert_eq!(g.get("router"), Some(3));
    }
}
