//! The figures of one run, and how they are printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Target;
use crate::cost::StoreCost;
use crate::procstat::{self, Sample, Usage};
use crate::stats::{Errors, Percentiles};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub server: String,
    /// The scenario's settings, as given.
    pub settings: serde_json::Value,
    pub wall_secs: f64,
    /// Counters of the scenario (sent, delivered, connections, ...).
    pub counts: serde_json::Map<String, serde_json::Value>,
    /// Rates per second.
    pub rates: serde_json::Map<String, serde_json::Value>,
    /// Latency distributions by name.
    pub latency: BTreeMap<String, Percentiles>,
    pub errors: Errors,
    pub servers: Vec<Usage>,
    pub tool: Option<Usage>,
    /// What the backends did per message stored, from the nodes' /metrics
    /// (`--admin`); absent when they were not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_cost: Option<StoreCost>,
    /// Things the reader should know (tool saturation, incomplete runs).
    pub notes: Vec<String>,
}

/// CPU and memory readings of the tool and the watched servers.
pub struct Watch {
    pids: Vec<String>,
    before: Vec<Option<Sample>>,
    tool_before: Option<Sample>,
    started: Instant,
}

impl Watch {
    pub fn start(target: &Target) -> Watch {
        let pids: Vec<String> = target.pids.iter().map(u32::to_string).collect();
        let before = pids.iter().map(|p| procstat::sample(p)).collect();
        Watch {
            pids,
            before,
            tool_before: procstat::sample("self"),
            started: Instant::now(),
        }
    }

    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Fills the report's resource figures and notes on the tool's load.
    pub fn finish(&self, report: &mut Report) {
        let wall = self.started.elapsed();
        report.wall_secs = wall.as_secs_f64();
        for (pid, before) in self.pids.iter().zip(&self.before) {
            match (before, procstat::sample(pid)) {
                (Some(b), Some(a)) => report.servers.push(procstat::usage(pid, *b, a, wall)),
                _ => report
                    .notes
                    .push(format!("server process {pid} could not be read from /proc")),
            }
        }
        if let (Some(b), Some(a)) = (self.tool_before, procstat::sample("self")) {
            let u = procstat::usage("self", b, a, wall);
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            if u.cores_busy >= 0.9 * cores {
                report.notes.push(format!(
                    "the tool itself used {:.2} of {cores} cores: it saturated the machine, so the figures are a floor for the server",
                    u.cores_busy
                ));
            } else if u.cores_busy >= 0.45 * cores {
                report.notes.push(format!(
                    "the tool used {:.2} of {cores} cores, competing with the server for the machine",
                    u.cores_busy
                ));
            }
            report.tool = Some(u);
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Report {
    pub fn count(&mut self, name: &str, v: impl Into<serde_json::Value>) {
        self.counts.insert(name.into(), v.into());
    }

    pub fn rate(&mut self, name: &str, per_sec: f64) {
        self.rates.insert(
            name.into(),
            serde_json::json!((per_sec * 10.0).round() / 10.0),
        );
    }

    pub fn latency(&mut self, name: &str, p: Percentiles) {
        self.latency.insert(name.into(), p);
    }

    /// The human-readable summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} against {} ({:.1} s)",
            self.scenario, self.server, self.wall_secs
        );
        let _ = writeln!(s, "settings  {}", self.settings);
        for (k, v) in &self.counts {
            let _ = writeln!(s, "  {k:<28} {v}");
        }
        for (k, v) in &self.rates {
            let _ = writeln!(s, "  {k:<28} {v} /s");
        }
        for (k, p) in &self.latency {
            let _ = writeln!(
                s,
                "  {k:<28} p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms  (n={})",
                p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms, p.count
            );
        }
        if self.errors.total() == 0 {
            let _ = writeln!(s, "  errors                       none");
        }
        for (k, v) in &self.errors.0 {
            let _ = writeln!(s, "  error {k:<22} {v}");
        }
        for u in &self.servers {
            let _ = writeln!(
                s,
                "  server pid {:<17} cpu {:.2} s ({:.2} cores)  rss {:.1} MiB  peak {:.1} MiB",
                u.pid,
                u.cpu_secs,
                u.cores_busy,
                mib(u.rss_bytes),
                mib(u.peak_rss_bytes)
            );
        }
        if let Some(u) = &self.tool {
            let _ = writeln!(
                s,
                "  tool                         cpu {:.2} s ({:.2} cores)  rss {:.1} MiB",
                u.cpu_secs,
                u.cores_busy,
                mib(u.rss_bytes)
            );
        }
        if let Some(cost) = &self.store_cost {
            cost.summary(&mut s);
        }
        for n in &self.notes {
            let _ = writeln!(s, "  note: {n}");
        }
        s
    }
}

/// Dev tokens for many users, a few requests at a time.
pub async fn tokens(api: &str, users: &[String]) -> anyhow::Result<Vec<String>> {
    use futures_util::{StreamExt, TryStreamExt};
    let api = api.to_owned();
    futures_util::stream::iter(users.iter().cloned())
        .map(|u| {
            let api = api.clone();
            async move {
                tern_client::dev_token(&api, &u)
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot get a dev token for {u} from {api}: {e} (is the server running, in dev mode?)"))
            }
        })
        .buffered(32)
        .try_collect()
        .await
}

/// A fresh prefix for user names, so runs never share state.
pub fn run_id() -> String {
    format!("b{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// Microseconds since the Unix epoch: the clock carried in message bodies.
pub fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
