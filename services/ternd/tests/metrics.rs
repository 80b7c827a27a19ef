//! The metrics an operator reads, after real traffic: scraped from the
//! admin listener's `/metrics` as Prometheus would, and checked against
//! `docs/metrics.md` in both directions so the document cannot drift.
//!
//! Metrics are process-wide statics: this file is its own test binary (its
//! own process), and holds one test, so every figure comes from its traffic.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::{Server, bodies, eventually, receive};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(20);

/// Sample lines of a scrape: series (name and labels) → value.
struct Scrape {
    samples: BTreeMap<String, f64>,
    /// Names declared by `# TYPE` lines, with their type.
    types: BTreeMap<String, String>,
}

impl Scrape {
    fn value(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn get(&self, series: &str) -> f64 {
        self.value(series)
            .unwrap_or_else(|| panic!("no sample {series} in the scrape"))
    }
}

async fn scrape(admin: std::net::SocketAddr) -> Scrape {
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("admin listener");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut samples = BTreeMap::new();
    let mut types = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            types.insert(name.to_owned(), kind.to_owned());
        } else if !line.starts_with('#') && !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').expect("series value");
            let value = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            samples.insert(series.to_owned(), value);
        }
    }
    Scrape { samples, types }
}

/// Metric names and types in `docs/metrics.md`: its table rows start with
/// the name in backticks, the type in the next column.
fn documented() -> BTreeMap<String, String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md");
    let doc = std::fs::read_to_string(path).expect("docs/metrics.md");
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `tern_"))
        .map(|rest| {
            let (name, rest) = rest.split_once('`').expect("closing backtick");
            let kind = rest
                .trim_start_matches([' ', '|'])
                .split([' ', '|'])
                .next()
                .unwrap_or_default();
            (format!("tern_{name}"), kind.to_owned())
        })
        .collect()
}

/// `_bucket` samples of a histogram series, in `le` order, each with the
/// `le` bound; checks they are cumulative and end with `+Inf` == `_count`.
fn check_histogram(s: &Scrape, name: &str, label: &str) {
    let prefix = format!("{name}_bucket{{{label}");
    let mut buckets: Vec<(f64, f64)> = s
        .samples
        .iter()
        .filter_map(|(series, v)| {
            let le = series.strip_prefix(&prefix)?.split("le=\"").nth(1)?;
            let le = le.trim_end_matches("\"}");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("numeric le")
            };
            Some((le, *v))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.len() > 1, "{name}{{{label}}} has buckets");
    assert!(
        buckets.windows(2).all(|w| w[0].1 <= w[1].1),
        "{name}{{{label}}} buckets are cumulative: {buckets:?}"
    );
    let braced = if label.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", label.trim_end_matches(','))
    };
    let count = s.get(&format!("{name}_count{braced}"));
    assert_eq!(
        buckets.last().map(|b| (b.0, b.1)),
        Some((f64::INFINITY, count)),
        "{name}{{{label}}}: the +Inf bucket is the count"
    );
    assert!(s.get(&format!("{name}_sum{braced}")) >= 0.0);
}

#[tokio::test]
async fn the_documented_metrics_exist_with_plausible_values_after_a_chat() {
    let server = Server::start().await;
    let admin = server.running.admin_addr.expect("admin listener on");
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;

    // Sends wait for their receipts; pushes are ACKed as they arrive.
    let (to_bob, to_alice) = (30, 5);
    for i in 0..to_bob {
        alice.send_to("bob", format!("a{i}")).await.expect("send");
    }
    assert_eq!(bodies(&receive(&bob, to_bob, WAIT).await).len(), to_bob);
    for i in 0..to_alice {
        bob.send_to("alice", format!("b{i}")).await.expect("send");
    }
    // alice gets her own sends too (her other devices would).
    receive(&alice, to_bob + to_alice, WAIT).await;

    // ACKs and commits land a moment after the clients see their results;
    // an idle stage's lag is 0 once its last batch is committed.
    let s = eventually("ACKs counted and the stages idle", || async {
        let s = scrape(admin).await;
        let ready = s.value("tern_gateway_acks_total")? >= 2.0
            && s.value("tern_gateway_ack_latency_seconds_count")? > 0.0
            && s.value("tern_stage_consumer_lag{stage=\"persister\"}")? == 0.0
            && s.value("tern_stage_consumer_lag{stage=\"router\"}")? == 0.0;
        ready.then_some(s)
    })
    .await;

    let sent = (to_bob + to_alice) as f64;
    assert_eq!(s.get("tern_gateway_sends_total"), sent);
    assert!(
        s.get("tern_gateway_send_receipt_seconds_count") >= sent,
        "every successful receipt is timed"
    );
    let acks = s.get("tern_gateway_ack_latency_seconds_count");
    let ack_seconds = s.get("tern_gateway_ack_latency_seconds_sum");
    assert!(
        ack_seconds > 0.0 && ack_seconds < acks * WAIT.as_secs_f64(),
        "{acks} ACKs took {ack_seconds} s in all"
    );
    assert!(s.get("tern_gateway_push_batch_messages_count") > 0.0);
    assert_eq!(
        s.get("tern_gateway_push_batch_messages_sum"),
        s.get("tern_gateway_pushed_messages_total"),
        "the batch histogram sums to the messages pushed"
    );
    // At least what the clients read: bob 30, alice her own 30 and bob's 5.
    assert!(s.get("tern_gateway_pushed_messages_total") >= (2 * to_bob + to_alice) as f64);
    for stage in ["persister", "router"] {
        let label = format!("stage=\"{stage}\"");
        assert!(s.get(&format!("tern_stage_batch_records_count{{{label}}}")) > 0.0);
        assert_eq!(
            s.get(&format!("tern_stage_batch_records_sum{{{label}}}")),
            s.get(&format!("tern_stage_records_total{{{label}}}")),
            "{stage}: the batch histogram sums to the records handled"
        );
        check_histogram(&s, "tern_stage_batch_records", &format!("{label},"));
    }
    assert_eq!(
        s.get("tern_stage_records_total{stage=\"persister\"}"),
        sent,
        "one inbound record per send"
    );
    for name in [
        "tern_gateway_ack_latency_seconds",
        "tern_gateway_send_receipt_seconds",
        "tern_gateway_push_batch_messages",
    ] {
        check_histogram(&s, name, "");
    }

    // The document and the scrape name the same metrics, with the same types.
    let doc = documented();
    assert!(doc.len() > 30, "docs/metrics.md lists the metrics: {doc:?}");
    let served: BTreeSet<_> = s.types.keys().cloned().collect();
    let listed: BTreeSet<_> = doc.keys().cloned().collect();
    assert_eq!(
        listed.difference(&served).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not served"
    );
    assert_eq!(
        served.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "served but not documented in docs/metrics.md"
    );
    for (name, kind) in &doc {
        assert_eq!(&s.types[name], kind, "type of {name} in docs/metrics.md");
    }
}
