//! The compliance archive as a deployment runs it: `tern-server` processes
//! on Kafka, Cassandra and Redis, the archiver a process of its own writing
//! to S3 (SeaweedFS from infra/), SIGKILLed mid-stream. Every message ends
//! up in the archive once, and `tern archive` (through the API process,
//! with the admin token) sees them.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Cluster, infra, send_until_stored};
use tern_client::{ArchiveApi, ArchiveSubject};

const ADMIN_TOKEN: &str = "distributed-admin-token-0123456789";
const MESSAGES: usize = 1_000;

#[tokio::test(flavor = "multi_thread")]
async fn a_sigkilled_archiver_on_s3_archives_every_message_once() {
    let Some(infra) = infra() else {
        eprintln!("TERN_TEST_KAFKA/CQL/REDIS not set: skipping (make test sets them)");
        return;
    };
    let Ok(endpoint) = std::env::var("TERN_TEST_S3_ENDPOINT") else {
        eprintln!("TERN_TEST_S3_ENDPOINT not set: skipping (make test sets it)");
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let (bucket, key, secret) = (
        var("TERN_TEST_S3_BUCKET"),
        var("TERN_TEST_S3_ACCESS_KEY"),
        var("TERN_TEST_S3_SECRET_KEY"),
    );
    let location = format!(
        "s3://{bucket}/{}",
        tern_core::conformance::fresh("distributed")
    );
    let cluster = Cluster::with_env(
        &infra,
        &[],
        &[
            "--archive",
            &location,
            "--archive-segment-max-age-ms",
            "500",
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[
            ("AWS_ENDPOINT", &endpoint),
            ("AWS_ACCESS_KEY_ID", &key),
            ("AWS_SECRET_ACCESS_KEY", &secret),
        ],
    );
    let mut archiver = cluster.service("archiver", "archiver", "a1");
    archiver.start();

    let (alice, bob) = (
        tern_core::conformance::fresh("alice"),
        tern_core::conformance::fresh("bob"),
    );
    let client = cluster.login(&cluster.gw1_addr, &alice, "phone").await;
    for i in 0..MESSAGES {
        if i == MESSAGES / 2 {
            archiver.kill();
        }
        if i == MESSAGES * 3 / 4 {
            archiver.start();
        }
        send_until_stored(&client, &bob, &format!("m{i}"), format!("message {i}")).await;
    }

    // What an auditor sees, through the API process and the admin token.
    let mut api = ArchiveApi::connect(&cluster.backend_addr, ADMIN_TOKEN)
        .await
        .expect("API");
    let deadline = tokio::time::Instant::now() + common::WAIT;
    let report = loop {
        let r = api.verify().await.expect("verify");
        if r.records >= MESSAGES as u64 || tokio::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.records, MESSAGES as u64,
        "each message once: {report:?}"
    );

    let mut lines = Vec::new();
    api.export(ArchiveSubject::User(bob.clone()), 0, 0, |chunk| {
        lines.extend(
            String::from_utf8_lossy(&chunk.jsonl)
                .lines()
                .map(str::to_owned),
        );
        Ok(())
    })
    .await
    .expect("export");
    let ids: HashSet<String> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["sender_user"], alice.as_str());
            v["client_msg_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(lines.len(), MESSAGES, "bob's export, each message once");
    assert_eq!(ids.len(), MESSAGES);
}
