//! The event log scenarios: order per key, consumer groups, positions, lag.

// Test code (built only for tests): a failed unwrap is a failed scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use super::fresh;
use crate::log::{EventLog, Record, StartFrom};

pub async fn log_scenarios(log: Arc<dyn EventLog>) {
    let topic = fresh("topic");
    // Per-key order is kept, whatever partitions the keys land on.
    let mut records = Vec::new();
    for i in 0..100u32 {
        records.push(Record::new(format!("k{}", i % 7), i.to_be_bytes().to_vec()));
    }
    let positions = log.append(&topic, records).await.expect("append");
    assert_eq!(positions.len(), 100);

    let mut sub = log
        .subscribe(&topic, "g1", StartFrom::Earliest)
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    while seen.len() < 100 {
        let batch = tokio::time::timeout(Duration::from_secs(10), sub.poll(30))
            .await
            .expect("records arrive")
            .expect("poll");
        assert!(batch.len() <= 30);
        seen.extend(batch);
    }
    for k in 0..7u32 {
        let of_key: Vec<u32> = seen
            .iter()
            .filter(|d| d.key == format!("k{k}").as_bytes())
            .map(|d| u32::from_be_bytes(d.value[..].try_into().unwrap()))
            .collect();
        let mut sorted = of_key.clone();
        sorted.sort_unstable();
        assert_eq!(of_key, sorted, "key k{k} out of order");
    }
    // Commit half; a new subscription of the same group resumes after the
    // commit: everything not committed comes again, nothing committed does.
    sub.commit(&seen[..50]).await.expect("commit");
    drop(sub);
    let committed_past = |d: &crate::log::Delivery| {
        seen[..50].iter().any(|c| {
            c.position.partition == d.position.partition && c.position.offset >= d.position.offset
        })
    };
    let expected: std::collections::BTreeSet<_> = seen[50..]
        .iter()
        .filter(|d| !committed_past(d))
        .map(|d| d.position)
        .collect();
    let mut again = log
        .subscribe(&topic, "g1", StartFrom::Earliest)
        .await
        .expect("subscribe");
    let mut rest = Vec::new();
    // A real broker takes a moment to hand the group its partitions again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !expected
        .iter()
        .all(|p| rest.iter().any(|r: &crate::log::Delivery| r.position == *p))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "uncommitted records not handed out again after 30 s"
        );
        if let Ok(batch) = tokio::time::timeout(Duration::from_millis(500), again.poll(1000)).await
        {
            rest.extend(batch.expect("poll"));
        }
    }
    for d in &seen[..50] {
        assert!(
            !rest.iter().any(|r| r.position == d.position),
            "committed record {:?} handed out again",
            d.position
        );
    }

    // Another group sees everything.
    let mut other = log
        .subscribe(&topic, "g2", StartFrom::Earliest)
        .await
        .expect("subscribe");
    // (A poll may return an empty batch, e.g. right after a rebalance.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let b = tokio::time::timeout_at(deadline, other.poll(1000))
            .await
            .expect("records")
            .expect("poll");
        if !b.is_empty() {
            break;
        }
    }

    // A Latest group never sees what was appended before it subscribed,
    // and does see what comes after (once it has its partitions).
    let mut latest = log
        .subscribe(&topic, "g3", StartFrom::Latest)
        .await
        .expect("subscribe");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a Latest group saw nothing new after 30 s"
        );
        log.append(&topic, vec![Record::new("new", "fresh")])
            .await
            .expect("append");
        if let Ok(b) = tokio::time::timeout(Duration::from_millis(500), latest.poll(1000)).await {
            let b = b.expect("poll");
            assert!(
                b.iter().all(|d| &d.value[..] == b"fresh"),
                "a Latest group got an old record"
            );
            if !b.is_empty() {
                break;
            }
        }
    }
}

/// What [`crate::log::Subscription::lag`] reports on a backend that
/// reports it: the records its group has not committed, whether handed out
/// or not, and 0 once everything is committed. A backend may report a
/// figure some seconds old (Kafka's comes from client statistics, learnt
/// while the consumer is polled), so each figure is waited for, polling.
pub async fn lag_scenario(log: Arc<dyn EventLog>) {
    let topic = fresh("lag");
    let n = 20;
    let records = (0..n).map(|i| Record::new(format!("k{i}"), "v")).collect();
    log.append(&topic, records).await.expect("append");
    let mut sub = log
        .subscribe(&topic, "g", StartFrom::Earliest)
        .await
        .expect("subscribe");
    let mut seen = Vec::new();
    // Polls (collecting what comes) until the lag is `want`.
    async fn lag_becomes(
        sub: &mut Box<dyn crate::log::Subscription>,
        seen: &mut Vec<crate::log::Delivery>,
        want: u64,
        what: &str,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while sub.lag() != Some(want) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "lag {:?} after 60 s, want {want} ({what})",
                sub.lag()
            );
            if let Ok(b) = tokio::time::timeout(Duration::from_millis(200), sub.poll(1000)).await {
                seen.extend(b.expect("poll"));
            }
        }
    }
    lag_becomes(&mut sub, &mut seen, n, "nothing committed").await;
    while seen.len() < n as usize {
        let b = tokio::time::timeout(Duration::from_secs(30), sub.poll(1000))
            .await
            .expect("records arrive")
            .expect("poll");
        seen.extend(b);
    }
    assert_eq!(sub.lag(), Some(n), "handed out is not committed");
    sub.commit(&seen).await.expect("commit");
    lag_becomes(&mut sub, &mut seen, 0, "everything committed").await;
    log.append(&topic, vec![Record::new("k", "later")])
        .await
        .expect("append");
    lag_becomes(&mut sub, &mut seen, 1, "one appended since").await;
}
