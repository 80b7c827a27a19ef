//! tern-scylla: the message store on ScyllaDB (or Apache Cassandra, which
//! speaks the same protocol and is what the tests run against).
//!
//! - Schema: versioned CQL migrations from `schemas/cql/NNN-*.cql`, applied
//!   at connect and recorded in `schema_migrations` (`migrations.rs`).
//! - Every statement is prepared once, at connect: each table module has a
//!   `Statements` struct of its own.
//! - Bounded partitions: history is bucketed by seq (10,000 per bucket), the
//!   inbox by cursor (2^20 cursor values per bucket, with an index of the
//!   buckets a user has).
//! - Retention: messages, history and inbox rows carry a TTL (config).
//! - Idempotent without lightweight transactions: a message is found again
//!   by (sender, client_msg_id); a conversation's seq is assigned by the one
//!   persister that owns its log partition, and the writes are ordered so a
//!   replay after a crash at any point reuses the seq already given (see
//!   `messages::put_one`). Inbox entries are keyed by the deliver record's
//!   offset and deduplicated per (user, message).
//!
//! One module per table family, each with its statements and the code that
//! runs them:
//! - `messages.rs`: bodies, idempotency keys, conversation heads, history;
//! - `inbox.rs`: inbox entries, buckets, index, counts and trims;
//! - `cursors.rs`: how far each device has read;
//! - `conversations.rs`: each user's conversation list and read marks;
//! - `groups.rs`: groups, members and their join points, each user's groups;
//! - `accounts.rs`: blocks and token revocations.
//!
//! `cql.rs` holds what they share (the `cql!` error mapping, `first`, `all`).

use std::time::Duration;

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use tern_core::ids::MessageId;
use tern_core::store::{
    ConversationNote, ConversationState, ConversationStore, HistoryStore, InboxEntry, InboxLimits,
    InboxPage, InboxStore, PutOutcome, StoreError, StoredMessage,
};

#[macro_use]
mod cql;

mod accounts;
mod conversations;
mod cursors;
mod groups;
mod inbox;
mod messages;
mod migrations;

#[derive(Debug, Clone)]
pub struct ScyllaStoreConfig {
    /// `host:port` of one or more nodes.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Replication factor used if the keyspace has to be created.
    pub replication: u32,
    /// Retention of messages, history and inbox entries; None keeps them.
    pub retention: Option<Duration>,
    pub connect_timeout: Duration,
}

impl ScyllaStoreConfig {
    pub fn new(node: impl Into<String>, keyspace: impl Into<String>) -> Self {
        ScyllaStoreConfig {
            nodes: vec![node.into()],
            keyspace: keyspace.into(),
            replication: 1,
            retention: None,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Every prepared statement, by table family.
struct Statements {
    messages: messages::Statements,
    inbox: inbox::Statements,
    cursors: cursors::Statements,
    conversations: conversations::Statements,
    groups: groups::Statements,
    accounts: accounts::Statements,
}

async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    Ok(Statements {
        messages: messages::prepare(s, keyspace).await?,
        inbox: inbox::prepare(s, keyspace).await?,
        cursors: cursors::prepare(s, keyspace).await?,
        conversations: conversations::prepare(s, keyspace).await?,
        groups: groups::prepare(s, keyspace).await?,
        accounts: accounts::prepare(s, keyspace).await?,
    })
}

pub struct ScyllaStore {
    session: Session,
    st: Statements,
    /// TTL in seconds for rows under retention (0: none).
    ttl: i32,
}

fn check_keyspace(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "keyspace name {name:?} is invalid: use 1 to 48 of a-z 0-9 _"
        )))
    }
}

impl ScyllaStore {
    /// Connects, creates the keyspace if needed, applies pending migrations
    /// and prepares every statement.
    pub async fn connect(config: &ScyllaStoreConfig) -> Result<Self, StoreError> {
        check_keyspace(&config.keyspace)?;
        let nodes = config.nodes.join(",");
        let session = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.connect_timeout)
            .build()
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot reach the CQL database at {nodes}: {e}"))
            })?;
        let ks = &config.keyspace;
        let create = format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            config.replication
        );
        cql!("create keyspace", session.query_unpaged(create, &[]))?;
        // No `USE`: every statement names its keyspace (Cassandra warns
        // about prepared statements that rely on `USE`).
        migrations::migrate(&session, ks).await?;
        let st = prepare(&session, ks).await?;
        let ttl = config
            .retention
            .map_or(0, |d| d.as_secs().min(i32::MAX as u64) as i32);
        Ok(ScyllaStore { session, st, ttl })
    }
}

/// Each call is answered by the module of its tables.
#[async_trait]
impl HistoryStore for ScyllaStore {
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        messages::put_messages(self, messages).await
    }

    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError> {
        messages::get_messages(self, ids).await
    }

    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        messages::history(self, conversation, before_seq, limit).await
    }

    async fn expire_messages(&self, _before_ms: u64, _max: usize) -> Result<u64, StoreError> {
        // Every row is written with the retention TTL: CQL expires them.
        Ok(0)
    }
}

#[async_trait]
impl InboxStore for ScyllaStore {
    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError> {
        inbox::append_inbox(self, entries).await
    }

    async fn read_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        inbox::read_inbox(self, user, after, limit).await
    }

    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        inbox::read_inbox_newest(self, user, after, limit).await
    }

    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError> {
        inbox::trim_inbox(self, user, limits).await
    }

    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError> {
        inbox::trimmed_through(self, user).await
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        cursors::cursor(self, user, device).await
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), StoreError> {
        cursors::advance_cursor(self, user, device, cursor).await
    }
}

#[async_trait]
impl ConversationStore for ScyllaStore {
    async fn note_conversations(&self, notes: Vec<ConversationNote>) -> Result<(), StoreError> {
        conversations::note_conversations(self, notes).await
    }

    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationState>, StoreError> {
        conversations::conversations(self, user, limit).await
    }

    async fn mark_read(&self, user: &str, conversation: &str, seq: u64) -> Result<u64, StoreError> {
        conversations::mark_read(self, user, conversation, seq).await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keyspace_names_are_checked() {
        assert!(super::check_keyspace("tern_test_1").is_ok());
        assert!(super::check_keyspace("tern; DROP").is_err());
        assert!(super::check_keyspace("").is_err());
    }
}
