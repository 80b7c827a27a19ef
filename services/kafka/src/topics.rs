//! Topic and group names, and topic creation through the admin client.
//! Every name gets the configured prefix. Each topic is created on first
//! use (or up front by [`KafkaLog::create_topics`], a deployment's
//! migration step) with the configured partitions and replication, at most
//! once per process, and then waited for until the brokers' metadata lists
//! it, so that a consumer subscribing right after does not log errors.

use std::time::Duration;

use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;
use tern_core::log::LogError;
use tern_core::sync;

use crate::KafkaLog;
use crate::error::unavailable;

impl KafkaLog {
    pub(crate) fn name(&self, name: &str) -> String {
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
    pub(crate) async fn ensure_topic(&self, topic: &str) -> Result<(), LogError> {
        if sync::lock(&self.created).contains(topic) {
            return Ok(());
        }
        let new = NewTopic::new(
            topic,
            self.config.partitions,
            TopicReplication::Fixed(self.config.replication),
        );
        // The request timeout too: after a broker freeze the admin client's
        // request can hang for socket.timeout.ms (60 s) before it fails,
        // and the stage waiting on it retries only after that.
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(10)));
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
