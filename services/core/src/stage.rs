//! The loop every pipeline stage runs: poll a batch, handle it until it
//! succeeds, then commit. A failed write holds the whole subscription (and so
//! the partition) and is retried with backoff; nothing is committed past it.
//! Lost work is therefore impossible, and replays are made harmless by every
//! handler's writes being idempotent.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::log::{Delivery, LogError, Subscription};

/// What a stage does with a batch of records.
#[async_trait]
pub trait BatchHandler: Send {
    /// Handles the batch; returns once every effect is durable. An error
    /// means "try the same batch again later" (a dependency is down). A
    /// record that can never succeed (undecodable) is logged and skipped by
    /// the handler, not returned as an error.
    async fn handle(&mut self, batch: &[Delivery]) -> Result<(), String>;
}

/// Makes a new subscription of the stage's topic and group.
pub type Resubscribe = std::sync::Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Box<dyn Subscription>, LogError>>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub struct StageConfig {
    /// Name used in logs.
    pub name: &'static str,
    /// Most records handled in one batch.
    pub max_batch: usize,
    /// First retry delay; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// After a failed poll, replace the subscription with a new one (it
    /// resumes from the committed offsets). A Kafka consumer that saw its
    /// brokers vanish can stay out of its group after they return; a
    /// fresh consumer joins cleanly.
    pub resubscribe: Option<Resubscribe>,
}

impl StageConfig {
    pub fn new(name: &'static str) -> Self {
        StageConfig {
            name,
            max_batch: 512,
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            resubscribe: None,
        }
    }
}

/// Runs `handler` over `subscription` until `shutdown` turns true or the log closes.
pub async fn run_stage(
    config: StageConfig,
    mut subscription: Box<dyn Subscription>,
    mut handler: impl BatchHandler,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LogError> {
    let name = config.name;
    let mut poll_backoff = config.min_backoff;
    loop {
        let polled = loop {
            tokio::select! {
                b = subscription.poll(config.max_batch) => break b,
                // An idle stage still refreshes its lag: a Kafka consumer's
                // figure changes while it waits (its statistics arrive in
                // the background), so the gauge must not keep a stale one.
                _ = tokio::time::sleep(LAG_REFRESH) => report_lag(name, subscription.as_ref()),
                _ = stopped(&mut shutdown) => return Ok(()),
            }
        };
        report_lag(name, subscription.as_ref());
        let batch = match polled {
            Ok(b) => {
                poll_backoff = config.min_backoff;
                b
            }
            Err(LogError::Closed) => return Err(LogError::Closed),
            // A broker outage is not the end of the stage: wait, poll again.
            Err(error) => {
                tracing::warn!(stage = name, %error, retry_in_ms = poll_backoff.as_millis() as u64, "poll failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(poll_backoff) => {}
                    _ = stopped(&mut shutdown) => return Ok(()),
                }
                poll_backoff = (poll_backoff * 2).min(config.max_backoff);
                if let Some(resubscribe) = &config.resubscribe {
                    match resubscribe().await {
                        Ok(fresh) => retire(std::mem::replace(&mut subscription, fresh)),
                        Err(error) => {
                            tracing::warn!(stage = name, %error, "cannot subscribe again yet")
                        }
                    }
                }
                continue;
            }
        };
        let mut backoff = config.min_backoff;
        loop {
            match handler.handle(&batch).await {
                Ok(()) => break,
                Err(error) => {
                    crate::metrics::STAGE_RETRIES.inc(name);
                    tracing::warn!(stage = name, records = batch.len(), %error, retry_in_ms = backoff.as_millis() as u64, "batch failed; retrying the same batch");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        // Nothing of this batch is committed: it is handed out again after a restart.
                        _ = stopped(&mut shutdown) => return Ok(()),
                    }
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        }
        crate::metrics::STAGE_BATCHES.inc(name);
        crate::metrics::STAGE_RECORDS.add(name, batch.len() as u64);
        crate::metrics::STAGE_BATCH_RECORDS.observe(name, batch.len() as f64);
        // Retry commits too: a commit lost to a crash only means a harmless replay.
        let mut backoff = config.min_backoff;
        while let Err(error) = subscription.commit(&batch).await {
            if matches!(error, LogError::Closed) {
                return Err(error);
            }
            // With a fresh subscription, the uncommitted records are simply
            // handed out again; without one, retry the commit.
            if let Some(resubscribe) = &config.resubscribe {
                tracing::warn!(stage = name, %error, "commit failed; subscribing again");
                match resubscribe().await {
                    Ok(fresh) => {
                        retire(std::mem::replace(&mut subscription, fresh));
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(stage = name, %error, "cannot subscribe again yet")
                    }
                }
            } else {
                tracing::warn!(stage = name, %error, "commit failed; retrying");
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.max_backoff);
        }
        // The batch just committed no longer counts: an idle stage shows 0.
        report_lag(name, subscription.as_ref());
    }
}

/// How often a stage waiting for records refreshes its lag gauge (Kafka's
/// figure comes from client statistics refreshed about this often).
const LAG_REFRESH: Duration = Duration::from_secs(5);

/// Sets the stage's consumer-lag gauge, if the backend can tell.
fn report_lag(name: &'static str, subscription: &dyn Subscription) {
    if let Some(lag) = subscription.lag() {
        crate::metrics::STAGE_CONSUMER_LAG.set(name, i64::try_from(lag).unwrap_or(i64::MAX));
    }
}

/// Subscribes `group` to `topic` from its earliest record and runs
/// `handler` over it as stage `name`, taking a fresh subscription after
/// a failed poll or commit (see [`StageConfig::resubscribe`]).
pub async fn run_topic_stage(
    name: &'static str,
    log: std::sync::Arc<dyn crate::log::EventLog>,
    topic: &'static str,
    group: &'static str,
    handler: impl BatchHandler,
    shutdown: watch::Receiver<bool>,
) -> Result<(), LogError> {
    use crate::log::StartFrom;
    let sub = log.subscribe(topic, group, StartFrom::Earliest).await?;
    let mut config = StageConfig::new(name);
    config.resubscribe = Some(std::sync::Arc::new(move || {
        let log = log.clone();
        Box::pin(async move { log.subscribe(topic, group, StartFrom::Earliest).await })
    }));
    run_stage(config, sub, handler, shutdown).await
}

/// Drops a replaced subscription off the async threads: closing a Kafka
/// consumer leaves its group, which can block for the session timeout.
pub fn retire(old: Box<dyn Subscription>) {
    tokio::task::spawn_blocking(move || drop(old));
}

/// Resolves once `shutdown` turns true (or its sender is gone). Holds no
/// borrow of the channel when it returns, so it is safe in `select!` arms
/// of tasks that must be `Send`.
pub async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;

    use super::*;
    use crate::log::Position;

    /// Fails its first poll (a broker outage), then hands out one record.
    struct Flaky {
        polls: usize,
        committed: Arc<Mutex<Vec<u64>>>,
    }

    #[async_trait]
    impl Subscription for Flaky {
        async fn poll(&mut self, _max: usize) -> Result<Vec<Delivery>, LogError> {
            self.polls += 1;
            match self.polls {
                1 => Err(LogError::Unavailable("all brokers down".into())),
                2 => Ok(vec![Delivery {
                    position: Position {
                        partition: 0,
                        offset: 7,
                    },
                    key: Bytes::new(),
                    value: Bytes::new(),
                    headers: Vec::new(),
                }]),
                _ => std::future::pending().await,
            }
        }

        async fn commit(&mut self, done: &[Delivery]) -> Result<(), LogError> {
            self.committed
                .lock()
                .unwrap()
                .extend(done.iter().map(|d| d.position.offset));
            Ok(())
        }

        /// One record until it is committed.
        fn lag(&self) -> Option<u64> {
            Some(u64::from(self.committed.lock().unwrap().is_empty()))
        }
    }

    /// Fails its first batch (a store outage), then succeeds.
    struct FailsOnce(usize);

    #[async_trait]
    impl BatchHandler for FailsOnce {
        async fn handle(&mut self, _batch: &[Delivery]) -> Result<(), String> {
            self.0 += 1;
            if self.0 == 1 {
                Err("store down".into())
            } else {
                Ok(())
            }
        }
    }

    #[tokio::test]
    async fn outages_of_the_log_and_of_the_handler_are_retried_not_fatal() {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let sub = Box::new(Flaky {
            polls: 0,
            committed: committed.clone(),
        });
        let (stop, stopped_rx) = watch::channel(false);
        let stage = tokio::spawn(run_stage(
            StageConfig::new("test"),
            sub,
            FailsOnce(0),
            stopped_rx,
        ));
        while committed.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            *committed.lock().unwrap(),
            vec![7],
            "committed once handled"
        );
        stop.send(true).unwrap();
        assert!(
            stage.await.unwrap().is_ok(),
            "the stage stops cleanly, not with the outage's error"
        );
        let metrics = crate::metrics::render(&[&crate::metrics::CORE]);
        assert!(metrics.contains("tern_stage_consumer_lag{stage=\"test\"} 0\n"));
        assert!(metrics.contains("tern_stage_batch_records_count{stage=\"test\"} 1\n"));
    }
}
