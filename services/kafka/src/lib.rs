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

mod assignments;
mod config;
mod consumer;
mod error;
mod producer;
mod topics;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer as _};
use tern_core::log::{EventLog, LogError, Position, Record, StartFrom, Subscription};

pub use config::KafkaLogConfig;
use error::unavailable;
use producer::new_producer;

pub struct KafkaLog {
    config: KafkaLogConfig,
    /// Replaced after a failed delivery (see `append`).
    producer: Mutex<FutureProducer>,
    admin: Arc<AdminClient<DefaultClientContext>>,
    /// Topics known to exist, so each is created at most once per process.
    created: Mutex<HashSet<String>>,
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
}

// The producer side is in `producer`, the consumer side in `consumer`.
#[async_trait]
impl EventLog for KafkaLog {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        self.produce(topic, records).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError> {
        self.open_subscription(topic, group, start).await
    }
}
