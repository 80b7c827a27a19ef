//! The archiver's metrics (`tern_archive_*`), listed in [`ARCHIVE`] for the
//! node to render.

use tern_core::metrics::{Counter, Family, Gauge};

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

/// Every metric of the archiver.
pub static ARCHIVE: Family = Family {
    gauges: &[&ARCHIVE_OPEN_RECORDS],
    counters: &[
        &ARCHIVE_SEGMENTS,
        &ARCHIVE_RECORDS,
        &ARCHIVE_BYTES,
        &ARCHIVE_RAW_BYTES,
        &ARCHIVE_REPLAYS_SKIPPED,
        &ARCHIVE_WRITE_ERRORS,
    ],
    labeled_counters: &[],
    labeled_gauges: &[],
    histograms: &[],
    labeled_histograms: &[],
};
