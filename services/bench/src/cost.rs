//! What the backends did per message stored during a run, from the nodes'
//! /metrics ([`crate::scrape`]): CQL statements, and message-store,
//! route-directory and event-log calls in all and per operation (`op`, the
//! boundary trait's method), with the calls that failed. "Per message" is
//! per message the persister stored: what
//! `tern_stage_records_total{stage="persister"}` grew by, over every node.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::report::Report;
use crate::scrape::Samples;

/// The series "per message" divides by.
pub const STORED: &str = "tern_stage_records_total{stage=\"persister\"}";

/// A count during the run, and per message stored.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Figure {
    pub count: u64,
    /// None when no message was stored (nothing to divide by).
    pub per_message: Option<f64>,
}

impl Figure {
    fn new(count: u64, stored: u64) -> Figure {
        let per_message =
            (stored > 0).then(|| (count as f64 / stored as f64 * 1000.0).round() / 1000.0);
        Figure { count, per_message }
    }
}

/// Calls to one boundary (message store, route directory, event log).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Calls {
    /// Every call: the `_count` of its `_op_seconds` histogram.
    pub calls: Figure,
    pub by_op: BTreeMap<String, Figure>,
    /// Calls that failed, by op (ops without failures left out).
    pub errors: BTreeMap<String, u64>,
}

impl Calls {
    /// `boundary`: `store`, `routes` or `log`, as in the metric names.
    fn of(growth: &Samples, boundary: &str, stored: u64) -> Calls {
        let by_op: BTreeMap<String, Figure> = growth
            .by_label(&format!("tern_{boundary}_op_seconds_count"), "op")
            .into_iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(op, n)| (op, Figure::new(n as u64, stored)))
            .collect();
        let errors = growth
            .by_label(&format!("tern_{boundary}_errors_total"), "op")
            .into_iter()
            .filter(|(_, n)| *n > 0.0)
            .map(|(op, n)| (op, n as u64))
            .collect();
        Calls {
            calls: Figure::new(by_op.values().map(|f| f.count).sum(), stored),
            by_op,
            errors,
        }
    }
}

/// The backends' work during the run, summed over the scraped nodes.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StoreCost {
    /// The admin addresses whose /metrics were summed.
    pub nodes: Vec<String>,
    /// What "per message" divides by.
    pub per: String,
    /// The denominator: messages the persister stored during the run.
    pub messages_stored: u64,
    /// `cql`, or `embedded` when the store was called but ran no CQL.
    pub store_backend: &'static str,
    pub cql_statements: Figure,
    pub store: Calls,
    pub routes: Calls,
    pub log: Calls,
}

impl StoreCost {
    pub fn new(nodes: &[String], growth: &Samples) -> StoreCost {
        let stored = growth.get("tern_stage_records_total", &[("stage", "persister")]) as u64;
        let cql = growth.get("tern_cql_statements_total", &[]) as u64;
        let store = Calls::of(growth, "store", stored);
        StoreCost {
            nodes: nodes.to_vec(),
            per: format!(
                "message stored by the persister: the growth of {STORED} during the run, \
                 summed over the nodes (the run's logins and setup included)"
            ),
            messages_stored: stored,
            store_backend: match (cql, store.calls.count) {
                (0, 0) => "unknown (no store calls)",
                (0, _) => "embedded",
                _ => "cql",
            },
            cql_statements: Figure::new(cql, stored),
            store,
            routes: Calls::of(growth, "routes", stored),
            log: Calls::of(growth, "log", stored),
        }
    }

    /// The summary's lines, in the report's layout.
    pub fn summary(&self, s: &mut String) {
        let nodes = self.nodes.join(", ");
        let denominator = match self.messages_stored {
            0 => format!("none: {STORED} did not grow (over {nodes}); raw counts only"),
            n => format!(
                "{n} messages the persister stored ({STORED} over {nodes}; \
                 the run's logins included)"
            ),
        };
        let _ = writeln!(s, "  {:<28} {denominator}", "store cost per message");
        let cql = match self.store_backend {
            "embedded" => "0 (embedded store: no CQL)".to_owned(),
            _ => with_ratio(&self.cql_statements),
        };
        let _ = writeln!(s, "  {:<28} {cql}", "cql statements");
        for (what, calls) in [
            ("store calls", &self.store),
            ("route-directory calls", &self.routes),
            ("event-log calls", &self.log),
        ] {
            let _ = writeln!(s, "  {what:<28} {}", with_ratio(&calls.calls));
            let mut ops: Vec<_> = calls.by_op.iter().collect();
            ops.sort_by(|a, b| b.1.count.cmp(&a.1.count).then(a.0.cmp(b.0)));
            for (op, f) in ops {
                let _ = writeln!(s, "    {op:<26} {}", with_ratio(f));
            }
        }
        let errors: Vec<String> = [
            ("store", &self.store),
            ("routes", &self.routes),
            ("log", &self.log),
        ]
        .iter()
        .flat_map(|(what, c)| {
            c.errors
                .iter()
                .map(move |(op, n)| format!("{what} {op} {n}"))
        })
        .collect();
        let errors = match errors.is_empty() {
            true => "none".to_owned(),
            false => errors.join(", "),
        };
        let _ = writeln!(s, "  {:<28} {errors}", "backend errors");
    }
}

/// `1234  (2.468 per message)`, or the count alone without a denominator.
fn with_ratio(f: &Figure) -> String {
    match f.per_message {
        Some(r) => format!("{:<10} ({r:.3} per message)", f.count),
        None => f.count.to_string(),
    }
}

/// Adds the backends' cost during the run; says why there is no ratio when
/// no message was stored.
pub fn add_figures(report: &mut Report, nodes: &[String], growth: &Samples) {
    let cost = StoreCost::new(nodes, growth);
    if cost.messages_stored == 0 {
        report.notes.push(format!(
            "no store cost per message: no message was stored during the run ({STORED} did \
             not grow on {}; is the persister's admin address among --admin?), so only raw \
             counts are given",
            nodes.join(", ")
        ));
    }
    report.store_cost = Some(cost);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse;

    const BEFORE: &str = "tern_stage_records_total{stage=\"persister\"} 100\n\
                          tern_stage_records_total{stage=\"router\"} 200\n\
                          tern_cql_statements_total 1000\n\
                          tern_store_op_seconds_count{op=\"put_messages\"} 10\n";
    const AFTER: &str = "tern_stage_records_total{stage=\"persister\"} 400\n\
                         tern_stage_records_total{stage=\"router\"} 800\n\
                         tern_cql_statements_total 8800\n\
                         tern_store_op_seconds_bucket{op=\"put_messages\",le=\"+Inf\"} 20\n\
                         tern_store_op_seconds_count{op=\"put_messages\"} 20\n\
                         tern_store_op_seconds_count{op=\"append_inbox\"} 600\n\
                         tern_store_op_seconds_count{op=\"get_messages\"} 290\n\
                         tern_store_op_seconds_count{op=\"group\"} 0\n\
                         tern_store_errors_total{op=\"get_messages\"} 2\n\
                         tern_store_errors_total{op=\"read_inbox\"} 0\n\
                         tern_routes_op_seconds_count{op=\"lookup\"} 30\n\
                         tern_log_op_seconds_count{op=\"append_many\"} 60\n\
                         tern_log_errors_total{op=\"poll\"} 1\n";

    fn cost(before: &str, after: &str) -> StoreCost {
        let (growth, _) = parse(after).growth_since(&parse(before));
        StoreCost::new(&["127.0.0.1:7403".to_owned()], &growth)
    }

    #[test]
    fn per_message_is_per_message_the_persister_stored() {
        let c = cost(BEFORE, AFTER);
        assert_eq!(c.messages_stored, 300);
        assert_eq!(c.store_backend, "cql");
        assert_eq!(
            c.cql_statements,
            Figure {
                count: 7800,
                per_message: Some(26.0)
            }
        );
        assert_eq!(
            c.store.calls,
            Figure {
                count: 900,
                per_message: Some(3.0)
            }
        );
        assert_eq!(c.store.by_op["put_messages"].per_message, Some(0.033));
        assert_eq!(c.store.by_op["append_inbox"].per_message, Some(2.0));
        assert!(
            !c.store.by_op.contains_key("group"),
            "ops not called are left out"
        );
        assert_eq!(c.store.errors, BTreeMap::from([("get_messages".into(), 2)]));
        assert_eq!(
            c.routes.calls,
            Figure {
                count: 30,
                per_message: Some(0.1)
            }
        );
        assert_eq!(c.log.calls.per_message, Some(0.2));
        assert_eq!(c.log.errors["poll"], 1);
        let mut s = String::new();
        c.summary(&mut s);
        assert!(
            s.contains("per message       300 messages the persister stored"),
            "{s}"
        );
        assert!(s.contains("(26.000 per message)"), "{s}");
        assert!(s.contains("store get_messages 2, log poll 1"), "{s}");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["store"]["by_op"]["append_inbox"]["per_message"], 2.0);
    }

    #[test]
    fn no_message_stored_gives_raw_counts_and_says_why() {
        let idle = "tern_stage_records_total{stage=\"persister\"} 100\n\
                    tern_store_op_seconds_count{op=\"revoked_before\"} 50\n\
                    tern_routes_op_seconds_count{op=\"register\"} 50\n";
        let (growth, _) = parse(idle).growth_since(&parse(BEFORE));
        let mut report = Report::default();
        add_figures(&mut report, &["gw".to_owned()], &growth);
        let c = report.store_cost.as_ref().unwrap();
        assert_eq!(c.messages_stored, 0);
        assert_eq!(
            c.store.calls,
            Figure {
                count: 50,
                per_message: None
            }
        );
        assert_eq!(
            c.routes.by_op["register"],
            Figure {
                count: 50,
                per_message: None
            }
        );
        assert_eq!(c.store_backend, "embedded");
        assert!(
            report.notes[0].contains("no message was stored"),
            "{:?}",
            report.notes
        );
        let mut s = String::new();
        c.summary(&mut s);
        assert!(s.contains("raw counts only"), "{s}");
        assert!(!s.contains("per message)"), "no ratio anywhere: {s}");
        assert!(!s.contains("NaN") && !s.contains("inf"), "{s}");
        let json = serde_json::to_value(c).unwrap();
        assert!(json["store"]["calls"]["per_message"].is_null());
    }

    #[test]
    fn an_embedded_store_says_so_instead_of_a_cql_ratio() {
        let embedded = "tern_stage_records_total{stage=\"persister\"} 50\n\
                        tern_cql_statements_total 0\n\
                        tern_store_op_seconds_count{op=\"put_messages\"} 5\n";
        let c = cost("", embedded);
        assert_eq!(c.store_backend, "embedded");
        assert_eq!(
            c.cql_statements,
            Figure {
                count: 0,
                per_message: Some(0.0)
            }
        );
        let mut s = String::new();
        c.summary(&mut s);
        assert!(s.contains("0 (embedded store: no CQL)"), "{s}");
        assert!(s.contains("5          (0.100 per message)"), "{s}");
    }
}
