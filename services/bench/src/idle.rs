//! `idle`: open many logged-in connections that only heartbeat, hold them,
//! and report how much memory the server (and the tool) spends on each.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::StreamExt;
use tern_client::{Client, LoginOptions};

use crate::Target;
use crate::procstat;
use crate::report::{Report, Watch, run_id, tokens};
use crate::stats::{Errors, reason};

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct IdleArgs {
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Connections opened per second.
    #[arg(long, default_value_t = 2000)]
    pub ramp: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 5)]
    pub hold: u64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
}

pub async fn run(target: &Target, args: &IdleArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.connections > 0, "--connections must be at least 1");
    anyhow::ensure!(
        args.ramp > 0,
        "--ramp must be at least 1 connection per second"
    );
    let run = run_id();
    let users: Vec<String> = (0..args.connections)
        .map(|i| format!("{run}i{i}"))
        .collect();
    let toks = tokens(&target.api, &users).await?;
    // One connection first: fails fast with a clear message if the gateway is unreachable.
    let (probe, _) = Client::connect(&target.server, LoginOptions::new(toks[0].clone(), "idle"))
        .await
        .with_context(|| format!("cannot connect to {}", target.server))?;

    let pids: Vec<String> = target.pids.iter().map(u32::to_string).collect();
    let rss = |pids: &[String]| -> Vec<u64> {
        pids.iter()
            .map(|p| procstat::sample(p).map_or(0, |s| s.rss_bytes))
            .collect()
    };
    let before = rss(&pids);
    let tool_before = procstat::sample("self").map_or(0, |s| s.rss_bytes);
    let watch = Watch::start(target);

    let pace = Duration::from_secs_f64(1.0 / args.ramp as f64);
    let server = target.server.clone();
    let mut errors = Errors::default();
    let mut clients = vec![probe];
    let ramp_start = tokio::time::Instant::now();
    let opened = futures_util::stream::iter(toks.into_iter().skip(1).enumerate())
        .then(|(i, tok)| async move {
            // Ramp: connection i starts i/ramp seconds in (sleeps shorter
            // than the timer's 1 ms resolution just let several go at once).
            tokio::time::sleep_until(ramp_start + pace.mul_f64(i as f64)).await;
            tok
        })
        .map(|tok| {
            let server = server.clone();
            async move { Client::connect(&server, LoginOptions::new(tok, "idle")).await }
        })
        .buffer_unordered(args.concurrency);
    let mut opened = std::pin::pin!(opened);
    let mut last_report = tokio::time::Instant::now();
    while let Some(r) = opened.next().await {
        match r {
            Ok((c, _)) => clients.push(c),
            Err(e) => errors.add(reason(&e)),
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            eprintln!(
                "[{:>5.1} s] connections open {:>7}",
                watch.elapsed().as_secs_f64(),
                clients.len()
            );
            last_report = tokio::time::Instant::now();
        }
    }
    let open_secs = watch.elapsed().as_secs_f64();
    eprintln!(
        "all {} connections open after {open_secs:.1} s; holding {} s",
        clients.len(),
        args.hold
    );
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let after = rss(&pids);
    let tool_after = procstat::sample("self").map_or(0, |s| s.rss_bytes);
    let still_open = clients
        .iter()
        .filter(|c| c.closed_reason().is_none())
        .count();

    let mut report = Report {
        scenario: "idle",
        server: target.server.clone(),
        settings: serde_json::to_value(args)?,
        ..Default::default()
    };
    watch.finish(&mut report);
    report.count("connections_opened", clients.len() as u64);
    report.count("connections_open_after_hold", still_open as u64);
    report.rate(
        "connections_opened",
        clients.len() as f64 / open_secs.max(1e-9),
    );
    for ((pid, b), a) in pids.iter().zip(before).zip(after) {
        let per = a.saturating_sub(b) as f64 / clients.len() as f64;
        report.count(
            &format!("server_{pid}_rss_bytes_per_connection"),
            per.round() as u64,
        );
    }
    report.count(
        "tool_rss_bytes_per_connection",
        (tool_after.saturating_sub(tool_before) as f64 / clients.len() as f64).round() as u64,
    );
    if pids.is_empty() {
        report
            .notes
            .push("no --pid given: server memory per connection not measured".into());
    }
    report.errors = errors;
    drop(clients);
    Ok(report)
}
