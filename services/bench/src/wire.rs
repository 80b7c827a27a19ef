//! Bytes the gateways wrote during a run, from their /metrics
//! ([`crate::scrape`]): push payloads before and after compression, and the
//! same for room batches (encoded once per batch, whatever the number of
//! viewers). Other nodes count none of these, so the sum over every
//! `--admin` node is the gateways'.

use crate::report::Report;
use crate::scrape::Samples;

/// Adds the bytes written during the run, from what the counters grew by.
pub fn add_figures(report: &mut Report, growth: &Samples) {
    for kind in ["push", "room"] {
        let raw = growth.get(&format!("tern_gateway_{kind}_raw_bytes_total"), &[]) as u64;
        let wire = growth.get(&format!("tern_gateway_{kind}_payload_bytes_total"), &[]) as u64;
        if raw == 0 {
            continue;
        }
        report.count(&format!("{kind}_payload_raw_bytes"), raw);
        report.count(&format!("{kind}_payload_wire_bytes"), wire);
        report.count(
            &format!("{kind}_wire_to_raw"),
            (wire as f64 / raw as f64 * 1000.0).round() / 1000.0,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse;

    #[test]
    fn bytes_and_ratio_from_the_growth_of_the_counters() {
        let before = parse("tern_gateway_push_raw_bytes_total 200\n");
        let after = parse(
            "# TYPE tern_gateway_push_raw_bytes_total counter\n\
             tern_gateway_push_raw_bytes_total 1000\n\
             tern_gateway_push_payload_bytes_total 250\n\
             tern_gateway_acks_total 3\n",
        );
        let mut report = Report::default();
        add_figures(&mut report, &after.growth_since(&before).0);
        assert_eq!(report.counts["push_payload_raw_bytes"], 800);
        assert_eq!(report.counts["push_payload_wire_bytes"], 250);
        assert_eq!(report.counts["push_wire_to_raw"], 0.313);
        assert!(!report.counts.contains_key("room_payload_raw_bytes"));
    }
}
