//! The archive's scenarios (`tern_archive::conformance`) on a real
//! S3-compatible server: SeaweedFS from infra/ (`make test` starts it and
//! sets the TERN_TEST_S3_* variables). Each scenario gets its own key prefix
//! in the bucket, so runs never see each other's objects.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tern_archive::conformance::{self, Fixture};
use tern_archive_s3::{S3Config, S3Storage};

/// None (and a note) when no server is configured.
fn fixture(dir: &tempfile::TempDir) -> Option<Fixture> {
    let Ok(endpoint) = std::env::var("TERN_TEST_S3_ENDPOINT") else {
        eprintln!("TERN_TEST_S3_ENDPOINT not set: skipping the S3 archive run (make test sets it)");
        return None;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let config = S3Config {
        bucket: var("TERN_TEST_S3_BUCKET"),
        prefix: format!("test-{:016x}", rand_suffix()),
        endpoint: Some(endpoint),
        region: None,
        access_key_id: Some(var("TERN_TEST_S3_ACCESS_KEY")),
        secret_access_key: Some(var("TERN_TEST_S3_SECRET_KEY")),
    };
    let storage = S3Storage::new(config).expect("S3 configuration is valid");
    Some(Fixture::new(dir.path(), Arc::new(storage)))
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id()) << 32
}

#[tokio::test]
async fn replays_and_a_crash_mid_segment_leave_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(f) = fixture(&dir) {
        conformance::replays_and_a_crash_mid_segment_leave_each_message_once(&f).await;
    }
}

#[tokio::test]
async fn verify_names_a_changed_segment_and_a_gap_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(f) = fixture(&dir) {
        conformance::verify_names_a_changed_segment_and_a_gap_in_the_chain(&f).await;
    }
}

#[tokio::test]
async fn a_held_conversation_survives_purge_until_the_hold_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(f) = fixture(&dir) {
        conformance::a_held_conversation_survives_purge_until_the_hold_is_removed(&f).await;
    }
}

#[tokio::test]
async fn a_user_export_has_their_messages_in_range_both_ways_and_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    if let Some(f) = fixture(&dir) {
        conformance::a_user_export_has_their_messages_in_range_both_ways_and_in_groups(&f).await;
    }
}

#[tokio::test]
async fn a_dead_server_is_a_storage_error_not_a_panic() {
    let storage = S3Storage::new(S3Config {
        bucket: "tern-archive".into(),
        endpoint: Some("http://127.0.0.1:1".into()),
        access_key_id: Some("k".into()),
        secret_access_key: Some("s".into()),
        ..Default::default()
    })
    .unwrap();
    let archive = tern_archive::Archive::new(Arc::new(storage));
    let err = archive.verify().await.unwrap_err();
    assert!(
        matches!(err, tern_archive::ArchiveError::Storage(_)),
        "{err}"
    );
}
