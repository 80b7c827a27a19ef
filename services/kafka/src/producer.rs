//! The producer side: [`EventLog::append`](tern_core::log::EventLog::append).
//! One idempotent producer (`enable.idempotence`, `acks=all`) enqueues a
//! batch in order and returns the records' positions once every one is
//! acknowledged; record headers (a trace context) travel as Kafka headers.
//! A producer left unable to deliver after a failed delivery is replaced by
//! a fresh one, and the caller retries the batch.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tern_core::log::{Headers, LogError, Position, Record};
use tern_core::sync;

use crate::error::unavailable;
use crate::{KafkaLog, KafkaLogConfig};

pub(crate) fn new_producer(config: &KafkaLogConfig) -> Result<FutureProducer, LogError> {
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

    /// [`EventLog::append`](tern_core::log::EventLog::append) on Kafka.
    pub(crate) async fn produce(
        &self,
        topic: &str,
        records: Vec<Record>,
    ) -> Result<Vec<Position>, LogError> {
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
