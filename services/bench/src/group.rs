//! `group`: one sender posts to a group of many members, all online; the
//! pipeline expands each message to every member (an inbox entry and a push
//! each). Measures sends and member deliveries per second, and send → push
//! latency at the members.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use tern_client::api_proto::{ChangeMembersRequest, CreateGroupRequest};
use tern_client::{Client, LoginOptions, Target as SendTarget};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Target;
use crate::direct::{Counters, Received, progress, receive, send};
use crate::report::{Report, Watch, run_id, tokens};
use crate::stats::{Errors, percentiles};

/// Members added per user API call (the server's default
/// `max_members_per_call`).
const MEMBERS_PER_CALL: usize = 100;

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct GroupArgs {
    /// Members besides the sender, each online on its own connection.
    #[arg(long, default_value_t = 1000)]
    pub members: usize,
    /// Messages the sender posts to the group.
    #[arg(long, default_value_t = 200)]
    pub messages: u64,
    /// Target messages per second; 0 sends as fast as confirmed.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Sends in flight.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Size of each message body (at least 8: the send time).
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    /// Member connections opened at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    pub time_limit: u64,
}

pub async fn run(target: &Target, args: &GroupArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.members > 0, "--members must be at least 1");
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(
        args.body_bytes >= 8,
        "--body-bytes must be at least 8 (the send time)"
    );
    let run = run_id();
    let sender = format!("{run}owner");
    let members: Vec<String> = (0..args.members).map(|i| format!("{run}m{i}")).collect();
    let mut all = vec![sender.clone()];
    all.extend(members.iter().cloned());
    let toks = tokens(&target.api, &all).await?;
    let (sender_client, login) = Client::connect(
        &target.server,
        LoginOptions::new(toks[0].clone(), "bench").send_only(),
    )
    .await
    .with_context(|| format!("cannot connect to {}", target.server))?;
    crate::limits::ensure_unlimited(&login)?;
    let group = create_group(&target.api, &toks[0], &members).await?;

    let server = target.server.clone();
    let receivers: Vec<Client> = futures_util::stream::iter(toks[1..].iter().cloned())
        .map(|tok| {
            let server = server.clone();
            async move {
                Client::connect(&server, LoginOptions::new(tok, "bench"))
                    .await
                    .map(|(c, _)| c)
                    .with_context(|| format!("a member cannot connect to {server}"))
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .try_collect()
        .await?;

    let counters = Arc::new(Counters::default());
    let (stop, stopped) = watch::channel(false);
    let mut receiving = JoinSet::new();
    for client in receivers {
        receiving.spawn(receive(client, counters.clone(), stopped.clone()));
    }
    let watch = Watch::start(target);
    let progress = tokio::spawn(progress(counters.clone(), stopped.clone()));
    let sending = tokio::spawn(send(
        Arc::new(sender_client),
        SendTarget::Conversation(group.clone()),
        args.messages,
        (args.rate > 0).then_some(args.rate as f64),
        (args.window, args.body_bytes),
        counters.clone(),
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.time_limit);
    let mut timed_out = false;
    let (confirm_latencies, mut errors) = match tokio::time::timeout_at(deadline, sending).await {
        Ok(done) => done.context("the sender task failed")?,
        Err(_) => {
            timed_out = true;
            (Vec::new(), Errors::default())
        }
    };
    // Every confirmed message must reach every member.
    let expected = || counters.confirmed.load(Ordering::Relaxed) * args.members as u64;
    while !timed_out && counters.delivered.load(Ordering::Relaxed) < expected() {
        if tokio::time::Instant::now() >= deadline {
            timed_out = true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = watch.elapsed();
    let _ = stop.send(true);
    let mut received = Received::default();
    while let Some(r) = receiving.join_next().await {
        received.merge(r.context("a member task failed")?);
    }
    progress.abort();

    let mut report = Report {
        scenario: "group",
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
    report.count("group", group);
    report.count("connections", args.members as u64 + 1);
    report.count("sent", sent);
    report.count("confirmed", confirmed);
    report.count("expected_deliveries", expected());
    report.count("delivered", delivered);
    report.count("duplicates", received.duplicates);
    report.count("out_of_order", received.out_of_order);
    report.rate("confirmed", confirmed as f64 / secs);
    report.rate("delivered", delivered as f64 / secs);
    report.latency("send_to_push", percentiles(received.latencies_us));
    report.latency("send_to_confirm", percentiles(confirm_latencies));
    errors.merge(received.errors);
    report.errors = errors;
    if timed_out {
        report.notes.push(format!(
            "stopped at the time limit of {} s before every member got every message",
            args.time_limit
        ));
    }
    Ok(report)
}

/// Creates the group through the user API as its owner (the user of
/// `owner_token`), adding the members a call's worth at a time; returns its
/// conversation id.
async fn create_group(api: &str, owner_token: &str, members: &[String]) -> anyhow::Result<String> {
    let mut client = tern_client::connect_api_as(api, owner_token)
        .await
        .with_context(|| format!("cannot reach the API at {api}"))?;
    let mut chunks = members.chunks(MEMBERS_PER_CALL);
    let group = client
        .create_group(CreateGroupRequest {
            owner: String::new(),
            name: "tern-bench".into(),
            members: chunks.next().unwrap_or_default().to_vec(),
            history_open: false,
        })
        .await
        .context("cannot create the group")?
        .into_inner();
    for chunk in chunks {
        client
            .add_members(ChangeMembersRequest {
                group: group.id.clone(),
                users: chunk.to_vec(),
            })
            .await
            .context("cannot add members")?;
    }
    Ok(group.conversation)
}
