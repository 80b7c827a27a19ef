//! The message-store conformance scenarios against a real CQL database.
//!
//! Needs Cassandra (or ScyllaDB) at `TERN_TEST_CQL` (e.g. `127.0.0.1:9042`),
//! as `infra/up` starts it and `make test` sets it. Without the variable
//! the test says so and passes: `cargo test` alone needs no servers. With
//! it set and the database down, the test fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tern_scylla::{ScyllaStore, ScyllaStoreConfig};

#[tokio::test]
async fn scylla_store_conforms() {
    let Ok(node) = std::env::var("TERN_TEST_CQL") else {
        eprintln!(
            "TERN_TEST_CQL not set: skipping the CQL store conformance run (make test sets it)"
        );
        return;
    };
    let config = ScyllaStoreConfig::new(node, "tern_conformance");
    let store = ScyllaStore::connect(&config)
        .await
        .expect("CQL database reachable");
    tern_core::conformance::store_scenarios(Arc::new(store)).await;
    // Connecting again applies no migration twice.
    ScyllaStore::connect(&config).await.expect("second connect");
}

#[tokio::test]
async fn an_unreachable_database_is_a_clear_error() {
    let mut config = ScyllaStoreConfig::new("127.0.0.1:1", "tern_x");
    config.connect_timeout = Duration::from_millis(500);
    let err = ScyllaStore::connect(&config)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(
        err.to_string()
            .contains("cannot reach the CQL database at 127.0.0.1:1"),
        "{err}"
    );
}

#[tokio::test]
async fn a_cursor_saved_before_migration_006_is_kept() {
    let Ok(node) = std::env::var("TERN_TEST_CQL") else {
        eprintln!("TERN_TEST_CQL not set: skipping");
        return;
    };
    let config = ScyllaStoreConfig::new(node.clone(), "tern_conformance");
    let store = ScyllaStore::connect(&config)
        .await
        .expect("CQL database reachable");
    // An ACK stored by a tern before 006: in `cursors`, at wall-clock time.
    let user = tern_core::conformance::fresh("olduser");
    let session = scylla::client::session_builder::SessionBuilder::new()
        .known_node(node)
        .build()
        .await
        .expect("session");
    session
        .query_unpaged(
            "INSERT INTO tern_conformance.cursors (user_id, device, cursor) VALUES (?, 'phone', 42)",
            (&user,),
        )
        .await
        .expect("old-style cursor written");
    use tern_core::store::InboxStore as _;
    assert_eq!(store.cursor(&user, "phone").await.unwrap(), 42);
    store.advance_cursor(&user, "phone", 40).await.unwrap();
    assert_eq!(
        store.cursor(&user, "phone").await.unwrap(),
        42,
        "never back"
    );
    store.advance_cursor(&user, "phone", 50).await.unwrap();
    assert_eq!(store.cursor(&user, "phone").await.unwrap(), 50);
}
