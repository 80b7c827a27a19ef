//! Instrument once: wrappers around the three boundaries (event log,
//! message store, route directory) that time every operation and count
//! its failures, whatever backend is behind them. `ternd` and
//! `tern-server` wrap the backends they open, so every service reports the
//! same metrics (docs/metrics.md): `tern_<boundary>_op_seconds{op}` and
//! `tern_<boundary>_errors_total{op}`, with `op` the trait method.
//! Subscriptions are wrapped too, for `commit` (a `poll` waits for records
//! by design: its time says nothing about the backend).

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::accounts::AccountStore;
use crate::groups::{Group, GroupStore};
use crate::ids::MessageId;
use crate::log::{Delivery, EventLog, LogError, Position, Record, StartFrom, Subscription};
use crate::metrics::{LabeledCounter, LabeledHistogram};
use crate::routes::{Route, RouteDirectory, RouteError};
use crate::store::{
    ConversationNote, ConversationState, ConversationStore, HistoryStore, InboxEntry, InboxLimits,
    InboxPage, InboxStore, MessageStore, PutOutcome, StoreError, StoredMessage,
};

/// An operation's latency histogram and error counter.
pub struct OpMetrics {
    pub seconds: &'static LabeledHistogram,
    pub errors: &'static LabeledCounter,
}

static STORE: OpMetrics = OpMetrics {
    seconds: &crate::metrics::STORE_OP_SECONDS,
    errors: &crate::metrics::STORE_ERRORS,
};
static LOG: OpMetrics = OpMetrics {
    seconds: &crate::metrics::LOG_OP_SECONDS,
    errors: &crate::metrics::LOG_ERRORS,
};
static ROUTES: OpMetrics = OpMetrics {
    seconds: &crate::metrics::ROUTES_OP_SECONDS,
    errors: &crate::metrics::ROUTES_ERRORS,
};

/// Runs `op`, observing its time under `name` and counting it if it fails.
async fn timed<T, E>(
    metrics: &OpMetrics,
    name: &'static str,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let started = Instant::now();
    let result = op.await;
    metrics
        .seconds
        .observe(name, started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics.errors.inc(name);
    }
    result
}

/// A message store whose every operation is timed.
pub struct InstrumentedStore {
    inner: Arc<dyn MessageStore>,
}

impl InstrumentedStore {
    pub fn wrap(inner: Arc<dyn MessageStore>) -> Arc<dyn MessageStore> {
        Arc::new(InstrumentedStore { inner })
    }
}

#[async_trait]
impl HistoryStore for InstrumentedStore {
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        timed(&STORE, "put_messages", self.inner.put_messages(messages)).await
    }

    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError> {
        timed(&STORE, "get_messages", self.inner.get_messages(ids)).await
    }

    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        timed(
            &STORE,
            "history",
            self.inner.history(conversation, before_seq, limit),
        )
        .await
    }

    async fn expire_messages(&self, before_ms: u64, max: usize) -> Result<u64, StoreError> {
        timed(
            &STORE,
            "expire_messages",
            self.inner.expire_messages(before_ms, max),
        )
        .await
    }
}

#[async_trait]
impl InboxStore for InstrumentedStore {
    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError> {
        timed(&STORE, "append_inbox", self.inner.append_inbox(entries)).await
    }

    async fn read_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        timed(
            &STORE,
            "read_inbox",
            self.inner.read_inbox(user, after, limit),
        )
        .await
    }

    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        timed(
            &STORE,
            "read_inbox_newest",
            self.inner.read_inbox_newest(user, after, limit),
        )
        .await
    }

    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError> {
        timed(&STORE, "trim_inbox", self.inner.trim_inbox(user, limits)).await
    }

    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError> {
        timed(&STORE, "trimmed_through", self.inner.trimmed_through(user)).await
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        timed(&STORE, "cursor", self.inner.cursor(user, device)).await
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), StoreError> {
        timed(
            &STORE,
            "advance_cursor",
            self.inner.advance_cursor(user, device, cursor),
        )
        .await
    }
}

#[async_trait]
impl ConversationStore for InstrumentedStore {
    async fn note_conversations(&self, notes: Vec<ConversationNote>) -> Result<(), StoreError> {
        timed(
            &STORE,
            "note_conversations",
            self.inner.note_conversations(notes),
        )
        .await
    }

    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationState>, StoreError> {
        timed(
            &STORE,
            "conversations",
            self.inner.conversations(user, limit),
        )
        .await
    }

    async fn mark_read(&self, user: &str, conversation: &str, seq: u64) -> Result<u64, StoreError> {
        timed(
            &STORE,
            "mark_read",
            self.inner.mark_read(user, conversation, seq),
        )
        .await
    }
}

#[async_trait]
impl GroupStore for InstrumentedStore {
    async fn create_group(&self, group: &Group, members: &[String]) -> Result<(), StoreError> {
        timed(
            &STORE,
            "create_group",
            self.inner.create_group(group, members),
        )
        .await
    }
    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        timed(&STORE, "group", self.inner.group(id)).await
    }
    async fn add_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
    ) -> Result<(), StoreError> {
        timed(
            &STORE,
            "add_members",
            self.inner.add_members(group, users, joined_after_seq),
        )
        .await
    }
    async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        timed(
            &STORE,
            "remove_members",
            self.inner.remove_members(group, users),
        )
        .await
    }
    async fn members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        timed(&STORE, "members", self.inner.members(group, after, limit)).await
    }
    async fn is_member(&self, group: &str, user: &str) -> Result<bool, StoreError> {
        timed(&STORE, "is_member", self.inner.is_member(group, user)).await
    }
    async fn member_since(&self, group: &str, user: &str) -> Result<Option<u64>, StoreError> {
        timed(&STORE, "member_since", self.inner.member_since(group, user)).await
    }
    async fn member_count(&self, group: &str) -> Result<u64, StoreError> {
        timed(&STORE, "member_count", self.inner.member_count(group)).await
    }
    async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        timed(&STORE, "user_groups", self.inner.user_groups(user)).await
    }
}

#[async_trait]
impl AccountStore for InstrumentedStore {
    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError> {
        timed(
            &STORE,
            "set_blocked",
            self.inner.set_blocked(user, other, blocked),
        )
        .await
    }
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError> {
        timed(&STORE, "is_blocked", self.inner.is_blocked(user, other)).await
    }
    async fn blocked_users(
        &self,
        user: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        timed(
            &STORE,
            "blocked_users",
            self.inner.blocked_users(user, after, limit),
        )
        .await
    }
    async fn revoke_tokens(
        &self,
        user: &str,
        device: Option<&str>,
        before_ms: u64,
    ) -> Result<(), StoreError> {
        timed(
            &STORE,
            "revoke_tokens",
            self.inner.revoke_tokens(user, device, before_ms),
        )
        .await
    }
    async fn revoked_before(&self, user: &str, device: Option<&str>) -> Result<u64, StoreError> {
        timed(
            &STORE,
            "revoked_before",
            self.inner.revoked_before(user, device),
        )
        .await
    }
}

/// A route directory whose every operation is timed.
pub struct InstrumentedRoutes {
    inner: Arc<dyn RouteDirectory>,
}

impl InstrumentedRoutes {
    pub fn wrap(inner: Arc<dyn RouteDirectory>) -> Arc<dyn RouteDirectory> {
        Arc::new(InstrumentedRoutes { inner })
    }
}

#[async_trait]
impl RouteDirectory for InstrumentedRoutes {
    async fn register(&self, route: &Route, ttl: Duration) -> Result<bool, RouteError> {
        timed(&ROUTES, "register", self.inner.register(route, ttl)).await
    }
    async fn unregister(&self, route: &Route) -> Result<(), RouteError> {
        timed(&ROUTES, "unregister", self.inner.unregister(route)).await
    }
    async fn lookup(&self, users: &[String]) -> Result<HashMap<String, Vec<Route>>, RouteError> {
        timed(&ROUTES, "lookup", self.inner.lookup(users)).await
    }
    async fn gateway_alive(&self, gateway: &str, ttl: Duration) -> Result<(), RouteError> {
        timed(
            &ROUTES,
            "gateway_alive",
            self.inner.gateway_alive(gateway, ttl),
        )
        .await
    }
    async fn dead_gateways(&self) -> Result<Vec<String>, RouteError> {
        timed(&ROUTES, "dead_gateways", self.inner.dead_gateways()).await
    }
    async fn remove_gateway(&self, gateway: &str) -> Result<usize, RouteError> {
        timed(
            &ROUTES,
            "remove_gateway",
            self.inner.remove_gateway(gateway),
        )
        .await
    }
    async fn report_room_viewers(
        &self,
        gateway: &str,
        counts: &[(String, u64)],
        ttl: Duration,
    ) -> Result<(), RouteError> {
        timed(
            &ROUTES,
            "report_room_viewers",
            self.inner.report_room_viewers(gateway, counts, ttl),
        )
        .await
    }
    async fn room_viewers(&self, rooms: &[String]) -> Result<HashMap<String, u64>, RouteError> {
        timed(&ROUTES, "room_viewers", self.inner.room_viewers(rooms)).await
    }
}

/// An event log whose appends, subscriptions and commits are timed.
pub struct InstrumentedLog {
    inner: Arc<dyn EventLog>,
}

impl InstrumentedLog {
    pub fn wrap(inner: Arc<dyn EventLog>) -> Arc<dyn EventLog> {
        Arc::new(InstrumentedLog { inner })
    }
}

#[async_trait]
impl EventLog for InstrumentedLog {
    async fn append(&self, topic: &str, records: Vec<Record>) -> Result<Vec<Position>, LogError> {
        timed(&LOG, "append", self.inner.append(topic, records)).await
    }
    async fn append_many(
        &self,
        batches: Vec<(String, Vec<Record>)>,
    ) -> Result<Vec<Vec<Position>>, LogError> {
        timed(&LOG, "append_many", self.inner.append_many(batches)).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
        start: StartFrom,
    ) -> Result<Box<dyn Subscription>, LogError> {
        let inner = timed(&LOG, "subscribe", self.inner.subscribe(topic, group, start)).await?;
        Ok(Box::new(InstrumentedSubscription { inner }))
    }
}

struct InstrumentedSubscription {
    inner: Box<dyn Subscription>,
}

#[async_trait]
impl Subscription for InstrumentedSubscription {
    async fn poll(&mut self, max: usize) -> Result<Vec<Delivery>, LogError> {
        let result = self.inner.poll(max).await;
        if result.is_err() {
            LOG.errors.inc("poll");
        }
        result
    }

    fn take_reassigned(&mut self) -> bool {
        self.inner.take_reassigned()
    }

    async fn commit(&mut self, done: &[Delivery]) -> Result<(), LogError> {
        timed(&LOG, "commit", self.inner.commit(done)).await
    }

    fn lag(&self) -> Option<u64> {
        self.inner.lag()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_store_operation_is_timed_and_failures_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = InstrumentedStore::wrap(Arc::new(
            crate::embedded::EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap(),
        ));
        let before = crate::metrics::STORE_OP_SECONDS.count("trimmed_through");
        store.trimmed_through("alice").await.unwrap();
        assert_eq!(
            crate::metrics::STORE_OP_SECONDS.count("trimmed_through"),
            before + 1
        );
        let routes = InstrumentedRoutes::wrap(Arc::new(crate::embedded::MemoryRoutes::new()));
        let before = crate::metrics::ROUTES_OP_SECONDS.count("dead_gateways");
        routes.dead_gateways().await.unwrap();
        assert_eq!(
            crate::metrics::ROUTES_OP_SECONDS.count("dead_gateways"),
            before + 1
        );
    }

    #[tokio::test]
    async fn a_failure_is_counted_under_its_operation() {
        let failing = async { Err::<(), _>(StoreError::Unavailable("down".into())) };
        let before = crate::metrics::STORE_ERRORS.get("test_op");
        assert!(timed(&STORE, "test_op", failing).await.is_err());
        assert_eq!(crate::metrics::STORE_ERRORS.get("test_op"), before + 1);
    }
}
