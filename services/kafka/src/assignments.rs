//! What the consumer's librdkafka callbacks tell its subscription: the
//! partitions it holds and whether new ones were just assigned (from
//! rebalances), whether it is a settled member of its group, and its lag
//! over the partitions it holds (from the statistics librdkafka emits every
//! `stats_interval`). The subscription reads these to answer
//! `take_reassigned` and `lag`, and to notice a consumer left outside its
//! group.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::statistics::Statistics;
use tern_core::log::StartFrom;
use tern_core::sync;

/// Notes every partition assignment, for [`Subscription::take_reassigned`],
/// and the consumer's lag over the partitions it holds, for
/// [`Subscription::lag`].
///
/// [`Subscription::take_reassigned`]: tern_core::log::Subscription::take_reassigned
/// [`Subscription::lag`]: tern_core::log::Subscription::lag
#[derive(Clone)]
pub(crate) struct Assignments {
    pub(crate) happened: Arc<std::sync::atomic::AtomicBool>,
    pub(crate) wake: Arc<tokio::sync::Notify>,
    /// The (prefixed) topic subscribed to: statistics list others too.
    topic: Arc<str>,
    start: StartFrom,
    /// Partitions this consumer holds now: statistics also list the
    /// topic's other partitions, with stale figures.
    held: Arc<Mutex<HashSet<i32>>>,
    /// Sum of the held partitions' lag at the last statistics; -1 until
    /// every held partition had a figure.
    pub(crate) lag: Arc<AtomicI64>,
    /// The consumer's group membership, from its statistics.
    pub(crate) group: Arc<Mutex<GroupHealth>>,
}

/// Whether a consumer is a settled member of its group, as its statistics
/// say (`cgrp.state` "up" and `cgrp.join_state` "steady").
pub(crate) struct GroupHealth {
    pub(crate) state: String,
    pub(crate) join_state: String,
    /// When the consumer was last seen settled (or was created).
    pub(crate) settled_at: std::time::Instant,
}

impl Assignments {
    pub(crate) fn new(topic: &str, start: StartFrom) -> Self {
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
