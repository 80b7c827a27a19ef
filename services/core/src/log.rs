//! The event log boundary: what the pipeline needs from Kafka (or the
//! embedded log): keyed, durable, ordered per key, consumed by groups that
//! commit only after their side effects are durable.

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    #[error("event log I/O failed: {0}")]
    Io(String),
    #[error("event log is shut down")]
    Closed,
}

/// A record to append. Records with the same key go to the same partition,
/// so they are consumed in the order they were appended.
#[derive(Debug, Clone)]
pub struct Record {
    pub key: Bytes,
    pub value: Bytes,
    /// Metadata beside the value; today only a trace context (see
    /// [`crate::trace`]), so usually empty.
    pub headers: Headers,
}

/// Record headers: (name, value) pairs, as Kafka carries them.
pub type Headers = Vec<(String, Bytes)>;

impl Record {
    pub fn new(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Record {
            key: key.into(),
            value: value.into(),
            headers: Headers::new(),
        }
    }

    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }
}

/// Where a record landed. Offsets grow by one per record in a partition and
/// never change, so they can serve as replay-safe positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// A record handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub position: Position,
    pub key: Bytes,
    pub value: Bytes,
    /// The record's headers (see [`Record::headers`]).
    pub headers: Headers,
}

/// Where a group with no committed position starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// Every record still retained: for stages that must see everything.
    Earliest,
    /// Only records appended after subscribing: for gateways, whose old
    /// pushes address connections that no longer exist.
    Latest,
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Appends records to `topic` and returns once they are durable, with
    /// their positions in the order given.
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, LogError>;

    /// Appends to several topics; returns once all are durable, with the
    /// positions of each batch. Backends that can write them together (one
    /// transaction, one flush) should: stages emit to several topics per batch.
    async fn append_many(
        &self,
        batches: Vec<(String, Vec<Record>)>,
    ) -> Result<Vec<Vec<Position>>, LogError> {
        let mut out = Vec::with_capacity(batches.len());
        for (topic, records) in batches {
            out.push(self.append(&topic, records).await?);
        }
        Ok(out)
    }

    /// Joins consumer group `group` on `topic`. Each group sees every record;
    /// a restarted group resumes after its last commit.
    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError>;
}

#[async_trait]
pub trait Subscription: Send {
    /// Waits for records and returns at most `max` of them, in order within
    /// each partition. Records not committed are handed out again after a
    /// restart. Cancel-safe: a poll dropped while it waits hands out
    /// nothing (stages drop it at shutdown and to refresh their metrics).
    async fn poll(&mut self, max: usize) -> Result<Vec<Delivery>, LogError>;

    /// True (once) when this subscription was handed partitions since the
    /// last call: a group with nothing committed that starts at the end
    /// ([`StartFrom::Latest`]) may then have skipped records appended while
    /// it had no partitions (a consumer-group rebalance after a broker
    /// outage). Push consumers use it to make their sessions re-read the
    /// inbox. A `poll` waiting for records returns an empty batch when this
    /// happens, so the caller notices. Backends without rebalances never say so.
    fn take_reassigned(&mut self) -> bool {
        false
    }

    /// Marks `done` (and everything before it in each partition) as handled.
    /// Call only after every side effect of handling them is durable.
    async fn commit(&mut self, done: &[Delivery]) -> Result<(), LogError>;

    /// Records in the partitions this subscription holds that its group has
    /// not committed yet (handed out or not), summed over those partitions:
    /// how far this consumer is behind, for the consumer-lag metric. None
    /// when the backend cannot tell (yet). Cheap: no network round trip,
    /// so a backend may report a figure a few seconds old.
    fn lag(&self) -> Option<u64> {
        None
    }
}

/// The highest offset per partition in `done`, for commit implementations.
pub fn last_offsets(done: &[Delivery]) -> Vec<Position> {
    let mut last: std::collections::BTreeMap<u32, u64> = Default::default();
    for d in done {
        let e = last
            .entry(d.position.partition)
            .or_insert(d.position.offset);
        *e = (*e).max(d.position.offset);
    }
    last.into_iter()
        .map(|(partition, offset)| Position { partition, offset })
        .collect()
}

/// The partition a key maps to: the same function on every backend that
/// partitions by itself (Kafka's own partitioner is used by the Kafka backend).
pub fn partition_for(key: &[u8], partitions: u32) -> u32 {
    // FNV-1a: stable across processes and versions, unlike std's hasher.
    let mut h: u32 = 0x811c9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x01000193);
    }
    h % partitions.max(1)
}
