//! The archive's scenarios (`tern_archive::conformance`) on a local directory.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use tern_archive::LocalDir;
use tern_archive::conformance::{self, Fixture};

fn fixture(dir: &tempfile::TempDir) -> Fixture {
    Fixture::new(
        dir.path(),
        Arc::new(LocalDir::new(dir.path().join("archive"))),
    )
}

#[tokio::test]
async fn replays_and_a_crash_mid_segment_leave_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    conformance::replays_and_a_crash_mid_segment_leave_each_message_once(&fixture(&dir)).await;
}

#[tokio::test]
async fn verify_names_a_changed_segment_and_a_gap_in_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    conformance::verify_names_a_changed_segment_and_a_gap_in_the_chain(&fixture(&dir)).await;
}

#[tokio::test]
async fn a_held_conversation_survives_purge_until_the_hold_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    conformance::a_held_conversation_survives_purge_until_the_hold_is_removed(&fixture(&dir)).await;
}

#[tokio::test]
async fn a_user_export_has_their_messages_in_range_both_ways_and_in_groups() {
    let dir = tempfile::tempdir().unwrap();
    conformance::a_user_export_has_their_messages_in_range_both_ways_and_in_groups(&fixture(&dir))
        .await;
}
