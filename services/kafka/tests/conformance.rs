//! The event-log conformance scenarios against a real Kafka broker.
//!
//! Needs Kafka at `TERN_TEST_KAFKA` (e.g. `127.0.0.1:9092`), as `infra/up`
//! starts it and `make test` sets it. Without the variable the test says
//! so and passes: `cargo test` alone needs no servers. With it set and the
//! broker down, the test fails.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tern_kafka::{KafkaLog, KafkaLogConfig};

fn config() -> Option<KafkaLogConfig> {
    let brokers = std::env::var("TERN_TEST_KAFKA").ok()?;
    let mut c = KafkaLogConfig::new(brokers);
    c.prefix = format!("{}.", tern_core::conformance::fresh("t"));
    c.partitions = 4;
    Some(c)
}

#[tokio::test]
async fn kafka_log_conforms() {
    let Some(config) = config() else {
        eprintln!(
            "TERN_TEST_KAFKA not set: skipping the Kafka conformance run (make test sets it)"
        );
        return;
    };
    let log = KafkaLog::connect(config).await.expect("Kafka reachable");
    tern_core::conformance::log_scenarios(Arc::new(log)).await;
}

#[tokio::test]
async fn kafka_subscriptions_report_their_lag() {
    let Some(mut config) = config() else {
        eprintln!("TERN_TEST_KAFKA not set: skipping the Kafka lag run (make test sets it)");
        return;
    };
    // Statistics every 5 s would make the scenario wait that long per figure.
    config.stats_interval = Duration::from_millis(200);
    let log = KafkaLog::connect(config).await.expect("Kafka reachable");
    tern_core::conformance::lag_scenario(Arc::new(log)).await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_clear_error() {
    let mut c = KafkaLogConfig::new("127.0.0.1:1");
    c.delivery_timeout = Duration::from_secs(2);
    let err = KafkaLog::connect(c)
        .await
        .err()
        .expect("nothing listens on port 1");
    assert!(
        err.to_string()
            .contains("cannot reach Kafka at 127.0.0.1:1"),
        "{err}"
    );
}
