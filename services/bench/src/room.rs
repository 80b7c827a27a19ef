//! `room`: one publisher, many viewers of one live room. The gateway merges
//! the room's messages over its window and writes one encoded batch to
//! every viewer. Measures room messages delivered per second and per server
//! CPU-second, batches per viewer, and post → viewer latency (sampled on
//! the first viewers, so the tool's memory stays flat).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use tern_client::{Client, Event, LoginOptions};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::Target;
use crate::report::{Report, Watch, now_micros, run_id, tokens};
use crate::stats::{Errors, percentiles, reason};

/// Viewers whose every message is timed; the others only count.
const TIMED_VIEWERS: usize = 200;
/// With nothing new for this long after the last post, the run ends
/// (slow viewers may have lost batches: rooms are best-effort).
const QUIET: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct RoomArgs {
    /// Viewers, each on its own connection.
    #[arg(long, default_value_t = 1000)]
    pub viewers: usize,
    /// Messages the publisher posts.
    #[arg(long, default_value_t = 1000)]
    pub messages: u64,
    /// Target posts per second; 0 posts as fast as the gateway confirms.
    #[arg(long, default_value_t = 100)]
    pub rate: u64,
    /// Posts in flight.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Size of each message body (at least 8: the post time).
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    /// Viewer connections opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub time_limit: u64,
}

#[derive(Default)]
struct Counters {
    posted: AtomicU64,
    confirmed: AtomicU64,
    delivered: AtomicU64,
    batches: AtomicU64,
}

pub async fn run(target: &Target, args: &RoomArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.viewers > 0, "--viewers must be at least 1");
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        args.body_bytes >= 8,
        "--body-bytes must be at least 8 (the post time)"
    );
    let run = run_id();
    let room = format!("{run}room");
    let mut users = vec![format!("{run}host")];
    users.extend((0..args.viewers).map(|i| format!("{run}v{i}")));
    let toks = tokens(&target.api, &users).await?;
    let (host, login) = Client::connect(
        &target.server,
        LoginOptions::new(toks[0].clone(), "bench").send_only(),
    )
    .await
    .with_context(|| format!("cannot connect to {}", target.server))?;
    crate::limits::ensure_unlimited(&login)?;
    host.join_room(&room)
        .await
        .context("the publisher cannot join the room")?;

    let server = target.server.clone();
    let viewers: Vec<Client> = futures_util::stream::iter(toks[1..].iter().cloned())
        .map(|tok| {
            let (server, room) = (server.clone(), room.clone());
            async move {
                let (c, _) = Client::connect(&server, LoginOptions::new(tok, "bench"))
                    .await
                    .with_context(|| format!("a viewer cannot connect to {server}"))?;
                c.join_room(&room)
                    .await
                    .context("a viewer cannot join the room")?;
                anyhow::Ok(c)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect()
        .await?;

    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let mut watching = JoinSet::new();
    for (i, client) in viewers.into_iter().enumerate() {
        watching.spawn(view(
            client,
            i < TIMED_VIEWERS,
            counters.clone(),
            stopped.clone(),
        ));
    }
    let watch = Watch::start(target);
    let progress = tokio::spawn(progress(counters.clone(), stopped.clone()));
    let publishing = tokio::spawn(publish(
        Arc::new(host),
        room.clone(),
        args.clone(),
        counters.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.time_limit);
    let mut timed_out = false;
    let (post_latencies, mut errors) = match tokio::time::timeout_at(deadline, publishing).await {
        Ok(done) => done.context("the publisher task failed")?,
        Err(_) => {
            timed_out = true;
            (Vec::new(), Errors::default())
        }
    };
    let expected = counters.confirmed.load(Ordering::Relaxed) * args.viewers as u64;
    let mut last = (
        counters.delivered.load(Ordering::Relaxed),
        tokio::time::Instant::now(),
    );
    let mut last_delivery = tokio::time::Instant::now();
    while !timed_out && last.0 < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = tokio::time::Instant::now();
        let d = counters.delivered.load(Ordering::Relaxed);
        if d > last.0 {
            last_delivery = now;
        }
        last = (d, now);
        if now >= deadline {
            timed_out = true;
        } else if now - last_delivery >= QUIET {
            break;
        }
    }
    // The rate counts the time messages were flowing, not the quiet wait.
    let wall = (last_delivery.into_std() - watch.started()).max(Duration::from_millis(1));
    let _ = stop.send(true);
    let mut latencies = Vec::new();
    while let Some(r) = watching.join_next().await {
        let (lat, errs) = r.context("a viewer task failed")?;
        latencies.extend(lat);
        errors.merge(errs);
    }
    progress.abort();

    let mut report = Report {
        scenario: "room",
        server: target.server.clone(),
        settings: serde_json::to_value(args)?,
        ..Default::default()
    };
    watch.finish(&mut report);
    let secs = wall.as_secs_f64();
    let delivered = counters.delivered.load(Ordering::Relaxed);
    let batches = counters.batches.load(Ordering::Relaxed);
    report.count("viewers", args.viewers as u64);
    report.count("posted", counters.posted.load(Ordering::Relaxed));
    report.count("confirmed", counters.confirmed.load(Ordering::Relaxed));
    report.count("expected_deliveries", expected);
    report.count("delivered", delivered);
    report.count("lost", expected.saturating_sub(delivered));
    report.count("batches_received", batches);
    if batches > 0 {
        report.count(
            "messages_per_batch",
            ((delivered as f64 / batches as f64) * 10.0).round() / 10.0,
        );
    }
    report.rate(
        "confirmed",
        counters.confirmed.load(Ordering::Relaxed) as f64 / secs,
    );
    report.rate("delivered", delivered as f64 / secs);
    let server_cpu: f64 = report.servers.iter().map(|u| u.cpu_secs).sum();
    if server_cpu > 0.0 {
        report.count(
            "delivered_per_server_cpu_sec",
            (delivered as f64 / server_cpu).round(),
        );
    }
    report.latency("post_to_viewer", percentiles(latencies));
    report.latency("post_to_confirm", percentiles(post_latencies));
    report.errors = errors;
    if timed_out {
        report.notes.push(format!(
            "stopped at the time limit of {} s",
            args.time_limit
        ));
    }
    if delivered < expected {
        report.notes.push(format!(
            "{} of {expected} deliveries did not arrive within {} s of the last one: viewers too slow for the rate lose batches (rooms are best-effort)",
            expected - delivered,
            QUIET.as_secs()
        ));
    }
    Ok(report)
}

/// Posts every message, `window` at a time, at `rate` per second if set.
async fn publish(
    host: Arc<Client>,
    room: String,
    args: RoomArgs,
    counters: Arc<Counters>,
) -> (Vec<u64>, Errors) {
    let window = Arc::new(Semaphore::new(args.window));
    let mut ticker = (args.rate > 0).then(|| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut inflight = JoinSet::new();
    let (mut latencies, mut errors) = (Vec::new(), Errors::default());
    let mut record =
        |done: Result<Result<u64, tern_client::ClientError>, tokio::task::JoinError>| match done {
            Ok(Ok(us)) => latencies.push(us),
            Ok(Err(e)) => errors.add(reason(&e)),
            Err(_) => errors.add("task panicked"),
        };
    let mut window_closed = false;
    for _ in 0..args.messages {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        // The window is never closed; were it, what is left is not posted.
        let Ok(permit) = window.clone().acquire_owned().await else {
            window_closed = true;
            break;
        };
        let (host, room, counters) = (host.clone(), room.clone(), counters.clone());
        let mut body = vec![b'.'; args.body_bytes];
        inflight.spawn(async move {
            let start = now_micros();
            body[..8].copy_from_slice(&start.to_be_bytes());
            counters.posted.fetch_add(1, Ordering::Relaxed);
            let r = host.post_to_room(room, body).await;
            drop(permit);
            r.map(|()| {
                counters.confirmed.fetch_add(1, Ordering::Relaxed);
                now_micros().saturating_sub(start)
            })
        });
        while let Some(done) = inflight.try_join_next() {
            record(done);
        }
    }
    while let Some(done) = inflight.join_next().await {
        record(done);
    }
    if window_closed {
        errors.add("window closed");
    }
    (latencies, errors)
}

/// Counts room messages until `stop`; a timed viewer records the latency of each.
async fn view(
    client: Client,
    timed: bool,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> (Vec<u64>, Errors) {
    let (mut latencies, mut errors) = (Vec::new(), Errors::default());
    loop {
        let event = tokio::select! {
            e = client.next_event() => e,
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            Some(Event::RoomMessages { messages, .. }) => {
                let now = now_micros();
                if timed {
                    latencies.extend(messages.iter().filter_map(|m| {
                        let ts = u64::from_be_bytes(m.body.get(..8)?.try_into().ok()?);
                        Some(now.saturating_sub(ts))
                    }));
                }
                counters.batches.fetch_add(1, Ordering::Relaxed);
                counters
                    .delivered
                    .fetch_add(messages.len() as u64, Ordering::Relaxed);
            }
            Some(Event::Messages { .. } | Event::GroupMessages { .. }) => {}
            Some(Event::ServerError(e)) => errors.add(e.code().as_str_name()),
            Some(Event::Closed { reason }) => {
                errors.add(format!(
                    "disconnected: {}",
                    reason.chars().take(60).collect::<String>()
                ));
                break;
            }
            None => break,
        }
    }
    (latencies, errors)
}

async fn progress(counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut last, mut t) = (0, 0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        t += 1;
        let d = counters.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{t:>4} s] posted {:>8}  confirmed {:>8}  delivered {:>11}  ({:>9}/s)",
            counters.posted.load(Ordering::Relaxed),
            counters.confirmed.load(Ordering::Relaxed),
            d,
            d - last
        );
        last = d;
    }
}
