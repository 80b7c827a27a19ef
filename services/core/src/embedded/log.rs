//! [`EventLog`] on a redb file: the in-process stand-in for Kafka.
//!
//! One writer thread owns every write. It takes all appends and commits
//! waiting at that moment and writes them in one transaction (group commit):
//! under load, one fsync covers many records. Consumers read committed
//! records directly and wait on a per-topic signal for new ones. Records every
//! known group has committed are deleted every second, so the file does not
//! grow forever.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{oneshot, watch};

use crate::log::{
    Delivery, EventLog, Headers, LogError, Position, Record, StartFrom, Subscription, last_offsets,
    partition_for,
};
use crate::sync;

/// (topic, partition, offset): where a record sits.
type RecordKey<'a> = (&'a str, u32, u64);
/// (key, value) of a record.
type RecordValue<'a> = (&'a [u8], &'a [u8]);
const RECORDS: TableDefinition<RecordKey, RecordValue> = TableDefinition::new("records");
/// Headers of the records that have any (a trace context, when tracing is
/// on), encoded by [`encode_headers`]; kept apart so that records without
/// headers, nearly all of them, cost nothing more.
const HEADERS: TableDefinition<RecordKey, &[u8]> = TableDefinition::new("headers");
/// (topic, partition) → next offset to assign. Kept apart from RECORDS so
/// offsets never go back once old records are deleted.
const HEADS: TableDefinition<(&str, u32), u64> = TableDefinition::new("heads");
/// (group, topic, partition) → next offset the group will read.
const COMMITTED: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("committed");
/// Settings fixed when the log was created.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// How often fully consumed records are deleted.
const TRIM_EVERY: Duration = Duration::from_secs(1);
/// Most operations one transaction takes, to bound its latency.
const MAX_GROUP: usize = 4096;

#[derive(Debug, Clone)]
pub struct EmbeddedLogConfig {
    pub path: PathBuf,
    /// Partitions per topic. Fixed when the file is created: changing it
    /// later would move keys to other partitions and break their order.
    pub partitions: u32,
    /// Page cache of the log file, bytes. Consumers read what was just
    /// appended, so a small cache suffices.
    pub cache_bytes: usize,
}

#[derive(Clone)]
pub struct EmbeddedLog {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<Database>,
    partitions: u32,
    writer: Mutex<mpsc::Sender<Op>>,
    /// Per topic, bumped after each commit that appended to it.
    signals: Mutex<HashMap<String, watch::Sender<u64>>>,
}

enum Op {
    /// Records for one or more topics, written in one transaction.
    Append {
        batches: Vec<(String, Vec<Record>)>,
        reply: oneshot::Sender<Result<Vec<Vec<Position>>, LogError>>,
    },
    Commit {
        group: String,
        topic: String,
        positions: Vec<Position>,
        reply: oneshot::Sender<Result<(), LogError>>,
    },
}

fn io(e: impl std::fmt::Display) -> LogError {
    LogError::Io(super::io_err(e))
}

impl EmbeddedLog {
    pub fn open(config: &EmbeddedLogConfig) -> Result<Self, LogError> {
        let db = redb::Builder::new()
            .set_cache_size(config.cache_bytes)
            .create(&config.path)
            .map_err(|e| {
                LogError::Io(format!(
                    "cannot open event log {}: {e}",
                    config.path.display()
                ))
            })?;
        let partitions = init_tables(&db, config.partitions)?;
        if partitions != config.partitions {
            tracing::warn!(
                configured = config.partitions,
                kept = partitions,
                "event log keeps the partition count it was created with"
            );
        }
        let db = Arc::new(db);
        let (tx, rx) = mpsc::channel();
        let inner = Arc::new(Inner {
            db: db.clone(),
            partitions,
            writer: Mutex::new(tx),
            signals: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        std::thread::Builder::new()
            .name("tern-log-writer".into())
            .spawn(move || writer_loop(&db, rx, weak))
            .map_err(io)?;
        Ok(EmbeddedLog { inner })
    }

    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("log.redb")
    }

    fn send(&self, op: Op) -> Result<(), LogError> {
        sync::lock(&self.inner.writer)
            .send(op)
            .map_err(|_| LogError::Closed)
    }
}

fn init_tables(db: &Database, partitions: u32) -> Result<u32, LogError> {
    let tx = db.begin_write().map_err(io)?;
    let kept = {
        tx.open_table(RECORDS).map_err(io)?;
        tx.open_table(HEADERS).map_err(io)?;
        tx.open_table(HEADS).map_err(io)?;
        tx.open_table(COMMITTED).map_err(io)?;
        let mut meta = tx.open_table(META).map_err(io)?;
        let existing = meta.get("partitions").map_err(io)?.map(|v| v.value());
        match existing {
            Some(p) => p as u32,
            None => {
                meta.insert("partitions", u64::from(partitions.max(1)))
                    .map_err(io)?;
                partitions.max(1)
            }
        }
    };
    tx.commit().map_err(io)?;
    Ok(kept)
}

impl Inner {
    fn signal(&self, topic: &str) -> watch::Receiver<u64> {
        let mut signals = sync::lock(&self.signals);
        signals
            .entry(topic.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    fn notify(&self, topic: &str) {
        let signals = sync::lock(&self.signals);
        if let Some(s) = signals.get(topic) {
            s.send_modify(|v| *v += 1);
        }
    }
}

fn writer_loop(db: &Database, rx: mpsc::Receiver<Op>, inner: std::sync::Weak<Inner>) {
    let mut last_trim = Instant::now();
    while let Ok(first) = rx.recv() {
        let mut ops = vec![first];
        while ops.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let trim = last_trim.elapsed() >= TRIM_EVERY;
        if trim {
            last_trim = Instant::now();
        }
        match write_group(db, &ops, trim) {
            Ok(mut positions) => {
                let mut touched: Vec<String> = Vec::new();
                for op in ops.into_iter().rev() {
                    let assigned = positions.pop().unwrap_or_default();
                    match op {
                        Op::Append { batches, reply } => {
                            for (topic, _) in batches {
                                if !touched.contains(&topic) {
                                    touched.push(topic);
                                }
                            }
                            let _ = reply.send(Ok(assigned));
                        }
                        Op::Commit { reply, .. } => {
                            let _ = reply.send(Ok(()));
                        }
                    }
                }
                let Some(inner) = inner.upgrade() else { break };
                for topic in &touched {
                    inner.notify(topic);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "event log write failed");
                let msg = e.to_string();
                for op in ops {
                    match op {
                        Op::Append { reply, .. } => {
                            let _ = reply.send(Err(LogError::Io(msg.clone())));
                        }
                        Op::Commit { reply, .. } => {
                            let _ = reply.send(Err(LogError::Io(msg.clone())));
                        }
                    }
                }
            }
        }
    }
}

/// Applies a group of operations in one transaction. Returns, per
/// operation, the positions assigned per batch (none for commits).
fn write_group(db: &Database, ops: &[Op], trim: bool) -> Result<Vec<Vec<Vec<Position>>>, LogError> {
    let tx = db.begin_write().map_err(io)?;
    let mut out = Vec::with_capacity(ops.len());
    {
        let mut records = tx.open_table(RECORDS).map_err(io)?;
        let mut headers = tx.open_table(HEADERS).map_err(io)?;
        let mut heads = tx.open_table(HEADS).map_err(io)?;
        let mut committed = tx.open_table(COMMITTED).map_err(io)?;
        let partitions = {
            let meta = tx.open_table(META).map_err(io)?;
            meta.get("partitions")
                .map_err(io)?
                .map(|v| v.value() as u32)
                .unwrap_or(1)
        };
        for op in ops {
            match op {
                Op::Append { batches, .. } => {
                    let mut per_batch = Vec::with_capacity(batches.len());
                    for (topic, batch) in batches {
                        let mut assigned = Vec::with_capacity(batch.len());
                        for r in batch {
                            let partition = partition_for(&r.key, partitions);
                            let head = (topic.as_str(), partition);
                            let offset =
                                heads.get(head).map_err(io)?.map(|v| v.value()).unwrap_or(0);
                            records
                                .insert(
                                    (topic.as_str(), partition, offset),
                                    (&r.key[..], &r.value[..]),
                                )
                                .map_err(io)?;
                            if !r.headers.is_empty() {
                                headers
                                    .insert(
                                        (topic.as_str(), partition, offset),
                                        &encode_headers(&r.headers)[..],
                                    )
                                    .map_err(io)?;
                            }
                            heads.insert(head, offset + 1).map_err(io)?;
                            assigned.push(Position { partition, offset });
                        }
                        per_batch.push(assigned);
                    }
                    out.push(per_batch);
                }
                Op::Commit {
                    group,
                    topic,
                    positions,
                    ..
                } => {
                    for p in positions {
                        let key = (group.as_str(), topic.as_str(), p.partition);
                        let old = committed
                            .get(key)
                            .map_err(io)?
                            .map(|v| v.value())
                            .unwrap_or(0);
                        if p.offset + 1 > old {
                            committed.insert(key, p.offset + 1).map_err(io)?;
                        }
                    }
                    out.push(Vec::new());
                }
            }
        }
        if trim {
            // Delete what every group that ever read a partition has passed.
            let mut floor: HashMap<(String, u32), u64> = HashMap::new();
            for row in committed.iter().map_err(io)? {
                let (k, v) = row.map_err(io)?;
                let (_, topic, partition) = k.value();
                let e = floor
                    .entry((topic.to_owned(), partition))
                    .or_insert(u64::MAX);
                *e = (*e).min(v.value());
            }
            for ((topic, partition), below) in floor {
                let range = (topic.as_str(), partition, 0)..(topic.as_str(), partition, below);
                records.retain_in(range.clone(), |_, _| false).map_err(io)?;
                headers.retain_in(range, |_, _| false).map_err(io)?;
            }
        }
    }
    tx.commit().map_err(io)?;
    Ok(out)
}

/// Headers as (u16 name length, name, u32 value length, value)*.
fn encode_headers(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The inverse of [`encode_headers`]; stops at the first malformed entry.
fn decode_headers(mut bytes: &[u8]) -> Headers {
    let mut out = Headers::new();
    let take = |n: usize, bytes: &mut &[u8]| -> Option<Vec<u8>> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head.to_vec())
    };
    while !bytes.is_empty() {
        let Some(entry) = (|| {
            let len = u16::from_le_bytes(take(2, &mut bytes)?.try_into().ok()?) as usize;
            let name = String::from_utf8(take(len, &mut bytes)?).ok()?;
            let len = u32::from_le_bytes(take(4, &mut bytes)?.try_into().ok()?) as usize;
            Some((name, Bytes::from(take(len, &mut bytes)?)))
        })() else {
            break;
        };
        out.push(entry);
    }
    out
}

#[async_trait]
impl EventLog for EmbeddedLog {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        let mut positions = self.append_many(vec![(topic.to_owned(), records)]).await?;
        Ok(positions.pop().unwrap_or_default())
    }

    async fn append_many(
        &self,
        batches: Vec<(String, Vec<Record>)>,
    ) -> Result<Vec<Vec<Position>>, LogError> {
        if batches.iter().all(|(_, r)| r.is_empty()) {
            return Ok(batches.iter().map(|_| Vec::new()).collect());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Op::Append { batches, reply })?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError> {
        // Subscribe to the signal first, so no append after the reads below goes unnoticed.
        let signal = self.inner.signal(topic);
        let tx = self.inner.db.begin_read().map_err(io)?;
        let committed = tx.open_table(COMMITTED).map_err(io)?;
        let heads = tx.open_table(HEADS).map_err(io)?;
        let mut next = Vec::with_capacity(self.inner.partitions as usize);
        for partition in 0..self.inner.partitions {
            let stored = committed
                .get((group, topic, partition))
                .map_err(io)?
                .map(|v| v.value());
            let at = match (stored, start) {
                (Some(at), _) => at,
                (None, StartFrom::Earliest) => 0,
                (None, StartFrom::Latest) => heads
                    .get((topic, partition))
                    .map_err(io)?
                    .map(|v| v.value())
                    .unwrap_or(0),
            };
            next.push(at);
        }
        Ok(Box::new(EmbeddedSubscription {
            log: self.clone(),
            topic: topic.to_owned(),
            group: group.to_owned(),
            committed: next.clone(),
            next,
            signal,
            rotate: 0,
        }))
    }
}

struct EmbeddedSubscription {
    log: EmbeddedLog,
    topic: String,
    group: String,
    /// Next offset to hand out, per partition.
    next: Vec<u64>,
    /// Next offset after what this subscription committed (or where it
    /// started), per partition: the head minus this is its lag.
    committed: Vec<u64>,
    signal: watch::Receiver<u64>,
    /// First partition read by the next poll, so a busy partition cannot starve the others.
    rotate: usize,
}

impl EmbeddedSubscription {
    fn read(&mut self, max: usize) -> Result<Vec<Delivery>, LogError> {
        let tx = self.log.inner.db.begin_read().map_err(io)?;
        let records = tx.open_table(RECORDS).map_err(io)?;
        // Only tracing writes headers; without it, no lookups.
        let headers = if crate::trace::enabled() {
            Some(tx.open_table(HEADERS).map_err(io)?)
        } else {
            None
        };
        let mut out = Vec::new();
        let n = self.next.len();
        for i in 0..n {
            let partition = (self.rotate + i) % n;
            let from = self.next[partition];
            let topic = self.topic.as_str();
            for row in records
                .range((topic, partition as u32, from)..=(topic, partition as u32, u64::MAX))
                .map_err(io)?
                .take(max - out.len())
            {
                let (k, v) = row.map_err(io)?;
                let (_, _, offset) = k.value();
                let (key, value) = v.value();
                out.push(Delivery {
                    position: Position {
                        partition: partition as u32,
                        offset,
                    },
                    key: Bytes::copy_from_slice(key),
                    value: Bytes::copy_from_slice(value),
                    headers: match &headers {
                        Some(t) => t
                            .get((topic, partition as u32, offset))
                            .map_err(io)?
                            .map(|v| decode_headers(v.value()))
                            .unwrap_or_default(),
                        None => Headers::new(),
                    },
                });
                self.next[partition] = offset + 1;
            }
            if out.len() >= max {
                break;
            }
        }
        self.rotate = (self.rotate + 1) % n.max(1);
        Ok(out)
    }
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn poll(&mut self, max: usize) -> Result<Vec<Delivery>, LogError> {
        let max = max.max(1);
        loop {
            self.signal.borrow_and_update();
            let batch = self.read(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            self.signal.changed().await.map_err(|_| LogError::Closed)?;
        }
    }

    async fn commit(&mut self, done: &[Delivery]) -> Result<(), LogError> {
        let positions = last_offsets(done);
        if positions.is_empty() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.log.send(Op::Commit {
            group: self.group.clone(),
            topic: self.topic.clone(),
            positions: positions.clone(),
            reply,
        })?;
        rx.await.map_err(|_| LogError::Closed)??;
        for p in positions {
            if let Some(c) = self.committed.get_mut(p.partition as usize) {
                *c = (*c).max(p.offset + 1);
            }
        }
        Ok(())
    }

    fn lag(&self) -> Option<u64> {
        // Every partition is this subscription's (no group rebalancing here).
        let tx = self.log.inner.db.begin_read().ok()?;
        let heads = tx.open_table(HEADS).ok()?;
        let mut lag = 0;
        for (partition, committed) in self.committed.iter().enumerate() {
            let head = heads
                .get((self.topic.as_str(), partition as u32))
                .ok()?
                .map_or(0, |v| v.value());
            lag += head.saturating_sub(*committed);
        }
        Some(lag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lag_counts_what_the_group_has_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let log = EmbeddedLog::open(&EmbeddedLogConfig {
            path: dir.path().join("log.redb"),
            partitions: 4,
            cache_bytes: 1 << 20,
        })
        .unwrap();
        let records = (0..10)
            .map(|i| Record::new(format!("k{i}"), "v"))
            .collect::<Vec<_>>();
        log.append("t", records).await.unwrap();

        let mut sub = log.subscribe("t", "g", StartFrom::Earliest).await.unwrap();
        assert_eq!(sub.lag(), Some(10), "nothing handled yet");
        let first = sub.poll(4).await.unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(sub.lag(), Some(10), "handed out is not handled");
        sub.commit(&first).await.unwrap();
        assert_eq!(sub.lag(), Some(6));

        let mut rest = Vec::new();
        while rest.len() < 6 {
            rest.extend(sub.poll(100).await.unwrap());
        }
        sub.commit(&rest).await.unwrap();
        assert_eq!(sub.lag(), Some(0));
        log.append("t", vec![Record::new("k", "v")]).await.unwrap();
        assert_eq!(sub.lag(), Some(1), "a new record is lag at once");

        // A new subscription of the group starts from its commits; one
        // that starts at the end has no lag.
        let again = log.subscribe("t", "g", StartFrom::Earliest).await.unwrap();
        assert_eq!(again.lag(), Some(1));
        let late = log
            .subscribe("t", "other", StartFrom::Latest)
            .await
            .unwrap();
        assert_eq!(late.lag(), Some(0));
    }
}
