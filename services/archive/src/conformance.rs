//! Scenarios every archive storage must pass (a local directory here, S3
//! from tern-archive-s3), on the embedded log and store: the archiver keeps
//! each message once across replays and crashes, verify finds tampering,
//! holds stop purges, exports return exactly what they should. Each
//! scenario needs an empty archive and a log of its own ([`Fixture::new`]).
//! Test code: failures panic, as assertions do.

// Test code (built only for tests): a failed unwrap is a failed scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use crate::segment::{manifest_name, segment_name};
use crate::{
    Archive, ArchiveError, Archiver, ArchiverConfig, ExportFilter, HoldScope, ObjectStorage,
};
use prost::Message as _;
use tern_core::embedded::{EmbeddedLog, EmbeddedLogConfig, EmbeddedStore};
use tern_core::groups::Group;
use tern_core::ids::MessageId;
use tern_core::log::{EventLog, Record};
use tern_core::store::MessageStore;
use tern_proto::records::{ArchiveRecord, StoredMessage};
use tokio::sync::watch;

/// A log and a store in `dir` (empty), and an archive on `storage` (empty).
pub struct Fixture {
    log: Arc<dyn EventLog>,
    store: Arc<dyn MessageStore>,
    storage: Arc<dyn ObjectStorage>,
    archive: Archive,
}

impl Fixture {
    pub fn new(dir: &std::path::Path, storage: Arc<dyn ObjectStorage>) -> Fixture {
        let log = EmbeddedLog::open(&EmbeddedLogConfig {
            path: dir.join("log.redb"),
            partitions: 2,
            cache_bytes: 1 << 20,
        })
        .unwrap();
        let store = EmbeddedStore::open(&dir.join("store.redb"), 1 << 20).unwrap();
        Fixture {
            log: Arc::new(log),
            store: Arc::new(store),
            archive: Archive::new(storage.clone()),
            storage,
        }
    }
}

/// A stored message as the persister emits it to the archive topic.
fn record(
    n: u64,
    conversation: &str,
    sender: &str,
    recipients: &[&str],
    sent_at_ms: u64,
) -> ArchiveRecord {
    ArchiveRecord {
        message: Some(StoredMessage {
            message_id: MessageId::at_time_ms(sent_at_ms).to_vec(),
            conversation: conversation.into(),
            seq: n,
            sender_user: sender.into(),
            sender_device: "phone".into(),
            client_msg_id: format!("c{n}"),
            content_type: "text/plain".into(),
            body: format!("message {n}").into(),
            sent_at_ms,
        }),
        recipients: recipients.iter().map(|r| r.to_string()).collect(),
        large_group: String::new(),
        inbound_partition: (n % 3) as u32,
        inbound_offset: n,
    }
}

async fn emit(log: &dyn EventLog, records: &[ArchiveRecord]) {
    let records = records
        .iter()
        .map(|r| {
            Record::new(
                r.inbound_partition.to_string().into_bytes(),
                r.encode_to_vec(),
            )
        })
        .collect();
    log.append(tern_core::topics::ARCHIVE, records)
        .await
        .unwrap();
}

fn small_segments() -> ArchiverConfig {
    ArchiverConfig {
        segment_max_bytes: 2_000,
        segment_max_age: Duration::from_millis(200),
    }
}

/// Runs an archiver until the archive holds `want` messages; stops it
/// cleanly if `clean`, else aborts it (a crash: the open segment is lost).
async fn archive_until(s: &Fixture, want: u64, clean: bool) {
    let archiver = Archiver::new(
        s.log.clone(),
        s.store.clone(),
        s.archive.clone(),
        small_segments(),
    );
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(archiver.run(stopped));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let report = s.archive.verify().await.unwrap();
        if report.records >= want {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "archive holds {} of {want} messages",
            report.records
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if clean {
        stop.send(true).unwrap();
        task.await.unwrap().unwrap();
    } else {
        task.abort();
        let _ = task.await;
    }
}

/// Every message of the archive, by id, through a full-range export per conversation.
async fn exported(archive: &Archive, filter: ExportFilter) -> Vec<serde_json::Value> {
    let (out, _) = archive.export_to_vec(&filter, 0, u64::MAX).await.unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub async fn replays_and_a_crash_mid_segment_leave_each_message_once(s: &Fixture) {
    let first: Vec<_> = (0..300)
        .map(|n| record(n, "d:alice:bob", "alice", &["alice", "bob"], 1_000 + n))
        .collect();
    emit(s.log.as_ref(), &first).await;
    // A persister replay: the same inbound positions again.
    emit(s.log.as_ref(), &first[250..]).await;
    archive_until(s, 300, false).await;

    // More arrives while it is down, then it restarts: the crash lost the
    // open segment (if any) and the uncommitted offsets.
    let second: Vec<_> = (300..600)
        .map(|n| record(n, "d:alice:bob", "bob", &["alice", "bob"], 1_000 + n))
        .collect();
    emit(s.log.as_ref(), &second).await;
    emit(s.log.as_ref(), &first[..10]).await;
    archive_until(s, 600, true).await;

    let report = s.archive.verify().await.unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    assert!(report.segments > 3, "closed by size: {report:?}");
    assert_eq!(report.records, 600, "each message once");
    let lines = exported(&s.archive, ExportFilter::Conversation("d:alice:bob".into())).await;
    let mut seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (0..600).collect::<Vec<_>>());
}

pub async fn verify_names_a_changed_segment_and_a_gap_in_the_chain(s: &Fixture) {
    let records: Vec<_> = (0..200)
        .map(|n| record(n, "d:alice:bob", "alice", &["alice", "bob"], 1_000 + n))
        .collect();
    emit(s.log.as_ref(), &records).await;
    archive_until(s, 200, true).await;
    let segments = s.archive.segments().await.unwrap();
    assert!(segments.len() >= 4, "{segments:?}");

    // One flipped byte in segment 2.
    let name = segment_name(2);
    let mut bytes = s.storage.get(&name).await.unwrap().unwrap().to_vec();
    bytes[10] ^= 0x01;
    s.storage.put(&name, bytes.clone().into()).await.unwrap();
    let report = s.archive.verify().await.unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(report.problems[0].segment, 2);
    assert!(
        report.problems[0].to_string().contains("was changed"),
        "{}",
        report.problems[0]
    );
    bytes[10] ^= 0x01;
    s.storage.put(&name, bytes.into()).await.unwrap();
    assert!(s.archive.verify().await.unwrap().ok());

    // Segment 1 removed, data and manifest: the chain has a gap.
    s.storage.delete(&segment_name(1)).await.unwrap();
    s.storage.delete(&manifest_name(1)).await.unwrap();
    let report = s.archive.verify().await.unwrap();
    let first = &report.problems[0];
    assert_eq!(first.segment, 1, "{:?}", report.problems);
    assert!(
        first.what.contains("chain jumps from segment 0 to 2"),
        "{first}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.segment == 2 && p.what.contains("chain is broken")),
        "segment 2 no longer follows segment 0: {:?}",
        report.problems
    );

    // Only the data of segment 3 removed: missing, not purged.
    s.storage.delete(&segment_name(3)).await.unwrap();
    let report = s.archive.verify().await.unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.segment == 3 && p.what.contains("missing and was not purged")),
        "{:?}",
        report.problems
    );
}

pub async fn a_held_conversation_survives_purge_until_the_hold_is_removed(s: &Fixture) {
    let day = 86_400_000u64;
    let now = 1_000 * day;
    // Old messages: one conversation under hold, one not; then recent ones.
    let mut records = Vec::new();
    for n in 0..40 {
        let (conversation, users) = if n < 20 {
            ("d:alice:bob", ["alice", "bob"])
        } else {
            ("d:carol:dan", ["carol", "dan"])
        };
        records.push(record(
            n,
            conversation,
            users[0],
            &users,
            now - 400 * day + n,
        ));
    }
    emit(s.log.as_ref(), &records[..20]).await;
    archive_until(s, 20, true).await;
    emit(s.log.as_ref(), &records[20..]).await;
    archive_until(s, 40, true).await;
    let recent: Vec<_> = (40..50)
        .map(|n| record(n, "d:alice:bob", "bob", &["alice", "bob"], now - day))
        .collect();
    emit(s.log.as_ref(), &recent).await;
    archive_until(s, 50, true).await;

    let hold = s
        .archive
        .add_hold(
            Some("case-17".into()),
            HoldScope::Conversation("d:alice:bob".into()),
            "litigation 17",
        )
        .await
        .unwrap();
    assert!(
        s.archive
            .add_hold(Some("case-17".into()), HoldScope::User("x".into()), "again")
            .await
            .is_err(),
        "an id names one hold"
    );
    let retention = 365 * day;
    let report = s.archive.purge(now, retention).await.unwrap();
    assert_eq!(
        report.records, 20,
        "carol and dan's old messages go: {report:?}"
    );
    assert!(
        !report.held.is_empty(),
        "alice and bob's old segments are held"
    );
    let verify = s.archive.verify().await.unwrap();
    assert!(
        verify.ok(),
        "purged segments still verify: {:?}",
        verify.problems
    );
    assert_eq!(verify.records, 30);
    assert_eq!(
        exported(&s.archive, ExportFilter::Conversation("d:alice:bob".into()))
            .await
            .len(),
        30
    );

    s.archive.remove_hold(&hold.id).await.unwrap();
    assert!(s.archive.holds().await.unwrap().is_empty());
    let report = s.archive.purge(now, retention).await.unwrap();
    assert_eq!(
        report.records, 20,
        "now alice and bob's old messages go too"
    );
    let verify = s.archive.verify().await.unwrap();
    assert!(verify.ok(), "{:?}", verify.problems);
    assert_eq!(verify.records, 10, "only the recent ones are left");
    assert!(matches!(
        s.archive.remove_hold("case-17").await,
        Err(ArchiveError::UnknownHold(_))
    ));
}

pub async fn a_user_export_has_their_messages_in_range_both_ways_and_in_groups(s: &Fixture) {
    s.store
        .create_group(
            &Group {
                id: "big".into(),
                name: "Big".into(),
                owner: "carol".into(),
                created_at_ms: 0,
                history_open: false,
            },
            &["alice".into(), "carol".into(), "dan".into()],
        )
        .await
        .unwrap();
    let mut records = vec![
        record(0, "d:alice:bob", "alice", &["alice", "bob"], 1_000),
        record(1, "d:alice:bob", "bob", &["alice", "bob"], 2_000),
        record(2, "g:small", "erin", &["alice", "erin"], 3_000),
        record(3, "d:bob:carol", "bob", &["bob", "carol"], 4_000),
        record(5, "d:alice:bob", "alice", &["alice", "bob"], 9_000),
    ];
    let mut large = record(4, "g:big", "carol", &[], 5_000);
    large.large_group = "big".into();
    records.push(large);
    emit(s.log.as_ref(), &records).await;
    archive_until(s, 6, true).await;

    let mut out = Vec::new();
    let mut reports = Vec::new();
    let summary = s
        .archive
        .export(&ExportFilter::User("alice".into()), 1_500, 8_000, |chunk| {
            reports.push(chunk.progress);
            out.extend(chunk.jsonl);
            std::future::ready(Ok(()))
        })
        .await
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(
        got,
        vec![1, 2, 4],
        "received from bob, in a small group, in a large group; not before 1.5 s, not at 9 s, not bob to carol"
    );
    assert_eq!(summary.messages, 3);
    assert_eq!(reports.last().unwrap().messages_written, 3);
    let big = lines.iter().find(|l| l["conversation"] == "g:big").unwrap();
    assert_eq!(
        big["recipients"],
        serde_json::json!(["alice", "carol", "dan"])
    );
    assert_eq!(big["body"], "message 4");
}
