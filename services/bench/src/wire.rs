//! Bytes the gateway wrote, from its /metrics before and after a run: push
//! payloads before and after compression, and the same for room batches
//! (encoded once per batch, whatever the number of viewers).

use std::collections::HashMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Report;

const COUNTERS: [&str; 4] = [
    "tern_gateway_push_raw_bytes_total",
    "tern_gateway_push_payload_bytes_total",
    "tern_gateway_room_raw_bytes_total",
    "tern_gateway_room_payload_bytes_total",
];

/// The counters above from `admin`'s /metrics; None if it does not answer.
pub async fn scrape(admin: &str) -> Option<HashMap<String, u64>> {
    let admin = admin.trim_start_matches("http://").trim_end_matches('/');
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        Some(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()??;
    Some(parse(&body))
}

fn parse(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            COUNTERS
                .contains(&name)
                .then(|| Some((name.to_owned(), value.trim().parse().ok()?)))?
        })
        .collect()
}

/// Adds what the gateway wrote during the run, or says why it cannot.
pub fn add_figures(
    report: &mut Report,
    admin: &str,
    before: Option<HashMap<String, u64>>,
    after: Option<HashMap<String, u64>>,
) {
    let (Some(before), Some(after)) = (before, after) else {
        report.notes.push(format!(
            "no byte counts: the gateway's /metrics at {admin} did not answer (--admin)"
        ));
        return;
    };
    let delta = |name: &str| {
        after
            .get(name)
            .copied()
            .unwrap_or(0)
            .saturating_sub(before.get(name).copied().unwrap_or(0))
    };
    for (kind, raw, wire) in [
        ("push", COUNTERS[0], COUNTERS[1]),
        ("room", COUNTERS[2], COUNTERS[3]),
    ] {
        let (raw, wire) = (delta(raw), delta(wire));
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

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let text = "# HELP x\n# TYPE tern_gateway_push_raw_bytes_total counter\n\
                    tern_gateway_push_raw_bytes_total 1000\n\
                    tern_gateway_push_payload_bytes_total 250\n\
                    tern_gateway_acks_total 3\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["tern_gateway_push_raw_bytes_total"], 1000);
        let mut report = Report::default();
        let before = HashMap::from([("tern_gateway_push_raw_bytes_total".to_owned(), 200)]);
        add_figures(&mut report, "x", Some(before), Some(m));
        assert_eq!(report.counts["push_payload_raw_bytes"], 800);
        assert_eq!(report.counts["push_payload_wire_bytes"], 250);
        assert_eq!(report.counts["push_wire_to_raw"], 0.313);
        let mut none = Report::default();
        add_figures(&mut none, "127.0.0.1:1", None, None);
        assert!(none.notes[0].contains("127.0.0.1:1"));
    }
}
