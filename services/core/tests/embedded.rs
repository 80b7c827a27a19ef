//! The conformance scenarios on the embedded backends, plus what only an
//! embedded backend can show: durability across a reopen of its files.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tern_core::conformance;
use tern_core::embedded::{EmbeddedLog, EmbeddedLogConfig, EmbeddedStore, MemoryRoutes};
use tern_core::log::{EventLog, Record, StartFrom};

fn log_config(dir: &std::path::Path) -> EmbeddedLogConfig {
    EmbeddedLogConfig {
        path: dir.join("log.redb"),
        partitions: 4,
        cache_bytes: 16 << 20,
    }
}

fn log_at(dir: &std::path::Path) -> EmbeddedLog {
    EmbeddedLog::open(&log_config(dir)).unwrap()
}

/// Opens the log at `dir` once the dropped log before it let go of the
/// file: its writer thread closes the file after it sees the log gone, and
/// until then redb refuses a second open.
async fn reopen_log_at(dir: &std::path::Path) -> EmbeddedLog {
    let config = log_config(dir);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match EmbeddedLog::open(&config) {
            Ok(log) => return log,
            Err(e) if e.to_string().contains("already open") => assert!(
                tokio::time::Instant::now() < deadline,
                "the dropped log never closed its file: {e}"
            ),
            Err(e) => panic!("the log does not reopen: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn embedded_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb"), 16 << 20).unwrap();
    conformance::store_scenarios(Arc::new(store)).await;
}

#[tokio::test]
async fn embedded_log_conforms() {
    let dir = tempfile::tempdir().unwrap();
    conformance::log_scenarios(Arc::new(log_at(dir.path()))).await;
}

#[tokio::test]
async fn embedded_log_reports_its_lag() {
    let dir = tempfile::tempdir().unwrap();
    conformance::lag_scenario(Arc::new(log_at(dir.path()))).await;
}

#[tokio::test]
async fn memory_routes_conform() {
    conformance::route_scenarios(Arc::new(MemoryRoutes::new())).await;
}

#[tokio::test]
async fn log_resumes_from_committed_offsets_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = log_at(dir.path());
        let records = (0..10u8).map(|i| Record::new("k", vec![i])).collect();
        log.append("t", records).await.unwrap();
        let mut sub = log.subscribe("t", "g", StartFrom::Earliest).await.unwrap();
        let batch = sub.poll(4).await.unwrap();
        assert_eq!(
            batch.iter().map(|d| d.value[0]).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        sub.commit(&batch).await.unwrap();
    }
    // Reopen: same file, new process state.
    let log = reopen_log_at(dir.path()).await;
    let mut sub = log.subscribe("t", "g", StartFrom::Earliest).await.unwrap();
    let batch = sub.poll(100).await.unwrap();
    assert_eq!(
        batch.iter().map(|d| d.value[0]).collect::<Vec<_>>(),
        vec![4, 5, 6, 7, 8, 9]
    );
    // Offsets continue after a reopen; they are never reused.
    let p = log
        .append("t", vec![Record::new("k", vec![10])])
        .await
        .unwrap();
    assert_eq!(p[0].offset, 10);
}

#[tokio::test]
async fn store_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let store: Arc<dyn tern_core::store::MessageStore> =
            Arc::new(EmbeddedStore::open(&path, 16 << 20).unwrap());
        store.advance_cursor("bob", "phone", 7).await.unwrap();
        // A durable write after the cursor makes the cursor durable too.
        let m = tern_core::store::StoredMessage {
            message_id: tern_core::ids::MessageId::new().to_vec(),
            conversation: "d:alice:bob".into(),
            sender_user: "alice".into(),
            client_msg_id: "c1".into(),
            ..Default::default()
        };
        store.put_messages(vec![m]).await.unwrap();
    }
    let store = EmbeddedStore::open(&path, 16 << 20).unwrap();
    use tern_core::store::{HistoryStore as _, InboxStore as _};
    assert_eq!(store.cursor("bob", "phone").await.unwrap(), 7);
    assert_eq!(store.history("d:alice:bob", 0, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn expired_messages_leave_history_bodies_and_pushes() {
    use tern_core::ids::MessageId;
    use tern_core::store::{
        HistoryStore as _, InboxEntry, InboxStore as _, StoredMessage, load_entries,
    };
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store.redb"), 16 << 20).unwrap();
    let now = tern_core::now_ms();
    let day_ago = now - 86_400_000;
    let message = |id: MessageId, client_id: &str| StoredMessage {
        message_id: id.to_vec(),
        conversation: "d:alice:bob".into(),
        sender_user: "alice".into(),
        sender_device: "d1".into(),
        client_msg_id: client_id.into(),
        content_type: "text/plain".into(),
        body: client_id.as_bytes().to_vec().into(),
        sent_at_ms: id.time_ms(),
        seq: 0,
    };
    let ids = [
        MessageId::at_time_ms(day_ago),
        MessageId::at_time_ms(day_ago + 1),
        MessageId::new(),
    ];
    let stored = store
        .put_messages(vec![
            message(ids[0], "old1"),
            message(ids[1], "old2"),
            message(ids[2], "new"),
        ])
        .await
        .unwrap();
    assert_eq!(stored.len(), 3);
    let entries: Vec<InboxEntry> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| InboxEntry {
            user: "bob".into(),
            cursor: i as u64 + 1,
            message_id: *id,
            conversation: "d:alice:bob".into(),
        })
        .collect();
    store.append_inbox(entries.clone()).await.unwrap();

    // Everything made over an hour ago goes, a bounded number at a time.
    let hour_ago = now - 3_600_000;
    assert_eq!(store.expire_messages(hour_ago, 1).await.unwrap(), 1);
    assert_eq!(store.expire_messages(hour_ago, 100).await.unwrap(), 1);
    assert_eq!(store.expire_messages(hour_ago, 100).await.unwrap(), 0);
    let history = store.history("d:alice:bob", 0, 10).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].client_msg_id, "new");
    assert_eq!(store.get_messages(&ids).await.unwrap().len(), 1);
    // The inbox still lists three entries; only the live body is pushed.
    let pushed = load_entries(&store, &entries).await.unwrap();
    assert_eq!(pushed.len(), 1);
    assert_eq!(pushed[0].cursor, 3);
    // The expired client id is free again: a new send with it is stored.
    let again = store
        .put_messages(vec![message(MessageId::new(), "old1")])
        .await
        .unwrap();
    assert!(!again[0].duplicate);
    assert_eq!(again[0].message.seq, 4, "seq keeps counting");
}
