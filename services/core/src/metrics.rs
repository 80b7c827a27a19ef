//! Prometheus metrics: named counters, gauges and histograms, rendered in
//! the text exposition format at `/metrics`. Each crate owns its metrics as
//! statics and lists them in one [`Family`] (tern-core's own, below, are the
//! boundaries' and the stages'); a node renders the families it runs. Names
//! follow `tern_<service>_<what>[_total]` (histograms end in their unit:
//! `_seconds`, `_messages`, `_records`); labels carry only small fixed sets
//! (stage names, disconnect reasons), never user ids. Every name is
//! described for operators in `docs/metrics.md`; a ternd test keeps the two
//! in step.

use std::fmt::Write as _;

use crate::sync;

mod kinds;

pub use kinds::{Counter, Gauge, Histogram, LabeledCounter, LabeledGauge, LabeledHistogram};

/// Every metric one crate owns, so a node can render them all.
pub struct Family {
    pub gauges: &'static [&'static Gauge],
    pub counters: &'static [&'static Counter],
    pub labeled_counters: &'static [&'static LabeledCounter],
    pub labeled_gauges: &'static [&'static LabeledGauge],
    pub histograms: &'static [&'static Histogram],
    pub labeled_histograms: &'static [&'static LabeledHistogram],
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Every metric of `families` in the Prometheus text format.
pub fn render(families: &[&Family]) -> String {
    let mut out = String::new();
    for f in families {
        for g in f.gauges {
            header(&mut out, g.name, g.help, "gauge");
            let _ = writeln!(out, "{} {}", g.name, g.get());
        }
        for c in f.counters {
            header(&mut out, c.name, c.help, "counter");
            let _ = writeln!(out, "{} {}", c.name, c.get());
        }
        for l in f.labeled_counters {
            header(&mut out, l.name, l.help, "counter");
            for (value, n) in sync::lock(&l.values).iter() {
                let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", l.name, l.label);
            }
        }
        for g in f.labeled_gauges {
            header(&mut out, g.name, g.help, "gauge");
            for (value, n) in sync::lock(&g.values).iter() {
                let _ = writeln!(out, "{}{{{}=\"{value}\"}} {n}", g.name, g.label);
            }
        }
        for h in f.histograms {
            kinds::render_histogram(&mut out, h);
        }
        for h in f.labeled_histograms {
            kinds::render_labeled_histogram(&mut out, h);
        }
    }
    out
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

/// tern-core's metrics: the boundaries (store, log, routes) and the stages.
pub static CORE: Family = Family {
    gauges: &[],
    counters: &[&CQL_STATEMENTS],
    labeled_counters: &[
        &STORE_ERRORS,
        &LOG_ERRORS,
        &ROUTES_ERRORS,
        &STAGE_BATCHES,
        &STAGE_RECORDS,
        &STAGE_RETRIES,
    ],
    labeled_gauges: &[&STAGE_CONSUMER_LAG],
    histograms: &[],
    labeled_histograms: &[
        &STORE_OP_SECONDS,
        &LOG_OP_SECONDS,
        &ROUTES_OP_SECONDS,
        &STAGE_BATCH_RECORDS,
    ],
};
