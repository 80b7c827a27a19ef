//! The consumer side: [`EventLog::subscribe`](tern_core::log::EventLog::subscribe)
//! and the [`Subscription`] it returns. One consumer per subscription, in
//! the stage's group, with `enable.auto.commit=false`: `poll` hands out
//! what is already fetched, `commit` stores the offset after each
//! partition's last delivery once the stage's writes are durable, and both
//! fail (so the stage takes a fresh consumer) when the consumer has been
//! left out of its group or the broker stops answering.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt as _;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers as _;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tern_core::log::{Delivery, LogError, Position, StartFrom, Subscription, last_offsets};
use tern_core::sync;

use crate::KafkaLog;
use crate::assignments::Assignments;
use crate::error::{lost_ownership, unavailable};

impl KafkaLog {
    /// [`EventLog::subscribe`](tern_core::log::EventLog::subscribe) on Kafka.
    pub(crate) async fn open_subscription(
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
