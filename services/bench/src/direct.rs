//! `direct`: pairs of users; each sender sends to its receiver, pipelined,
//! at a target total rate or as fast as the server confirms. Every body
//! carries its send time, so the receiver measures send → push latency.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use tern_client::{Client, Event, LoginOptions};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::Target;
use crate::report::{Report, Watch, now_micros, run_id, tokens};
use crate::stats::{Errors, percentiles, reason};

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct DirectArgs {
    /// Sender/receiver pairs (2 connections each).
    #[arg(long, default_value_t = 50)]
    pub pairs: usize,
    /// Messages to send in all.
    #[arg(long, default_value_t = 20_000)]
    pub messages: u64,
    /// Target messages per second in all; 0 sends as fast as confirmed.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Sends in flight per sender.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Size of each message body (at least 8: the send time).
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub time_limit: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub sent: AtomicU64,
    pub confirmed: AtomicU64,
    pub delivered: AtomicU64,
}

/// What one receiver saw.
#[derive(Default)]
pub(crate) struct Received {
    pub latencies_us: Vec<u64>,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub errors: Errors,
}

impl Received {
    pub fn merge(&mut self, other: Received) {
        self.latencies_us.extend(other.latencies_us);
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.errors.merge(other.errors);
    }
}

pub async fn run(target: &Target, args: &DirectArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.pairs > 0, "--pairs must be at least 1");
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        args.body_bytes >= 8,
        "--body-bytes must be at least 8 (the send time)"
    );
    let run = run_id();
    let senders: Vec<String> = (0..args.pairs).map(|i| format!("{run}s{i}")).collect();
    let receivers: Vec<String> = (0..args.pairs).map(|i| format!("{run}r{i}")).collect();
    let all: Vec<String> = senders.iter().chain(&receivers).cloned().collect();
    let toks = tokens(&target.api, &all).await?;
    let (send_toks, recv_toks) = toks.split_at(args.pairs);

    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let mut receiving = JoinSet::new();
    for tok in recv_toks {
        let (client, _) = Client::connect(&target.server, LoginOptions::new(tok.clone(), "bench"))
            .await
            .with_context(|| format!("cannot connect to {}", target.server))?;
        receiving.spawn(receive(client, counters.clone(), stopped.clone()));
    }
    let mut sender_clients = Vec::new();
    for tok in send_toks {
        let (client, login) = Client::connect(
            &target.server,
            LoginOptions::new(tok.clone(), "bench").send_only(),
        )
        .await
        .with_context(|| format!("cannot connect to {}", target.server))?;
        crate::limits::ensure_unlimited(&login)?;
        sender_clients.push(Arc::new(client));
    }

    let watch = Watch::start(target);
    let progress = tokio::spawn(progress(counters.clone(), stopped.clone()));
    let mut sending = JoinSet::new();
    for (i, client) in sender_clients.iter().enumerate() {
        let share = args.messages / args.pairs as u64
            + u64::from((i as u64) < args.messages % args.pairs as u64);
        let per_sender_rate = (args.rate > 0).then(|| args.rate as f64 / args.pairs as f64);
        sending.spawn(send(
            client.clone(),
            tern_client::Target::ToUser(receivers[i].clone()),
            share,
            per_sender_rate,
            (args.window, args.body_bytes),
            counters.clone(),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.time_limit);
    let mut ack_latencies = Vec::new();
    let mut errors = Errors::default();
    let mut timed_out = false;
    loop {
        match tokio::time::timeout_at(deadline, sending.join_next()).await {
            Ok(Some(done)) => {
                let (lat, errs) = done.context("a sender task failed")?;
                ack_latencies.extend(lat);
                errors.merge(errs);
            }
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                sending.abort_all();
                break;
            }
        }
    }
    // Everything confirmed must arrive; wait for it (within the limit).
    while !timed_out
        && counters.delivered.load(Ordering::Relaxed) < counters.confirmed.load(Ordering::Relaxed)
    {
        if tokio::time::Instant::now() >= deadline {
            timed_out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = watch.elapsed();
    let _ = stop.send(true);
    let mut received = Received::default();
    while let Some(r) = receiving.join_next().await {
        received.merge(r.context("a receiver task failed")?);
    }
    progress.abort();

    let mut report = Report {
        scenario: "direct",
        server: target.server.clone(),
        settings: serde_json::to_value(args)?,
        ..Default::default()
    };
    watch.finish(&mut report);
    let secs = wall.as_secs_f64();
    let (sent, confirmed, delivered) = (
        counters.sent.load(Ordering::Relaxed),
        counters.confirmed.load(Ordering::Relaxed),
        counters.delivered.load(Ordering::Relaxed),
    );
    report.count("connections", (args.pairs * 2) as u64);
    report.count("sent", sent);
    report.count("confirmed", confirmed);
    report.count("delivered", delivered);
    report.count("duplicates", received.duplicates);
    report.count("out_of_order", received.out_of_order);
    report.rate("confirmed", confirmed as f64 / secs);
    report.rate("delivered", delivered as f64 / secs);
    report.latency("send_to_push", percentiles(received.latencies_us));
    report.latency("send_to_confirm", percentiles(ack_latencies));
    errors.merge(received.errors);
    report.errors = errors;
    if timed_out {
        report.notes.push(format!(
            "stopped at the time limit of {} s before every message was delivered",
            args.time_limit
        ));
    }
    Ok(report)
}

/// Sends `count` messages of `body_bytes` to `to`, `window` at a time, at
/// `rate` per second if given; returns send → confirm latencies.
pub(crate) async fn send(
    client: Arc<Client>,
    to: tern_client::Target,
    count: u64,
    rate: Option<f64>,
    (window, body_bytes): (usize, usize),
    counters: Arc<Counters>,
) -> (Vec<u64>, Errors) {
    let window = Arc::new(Semaphore::new(window));
    let mut ticker = rate.map(|r| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / r.max(0.001)));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    let mut inflight = JoinSet::new();
    let mut latencies = Vec::with_capacity(count as usize);
    let mut errors = Errors::default();
    let mut record =
        |done: Result<Result<u64, tern_client::ClientError>, tokio::task::JoinError>| match done {
            Ok(Ok(us)) => latencies.push(us),
            Ok(Err(e)) => errors.add(reason(&e)),
            Err(_) => errors.add("task panicked"),
        };
    let mut window_closed = false;
    for _ in 0..count {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        // The window is never closed; were it, what is left is not sended.
        let Ok(permit) = window.clone().acquire_owned().await else {
            window_closed = true;
            break;
        };
        let (client, to, counters) = (client.clone(), to.clone(), counters.clone());
        let mut body = vec![b'.'; body_bytes];
        inflight.spawn(async move {
            let start = now_micros();
            body[..8].copy_from_slice(&start.to_be_bytes());
            counters.sent.fetch_add(1, Ordering::Relaxed);
            let r = client.send(tern_client::SendOptions::new(to, body)).await;
            drop(permit);
            r.map(|_| {
                counters.confirmed.fetch_add(1, Ordering::Relaxed);
                now_micros().saturating_sub(start)
            })
        });
        // Collect finished sends as we go, so the set stays small.
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

/// Receives and ACKs pushes until `stop`, timing each message by the send
/// time its body starts with.
pub(crate) async fn receive(
    client: Client,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) -> Received {
    let mut r = Received::default();
    let mut seen = HashSet::new();
    let mut last_seq = 0;
    loop {
        let event = tokio::select! {
            e = client.next_event() => e,
            _ = stop.wait_for(|s| *s) => break,
        };
        match event {
            Some(Event::Messages {
                messages,
                last_cursor,
                ..
            }) => {
                r.take(&messages, &mut seen, &mut last_seq, &counters);
                if let Err(e) = client.ack(last_cursor).await {
                    r.errors.add(reason(&e));
                }
            }
            // A large group's messages: live, nothing to ACK.
            Some(Event::GroupMessages { messages, .. }) => {
                r.take(&messages, &mut seen, &mut last_seq, &counters);
            }
            // This scenario joins no room.
            Some(Event::RoomMessages { .. }) => {}
            Some(Event::ServerError(e)) => r.errors.add(e.code().as_str_name()),
            Some(Event::Closed { reason }) => {
                r.errors.add(format!(
                    "disconnected: {}",
                    reason.chars().take(60).collect::<String>()
                ));
                break;
            }
            None => break,
        }
    }
    r
}

impl Received {
    /// Counts and times pushed messages, by the send time their body starts with.
    fn take(
        &mut self,
        messages: &[tern_client::proto::Message],
        seen: &mut HashSet<Vec<u8>>,
        last_seq: &mut u64,
        counters: &Counters,
    ) {
        let now = now_micros();
        for m in messages {
            if !seen.insert(m.message_id.to_vec()) {
                self.duplicates += 1;
                continue;
            }
            if m.seq <= *last_seq {
                self.out_of_order += 1;
            }
            *last_seq = m.seq;
            if let Some(ts) = m
                .body
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
            {
                self.latencies_us.push(now.saturating_sub(ts));
            }
        }
        counters
            .delivered
            .fetch_add(messages.len() as u64, Ordering::Relaxed);
    }
}

pub(crate) async fn progress(counters: Arc<Counters>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last = 0;
    let mut t = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        t += 1;
        let d = counters.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{t:>4} s] sent {:>9}  confirmed {:>9}  delivered {:>9}  ({:>7}/s)",
            counters.sent.load(Ordering::Relaxed),
            counters.confirmed.load(Ordering::Relaxed),
            d,
            d - last
        );
        last = d;
    }
}
