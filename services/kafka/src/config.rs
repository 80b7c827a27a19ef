//! Settings of the Kafka event log: where the brokers are, the prefix that
//! keeps deployments and test runs apart on one broker, the shape of the
//! topics tern creates, and the timeouts of delivery, group membership and
//! statistics. The librdkafka properties built from them stay beside the
//! client they configure (the producer's in `producer`, the consumer's in
//! `consumer`, the admin client's in `KafkaLog::connect`), next to the code
//! that relies on each of them.

use std::time::Duration;

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
