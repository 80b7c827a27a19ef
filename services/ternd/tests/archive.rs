//! The compliance archive end to end: messages sent through a real `ternd`
//! (1:1 both ways and a group) are archived once each, also when ternd is
//! SIGKILLed with a segment open and clients retry what was in flight.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{free_port, spawn_ternd};
use tern_archive::ExportFilter;
use tern_client::{Client, GroupApi, LoginOptions, SendOptions, Target};

/// Messages per sender; four senders.
const PER_SENDER: usize = 2_500;

/// Sends `PER_SENDER` messages from `user` to `target`, each with its own
/// client_msg_id, up to 50 in flight; after a failure (ternd killed) it
/// logs in again and retries the same ids, as a client app would.
async fn send_all(
    tcp: String,
    api: String,
    user: &'static str,
    target: Target,
    acked: Arc<AtomicUsize>,
) {
    let mut next = 0;
    while next < PER_SENDER {
        let client = match login(&tcp, &api, user).await {
            Some(c) => c,
            None => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        while next < PER_SENDER {
            let batch: Vec<usize> = (next..PER_SENDER.min(next + 50)).collect();
            let sends = batch.iter().map(|i| {
                let mut o = SendOptions::new(target.clone(), format!("{user} {i}"));
                o.client_msg_id = Some(format!("{user}-{i}"));
                client.send(o)
            });
            let results = futures_util::future::join_all(sends).await;
            if results.iter().any(Result::is_err) {
                break; // reconnect and retry this batch with the same ids
            }
            acked.fetch_add(batch.len(), Ordering::Relaxed);
            next += batch.len();
        }
    }
}

async fn login(tcp: &str, api: &str, user: &str) -> Option<Client> {
    let token = tern_client::dev_token(api, user).await.ok()?;
    let (client, _) = Client::connect(tcp, LoginOptions::new(token, "phone"))
        .await
        .ok()?;
    Some(client)
}

/// Waits for a 10,000-message run: longer than `common::eventually`.
async fn wait_for<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    common::eventually_within(
        what,
        Duration::from_secs(120),
        Duration::from_millis(200),
        check,
    )
    .await
}

#[tokio::test]
async fn ten_thousand_messages_are_archived_once_each_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let archive_dir = dir.path().join("archive");
    let ports = (free_port(), free_port(), free_port());
    let flags = [
        "--archive",
        archive_dir.to_str().unwrap(),
        "--archive-segment-max-mib",
        "1",
        "--archive-segment-max-age-ms",
        "1000",
    ];
    let mut ternd = spawn_ternd(dir.path(), ports, &flags).await;
    let token = tern_client::dev_token(&ternd.api, "carol").await.unwrap();
    let group = GroupApi::connect(&ternd.api, token)
        .await
        .unwrap()
        .create("auditors", &["alice".into(), "dan".into()])
        .await
        .unwrap();

    let acked = Arc::new(AtomicUsize::new(0));
    let senders = [
        ("alice", Target::ToUser("bob".into())),
        ("bob", Target::ToUser("alice".into())),
        ("carol", Target::Conversation(group.conversation.clone())),
        ("dan", Target::ToUser("alice".into())),
    ]
    .map(|(user, target)| {
        tokio::spawn(send_all(
            ternd.tcp.clone(),
            ternd.api.clone(),
            user,
            target,
            acked.clone(),
        ))
    });

    // Kill it once some segments are closed and more messages are in flight.
    let archive = tern_archive::open(archive_dir.to_str().unwrap())
        .unwrap()
        .unwrap();
    wait_for("a segment closed and 3,000 sends acknowledged", || async {
        (!archive.segments().await.unwrap().is_empty() && acked.load(Ordering::Relaxed) >= 3_000)
            .then_some(())
    })
    .await;
    ternd.child.kill().expect("SIGKILL");
    ternd.child.wait().unwrap();
    let before_restart = acked.load(Ordering::Relaxed);
    assert!(before_restart < 4 * PER_SENDER, "killed mid-stream");
    let mut ternd = spawn_ternd(dir.path(), ports, &flags).await;
    for s in senders {
        tokio::time::timeout(Duration::from_secs(120), s)
            .await
            .expect("every send acknowledged after the restart")
            .unwrap();
    }

    let report = wait_for("all 10,000 messages archived", || async {
        let r = archive.verify().await.unwrap();
        (r.records >= 4 * PER_SENDER as u64).then_some(r)
    })
    .await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.records, 10_000, "each message once: {report:?}");

    // Each (sender, client_msg_id) is in the export once, with one id.
    let mut keys = HashSet::new();
    let mut ids = HashSet::new();
    for user in ["alice", "bob", "carol", "dan"] {
        let (out, _) = archive
            .export_to_vec(&ExportFilter::User(user.into()), 0, u64::MAX)
            .await
            .unwrap();
        for line in String::from_utf8(out).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if v["sender_user"] == user {
                assert!(keys.insert(v["client_msg_id"].as_str().unwrap().to_owned()));
                assert!(ids.insert(v["message_id"].as_str().unwrap().to_owned()));
            }
        }
    }
    assert_eq!(keys.len(), 10_000);
    // dan receives carol's group messages too.
    let (_, summary) = archive
        .export_to_vec(&ExportFilter::User("dan".into()), 0, u64::MAX)
        .await
        .unwrap();
    assert_eq!(
        summary.messages,
        2 * PER_SENDER as u64,
        "his own and the group's"
    );
    ternd.child.kill().unwrap();
    ternd.child.wait().unwrap();
}
