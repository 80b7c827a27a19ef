//! `tern-server --migrate`: what a deployment runs before rolling out (the
//! Helm chart's migration Job). Against the real Kafka and Cassandra.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Output};

use common::infra;

fn migrate(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tern-server"))
        .arg("--migrate")
        .args(args)
        .args([
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--admin-listen",
            "off",
        ])
        .env("TERN_LOG", "info")
        .output()
        .expect("tern-server runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_creates_the_topics_and_applies_the_cql_migrations_once() {
    let Some(infra) = infra() else {
        eprintln!(
            "TERN_TEST_KAFKA/CQL/REDIS not set: skipping the migration test (make test sets them)"
        );
        return;
    };
    let run = tern_core::conformance::fresh("mig");
    let prefix = format!("{run}.");
    let (event_log, store) = (
        format!("kafka://{}", infra.kafka),
        format!("cql://{}/{}", infra.cql, run.replace('-', "_")),
    );
    let args = [
        "--event-log",
        &event_log,
        "--store",
        &store,
        "--routes",
        &infra.redis,
        "--topic-prefix",
        &prefix,
        "--topic-partitions",
        "3",
    ];
    // No jwt_secret: preparing the backends signs nothing.
    let first = migrate(&args);
    let (out, log) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    assert!(first.status.success(), "migrate fails: {out}{log}");
    assert!(out.contains("backends ready"), "{out}");
    let applied = log.matches("CQL migration applied").count();
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas/cql"))
        .unwrap()
        .filter(|f| {
            f.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "cql")
        })
        .count();
    assert_eq!(
        applied, files,
        "every migration applied to the new keyspace:\n{log}"
    );

    let kafka = tern_kafka::KafkaLog::connect({
        let mut c = tern_kafka::KafkaLogConfig::new(&infra.kafka);
        c.prefix = prefix.clone();
        c
    })
    .await
    .unwrap();
    for topic in ["inbound", "deliver", "rooms", "group-feed", "archive"] {
        assert_eq!(
            kafka.partition_count(topic).await.unwrap(),
            Some(3),
            "topic {prefix}{topic}"
        );
    }
    assert_eq!(kafka.partition_count("no-such-topic").await.unwrap(), None);

    // Again: nothing left to do, and that is no error.
    let second = migrate(&args);
    let log = String::from_utf8_lossy(&second.stderr);
    assert!(second.status.success(), "{log}");
    assert_eq!(log.matches("CQL migration applied").count(), 0, "{log}");
}

#[test]
fn migrate_with_kafka_unreachable_fails_with_a_clear_message() {
    let Some(infra) = infra() else {
        return;
    };
    let store = format!("cql://{}/tern_e2e", infra.cql);
    let out = migrate(&[
        "--event-log",
        "kafka://127.0.0.1:1",
        "--store",
        &store,
        "--routes",
        &infra.redis,
    ]);
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("cannot prepare the backends")
            && log.contains("cannot reach Kafka at 127.0.0.1:1"),
        "{log}"
    );
}
