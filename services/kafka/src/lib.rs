//! tern-kafka: the event log on Apache Kafka (the only crate that links
//! librdkafka).
//!
//! - Producer: idempotent (`enable.idempotence`, so `acks=all` and no
//!   duplicates or reordering from retries); `append` returns only once
//!   every record is acknowledged, and fails with a clear error when the
//!   brokers cannot be reached within `delivery_timeout`.
//! - Topics are created on first use with the configured partition count
//!   and replication factor.
//! - Consumers: one consumer group per stage, `enable.auto.commit=false`;
//!   offsets are committed only by [`Subscription::commit`], which the
//!   stages call after their writes are durable. A commit refused because
//!   the group rebalanced is not an error: those records go to the new
//!   owner, whose writes are idempotent.
//! - Every topic and group name gets a configurable prefix, so one broker
//!   can serve several deployments or test runs.
//! - Consumer lag ([`Subscription::lag`]) comes from librdkafka's
//!   statistics, emitted every `stats_interval` while the consumer is
//!   polled: no extra requests to the brokers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer as _};
use rdkafka::statistics::Statistics;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tern_core::log::{
    Delivery, EventLog, Headers, LogError, Position, Record, StartFrom, Subscription, last_offsets,
};
use tern_core::sync;

#[derive(Debug, Clone)]
pub struct KafkaLogConfig {
    /// `host:port[,host:port…]`
    pub brokers: String,
    /// Prepended to every topic and consumer-group name.
    pub prefix: String,
    /// Partitions of the topics tern creates. Fixed once a topic exists:
    /// more partitions would move keys and break their order.
    pub partitions: i32,
    pub replication: i32,
    /// How long a record may take to be acknowledged before `append` fails.
    pub delivery_timeout: Duration,
    /// Consumer session timeout: how fast a dead consumer's partitions move.
    pub session_timeout: Duration,
    /// How often each consumer's statistics (its lag) are refreshed.
    pub stats_interval: Duration,
}

impl KafkaLogConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaLogConfig {
            brokers: brokers.into(),
            prefix: String::new(),
            partitions: 12,
            replication: 1,
            delivery_timeout: Duration::from_secs(15),
            session_timeout: Duration::from_secs(10),
            stats_interval: Duration::from_secs(5),
        }
    }
}

pub struct KafkaLog {
    config: KafkaLogConfig,
    /// Replaced after a failed delivery (see `append`).
    producer: Mutex<FutureProducer>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Topics known to exist, so each is created at most once per process.
    created: Mutex<HashSet<String>>,
}

fn unavailable(brokers: &str) -> impl Fn(KafkaError) -> LogError + '_ {
    move |e| LogError::Unavailable(format!("Kafka at {brokers}: {e}"))
}

fn new_producer(config: &KafkaLogConfig) -> Result<FutureProducer, LogError> {
    ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .create()
        .map_err(unavailable(&config.brokers))
}

impl KafkaLog {
    /// Connects and checks that a broker answers (a metadata request), so a
    /// wrong address fails at start with a clear message.
    pub async fn connect(config: KafkaLogConfig) -> Result<Self, LogError> {
        let brokers = config.brokers.clone();
        let producer = new_producer(&config)?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .map_err(unavailable(&brokers))?;
        let probe = producer.clone();
        tokio::task::spawn_blocking(move || {
            probe
                .client()
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
        })
        .await
        .map_err(|e| LogError::Io(e.to_string()))?
        .map_err(|e| LogError::Unavailable(format!("cannot reach Kafka at {brokers}: {e}")))?;
        Ok(KafkaLog {
            config,
            producer: Mutex::new(producer),
            admin: Arc::new(admin),
            created: Mutex::new(HashSet::new()),
        })
    }

    fn producer(&self) -> FutureProducer {
        sync::lock(&self.producer).clone()
    }

    fn replace_producer(&self, cause: &KafkaError) {
        match new_producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!(error = %cause, "delivery failed; replacing the Kafka producer");
                *sync::lock(&self.producer) = fresh;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a new Kafka producer; keeping the old one")
            }
        }
    }

    fn name(&self, name: &str) -> String {
        format!("{}{name}", self.config.prefix)
    }

    /// Creates these topics (names without the prefix) now, as a
    /// deployment's migration step does; appends and subscriptions create
    /// theirs on first use anyway.
    pub async fn create_topics(&self, topics: &[&str]) -> Result<(), LogError> {
        for topic in topics {
            self.ensure_topic(&self.name(topic)).await?;
        }
        Ok(())
    }

    /// Partitions of `topic` (name without the prefix) as the brokers'
    /// metadata has them; None when the topic does not exist.
    pub async fn partition_count(&self, topic: &str) -> Result<Option<usize>, LogError> {
        let (probe, name) = (self.admin.clone(), self.name(topic));
        let metadata = tokio::task::spawn_blocking(move || {
            probe
                .inner()
                .fetch_metadata(Some(&name), Duration::from_secs(5))
        })
        .await
        .map_err(|e| LogError::Unavailable(format!("metadata request failed: {e}")))?
        .map_err(unavailable(&self.config.brokers))?;
        Ok(metadata
            .topics()
            .first()
            .filter(|t| t.error().is_none())
            .map(|t| t.partitions().len()))
    }

    /// Creates `topic` (already prefixed) unless this process did before.
    async fn ensure_topic(&self, topic: &str) -> Result<(), LogError> {
        if sync::lock(&self.created).contains(topic) {
            return Ok(());
        }
        let new = NewTopic::new(
            topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication),
        );
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let results = self
            .admin
            .create_topics([&new], &opts)
            .await
            .map_err(unavailable(&self.config.brokers))?;
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => {
                    return Err(LogError::Unavailable(format!(
                        "cannot create topic {t}: {code}"
                    )));
                }
            }
        }
        // A topic just created takes a moment to appear in the brokers'
        // metadata; a consumer subscribing before that logs errors. Asked
        // through the admin client: after a broker freeze the producer can
        // be unable to do anything until replaced (see `replace_producer`),
        // and asking it stalled the caller for the whole wait.
        let (probe, name) = (self.admin.clone(), topic.to_owned());
        let visible = tokio::task::spawn_blocking(move || {
            (0..10).any(|_| {
                let found = probe
                    .inner()
                    .fetch_metadata(Some(&name), Duration::from_millis(500))
                    .is_ok_and(|m| {
                        m.topics().iter().any(|t| {
                            t.name() == name && t.error().is_none() && !t.partitions().is_empty()
                        })
                    });
                if !found {
                    std::thread::sleep(Duration::from_millis(100));
                }
                found
            })
        })
        .await
        .unwrap_or(false);
        if !visible {
            tracing::warn!(%topic, "topic not yet visible in the brokers' metadata");
        }
        sync::lock(&self.created).insert(topic.to_owned());
        Ok(())
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let topic = self.name(topic);
        self.ensure_topic(&topic).await?;
        // Enqueue in order (the idempotent producer keeps that order per
        // partition), then wait for every acknowledgement.
        let producer = self.producer();
        let mut pending = Vec::with_capacity(records.len());
        for r in &records {
            let mut attempt = 0;
            loop {
                let mut record = FutureRecord::to(&topic)
                    .key(&r.key[..])
                    .payload(&r.value[..]);
                if !r.headers.is_empty() {
                    record = record.headers(kafka_headers(&r.headers));
                }
                match producer.send_result(record) {
                    Ok(f) => {
                        pending.push(f);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                        if attempt < 100 =>
                    {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err((e, _)) => return Err(unavailable(&self.config.brokers)(e)),
                }
            }
        }
        let mut positions = Vec::with_capacity(pending.len());
        for f in pending {
            match f.await {
                Ok(Ok(d)) => positions.push(Position {
                    partition: d.partition as u32,
                    offset: d.offset as u64,
                }),
                Ok(Err((e, _))) => {
                    // An idempotent producer whose messages timed out can be
                    // left unable to deliver anything (seen after a broker
                    // pause). Start a fresh one: the caller retries the
                    // batch, and every write downstream is idempotent.
                    self.replace_producer(&e);
                    return Err(unavailable(&self.config.brokers)(e));
                }
                Err(_) => return Err(LogError::Closed),
            }
        }
        Ok(positions)
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError> {
        let topic = self.name(topic);
        self.ensure_topic(&topic).await?;
        let assignments = Assignments::new(&topic, start);
        let consumer: StreamConsumer<Assignments> = ClientConfig::new()
            .set("bootstrap.servers", &self.config.brokers)
            .set("group.id", self.name(group))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set(
                "auto.offset.reset",
                match start {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                },
            )
            .set(
                "session.timeout.ms",
                self.config.session_timeout.as_millis().to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                (self.config.session_timeout.as_millis() / 5)
                    .max(100)
                    .to_string(),
            )
            // Only for the lag, read from `consumer_lag` and friends.
            .set(
                "statistics.interval.ms",
                self.config.stats_interval.as_millis().max(1).to_string(),
            )
            .create_with_context(assignments.clone())
            .map_err(unavailable(&self.config.brokers))?;
        consumer
            .subscribe(&[&topic])
            .map_err(unavailable(&self.config.brokers))?;
        Ok(Box::new(KafkaSubscription {
            consumer: Arc::new(consumer),
            assignments,
            topic,
            brokers: self.config.brokers.clone(),
            // Several statistics intervals, and more than a rebalance takes.
            unsettled_limit: (self.config.session_timeout * 3).max(self.config.stats_interval * 4),
            commit_timeout: self.config.session_timeout,
        }))
    }
}

/// Notes every partition assignment, for [`Subscription::take_reassigned`],
/// and the consumer's lag over the partitions it holds, for
/// [`Subscription::lag`].
#[derive(Clone)]
struct Assignments {
    happened: Arc<std::sync::atomic::AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    /// The (prefixed) topic subscribed to: statistics list others too.
    topic: Arc<str>,
    start: StartFrom,
    /// Partitions this consumer holds now: statistics also list the
    /// topic's other partitions, with stale figures.
    held: Arc<Mutex<HashSet<i32>>>,
    /// Sum of the held partitions' lag at the last statistics; -1 until
    /// every held partition had a figure.
    lag: Arc<AtomicI64>,
    /// The consumer's group membership, from its statistics.
    group: Arc<Mutex<GroupHealth>>,
}

/// Whether a consumer is a settled member of its group, as its statistics
/// say (`cgrp.state` "up" and `cgrp.join_state` "steady").
struct GroupHealth {
    state: String,
    join_state: String,
    /// When the consumer was last seen settled (or was created).
    settled_at: std::time::Instant,
}

impl Assignments {
    fn new(topic: &str, start: StartFrom) -> Self {
        Assignments {
            happened: Default::default(),
            wake: Default::default(),
            topic: topic.into(),
            start,
            held: Default::default(),
            lag: Arc::new(AtomicI64::new(-1)),
            group: Arc::new(Mutex::new(GroupHealth {
                state: String::new(),
                join_state: String::new(),
                settled_at: std::time::Instant::now(),
            })),
        }
    }
}

impl ClientContext for Assignments {
    fn stats(&self, statistics: Statistics) {
        if let Some(cgrp) = &statistics.cgrp {
            let mut group = sync::lock(&self.group);
            if cgrp.state == "up" && cgrp.join_state == "steady" {
                group.settled_at = std::time::Instant::now();
            }
            if group.state != cgrp.state || group.join_state != cgrp.join_state {
                tracing::info!(topic = %self.topic, state = %cgrp.state, join_state = %cgrp.join_state, assigned = cgrp.assignment_size, "consumer group membership");
                group.state.clone_from(&cgrp.state);
                group.join_state.clone_from(&cgrp.join_state);
            }
        }
        let held = sync::lock(&self.held);
        let partitions = statistics.topics.get(&*self.topic).map(|t| &t.partitions);
        let lag = held.iter().try_fold(0i64, |sum, p| {
            let figure = partitions.and_then(|ps| ps.get(p));
            Some(sum + partition_lag(figure?, self.start)?)
        });
        self.lag.store(lag.unwrap_or(-1), Ordering::Relaxed);
    }
}

/// Records of one partition the group has not committed, from its
/// statistics; None while the consumer has not learnt the partition's end.
fn partition_lag(p: &rdkafka::statistics::Partition, start: StartFrom) -> Option<i64> {
    // librdkafka's own `consumer_lag` measures from the last stable offset
    // (read_committed, the default) or else the high watermark.
    let end = if p.ls_offset >= 0 {
        p.ls_offset
    } else {
        p.hi_offset
    };
    if end < 0 {
        return None;
    }
    // The end minus the group's committed offset; -1 when the group has
    // committed nothing in this partition yet.
    if p.consumer_lag >= 0 {
        return Some(p.consumer_lag);
    }
    match start {
        // Nothing committed: the group starts at the log's start.
        StartFrom::Earliest if p.lo_offset >= 0 => Some((end - p.lo_offset).max(0)),
        StartFrom::Earliest => None,
        // Nothing committed: the group started at the end; what it has not
        // been handed yet is the best figure there is.
        StartFrom::Latest => Some(p.consumer_lag_stored.max(0)),
    }
}

impl ConsumerContext for Assignments {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(partitions) => {
                sync::lock(&self.held).extend(
                    partitions
                        .elements_for_topic(&self.topic)
                        .iter()
                        .map(|e| e.partition()),
                );
                if partitions.count() > 0 {
                    self.happened.store(true, Ordering::SeqCst);
                    self.wake.notify_one();
                }
            }
            Rebalance::Revoke(partitions) => {
                let mut held = sync::lock(&self.held);
                for e in partitions.elements_for_topic(&self.topic) {
                    held.remove(&e.partition());
                }
            }
            Rebalance::Error(_) => {}
        }
    }
}

struct KafkaSubscription {
    consumer: Arc<StreamConsumer<Assignments>>,
    assignments: Assignments,
    topic: String,
    brokers: String,
    /// How long the consumer may stay out of a settled group membership
    /// before `poll` gives up on it (see [`KafkaSubscription::check_settled`]).
    unsettled_limit: Duration,
    /// How long `commit` waits for the broker's answer.
    commit_timeout: Duration,
}

impl KafkaSubscription {
    /// Fails when the consumer has not been a settled group member for
    /// `unsettled_limit`. After a broker outage longer than the session
    /// timeout, librdkafka can leave a consumer outside its group without
    /// an error and without rejoining: it then waits for records forever.
    /// The error makes the stage take a fresh consumer, which joins anew.
    fn check_settled(&self) -> Result<(), LogError> {
        let group = sync::lock(&self.assignments.group);
        let unsettled = group.settled_at.elapsed();
        if unsettled > self.unsettled_limit {
            return Err(LogError::Unavailable(format!(
                "the consumer of {} has not been a settled member of its group for {} s (state {:?}, join state {:?}): taking a fresh one",
                self.topic,
                unsettled.as_secs(),
                group.state,
                group.join_state
            )));
        }
        Ok(())
    }
}

fn delivery(m: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
    Delivery {
        position: Position {
            partition: m.partition() as u32,
            offset: m.offset() as u64,
        },
        key: Bytes::copy_from_slice(m.key().unwrap_or_default()),
        value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        headers: m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = h.value.unwrap_or_default();
                        (h.key.to_owned(), Bytes::copy_from_slice(value))
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Our record headers as Kafka's (a trace context: see `tern_core::trace`).
fn kafka_headers(headers: &Headers) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(&value[..]),
            })
        },
    )
}

/// Commit errors that only mean "this consumer no longer owns the partition".
fn lost_ownership(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::IllegalGeneration
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::UnknownMemberId
                | RDKafkaErrorCode::FencedMemberEpoch
                | RDKafkaErrorCode::StaleMemberEpoch
        )
    )
}

#[async_trait]
impl Subscription for KafkaSubscription {
    fn take_reassigned(&mut self) -> bool {
        self.assignments.happened.swap(false, Ordering::SeqCst)
    }

    fn lag(&self) -> Option<u64> {
        u64::try_from(self.assignments.lag.load(Ordering::Relaxed)).ok()
    }

    async fn poll(&mut self, max: usize) -> Result<Vec<Delivery>, LogError> {
        // Checked on entry too: callers may cancel a waiting poll (a stage
        // refreshing its lag does, every few seconds) before the timer below
        // ever fires.
        self.check_settled()?;
        let first = loop {
            tokio::select! {
                m = self.consumer.recv() => break m.map_err(unavailable(&self.brokers))?,
                // New partitions: let the caller ask `take_reassigned`.
                _ = self.assignments.wake.notified() => return Ok(Vec::new()),
                _ = tokio::time::sleep(self.unsettled_limit / 3) => self.check_settled()?,
            }
        };
        let mut out = vec![delivery(&first)];
        drop(first);
        // Take what is already fetched, without waiting for more.
        while out.len() < max.max(1) {
            match self.consumer.recv().now_or_never() {
                Some(Ok(m)) => out.push(delivery(&m)),
                Some(Err(e)) => {
                    tracing::warn!(topic = %self.topic, error = %e, "Kafka consumer error");
                    break;
                }
                None => break,
            }
        }
        Ok(out)
    }

    async fn commit(&mut self, done: &[Delivery]) -> Result<(), LogError> {
        let mut tpl = TopicPartitionList::new();
        for p in last_offsets(done) {
            tpl.add_partition_offset(
                &self.topic,
                p.partition as i32,
                Offset::Offset(p.offset as i64 + 1),
            )
            .map_err(|e| LogError::Io(e.to_string()))?;
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        let commit = tokio::task::spawn_blocking(move || consumer.commit(&tpl, CommitMode::Sync));
        // A synchronous commit sent while the broker is frozen can wait
        // forever (librdkafka gives it no deadline), and the stage with it:
        // past the session timeout the group has moved on anyway, so the
        // caller takes a fresh consumer (the blocked thread ends whenever
        // librdkafka answers).
        let result = match tokio::time::timeout(self.commit_timeout, commit).await {
            Ok(joined) => joined.map_err(|e| LogError::Io(e.to_string()))?,
            Err(_) => {
                return Err(LogError::Unavailable(format!(
                    "commit to {} not answered within {} s",
                    self.topic,
                    self.commit_timeout.as_secs()
                )));
            }
        };
        match result {
            Ok(()) => Ok(()),
            // The group moved on without this consumer: whoever owns the
            // partitions now replays these records (writes are idempotent).
            // Said as an error so the caller can take a fresh consumer: one
            // left out of its group after a broker outage may not rejoin.
            Err(e) if lost_ownership(&e) => Err(LogError::Unavailable(format!(
                "commit refused: this consumer lost its partitions in a rebalance ({e}); the owner replays these records"
            ))),
            Err(e) => Err(unavailable(&self.brokers)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::statistics::Partition;

    use super::*;

    fn partition(lo: i64, end: i64, committed_lag: i64, stored_lag: i64) -> Partition {
        Partition {
            lo_offset: lo,
            hi_offset: end,
            ls_offset: end,
            consumer_lag: committed_lag,
            consumer_lag_stored: stored_lag,
            ..Default::default()
        }
    }

    #[test]
    fn a_partitions_lag_comes_from_its_statistics() {
        // The group committed: librdkafka's own figure.
        let committed = partition(0, 10, 3, 1);
        assert_eq!(partition_lag(&committed, StartFrom::Earliest), Some(3));
        // Nothing committed: an Earliest group is behind by the whole log,
        // a Latest one by what it has not been handed yet.
        let uncommitted = partition(2, 10, -1, 4);
        assert_eq!(partition_lag(&uncommitted, StartFrom::Earliest), Some(8));
        assert_eq!(partition_lag(&uncommitted, StartFrom::Latest), Some(4));
        let untouched = partition(2, 10, -1, -1);
        assert_eq!(partition_lag(&untouched, StartFrom::Latest), Some(0));
        // Not fetched yet: no figure rather than a wrong one.
        let unknown = partition(-1001, -1001, -1, -1);
        assert_eq!(partition_lag(&unknown, StartFrom::Earliest), None);
    }
}
