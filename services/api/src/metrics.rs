//! The API's metrics, listed in [`API`] for the node to render.

use tern_core::metrics::{Family, LabeledCounter};

pub static API_LIMITED: LabeledCounter = LabeledCounter::new(
    "tern_api_limited_total",
    "API calls a limit refused, by limit.",
    "limit",
);

/// Every metric of the API.
pub static API: Family = Family {
    gauges: &[],
    counters: &[],
    labeled_counters: &[&API_LIMITED],
    labeled_gauges: &[],
    histograms: &[],
    labeled_histograms: &[],
};
