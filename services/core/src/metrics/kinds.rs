//! The kinds of metric: counters, gauges and histograms, plain or with one
//! label, each a `static` updated with atomics (or a short lock per labeled
//! observation), and rendered in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use crate::sync;

use super::header;

pub struct Counter {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) value: AtomicU64,
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
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) value: AtomicI64,
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
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) label: &'static str,
    pub(super) values: Mutex<BTreeMap<&'static str, u64>>,
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
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) label: &'static str,
    pub(super) values: Mutex<BTreeMap<&'static str, i64>>,
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

pub(super) fn render_histogram(out: &mut String, h: &Histogram) {
    header(out, h.name, h.help, "histogram");
    h.buckets.render(out, h.name, None);
}

pub(super) fn render_labeled_histogram(out: &mut String, h: &LabeledHistogram) {
    header(out, h.name, h.help, "histogram");
    for (value, b) in sync::read(&h.values).iter() {
        b.render(out, h.name, Some((h.label, value)));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_prometheus_text() {
        use super::super::{CORE, CQL_STATEMENTS, STAGE_RECORDS, render};
        CQL_STATEMENTS.inc();
        STAGE_RECORDS.add("router", 3);
        let text = render(&[&CORE]);
        assert!(text.contains("# TYPE tern_cql_statements_total counter"));
        assert!(text.contains("tern_stage_records_total{stage=\"router\"} "));
        assert!(text.contains("# TYPE tern_store_op_seconds histogram"));
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
