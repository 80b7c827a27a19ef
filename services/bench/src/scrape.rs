//! The servers' /metrics before and after a run: fetched from every
//! `--admin` address, parsed from the Prometheus text format, and turned
//! into what each series grew by during the run, summed over the nodes.
//! [`crate::wire`] and [`crate::cost`] make figures of that growth.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Report;

/// One series: a metric name and its labels, sorted by label name
/// (`tern_store_op_seconds_count` with `op="read_inbox"`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

/// Values of every series of one scrape, or of the growth between two.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples(pub BTreeMap<Series, f64>);

impl Samples {
    /// The series `name` with exactly `labels`; 0 if absent (a labeled
    /// series appears only once observed, so absent means none yet).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .find(|(s, _)| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map_or(0.0, |(_, v)| *v)
    }

    /// The series `name` whose only label is `label`, by that label's value.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter_map(|(s, v)| match s.labels.as_slice() {
                [(l, value)] if s.name == name && l == label => Some((value.clone(), *v)),
                _ => None,
            })
            .collect()
    }

    /// What every series grew by from `before` to `self`, and the series
    /// that went down (the node restarted between the scrapes).
    pub fn growth_since(&self, before: &Samples) -> (Samples, Vec<Series>) {
        let mut went_down = Vec::new();
        let growth = self
            .0
            .iter()
            .map(|(s, after)| {
                let was = before.0.get(s).copied().unwrap_or(0.0);
                if *after < was {
                    went_down.push(s.clone());
                }
                (s.clone(), (after - was).max(0.0))
            })
            .collect();
        (Samples(growth), went_down)
    }

    /// Adds `other`'s values, series by series (several nodes).
    pub fn add(&mut self, other: Samples) {
        for (s, v) in other.0 {
            *self.0.entry(s).or_default() += v;
        }
    }
}

/// Every sample line of a Prometheus text exposition. Comments, blank and
/// malformed lines are skipped; a timestamp after the value is ignored.
pub fn parse(text: &str) -> Samples {
    Samples(text.lines().filter_map(parse_line).collect())
}

fn parse_line(line: &str) -> Option<(Series, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inside) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(inside)?;
        labels = parsed;
        rest = after;
    }
    // Separated from the name or labels by whitespace, then an optional
    // timestamp. `+Inf`, `-Inf` and `NaN` parse as f64.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    labels.sort();
    Some((
        Series {
            name: name.to_owned(),
            labels,
        },
        value,
    ))
}

/// `a="x",b="y\"z"}` (the opening brace already taken): the labels, with
/// `\\`, `\"` and `\n` unescaped, and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Some((labels, after));
        }
        let (name, after) = s.split_once('=')?;
        let name = name.trim();
        if name.is_empty() {
            return None;
        }
        let mut chars = after.trim_start().strip_prefix('"')?.char_indices();
        let quoted = &after.trim_start()[1..];
        let mut value = String::new();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((name.to_owned(), value));
        s = quoted[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return None;
        }
    }
}

/// The admin addresses to scrape: each `--admin`, split at commas, without
/// repeats (the same node twice would count twice).
pub fn nodes(admin: &[String]) -> Vec<String> {
    let mut nodes: Vec<String> = Vec::new();
    for a in admin.iter().flat_map(|a| a.split(',')) {
        let a = a.trim().trim_start_matches("http://").trim_end_matches('/');
        if !a.is_empty() && !nodes.iter().any(|n| n == a) {
            nodes.push(a.to_owned());
        }
    }
    nodes
}

/// One node's /metrics, or why not.
pub async fn fetch(admin: &str) -> Result<Samples, String> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {admin}\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        std::io::Result::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .map_err(|_| "no answer within 2 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or(("", ""));
    let status = head.lines().next().unwrap_or_default();
    match status.split_whitespace().nth(1) {
        Some("200") => Ok(parse(body)),
        _ => Err(format!("answered {status:?}")),
    }
}

/// Every node's /metrics, in the order of `nodes`.
pub async fn fetch_all(nodes: &[String]) -> Vec<Result<Samples, String>> {
    futures_util::future::join_all(nodes.iter().map(|n| fetch(n))).await
}

/// Adds the figures of what the nodes counted during the run (bytes
/// pushed, store cost per message), or says why there are none.
pub fn add_figures(
    report: &mut Report,
    nodes: &[String],
    before: Vec<Result<Samples, String>>,
    after: Vec<Result<Samples, String>>,
) {
    let mut growth = Samples::default();
    let mut missing = Vec::new();
    for ((node, before), after) in nodes.iter().zip(before).zip(after) {
        match (before, after) {
            (Ok(before), Ok(after)) => {
                let (grew, went_down) = after.growth_since(&before);
                if let Some(s) = went_down.first() {
                    report.notes.push(format!(
                        "{} on {node} went down during the run (did the node restart?): \
                         its figures below are too low",
                        s.name
                    ));
                }
                growth.add(grew);
            }
            (Err(e), _) | (_, Err(e)) => missing.push(format!("{node} ({e})")),
        }
    }
    if !missing.is_empty() || nodes.is_empty() {
        // A sum without one node would be a wrong figure, not a smaller one.
        report.notes.push(format!(
            "no byte counts or store cost: /metrics did not answer at {} (--admin takes \
             every node's admin address)",
            if missing.is_empty() {
                "any address".to_owned()
            } else {
                missing.join(", ")
            }
        ));
        return;
    }
    crate::wire::add_figures(report, &growth);
    crate::cost::add_figures(report, nodes, &growth);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As a ternd serves it: headers, counters with and without labels, a
    /// labeled histogram, and a label value with escapes.
    const SAMPLE: &str = r#"# HELP tern_gateway_push_raw_bytes_total Push payload bytes before compression.
# TYPE tern_gateway_push_raw_bytes_total counter
tern_gateway_push_raw_bytes_total 1000
# TYPE tern_cql_statements_total counter
tern_cql_statements_total 0
# TYPE tern_stage_records_total counter
tern_stage_records_total{stage="persister"} 300
tern_stage_records_total{stage="router"} 600
# TYPE tern_store_op_seconds histogram
tern_store_op_seconds_bucket{op="append_inbox",le="0.0001"} 2
tern_store_op_seconds_bucket{op="append_inbox",le="+Inf"} 7
tern_store_op_seconds_sum{op="append_inbox"} 0.0123
tern_store_op_seconds_count{op="append_inbox"} 7
tern_store_op_seconds_count{op="read_inbox"} 4
tern_weird_total{path="a \"quoted\" }, and\\ more",  kind = "x" } 5 1700000000000

not a metric line
tern_bad{op="unterminated} 3
"#;

    #[test]
    fn parses_counters_labels_histograms_and_escapes() {
        let m = parse(SAMPLE);
        assert_eq!(m.get("tern_gateway_push_raw_bytes_total", &[]), 1000.0);
        assert_eq!(
            m.get("tern_stage_records_total", &[("stage", "persister")]),
            300.0
        );
        assert_eq!(
            m.get(
                "tern_store_op_seconds_bucket",
                &[("le", "+Inf"), ("op", "append_inbox")]
            ),
            7.0
        );
        assert_eq!(
            m.get("tern_store_op_seconds_sum", &[("op", "append_inbox")]),
            0.0123
        );
        assert_eq!(
            m.by_label("tern_store_op_seconds_count", "op"),
            BTreeMap::from([("append_inbox".into(), 7.0), ("read_inbox".into(), 4.0)])
        );
        // Buckets carry a second label: not an `op`-only series.
        assert!(m.by_label("tern_store_op_seconds_bucket", "op").is_empty());
        assert_eq!(
            m.get(
                "tern_weird_total",
                &[("kind", "x"), ("path", "a \"quoted\" }, and\\ more")]
            ),
            5.0
        );
        // Absent series read as 0; malformed lines are skipped.
        assert_eq!(m.get("tern_store_errors_total", &[("op", "x")]), 0.0);
        assert_eq!(m.0.len(), 10, "{m:#?}");
        assert_eq!(
            parse_line("x{le=\"+Inf\"} +Inf").map(|l| l.1),
            Some(f64::INFINITY)
        );
        for bad in [
            "x",
            "x{",
            "x{a=\"1\"}",
            "x{a=1} 2",
            "x{a=\"1\" b=\"2\"} 3",
            "9x 1",
            "x 1e",
        ] {
            assert_eq!(parse_line(bad), None, "{bad}");
        }
    }

    #[test]
    fn growth_is_per_series_and_notices_a_restart() {
        let before = parse("a_total 10\nb_total{op=\"x\"} 5\nc_total 7\n");
        let after = parse("a_total 25\nb_total{op=\"x\"} 5\nb_total{op=\"y\"} 2\nc_total 3\n");
        let (grew, down) = after.growth_since(&before);
        assert_eq!(grew.get("a_total", &[]), 15.0);
        assert_eq!(grew.get("b_total", &[("op", "x")]), 0.0);
        assert_eq!(
            grew.get("b_total", &[("op", "y")]),
            2.0,
            "new series: from 0"
        );
        assert_eq!(grew.get("c_total", &[]), 0.0);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].name, "c_total");
        let mut sum = grew.clone();
        sum.add(grew);
        assert_eq!(sum.get("a_total", &[]), 30.0);
    }

    #[test]
    fn admin_addresses_split_at_commas_without_repeats() {
        let given = [
            "127.0.0.1:7413,http://127.0.0.1:7423/".to_owned(),
            "127.0.0.1:7413".to_owned(),
        ];
        assert_eq!(nodes(&given), ["127.0.0.1:7413", "127.0.0.1:7423"]);
    }

    #[test]
    fn every_node_must_answer_or_there_are_no_figures() {
        let nodes = nodes(&["127.0.0.1:1,127.0.0.1:2".to_owned()]);
        let mut report = Report::default();
        add_figures(
            &mut report,
            &nodes,
            vec![Ok(parse("a 1")), Ok(parse("a 1"))],
            vec![Ok(parse("a 2")), Err("connection refused".into())],
        );
        assert!(report.store_cost.is_none());
        assert_eq!(report.notes.len(), 1);
        assert!(
            report.notes[0].contains("127.0.0.1:2 (connection refused)"),
            "{:?}",
            report.notes
        );
        assert!(
            !report.notes[0].contains("127.0.0.1:1"),
            "{:?}",
            report.notes
        );
    }

    #[test]
    fn nodes_are_summed() {
        let nodes = nodes(&["gw,persister".to_owned()]);
        let gateway = "tern_gateway_push_raw_bytes_total 100\ntern_gateway_push_payload_bytes_total 40\n\
                       tern_store_op_seconds_count{op=\"get_messages\"} 10\n";
        let gateway_after = "tern_gateway_push_raw_bytes_total 1100\ntern_gateway_push_payload_bytes_total 440\n\
                             tern_store_op_seconds_count{op=\"get_messages\"} 110\n";
        let persister = "tern_stage_records_total{stage=\"persister\"} 0\n";
        let persister_after = "tern_stage_records_total{stage=\"persister\"} 100\n\
                               tern_store_op_seconds_count{op=\"put_messages\"} 20\n";
        let mut report = Report::default();
        add_figures(
            &mut report,
            &nodes,
            vec![Ok(parse(gateway)), Ok(parse(persister))],
            vec![Ok(parse(gateway_after)), Ok(parse(persister_after))],
        );
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(report.counts["push_payload_raw_bytes"], 1000);
        let cost = report.store_cost.expect("figures");
        assert_eq!(cost.nodes, ["gw", "persister"]);
        assert_eq!(cost.messages_stored, 100);
        assert_eq!(cost.store.calls.count, 120);
        assert_eq!(cost.store.calls.per_message, Some(1.2));
    }
}
