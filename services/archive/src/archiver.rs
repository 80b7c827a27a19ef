//! The archiver: reads the `archive` topic and closes a segment whenever
//! the open one is big or old enough. Offsets are committed only after a
//! segment's manifest is written, and records the chain already holds (by
//! inbound position) are skipped, so a crash anywhere archives nothing twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tern_core::log::{Delivery, EventLog, LogError, StartFrom, Subscription};
use tern_core::store::MessageStore;
use tern_core::topics;
use tern_proto::records::ArchiveRecord;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::segment::{ClosedSegment, SegmentBuilder};
use crate::{Archive, ArchiveError, ChainHead};

/// Consumer group of the archiver. Run one archiver per archive: two would
/// both write the next segment number.
pub const GROUP: &str = "archiver";

#[derive(Debug, Clone)]
pub struct ArchiverConfig {
    /// A segment is closed once its entries take this many bytes (before compression).
    pub segment_max_bytes: usize,
    /// A segment is closed this long after its first message.
    pub segment_max_age: Duration,
}

impl Default for ArchiverConfig {
    fn default() -> Self {
        ArchiverConfig {
            segment_max_bytes: 32 << 20,
            segment_max_age: Duration::from_secs(300),
        }
    }
}

pub struct Archiver {
    log: Arc<dyn EventLog>,
    store: Arc<dyn MessageStore>,
    archive: Archive,
    config: ArchiverConfig,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The open segment and what it covers.
struct Open {
    builder: SegmentBuilder,
    opened: Instant,
    /// The last delivery per topic partition: what to commit once closed.
    to_commit: BTreeMap<u32, Delivery>,
}

impl Archiver {
    /// `store` is read only for the members of large groups.
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn MessageStore>,
        archive: Archive,
        config: ArchiverConfig,
    ) -> Self {
        Archiver {
            log,
            store,
            archive,
            config,
        }
    }

    /// Archives until `shutdown`; then closes the open segment (if the
    /// storage takes it) and commits.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) -> Result<(), LogError> {
        let Some(mut head) = self.read_head(&mut shutdown).await else {
            return Ok(());
        };
        tracing::info!(archive = %self.archive.describe(), next_segment = head.next_segment, "archiver resuming after the last manifest");
        let mut sub = self
            .log
            .subscribe(topics::ARCHIVE, GROUP, StartFrom::Earliest)
            .await?;
        let mut open: Option<Open> = None;
        let mut backoff = MIN_BACKOFF;
        loop {
            let deadline = open
                .as_ref()
                .map(|o| o.opened + self.config.segment_max_age);
            let polled = tokio::select! {
                b = sub.poll(1024) => Some(b),
                _ = sleep_until(deadline) => None,
                _ = tern_core::stage::stopped(&mut shutdown) => {
                    if let Some(o) = open.take() {
                        // One try: if the storage is down, the records are
                        // simply read again after the restart.
                        let written = if o.builder.is_empty() {
                            Ok(())
                        } else {
                            match seal(&head, o.builder) {
                                Ok(closed) => self.write(&mut head, &closed).await,
                                Err(e) => Err(e),
                            }
                        };
                        match written {
                            Ok(()) => commit(sub.as_mut(), o.to_commit).await,
                            Err(e) => tracing::warn!(error = %e, "cannot close the open segment at shutdown; it is rebuilt after restart"),
                        }
                    }
                    return Ok(());
                }
            };
            match polled {
                None => {}
                Some(Err(LogError::Closed)) => return Err(LogError::Closed),
                Some(Err(e)) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "archive topic poll failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    // A fresh consumer resumes from the last commit; what the
                    // open segment holds already is skipped by position.
                    match self
                        .log
                        .subscribe(topics::ARCHIVE, GROUP, StartFrom::Earliest)
                        .await
                    {
                        Ok(fresh) => tern_core::stage::retire(std::mem::replace(&mut sub, fresh)),
                        Err(e) => tracing::warn!(error = %e, "cannot subscribe again yet"),
                    }
                    continue;
                }
                Some(Ok(batch)) => {
                    backoff = MIN_BACKOFF;
                    let mut rest = &batch[..];
                    while !rest.is_empty() {
                        let o = open.get_or_insert_with(|| Open {
                            builder: SegmentBuilder::default(),
                            opened: Instant::now(),
                            to_commit: BTreeMap::new(),
                        });
                        let Some(taken) = self.add(&mut head, o, rest, &mut shutdown).await else {
                            return Ok(());
                        };
                        rest = &rest[taken..];
                        crate::metrics::ARCHIVE_OPEN_RECORDS.set(o.builder.records() as i64);
                        let full = o.builder.raw_len() >= self.config.segment_max_bytes;
                        if let Some(o) = open.take_if(|_| full)
                            && !self
                                .close_and_commit(&mut head, o, sub.as_mut(), &mut shutdown)
                                .await
                        {
                            return Ok(());
                        }
                    }
                }
            }
            let old = open
                .as_ref()
                .is_some_and(|o| o.opened.elapsed() >= self.config.segment_max_age);
            if let Some(o) = open.take_if(|_| old)
                && !self
                    .close_and_commit(&mut head, o, sub.as_mut(), &mut shutdown)
                    .await
            {
                return Ok(());
            }
        }
    }

    /// Writes the open segment, retrying until the storage takes it, then
    /// commits what it covers. False if shut down first (nothing is
    /// committed then: the records are read again after the restart).
    async fn close_and_commit(
        &self,
        head: &mut ChainHead,
        open: Open,
        sub: &mut dyn Subscription,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        if !open.builder.is_empty() {
            // Compressed once; only the write is retried.
            let closed = match seal(head, open.builder) {
                Ok(c) => c,
                Err(e) => {
                    // Encoding in memory does not fail for a retry to fix:
                    // stop, so the process reports the archiver stopped.
                    tracing::error!(error = %e, "cannot encode the open segment");
                    return false;
                }
            };
            let mut delay = MIN_BACKOFF;
            while let Err(e) = self.write(head, &closed).await {
                crate::metrics::ARCHIVE_WRITE_ERRORS.inc();
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot write segment; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tern_core::stage::stopped(shutdown) => return false,
                }
                delay = (delay * 2).min(MAX_BACKOFF);
            }
        }
        // With an empty segment, the batch held only replays: safe to commit.
        commit(sub, open.to_commit).await;
        true
    }

    async fn read_head(&self, shutdown: &mut watch::Receiver<bool>) -> Option<ChainHead> {
        let mut delay = MIN_BACKOFF;
        loop {
            match self.archive.head().await {
                Ok(h) => return Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "cannot read the archive's last manifest; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tern_core::stage::stopped(shutdown) => return None,
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Adds the new records of `batch` to the open segment until it is
    /// full; returns how many records of `batch` it took (None if shut down
    /// while waiting for the store).
    async fn add(
        &self,
        head: &mut ChainHead,
        open: &mut Open,
        batch: &[Delivery],
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<usize> {
        for (i, d) in batch.iter().enumerate() {
            if open.builder.raw_len() >= self.config.segment_max_bytes {
                return Some(i);
            }
            open.to_commit.insert(d.position.partition, d.clone());
            let record = match ArchiveRecord::decode(d.value.clone()) {
                Ok(r) if r.message.is_some() => r,
                _ => {
                    tracing::error!(
                        partition = d.position.partition,
                        offset = d.position.offset,
                        "skipping undecodable archive record"
                    );
                    continue;
                }
            };
            let done = head.through.get(&record.inbound_partition);
            if done.is_some_and(|&o| record.inbound_offset <= o) {
                // A persister replay, or a record of a segment closed
                // before its offsets were committed.
                crate::metrics::ARCHIVE_REPLAYS_SKIPPED.inc();
                continue;
            }
            if !record.large_group.is_empty() && !open.builder.lists_group(&record.large_group) {
                let members = self.members(&record.large_group, shutdown).await?;
                open.builder
                    .push_members(&record.large_group, members, tern_core::now_ms());
            }
            head.through
                .insert(record.inbound_partition, record.inbound_offset);
            open.builder.push_message(record, tern_core::now_ms());
        }
        Some(batch.len())
    }

    /// All members of a large group, retried until the store answers.
    async fn members(
        &self,
        group: &str,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<Vec<String>> {
        let mut delay = MIN_BACKOFF;
        loop {
            match tern_core::groups::all_members(self.store.as_ref(), group).await {
                Ok(m) => return Some(m),
                Err(e) => {
                    tracing::warn!(%group, error = %e, "cannot read group members for the archive; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = tern_core::stage::stopped(shutdown) => return None,
                    }
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Writes a sealed segment and advances `head` past it.
    async fn write(
        &self,
        head: &mut ChainHead,
        closed: &ClosedSegment,
    ) -> Result<(), ArchiveError> {
        self.archive.write_segment(closed).await?;
        let m = &closed.manifest;
        crate::metrics::ARCHIVE_SEGMENTS.inc();
        crate::metrics::ARCHIVE_RECORDS.add(m.records);
        crate::metrics::ARCHIVE_BYTES.add(m.bytes);
        crate::metrics::ARCHIVE_RAW_BYTES.add(m.raw_bytes);
        tracing::info!(
            segment = m.segment,
            records = m.records,
            bytes = m.bytes,
            raw_bytes = m.raw_bytes,
            "archive segment closed"
        );
        crate::metrics::ARCHIVE_OPEN_RECORDS.set(0);
        head.next_segment = m.segment + 1;
        head.last_manifest_sha256 = crate::segment::sha256_hex(&closed.manifest_bytes);
        Ok(())
    }
}

/// Compresses `builder` as the segment after `head`, chained to it.
fn seal(head: &ChainHead, builder: SegmentBuilder) -> Result<ClosedSegment, ArchiveError> {
    builder.close(
        head.next_segment,
        &head.through,
        &head.last_manifest_sha256,
        tern_core::now_ms(),
    )
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Commits the archived records; a failure only means they are read again
/// and skipped by position.
async fn commit(sub: &mut dyn Subscription, last: BTreeMap<u32, Delivery>) {
    let done: Vec<Delivery> = last.into_values().collect();
    if let Err(e) = sub.commit(&done).await {
        tracing::warn!(error = %e, "archive commit failed; the records are skipped when read again");
    }
}
