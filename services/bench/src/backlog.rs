//! `backlog`: a user comes back to a long offline backlog. Senders fill the
//! reader's inbox while it is offline; then the reader logs in over a raw
//! TCP connection (so every byte on the wire is counted), takes the login
//! push (ACKing each frame), fetches its conversation list, and pages back
//! through each conversation's history until it holds every message.
//!
//! Measures: time to the first push frame and until everything is held,
//! bytes on the wire against the uncompressed messages, and push frames
//! ACKed. Every message is checked to arrive exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use futures_util::{StreamExt, TryStreamExt};
use prost::Message as _;
use tern_client::{Client, LoginOptions, SendOptions};
use tern_proto::client::{
    Codec, ConversationsRequest, HistoryRequest, Login, MessageBatch, PushAck, client_frame,
    server_frame,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Target;
use crate::report::{Report, Watch, run_id, tokens};
use crate::stats::Errors;

/// Words the message bodies are made of: chat-like text compresses like
/// chat, where repeated filler would flatter the compression ratio.
const WORDS: &[&str] = &[
    "ok", "yes", "no", "see", "you", "at", "the", "station", "tomorrow", "tonight", "lunch",
    "meeting", "moved", "to", "three", "pm", "can", "we", "talk", "later", "sent", "file",
    "thanks", "great", "idea", "what", "about", "friday", "running", "late", "sorry", "call", "me",
    "when", "free", "done", "deploy", "passed", "failed", "review", "please", "merge", "coffee",
    "train", "delayed", "home", "soon", "love", "it", "haha", "really", "sure",
];

#[derive(Debug, Clone, Args, serde::Serialize)]
pub struct BacklogArgs {
    /// Messages waiting for the reader when it logs in.
    #[arg(long, default_value_t = 100_000)]
    pub pending: u64,
    /// Users sending them, one conversation each.
    #[arg(long, default_value_t = 10)]
    pub senders: usize,
    /// Average size of each message body (chat-like text).
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    /// Sends in flight per sender while filling.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Messages asked for per history page.
    #[arg(long, default_value_t = 1000)]
    pub page: u32,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub time_limit: u64,
}

pub async fn run(target: &Target, args: &BacklogArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.pending > 0, "--pending must be at least 1");
    anyhow::ensure!(args.senders > 0, "--senders must be at least 1");
    anyhow::ensure!(args.window > 0, "--window must be at least 1");
    anyhow::ensure!(args.page > 0, "--page must be at least 1");
    let Some(addr) = target.server.strip_prefix("tcp://") else {
        bail!(
            "the backlog scenario counts bytes on a raw TCP connection: --server must be tcp://host:port"
        );
    };
    let addr = addr.trim_end_matches('/').to_owned();
    let deadline = Instant::now() + Duration::from_secs(args.time_limit);
    let run = run_id();
    let reader = format!("{run}reader");
    let senders: Vec<String> = (0..args.senders).map(|i| format!("{run}s{i}")).collect();
    let mut all = vec![reader.clone()];
    all.extend(senders.iter().cloned());
    let toks = tokens(&target.api, &all).await?;

    // Fill, while the reader is offline.
    let fill_started = Instant::now();
    let per_sender = split(args.pending, args.senders);
    let mut fills = tokio::task::JoinSet::new();
    for (tok, count) in toks[1..].iter().cloned().zip(per_sender) {
        let (server, reader, window, body) = (
            target.server.clone(),
            reader.clone(),
            args.window,
            args.body_bytes,
        );
        fills.spawn(async move { fill(&server, tok, &reader, count, window, body).await });
    }
    while let Some(done) = fills.join_next().await {
        done.context("a sender task failed")??;
    }
    let fill_secs = fill_started.elapsed().as_secs_f64();
    eprintln!(
        "filled {} messages in {fill_secs:.1} s; waiting for the reader's inbox",
        args.pending
    );
    wait_for_inbox(target, &toks[0], args.pending, deadline).await?;

    let watch = Watch::start(target);
    let drained = tokio::time::timeout_at(
        deadline.into(),
        drain(&addr, &toks[0], args.pending, args.page),
    )
    .await
    .map_err(|_| anyhow::anyhow!("gave up after --time-limit {} s", args.time_limit))??;

    let mut report = Report {
        scenario: "backlog",
        server: target.server.clone(),
        settings: serde_json::to_value(args).context("the settings as JSON")?,
        errors: Errors::default(),
        ..Default::default()
    };
    let ms = |d: Duration| (d.as_secs_f64() * 10_000.0).round() / 10.0;
    report.count("pending", args.pending);
    report.count("fill_secs", (fill_secs * 10.0).round() / 10.0);
    report.count("held", drained.held as u64);
    report.count("duplicates", drained.duplicates);
    report.count("pushed", drained.pushed);
    report.count("pulled", drained.pulled);
    report.count("push_frames", drained.push_frames);
    report.count("acks", drained.acks);
    report.count(
        "messages_per_ack",
        (drained.held as f64 / drained.acks.max(1) as f64).round(),
    );
    report.count("history_pages", drained.pages);
    report.count("conversations", drained.conversations);
    report.count("login_ms", ms(drained.login));
    report.count("first_push_ms", ms(drained.first_push));
    report.count("conversation_list_ms", ms(drained.list));
    report.count("everything_held_ms", ms(drained.everything));
    report.count("wire_bytes", drained.wire_bytes);
    report.count("raw_bytes", drained.raw_bytes);
    report.count(
        "wire_to_raw",
        (drained.wire_bytes as f64 / drained.raw_bytes.max(1) as f64 * 1000.0).round() / 1000.0,
    );
    if drained.held as u64 != args.pending {
        report.notes.push(format!(
            "only {} of {} messages arrived",
            drained.held, args.pending
        ));
    }
    watch.finish(&mut report);
    Ok(report)
}

/// `total` split into `parts` nearly equal counts.
fn split(total: u64, parts: usize) -> Vec<u64> {
    let parts = parts as u64;
    (0..parts)
        .map(|i| total / parts + u64::from(i < total % parts))
        .collect()
}

/// Chat-like text of about `len` bytes.
pub(crate) fn chat_text(len: usize) -> String {
    let mut s = String::with_capacity(len + 10);
    while s.len() < len {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[rand::random::<u32>() as usize % WORDS.len()]);
    }
    s
}

async fn fill(
    server: &str,
    token: String,
    to: &str,
    count: u64,
    window: usize,
    body_bytes: usize,
) -> anyhow::Result<()> {
    let (client, login) = Client::connect(server, LoginOptions::new(token, "bench").send_only())
        .await
        .with_context(|| format!("cannot connect to {server}"))?;
    crate::limits::ensure_unlimited(&login)?;
    let client = Arc::new(client);
    futures_util::stream::iter(0..count)
        .map(|_| {
            let client = client.clone();
            let body = chat_text(body_bytes);
            let to = to.to_owned();
            async move { client.send(SendOptions::to_user(to, body)).await }
        })
        .buffered(window)
        .try_for_each(|_| async { Ok(()) })
        .await
        .context("a send failed while filling the backlog")
}

/// Waits until the reader's conversation list counts every message: the
/// router writes it just before the inbox entries.
async fn wait_for_inbox(
    target: &Target,
    token: &str,
    pending: u64,
    deadline: Instant,
) -> anyhow::Result<()> {
    let (probe, _) = Client::connect(
        &target.server,
        LoginOptions::new(token, "bench-probe").send_only(),
    )
    .await
    .with_context(|| format!("cannot connect to {}", target.server))?;
    loop {
        let list = probe.conversations(0).await?;
        if list.iter().map(|c| c.last_seq).sum::<u64>() >= pending {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the reader's inbox did not fill in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last router batch's inbox entries follow their list entry closely.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = probe.logout().await;
    Ok(())
}

#[derive(Default)]
struct Drained {
    held: usize,
    duplicates: u64,
    pushed: u64,
    pulled: u64,
    push_frames: u64,
    acks: u64,
    pages: u64,
    conversations: u64,
    login: Duration,
    first_push: Duration,
    list: Duration,
    everything: Duration,
    wire_bytes: u64,
    raw_bytes: u64,
}

/// The messages held so far.
#[derive(Default)]
struct Held {
    ids: HashSet<Vec<u8>>,
    /// Lowest seq held per conversation: where its history paging resumes.
    lowest: HashMap<String, u64>,
}

impl Held {
    fn take(&mut self, d: &mut Drained, messages: Vec<tern_proto::client::Message>) {
        for m in messages {
            let low = self
                .lowest
                .entry(m.conversation.clone())
                .or_insert(u64::MAX);
            *low = (*low).min(m.seq);
            if !self.ids.insert(m.message_id.to_vec()) {
                d.duplicates += 1;
            }
        }
    }
}

/// A raw connection that counts the bytes it reads.
struct Wire {
    stream: TcpStream,
    read_bytes: u64,
}

impl Wire {
    async fn write(&mut self, kind: client_frame::Kind) -> anyhow::Result<()> {
        let frame = tern_wire::encode_client(kind);
        let mut buf = Vec::with_capacity(frame.len() + 4);
        buf.extend_from_slice(&(frame.len() as u32).to_be_bytes());
        buf.extend_from_slice(&frame);
        self.stream
            .write_all(&buf)
            .await
            .context("the gateway closed the connection")
    }

    async fn read(&mut self) -> anyhow::Result<server_frame::Kind> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .await
            .context("the gateway closed the connection")?;
        let len = u32::from_be_bytes(len) as usize;
        let mut frame = vec![0u8; len];
        self.stream
            .read_exact(&mut frame)
            .await
            .context("the gateway closed the connection")?;
        self.read_bytes += 4 + len as u64;
        let kind = tern_wire::decode_server(&frame).context("undecodable frame")?;
        if let server_frame::Kind::Error(e) = &kind {
            bail!(
                "the gateway answered with an error: {} ({})",
                e.message,
                e.code
            );
        }
        Ok(kind)
    }
}

/// Logs in, takes the push, and pages back until `pending` are held.
async fn drain(addr: &str, token: &str, pending: u64, page: u32) -> anyhow::Result<Drained> {
    let mut d = Drained::default();
    let started = Instant::now();
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let mut wire = Wire {
        stream,
        read_bytes: 0,
    };
    wire.write(client_frame::Kind::Login(Login {
        token: token.to_owned(),
        device_id: "bench".into(),
        accept_codecs: vec![Codec::Zstd as i32],
        send_only: false,
    }))
    .await?;
    let server_frame::Kind::LoginResult(_) = wire.read().await? else {
        bail!("the gateway did not answer the login with a LoginResult");
    };
    d.login = started.elapsed();

    let mut held = Held::default();
    let raw_len = |messages: &[tern_proto::client::Message]| {
        MessageBatch {
            messages: messages.to_vec(),
        }
        .encoded_len() as u64
    };

    // The login push, each frame ACKed.
    loop {
        match wire.read().await? {
            server_frame::Kind::Push(push) => {
                if d.push_frames == 0 {
                    d.first_push = started.elapsed();
                }
                d.push_frames += 1;
                let messages = tern_wire::unpack_batch(push.codec, &push.payload, 64 << 20)?;
                d.raw_bytes += raw_len(&messages);
                d.pushed += messages.len() as u64;
                held.take(&mut d, messages);
                wire.write(client_frame::Kind::PushAck(PushAck {
                    cursor: push.last_cursor,
                }))
                .await?;
                d.acks += 1;
                if !push.more_pending {
                    break;
                }
            }
            other => bail!("expected a push after login, got {other:?}"),
        }
    }

    // The home screen, then every conversation paged back.
    wire.write(client_frame::Kind::Conversations(ConversationsRequest {
        request_id: 1,
        limit: 1000,
        before: Default::default(),
    }))
    .await?;
    let list = match wire.read().await? {
        server_frame::Kind::ConversationList(list) => list,
        other => bail!("expected the conversation list, got {other:?}"),
    };
    d.list = started.elapsed();
    d.conversations = list.conversations.len() as u64;
    let mut request_id = 1;
    for c in &list.conversations {
        let mut before = held.lowest.get(&c.conversation).copied().unwrap_or(0);
        while before != 1 {
            request_id += 1;
            wire.write(client_frame::Kind::History(HistoryRequest {
                request_id,
                conversation: c.conversation.clone(),
                before_seq: before,
                limit: page,
            }))
            .await?;
            let server_frame::Kind::HistoryPage(p) = wire.read().await? else {
                bail!("expected a history page");
            };
            d.pages += 1;
            let messages = tern_wire::unpack_batch(p.codec, &p.payload, 64 << 20)?;
            d.raw_bytes += raw_len(&messages);
            d.pulled += messages.len() as u64;
            held.take(&mut d, messages);
            before = p.next_before_seq;
            if !p.has_more {
                break;
            }
        }
    }
    d.everything = started.elapsed();
    d.held = held.ids.len();
    d.wire_bytes = wire.read_bytes;
    if (d.held as u64) < pending {
        eprintln!("only {} of {pending} messages held", d.held);
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_split_evenly() {
        assert_eq!(split(10, 3), vec![4, 3, 3]);
        assert_eq!(split(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(split(100_000, 10).iter().sum::<u64>(), 100_000);
    }

    #[test]
    fn chat_text_is_about_the_size_asked() {
        let t = chat_text(100);
        assert!((100..120).contains(&t.len()), "{t}");
    }
}
