//! `tern-bench archive`: the compliance archiver's own speed, in process.
//!
//! Fills an embedded log's `archive` topic with stored 1:1 messages (as the
//! persister emits them) and times the archiver turning them into closed
//! segments on a local directory: messages/s, MB/s written, compression
//! ratio. Then times an export of one user's messages from that archive.
//! No server is needed; the filling is not part of the figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use prost::Message as _;
use tern_archive::metrics;
use tern_archive::{Archive, Archiver, ArchiverConfig, ExportFilter, LocalDir};
use tern_core::embedded::{EmbeddedLog, EmbeddedLogConfig, EmbeddedStore};
use tern_core::ids::{Conversation, MessageId};
use tern_core::log::{EventLog, Record};
use tern_proto::records::{ArchiveRecord, StoredMessage};
use tokio::sync::watch;

use crate::report::Report;

#[derive(Debug, Args)]
pub struct ArchiveArgs {
    /// Messages to archive.
    #[arg(long, default_value_t = 1_000_000)]
    pub messages: u64,
    /// Users they are spread over (random pairs).
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Average size of each message body (chat-like text).
    #[arg(long, default_value_t = 100)]
    pub body_bytes: usize,
    /// Segment size, MiB before compression (the server's default is 32).
    #[arg(long, default_value_t = 32)]
    pub segment_mib: u64,
    /// Directory for the log and the archive [default: a temporary one].
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
}

/// Inbound partitions the messages are spread over, as a 4-partition log has.
const PARTITIONS: u64 = 4;
/// Records appended per log call while filling.
const FILL_BATCH: usize = 10_000;

pub async fn run(args: &ArchiveArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(args.messages > 0, "--messages must be at least 1");
    anyhow::ensure!(args.users >= 2, "--users must be at least 2");
    let temp = tempfile::tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let log: Arc<dyn EventLog> = Arc::new(EmbeddedLog::open(&EmbeddedLogConfig {
        path: dir.join("log.redb"),
        partitions: PARTITIONS as u32,
        cache_bytes: 64 << 20,
    })?);
    let store = Arc::new(EmbeddedStore::open(&dir.join("store.redb"), 16 << 20)?);
    let archive = Archive::new(Arc::new(LocalDir::new(dir.join("archive"))));

    let filled = Instant::now();
    let start_ms = tern_core::now_ms();
    let mut batch = Vec::with_capacity(FILL_BATCH);
    for n in 0..args.messages {
        batch.push(record(n, args, start_ms)?);
        if batch.len() == FILL_BATCH || n + 1 == args.messages {
            log.append(tern_core::topics::ARCHIVE, std::mem::take(&mut batch))
                .await?;
        }
    }
    let fill_secs = filled.elapsed().as_secs_f64();

    let before = (
        metrics::ARCHIVE_RECORDS.get(),
        metrics::ARCHIVE_BYTES.get(),
        metrics::ARCHIVE_RAW_BYTES.get(),
        metrics::ARCHIVE_SEGMENTS.get(),
    );
    let archiver = Archiver::new(
        log.clone(),
        store,
        archive.clone(),
        ArchiverConfig {
            segment_max_bytes: (args.segment_mib << 20) as usize,
            // Only size closes segments here; shutdown closes the last one.
            segment_max_age: Duration::from_secs(3600),
        },
    );
    let (stop, stopped) = watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(archiver.run(stopped));
    // Every message is in a closed segment or in the open one: stop, which
    // closes the open one, and time until the archiver is done.
    loop {
        let taken = metrics::ARCHIVE_RECORDS.get() - before.0
            + metrics::ARCHIVE_OPEN_RECORDS.get().max(0) as u64;
        if taken >= args.messages {
            break;
        }
        anyhow::ensure!(!task.is_finished(), "the archiver stopped early");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(true)?;
    task.await??;
    let archive_secs = started.elapsed().as_secs_f64();
    let records = metrics::ARCHIVE_RECORDS.get() - before.0;
    let bytes = metrics::ARCHIVE_BYTES.get() - before.1;
    let raw = metrics::ARCHIVE_RAW_BYTES.get() - before.2;
    let segments = metrics::ARCHIVE_SEGMENTS.get() - before.3;

    // One user's messages, both directions, over the whole range.
    let exported = Instant::now();
    let summary = archive
        .export_to_vec(&ExportFilter::User(user(0)), 0, u64::MAX)
        .await?
        .1;
    let export_secs = exported.elapsed().as_secs_f64();
    // The same user over the first tenth of the time range: the manifests'
    // time ranges leave most segments unread.
    let ranged = Instant::now();
    let tenth = archive
        .export_to_vec(
            &ExportFilter::User(user(0)),
            start_ms,
            start_ms + args.messages / 10,
        )
        .await?
        .1;
    let range_secs = ranged.elapsed().as_secs_f64();
    let verified = Instant::now();
    let report_ok = archive.verify().await?;
    let verify_secs = verified.elapsed().as_secs_f64();
    anyhow::ensure!(
        report_ok.ok(),
        "the archive does not verify: {:?}",
        report_ok.problems
    );

    let mut r = Report {
        scenario: "archive",
        server: format!("in process, {}", dir.display()),
        settings: serde_json::json!({
            "messages": args.messages, "users": args.users,
            "body_bytes": args.body_bytes, "segment_mib": args.segment_mib,
        }),
        wall_secs: fill_secs + archive_secs + export_secs + range_secs + verify_secs,
        ..Default::default()
    };
    let mb = |b: u64| b as f64 / 1e6;
    r.counts.insert("archived".into(), records.into());
    r.counts.insert("segments".into(), segments.into());
    r.counts.insert("fill_secs".into(), round(fill_secs).into());
    r.counts
        .insert("archive_secs".into(), round(archive_secs).into());
    r.counts
        .insert("written_mb".into(), round(mb(bytes)).into());
    r.counts.insert("raw_mb".into(), round(mb(raw)).into());
    r.counts.insert(
        "compression_ratio".into(),
        round(raw as f64 / bytes.max(1) as f64).into(),
    );
    r.counts
        .insert("export_user_messages".into(), summary.messages.into());
    r.counts.insert(
        "export_segments_read".into(),
        format!("{} of {}", summary.segments_read, summary.segments_total).into(),
    );
    r.counts
        .insert("export_secs".into(), round(export_secs).into());
    r.counts
        .insert("export_tenth_messages".into(), tenth.messages.into());
    r.counts.insert(
        "export_tenth_segments_read".into(),
        format!("{} of {}", tenth.segments_read, tenth.segments_total).into(),
    );
    r.counts
        .insert("export_tenth_secs".into(), round(range_secs).into());
    r.counts
        .insert("verify_secs".into(), round(verify_secs).into());
    r.rates.insert(
        "archived_messages".into(),
        (records as f64 / archive_secs).round().into(),
    );
    r.rates
        .insert("written_mb".into(), round(mb(bytes) / archive_secs).into());
    r.rates
        .insert("raw_mb".into(), round(mb(raw) / archive_secs).into());
    Ok(r)
}

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

fn user(n: u64) -> String {
    format!("user{n}")
}

/// Message `n`: between two random users (user 0 among them now and then,
/// as any other), a millisecond after the previous one.
fn record(n: u64, args: &ArchiveArgs, start_ms: u64) -> anyhow::Result<Record> {
    let a = rand::random::<u64>() % args.users;
    let b = (a + 1 + rand::random::<u64>() % (args.users - 1)) % args.users;
    let (from, to) = (user(a), user(b));
    let conversation = Conversation::direct(&from, &to)?.to_string();
    let sent_at_ms = start_ms + n;
    let partition = n % PARTITIONS;
    let value = ArchiveRecord {
        message: Some(StoredMessage {
            message_id: MessageId::at_time_ms(sent_at_ms).to_vec(),
            conversation,
            seq: n + 1,
            sender_user: from.clone(),
            sender_device: "phone".into(),
            client_msg_id: format!("{n:016x}"),
            content_type: "text/plain".into(),
            body: crate::backlog::chat_text(args.body_bytes).into(),
            sent_at_ms,
        }),
        recipients: vec![from, to],
        large_group: String::new(),
        inbound_partition: partition as u32,
        inbound_offset: n / PARTITIONS,
    };
    Ok(Record::new(
        partition.to_string().into_bytes(),
        value.encode_to_vec(),
    ))
}
