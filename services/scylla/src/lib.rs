//! tern-scylla: the message store on ScyllaDB (or Apache Cassandra, which
//! speaks the same protocol and is what the tests run against).
//!
//! - Schema: versioned CQL migrations from `schemas/cql/NNN-*.cql`, applied
//!   at connect and recorded in `schema_migrations`.
//! - Every statement is prepared once.
//! - Bounded partitions: history is bucketed by seq (10,000 per bucket), the
//!   inbox by cursor (2^20 cursor values per bucket, with an index of the
//!   buckets a user has).
//! - Retention: messages, history and inbox rows carry a TTL (config).
//! - Idempotent without lightweight transactions: a message is found again
//!   by (sender, client_msg_id); a conversation's seq is assigned by the one
//!   persister that owns its log partition, and the writes are ordered so a
//!   replay after a crash at any point reuses the seq already given (see
//!   `put_one`). Inbox entries are keyed by the deliver record's offset and
//!   deduplicated per (user, message).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{try_join, try_join_all};
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::statement::prepared::PreparedStatement;
use scylla::value::Counter;
use tern_core::groups::{Group, GroupStore, initial_members};
use tern_core::ids::MessageId;
use tern_core::store::{
    ConversationNote, ConversationState, InboxEntry, InboxLimits, InboxPage, MessageStore,
    PutOutcome, StoreError, StoredMessage, newest_first,
};

/// Messages per history bucket.
const HISTORY_BUCKET: u64 = 10_000;
/// Cursor values per inbox bucket (bits).
const INBOX_BUCKET_BITS: u32 = 20;

/// The migrations, in order: (version, name, CQL).
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "001-init",
        include_str!("../../../schemas/cql/001-init.cql"),
    ),
    (
        2,
        "002-groups",
        include_str!("../../../schemas/cql/002-groups.cql"),
    ),
    (
        3,
        "003-conversations",
        include_str!("../../../schemas/cql/003-conversations.cql"),
    ),
    (
        4,
        "004-retention",
        include_str!("../../../schemas/cql/004-retention.cql"),
    ),
    (
        5,
        "005-history-bodies",
        include_str!("../../../schemas/cql/005-history-bodies.cql"),
    ),
    (
        6,
        "006-device-cursors",
        include_str!("../../../schemas/cql/006-device-cursors.cql"),
    ),
    (
        7,
        "007-accounts",
        include_str!("../../../schemas/cql/007-accounts.cql"),
    ),
];

/// Inbox entries read per page while looking for what to trim.
const TRIM_PAGE: usize = 1000;
/// Most entries one trim deletes; the rest go next time.
const MAX_TRIM: usize = 20_000;
/// Users per `IN` list when looking up which of them are members.
const MEMBER_LOOKUP: usize = 100;

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

struct Statements {
    insert_message: PreparedStatement,
    select_message: PreparedStatement,
    select_idempotency: PreparedStatement,
    insert_idempotency: PreparedStatement,
    select_head: PreparedStatement,
    update_head: PreparedStatement,
    select_history_at: PreparedStatement,
    insert_history: PreparedStatement,
    select_history_page: PreparedStatement,
    select_inbox_index: PreparedStatement,
    insert_inbox_index: PreparedStatement,
    insert_inbox: PreparedStatement,
    insert_inbox_bucket: PreparedStatement,
    select_inbox_buckets_from: PreparedStatement,
    select_last_inbox_bucket: PreparedStatement,
    select_inbox_page: PreparedStatement,
    select_last_inbox_cursor: PreparedStatement,
    select_cursor: PreparedStatement,
    select_device_cursor: PreparedStatement,
    write_device_cursor: PreparedStatement,
    insert_group: PreparedStatement,
    select_group: PreparedStatement,
    insert_member: PreparedStatement,
    delete_member: PreparedStatement,
    insert_user_group: PreparedStatement,
    delete_user_group: PreparedStatement,
    select_members_page: PreparedStatement,
    select_member: PreparedStatement,
    select_members_among: PreparedStatement,
    select_member_since: PreparedStatement,
    count_members: PreparedStatement,
    select_user_groups: PreparedStatement,
    select_inbox_buckets_desc: PreparedStatement,
    select_inbox_page_desc: PreparedStatement,
    note_last: PreparedStatement,
    note_read: PreparedStatement,
    select_conversations: PreparedStatement,
    select_conversation: PreparedStatement,
    add_inbox_count: PreparedStatement,
    select_inbox_count: PreparedStatement,
    select_trim: PreparedStatement,
    update_trim: PreparedStatement,
    delete_inbox: PreparedStatement,
    delete_inbox_index: PreparedStatement,
    accounts: accounts::Statements,
}

pub struct ScyllaStore {
    session: Session,
    st: Statements,
    /// TTL in seconds for rows under retention (0: none).
    ttl: i32,
}

/// Maps any driver error to "unavailable", naming the operation.
macro_rules! cql {
    ($what:expr, $e:expr) => {
        $e.await
            .map_err(|e| StoreError::Unavailable(format!("{}: {e}", $what)))
    };
}

mod accounts;

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
        migrate(&session, ks).await?;
        let st = prepare(&session, ks).await?;
        let ttl = config
            .retention
            .map_or(0, |d| d.as_secs().min(i32::MAX as u64) as i32);
        Ok(ScyllaStore { session, st, ttl })
    }
}

async fn migrate(session: &Session, ks: &str) -> Result<(), StoreError> {
    cql!(
        "create schema_migrations",
        session.query_unpaged(
            format!("CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (version int PRIMARY KEY, name text, applied_at_ms bigint)"),
            &[]
        )
    )?;
    let applied: Vec<i32> = cql!(
        "read schema_migrations",
        session.query_unpaged(format!("SELECT version FROM {ks}.schema_migrations"), &[])
    )?
    .into_rows_result()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .rows::<(i32,)>()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .filter_map(Result::ok)
    .map(|(v,)| v)
    .collect();
    for (version, name, text) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        for statement in statements(text).iter().map(|st| qualify(st, ks)) {
            let result = cql!(
                format!("migration {name}"),
                session.query_unpaged(statement.clone(), &[])
            );
            // Processes starting together migrate together: CREATE ... IF
            // NOT EXISTS is idempotent, ALTER TABLE ... ADD is not, so a
            // failed ADD whose columns all exist was another's, and done.
            if let Err(e) = result
                && !added_columns_exist(session, ks, &statement).await?
            {
                return Err(e);
            }
        }
        cql!(
            format!("migration {name}: schema agreement"),
            session.await_schema_agreement()
        )?;
        cql!(
            "record migration",
            session.query_unpaged(
                format!("INSERT INTO {ks}.schema_migrations (version, name, applied_at_ms) VALUES (?, ?, ?)"),
                (*version, *name, tern_core::now_ms() as i64)
            )
        )?;
        tracing::info!(version, name, "CQL migration applied");
    }
    Ok(())
}

/// For `ALTER TABLE ks.t ADD (a type, b type)`: whether columns a and b
/// exist now. False for any other statement.
async fn added_columns_exist(
    session: &Session,
    ks: &str,
    statement: &str,
) -> Result<bool, StoreError> {
    let Some((table, columns)) = alter_add_columns(statement, ks) else {
        return Ok(false);
    };
    let existing: Vec<String> = cql!(
        "read table columns",
        session.query_unpaged(
            "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
            (ks, table.as_str())
        )
    )?
    .into_rows_result()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .rows::<(String,)>()
    .map_err(|e| StoreError::Unavailable(e.to_string()))?
    .filter_map(Result::ok)
    .map(|(c,)| c)
    .collect();
    Ok(columns.iter().all(|c| existing.contains(c)))
}

/// The table and column names of `ALTER TABLE ks.table ADD (c1 t1, c2 t2)`.
fn alter_add_columns(statement: &str, ks: &str) -> Option<(String, Vec<String>)> {
    let rest = statement.strip_prefix(&format!("ALTER TABLE {ks}."))?;
    let (table, rest) = rest.split_once(char::is_whitespace)?;
    let inner = rest.trim().strip_prefix("ADD")?.trim();
    let inner = inner.strip_prefix('(')?.strip_suffix(')')?;
    let columns = inner
        .split(',')
        .filter_map(|c| c.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    Some((table.to_owned(), columns))
}

/// Puts `ks.` before the table a `CREATE TABLE [IF NOT EXISTS] name` or
/// `ALTER TABLE name` statement names (migration files name no keyspace).
fn qualify(statement: &str, ks: &str) -> String {
    for head in [
        "CREATE TABLE IF NOT EXISTS ",
        "CREATE TABLE ",
        "ALTER TABLE ",
    ] {
        if let Some(rest) = statement.strip_prefix(head) {
            return format!("{head}{ks}.{rest}");
        }
    }
    statement.to_owned()
}

/// The statements of a migration file: split on ';', comments dropped.
fn statements(text: &str) -> Vec<String> {
    let without_comments: String = text
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    // Table names qualified with the keyspace: prepared statements that lean
    // on `USE` are ambiguous (and Cassandra warns about each).
    let p = |q: &'static str| {
        let q = q.replace("{ks}", keyspace);
        async move {
            s.prepare(q.clone())
                .await
                .map_err(|e| StoreError::Unavailable(format!("prepare {q:?}: {e}")))
        }
    };
    Ok(Statements {
        insert_message: p("INSERT INTO {ks}.messages (message_id, conversation, seq, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?").await?,
        select_message: p("SELECT message_id, conversation, seq, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms FROM {ks}.messages WHERE message_id = ?").await?,
        select_idempotency: p("SELECT message_id FROM {ks}.idempotency WHERE sender_user = ? AND client_msg_id = ?").await?,
        insert_idempotency: p("INSERT INTO {ks}.idempotency (sender_user, client_msg_id, message_id) VALUES (?, ?, ?) USING TTL ?").await?,
        select_head: p("SELECT last_seq FROM {ks}.conversation_heads WHERE conversation = ?").await?,
        update_head: p("UPDATE {ks}.conversation_heads SET last_seq = ? WHERE conversation = ?").await?,
        select_history_at: p("SELECT message_id FROM {ks}.history WHERE conversation = ? AND bucket = ? AND seq = ?").await?,
        insert_history: p("INSERT INTO {ks}.history (conversation, bucket, seq, message_id, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?").await?,
        select_history_page: p("SELECT message_id, seq, sender_user, sender_device, client_msg_id, content_type, body, sent_at_ms FROM {ks}.history WHERE conversation = ? AND bucket = ? AND seq < ? LIMIT ?").await?,
        select_inbox_index: p("SELECT cursor FROM {ks}.inbox_index WHERE user_id = ? AND message_id = ?").await?,
        insert_inbox_index: p("INSERT INTO {ks}.inbox_index (user_id, message_id, cursor) VALUES (?, ?, ?) USING TTL ?").await?,
        insert_inbox: p("INSERT INTO {ks}.inbox (user_id, bucket, cursor, message_id, conversation) VALUES (?, ?, ?, ?, ?) USING TTL ?").await?,
        insert_inbox_bucket: p("INSERT INTO {ks}.inbox_buckets (user_id, bucket) VALUES (?, ?) USING TTL ?").await?,
        select_inbox_buckets_from: p("SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? AND bucket >= ?").await?,
        select_last_inbox_bucket: p("SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? ORDER BY bucket DESC LIMIT 1").await?,
        select_inbox_page: p("SELECT cursor, message_id, conversation FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND cursor > ? LIMIT ?").await?,
        select_last_inbox_cursor: p("SELECT cursor FROM {ks}.inbox WHERE user_id = ? AND bucket = ? ORDER BY cursor DESC LIMIT 1").await?,
        select_cursor: p("SELECT cursor FROM {ks}.cursors WHERE user_id = ? AND device = ?").await?,
        select_device_cursor: p("SELECT cursor FROM {ks}.device_cursors WHERE user_id = ? AND device = ?").await?,
        write_device_cursor: p("UPDATE {ks}.device_cursors USING TIMESTAMP ? SET cursor = ? WHERE user_id = ? AND device = ?").await?,
        insert_group: p("INSERT INTO {ks}.groups (group_id, name, owner, created_at_ms, history_open) VALUES (?, ?, ?, ?, ?)").await?,
        select_group: p("SELECT name, owner, created_at_ms, history_open FROM {ks}.groups WHERE group_id = ?").await?,
        insert_member: p("INSERT INTO {ks}.group_members (group_id, user_id, joined_after_seq) VALUES (?, ?, ?)").await?,
        delete_member: p("DELETE FROM {ks}.group_members WHERE group_id = ? AND user_id = ?").await?,
        insert_user_group: p("INSERT INTO {ks}.user_groups (user_id, group_id) VALUES (?, ?)").await?,
        delete_user_group: p("DELETE FROM {ks}.user_groups WHERE user_id = ? AND group_id = ?").await?,
        select_members_page: p("SELECT user_id FROM {ks}.group_members WHERE group_id = ? AND user_id > ? LIMIT ?").await?,
        select_member: p("SELECT user_id FROM {ks}.group_members WHERE group_id = ? AND user_id = ?").await?,
        select_members_among: p("SELECT user_id FROM {ks}.group_members WHERE group_id = ? AND user_id IN ?").await?,
        select_member_since: p("SELECT joined_after_seq FROM {ks}.group_members WHERE group_id = ? AND user_id = ?").await?,
        count_members: p("SELECT COUNT(*) FROM {ks}.group_members WHERE group_id = ?").await?,
        select_user_groups: p("SELECT group_id FROM {ks}.user_groups WHERE user_id = ?").await?,
        select_inbox_buckets_desc: p("SELECT bucket FROM {ks}.inbox_buckets WHERE user_id = ? AND bucket >= ? ORDER BY bucket DESC").await?,
        select_inbox_page_desc: p("SELECT cursor, message_id, conversation FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND cursor > ? ORDER BY cursor DESC LIMIT ?").await?,
        note_last: p("UPDATE {ks}.user_conversations USING TIMESTAMP ? SET last_seq = ?, last_message_id = ? WHERE user_id = ? AND conversation = ?").await?,
        note_read: p("UPDATE {ks}.user_conversations USING TIMESTAMP ? SET read_seq = ? WHERE user_id = ? AND conversation = ?").await?,
        select_conversations: p("SELECT conversation, last_seq, last_message_id, read_seq FROM {ks}.user_conversations WHERE user_id = ?").await?,
        select_conversation: p("SELECT last_seq, read_seq FROM {ks}.user_conversations WHERE user_id = ? AND conversation = ?").await?,
        add_inbox_count: p("UPDATE {ks}.inbox_counts SET entry_count = entry_count + ? WHERE user_id = ?").await?,
        select_inbox_count: p("SELECT entry_count FROM {ks}.inbox_counts WHERE user_id = ?").await?,
        select_trim: p("SELECT trimmed_through FROM {ks}.inbox_trims WHERE user_id = ?").await?,
        update_trim: p("UPDATE {ks}.inbox_trims USING TIMESTAMP ? SET trimmed_through = ? WHERE user_id = ?").await?,
        delete_inbox: p("DELETE FROM {ks}.inbox WHERE user_id = ? AND bucket = ? AND cursor = ?").await?,
        delete_inbox_index: p("DELETE FROM {ks}.inbox_index WHERE user_id = ? AND message_id = ?").await?,
        accounts: accounts::prepare(s, keyspace).await?,
    })
}

type MessageRow = (
    Vec<u8>,
    String,
    i64,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
);

/// A history row: message id, seq, then the message's fields (absent in
/// rows written before migration 005).
type HistoryRow = (
    Vec<u8>,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<Vec<u8>>,
    Option<i64>,
);

fn from_row(r: MessageRow) -> StoredMessage {
    StoredMessage {
        message_id: r.0.into(),
        conversation: r.1,
        seq: r.2 as u64,
        sender_user: r.3,
        sender_device: r.4,
        client_msg_id: r.5,
        content_type: r.6,
        body: r.7.into(),
        sent_at_ms: r.8 as u64,
    }
}

fn inbox_message_id(id: &[u8]) -> Result<MessageId, StoreError> {
    MessageId::from_slice(id)
        .ok_or_else(|| StoreError::Corrupt("stored message id is not 16 bytes".into()))
}

fn rows_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("unexpected row shape: {e}"))
}

impl ScyllaStore {
    async fn first<R>(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Option<R>, StoreError>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let result = cql!(what, self.session.execute_unpaged(st, values))?;
        result
            .into_rows_result()
            .map_err(rows_err)?
            .maybe_first_row::<R>()
            .map_err(rows_err)
    }

    async fn all<R>(
        &self,
        what: &str,
        st: &PreparedStatement,
        values: impl scylla::serialize::row::SerializeRow,
    ) -> Result<Vec<R>, StoreError>
    where
        R: for<'f> scylla::deserialize::row::DeserializeRow<'f, 'f>,
    {
        let result = cql!(what, self.session.execute_unpaged(st, values))?;
        let rows = result.into_rows_result().map_err(rows_err)?;
        rows.rows::<R>()
            .map_err(rows_err)?
            .map(|r| r.map_err(rows_err))
            .collect()
    }

    async fn message(&self, id: &[u8]) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self
            .first::<MessageRow>("read message", &self.st.select_message, (id,))
            .await?
            .map(from_row))
    }

    /// Stores one message; messages of one conversation must come one at a
    /// time, in order (the caller guarantees it).
    ///
    /// Write order, and what a replay after a crash between steps does:
    /// 1. body (by id: rewriting it is harmless), and at the same time
    /// 2. history row at `seq`;
    /// 3. conversation head = `seq`;
    /// 4. idempotency key.
    ///
    /// A replay finds no idempotency key (step 4 is last) and recomputes
    /// `seq`: if the head already points at this message (a crash after
    /// step 3), it reuses the head instead of taking the next number.
    async fn put_one(&self, mut m: StoredMessage) -> Result<PutOutcome, StoreError> {
        // Both reads at once: the head is wasted only on a duplicate.
        let (existing, head) = try_join(
            self.first::<(Vec<u8>,)>(
                "read idempotency",
                &self.st.select_idempotency,
                (&m.sender_user, &m.client_msg_id),
            ),
            self.first::<(i64,)>(
                "read conversation head",
                &self.st.select_head,
                (&m.conversation,),
            ),
        )
        .await?;
        if let Some((id,)) = existing {
            let stored = self.message(&id).await?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "idempotency key points at missing message {:?}",
                    MessageId::from_slice(&id)
                ))
            })?;
            return Ok(PutOutcome {
                message: stored,
                duplicate: true,
            });
        }
        let head = head.map_or(0, |(h,)| h as u64);
        let at_head: Option<(Vec<u8>,)> = if head > 0 {
            self.first(
                "read history",
                &self.st.select_history_at,
                (&m.conversation, (head / HISTORY_BUCKET) as i64, head as i64),
            )
            .await?
        } else {
            None
        };
        let seq = if at_head.is_some_and(|(id,)| id == m.message_id[..]) {
            head
        } else {
            head + 1
        };
        m.seq = seq;
        let s = &self.st;
        // Steps 1 and 2 together: a replay rewrites whichever is missing.
        let body = async {
            cql!(
                "write message",
                self.session.execute_unpaged(
                    &s.insert_message,
                    (
                        &m.message_id[..],
                        &m.conversation,
                        seq as i64,
                        &m.sender_user,
                        &m.sender_device,
                        &m.client_msg_id,
                        &m.content_type,
                        &m.body[..],
                        m.sent_at_ms as i64,
                        self.ttl
                    ),
                )
            )
        };
        let history = async {
            cql!(
                "write history",
                self.session.execute_unpaged(
                    &s.insert_history,
                    (
                        &m.conversation,
                        (seq / HISTORY_BUCKET) as i64,
                        seq as i64,
                        &m.message_id[..],
                        &m.sender_user,
                        &m.sender_device,
                        &m.client_msg_id,
                        &m.content_type,
                        &m.body[..],
                        m.sent_at_ms as i64,
                        self.ttl
                    )
                )
            )
        };
        try_join(body, history).await?;
        cql!(
            "write conversation head",
            self.session
                .execute_unpaged(&s.update_head, (seq as i64, &m.conversation))
        )?;
        cql!(
            "write idempotency",
            self.session.execute_unpaged(
                &s.insert_idempotency,
                (
                    &m.sender_user,
                    &m.client_msg_id,
                    &m.message_id[..],
                    self.ttl
                )
            )
        )?;
        Ok(PutOutcome {
            message: m,
            duplicate: false,
        })
    }

    /// Appends one entry; returns its cursor and whether it is new.
    async fn append_one(&self, e: &InboxEntry) -> Result<(u64, bool), StoreError> {
        let id = e.message_id.to_bytes();
        let s = &self.st;
        if let Some((c,)) = self
            .first::<(i64,)>(
                "read inbox index",
                &s.select_inbox_index,
                (&e.user, &id[..]),
            )
            .await?
        {
            return Ok((c as u64, false));
        }
        let bucket = (e.cursor >> INBOX_BUCKET_BITS) as i64;
        // Entry and bucket together; the index, which marks the entry
        // written for a replay, after both.
        let entry = async {
            cql!(
                "write inbox",
                self.session.execute_unpaged(
                    &s.insert_inbox,
                    (
                        &e.user,
                        bucket,
                        e.cursor as i64,
                        &id[..],
                        &e.conversation,
                        self.ttl
                    )
                )
            )
        };
        let listed = async {
            cql!(
                "write inbox bucket",
                self.session
                    .execute_unpaged(&s.insert_inbox_bucket, (&e.user, bucket, self.ttl))
            )
        };
        try_join(entry, listed).await?;
        cql!(
            "write inbox index",
            self.session.execute_unpaged(
                &s.insert_inbox_index,
                (&e.user, &id[..], e.cursor as i64, self.ttl)
            )
        )?;
        Ok((e.cursor, true))
    }

    async fn inbox_head(&self, user: &str) -> Result<u64, StoreError> {
        let Some((bucket,)) = self
            .first::<(i64,)>(
                "read inbox buckets",
                &self.st.select_last_inbox_bucket,
                (user,),
            )
            .await?
        else {
            return Ok(0);
        };
        Ok(self
            .first::<(i64,)>(
                "read inbox head",
                &self.st.select_last_inbox_cursor,
                (user, bucket),
            )
            .await?
            .map_or(0, |(c,)| c as u64))
    }
}

/// Which end of an inbox a scan starts from.
#[derive(Clone, Copy)]
enum Scan {
    OldestFirst,
    NewestFirst,
}

impl ScyllaStore {
    /// Up to `limit` entries of `user`'s inbox after `after`, bucket by
    /// bucket (only buckets that hold entries), from either end.
    async fn scan_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
        from: Scan,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let (buckets_st, page_st) = match from {
            Scan::OldestFirst => (
                &self.st.select_inbox_buckets_from,
                &self.st.select_inbox_page,
            ),
            Scan::NewestFirst => (
                &self.st.select_inbox_buckets_desc,
                &self.st.select_inbox_page_desc,
            ),
        };
        let from_bucket = ((after + 1) >> INBOX_BUCKET_BITS) as i64;
        let buckets: Vec<(i64,)> = self
            .all("read inbox buckets", buckets_st, (user, from_bucket))
            .await?;
        let mut entries = Vec::new();
        for (bucket,) in buckets {
            let want = (limit - entries.len()) as i32;
            let rows: Vec<(i64, Vec<u8>, String)> = self
                .all("read inbox", page_st, (user, bucket, after as i64, want))
                .await?;
            for (cursor, id, conversation) in rows {
                entries.push(InboxEntry {
                    user: user.to_owned(),
                    cursor: cursor as u64,
                    message_id: inbox_message_id(&id)?,
                    conversation,
                });
            }
            if entries.len() >= limit {
                break;
            }
        }
        Ok(entries)
    }

    /// The read mark's write timestamp is its value: a lower mark written
    /// later (a replay, a race between devices) loses to a higher one.
    async fn write_read_seq(
        &self,
        user: &str,
        conversation: &str,
        seq: u64,
    ) -> Result<(), StoreError> {
        cql!(
            "write read mark",
            self.session.execute_unpaged(
                &self.st.note_read,
                (seq as i64, seq as i64, user, conversation)
            )
        )?;
        Ok(())
    }

    /// Writes both rows of each membership, in parallel: the member's row
    /// with join point `joined_after_seq`, except for users in `keep`
    /// (members already, whose row and join point stay as they are), and
    /// the user's index row for every user (rewriting it repairs an add
    /// that stopped between the two rows).
    async fn write_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
        keep: &HashSet<String>,
    ) -> Result<(), StoreError> {
        let s = &self.st;
        try_join_all(users.iter().map(|user| async move {
            if !keep.contains(user) {
                cql!(
                    "write group member",
                    self.session
                        .execute_unpaged(&s.insert_member, (group, user, joined_after_seq as i64))
                )?;
            }
            cql!(
                "write user group",
                self.session
                    .execute_unpaged(&s.insert_user_group, (user, group))
            )
        }))
        .await?;
        Ok(())
    }

    /// Deletes both rows of each membership, in parallel.
    async fn delete_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        let s = &self.st;
        try_join_all(users.iter().map(|user| async move {
            cql!(
                "delete group member",
                self.session
                    .execute_unpaged(&s.delete_member, (group, user))
            )?;
            cql!(
                "delete user group",
                self.session
                    .execute_unpaged(&s.delete_user_group, (user, group))
            )
        }))
        .await?;
        Ok(())
    }

    /// Which of `users` are members of `group`: one slice of the group's
    /// partition per [`MEMBER_LOOKUP`] users, in parallel.
    async fn members_among(
        &self,
        group: &str,
        users: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let found = try_join_all(users.chunks(MEMBER_LOOKUP).map(|chunk| {
            self.all::<(String,)>(
                "read group members",
                &self.st.select_members_among,
                (group, chunk),
            )
        }))
        .await?;
        Ok(found.into_iter().flatten().map(|(u,)| u).collect())
    }
}

#[async_trait]
impl GroupStore for ScyllaStore {
    async fn create_group(&self, group: &Group, members: &[String]) -> Result<(), StoreError> {
        if self.group(&group.id).await?.is_some() {
            return Ok(());
        }
        // Members first, the group row last: a retry after a crash in
        // between finds no group and writes the members again.
        let members = initial_members(&group.owner, members);
        self.write_members(&group.id, &members, 0, &HashSet::new())
            .await?;
        cql!(
            "write group",
            self.session.execute_unpaged(
                &self.st.insert_group,
                (
                    &group.id,
                    &group.name,
                    &group.owner,
                    group.created_at_ms as i64,
                    group.history_open
                )
            )
        )?;
        Ok(())
    }

    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        Ok(self
            .first::<(String, String, i64, Option<bool>)>(
                "read group",
                &self.st.select_group,
                (id,),
            )
            .await?
            .map(|(name, owner, created, history_open)| Group {
                id: id.to_owned(),
                name,
                owner,
                created_at_ms: created as u64,
                // Null in groups made before migration 007: closed.
                history_open: history_open.unwrap_or(false),
            }))
    }

    async fn add_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
    ) -> Result<(), StoreError> {
        // Members already in keep their join point, so only newcomers' rows
        // are written: a plain INSERT would overwrite it. Without a
        // lightweight transaction the read and the writes race: two adds of
        // the same user at once both find them missing and the last write's
        // join point stands (one of the two the callers gave); a remove
        // between an add's read and its writes leaves the user out of the
        // group but (as before 007, where rows were written in either
        // order) may leave their `user_groups` row behind.
        let keep = self.members_among(group, users).await?;
        self.write_members(group, users, joined_after_seq, &keep)
            .await
    }

    async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        self.delete_members(group, users).await
    }

    async fn member_since(&self, group: &str, user: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .first::<(Option<i64>,)>(
                "read group member",
                &self.st.select_member_since,
                (group, user),
            )
            .await?
            // Null in rows from before migration 007: from the start.
            .map(|(seq,)| seq.map_or(0, |s| s.max(0) as u64)))
    }

    async fn members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = limit.clamp(1, i32::MAX as usize) as i32;
        let rows: Vec<(String,)> = self
            .all(
                "read group members",
                &self.st.select_members_page,
                (group, after, limit),
            )
            .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    async fn is_member(&self, group: &str, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .first::<(String,)>("read group member", &self.st.select_member, (group, user))
            .await?
            .is_some())
    }

    async fn member_count(&self, group: &str) -> Result<u64, StoreError> {
        Ok(self
            .first::<(i64,)>("count group members", &self.st.count_members, (group,))
            .await?
            .map_or(0, |(n,)| n as u64))
    }

    async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .all("read user groups", &self.st.select_user_groups, (user,))
            .await?;
        Ok(rows.into_iter().map(|(g,)| g).collect())
    }
}

#[async_trait]
impl MessageStore for ScyllaStore {
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        // Conversations in parallel, each conversation's messages in order.
        let mut by_conversation: Vec<(String, Vec<(usize, StoredMessage)>)> = Vec::new();
        for (i, m) in messages.into_iter().enumerate() {
            match by_conversation
                .iter_mut()
                .find(|(c, _)| *c == m.conversation)
            {
                Some((_, list)) => list.push((i, m)),
                None => by_conversation.push((m.conversation.clone(), vec![(i, m)])),
            }
        }
        let done = try_join_all(by_conversation.into_iter().map(|(_, list)| async move {
            let mut out = Vec::with_capacity(list.len());
            for (i, m) in list {
                out.push((i, self.put_one(m).await?));
            }
            Ok::<_, StoreError>(out)
        }))
        .await?;
        let mut all: Vec<(usize, PutOutcome)> = done.into_iter().flatten().collect();
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, o)| o).collect())
    }

    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError> {
        let found = try_join_all(
            ids.iter()
                .map(|id| async move { self.message(&id.to_bytes()).await }),
        )
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError> {
        // One user's entries in order (a repeat within the batch must see
        // the first), users in parallel.
        let mut by_user: Vec<(&str, Vec<(usize, &InboxEntry)>)> = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match by_user.iter_mut().find(|(u, _)| *u == e.user) {
                Some((_, list)) => list.push((i, e)),
                None => by_user.push((&e.user, vec![(i, e)])),
            }
        }
        let done = try_join_all(by_user.into_iter().map(|(user, list)| async move {
            let mut out = Vec::with_capacity(list.len());
            let mut added = 0i64;
            for (i, e) in list {
                let (cursor, new) = self.append_one(e).await?;
                added += i64::from(new);
                out.push((i, cursor));
            }
            // After the entries: a crash in between undercounts (the
            // replay finds the entries and adds nothing), never overcounts.
            if added > 0 {
                cql!(
                    "count inbox entries",
                    self.session
                        .execute_unpaged(&self.st.add_inbox_count, (Counter(added), user))
                )?;
            }
            Ok::<_, StoreError>(out)
        }))
        .await?;
        let mut all: Vec<(usize, u64)> = done.into_iter().flatten().collect();
        all.sort_by_key(|(i, _)| *i);
        Ok(all.into_iter().map(|(_, c)| c).collect())
    }

    async fn read_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let head = self.inbox_head(user).await?;
        if after >= head || limit == 0 {
            return Ok(InboxPage {
                entries: Vec::new(),
                head,
            });
        }
        let entries = self
            .scan_inbox(user, after, limit, Scan::OldestFirst)
            .await?;
        Ok(InboxPage { entries, head })
    }

    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError> {
        let trimmed = self.trimmed_through(user).await?;
        let count = self
            .first::<(Option<Counter>,)>("read inbox count", &self.st.select_inbox_count, (user,))
            .await?
            .and_then(|(c,)| c)
            .map_or(0, |c| c.0.max(0) as u64);
        let excess = count.saturating_sub(limits.max_entries) as usize;
        // Oldest first, from the trim point (older rows are deleted already).
        // A young entry ends the age trim: entries are in arrival order.
        let mut doomed: Vec<InboxEntry> = Vec::new();
        let mut after = trimmed;
        // Without excess, one entry tells whether the oldest is too old.
        let mut page = if excess > 0 { TRIM_PAGE } else { 1 };
        'scan: while doomed.len() < MAX_TRIM {
            let entries = self
                .scan_inbox(user, after, page, Scan::OldestFirst)
                .await?;
            let Some(last) = entries.last() else { break };
            after = last.cursor;
            let full = entries.len() == page;
            for e in entries {
                if doomed.len() >= excess && e.message_id.time_ms() >= limits.min_time_ms {
                    break 'scan;
                }
                doomed.push(e);
            }
            if !full {
                break;
            }
            page = TRIM_PAGE;
        }
        let Some(last) = doomed.last().map(|e| e.cursor) else {
            return Ok(trimmed);
        };
        for chunk in doomed.chunks(64) {
            try_join_all(chunk.iter().map(|e| async move {
                let bucket = (e.cursor >> INBOX_BUCKET_BITS) as i64;
                let id = e.message_id.to_bytes();
                cql!(
                    "trim inbox",
                    self.session
                        .execute_unpaged(&self.st.delete_inbox, (user, bucket, e.cursor as i64))
                )?;
                cql!(
                    "trim inbox index",
                    self.session
                        .execute_unpaged(&self.st.delete_inbox_index, (user, &id[..]))
                )
            }))
            .await?;
        }
        cql!(
            "count inbox entries",
            self.session.execute_unpaged(
                &self.st.add_inbox_count,
                (Counter(-(doomed.len() as i64)), user)
            )
        )?;
        cql!(
            "write trim point",
            self.session
                .execute_unpaged(&self.st.update_trim, (last as i64, last as i64, user))
        )?;
        Ok(trimmed.max(last))
    }

    async fn expire_messages(&self, _before_ms: u64, _max: usize) -> Result<u64, StoreError> {
        // Every row is written with the retention TTL: CQL expires them.
        Ok(0)
    }

    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError> {
        Ok(self
            .first::<(Option<i64>,)>("read trim point", &self.st.select_trim, (user,))
            .await?
            .and_then(|(t,)| t)
            .unwrap_or(0) as u64)
    }

    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        if after >= i64::MAX as u64 || limit == 0 {
            return Ok(Vec::new());
        }
        self.scan_inbox(user, after, limit, Scan::NewestFirst).await
    }

    async fn note_conversations(&self, notes: Vec<ConversationNote>) -> Result<(), StoreError> {
        // Only the newest note per (user, conversation) needs writing.
        let mut newest: HashMap<(&str, &str), &ConversationNote> = HashMap::new();
        let mut read: HashMap<(&str, &str), u64> = HashMap::new();
        for n in &notes {
            let key = (n.user.as_str(), n.conversation.as_str());
            let slot = newest.entry(key).or_insert(n);
            if n.seq > slot.seq {
                *slot = n;
            }
            if n.sent_by_user {
                let r = read.entry(key).or_default();
                *r = (*r).max(n.seq);
            }
        }
        let last = newest.values().map(|n| {
            let id = n.message_id.to_bytes();
            let (user, conversation) = (n.user.as_str(), n.conversation.as_str());
            async move {
                cql!(
                    "write conversation list",
                    self.session.execute_unpaged(
                        &self.st.note_last,
                        (n.seq as i64, n.seq as i64, &id[..], user, conversation)
                    )
                )
            }
        });
        try_join_all(last).await?;
        try_join_all(
            read.iter()
                .map(|(&(user, conversation), &seq)| self.write_read_seq(user, conversation, seq)),
        )
        .await?;
        Ok(())
    }

    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationState>, StoreError> {
        type Row = (String, Option<i64>, Option<Vec<u8>>, Option<i64>);
        let rows: Vec<Row> = self
            .all(
                "read conversation list",
                &self.st.select_conversations,
                (user,),
            )
            .await?;
        let mut list = Vec::with_capacity(rows.len());
        for (conversation, last_seq, last_id, read_seq) in rows {
            // A row with only a read mark (a large group) has last_seq 0.
            let (last_seq, last_message_id) = match (last_seq, last_id) {
                (Some(seq), Some(id)) => (seq as u64, inbox_message_id(&id)?),
                _ => (0, MessageId(0)),
            };
            list.push(ConversationState {
                conversation,
                last_seq,
                last_message_id,
                read_seq: read_seq.unwrap_or(0) as u64,
            });
        }
        Ok(newest_first(list, limit))
    }

    async fn mark_read(&self, user: &str, conversation: &str, seq: u64) -> Result<u64, StoreError> {
        let (last_seq, read_seq) = self
            .first::<(Option<i64>, Option<i64>)>(
                "read conversation list",
                &self.st.select_conversation,
                (user, conversation),
            )
            .await?
            .map_or((0, 0), |(l, r)| {
                (l.unwrap_or(0) as u64, r.unwrap_or(0) as u64)
            });
        // Large groups skip inboxes: the conversation's own head bounds too.
        let head = self
            .first::<(i64,)>(
                "read conversation head",
                &self.st.select_head,
                (conversation,),
            )
            .await?
            .map_or(0, |(h,)| h as u64);
        let new = read_seq.max(seq.min(last_seq.max(head)));
        if new > read_seq {
            self.write_read_seq(user, conversation, new).await?;
        }
        Ok(new)
    }

    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let before = if before_seq == 0 {
            self.first::<(i64,)>(
                "read conversation head",
                &self.st.select_head,
                (conversation,),
            )
            .await?
            .map_or(0, |(h,)| h as u64)
                + 1
        } else {
            before_seq
        };
        // Rows carry the message (migration 005); older rows only its id.
        let mut rows: Vec<HistoryRow> = Vec::new();
        if before > 1 {
            let mut bucket = ((before - 1) / HISTORY_BUCKET) as i64;
            while rows.len() < limit && bucket >= 0 {
                let want = (limit - rows.len()) as i32;
                let page: Vec<HistoryRow> = self
                    .all(
                        "read history",
                        &self.st.select_history_page,
                        (conversation, bucket, before as i64, want),
                    )
                    .await?;
                rows.extend(page);
                bucket -= 1;
            }
        }
        let found = try_join_all(rows.into_iter().map(|row| async move {
            match row {
                (
                    id,
                    seq,
                    Some(sender_user),
                    sender_device,
                    client_msg_id,
                    content_type,
                    Some(body),
                    sent_at_ms,
                ) => Ok(Some(StoredMessage {
                    message_id: id.into(),
                    conversation: conversation.to_owned(),
                    seq: seq as u64,
                    sender_user,
                    sender_device: sender_device.unwrap_or_default(),
                    client_msg_id: client_msg_id.unwrap_or_default(),
                    content_type: content_type.unwrap_or_default(),
                    body: body.into(),
                    sent_at_ms: sent_at_ms.unwrap_or(0) as u64,
                })),
                (id, ..) => self.message(&id).await,
            }
        }))
        .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        // The pre-006 table too, for devices that last ACKed before it.
        let (now, before) = try_join(
            self.first::<(i64,)>("read cursor", &self.st.select_device_cursor, (user, device)),
            self.first::<(i64,)>("read old cursor", &self.st.select_cursor, (user, device)),
        )
        .await?;
        Ok([now, before]
            .into_iter()
            .flatten()
            .map(|(c,)| c as u64)
            .max()
            .unwrap_or(0))
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), StoreError> {
        // No read: with the cursor as the write's timestamp, the largest
        // cursor written wins, whatever order the writes arrive in.
        cql!(
            "write cursor",
            self.session.execute_unpaged(
                &self.st.write_device_cursor,
                (cursor as i64, cursor as i64, user, device)
            )
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn migration_statements_split_and_drop_comments() {
        let s = super::statements(
            "-- a comment; with a semicolon\nCREATE TABLE a (x int PRIMARY KEY);\n\n-- more\nCREATE TABLE b (y int PRIMARY KEY); ",
        );
        assert_eq!(
            s,
            vec![
                "CREATE TABLE a (x int PRIMARY KEY)",
                "CREATE TABLE b (y int PRIMARY KEY)"
            ]
        );
        assert_eq!(
            super::statements(super::MIGRATIONS[0].2).len(),
            8,
            "one statement per table of 001-init.cql"
        );
    }

    #[test]
    fn migration_tables_get_the_keyspace() {
        assert_eq!(
            super::qualify("CREATE TABLE IF NOT EXISTS inbox (x int)", "ks"),
            "CREATE TABLE IF NOT EXISTS ks.inbox (x int)"
        );
        assert_eq!(
            super::qualify("CREATE TABLE a (x int)", "ks"),
            "CREATE TABLE ks.a (x int)"
        );
        assert_eq!(
            super::qualify("ALTER TABLE history ADD (x int)", "ks"),
            "ALTER TABLE ks.history ADD (x int)"
        );
    }

    #[test]
    fn added_columns_are_read_from_alter_statements() {
        let st = "ALTER TABLE ks.history ADD (\n  sender_user text,\n  body blob\n)";
        assert_eq!(
            super::alter_add_columns(st, "ks"),
            Some((
                "history".to_owned(),
                vec!["sender_user".to_owned(), "body".to_owned()]
            ))
        );
        assert_eq!(
            super::alter_add_columns("CREATE TABLE ks.a (x int)", "ks"),
            None
        );
    }

    #[test]
    fn the_alters_of_007_are_recognised_when_another_process_applied_them() {
        let added: Vec<(String, Vec<String>)> = super::statements(super::MIGRATIONS[6].2)
            .iter()
            .filter_map(|st| super::alter_add_columns(&super::qualify(st, "ks"), "ks"))
            .collect();
        assert_eq!(
            added,
            vec![
                ("group_members".into(), vec!["joined_after_seq".into()]),
                ("groups".into(), vec!["history_open".into()]),
            ]
        );
    }

    #[test]
    fn keyspace_names_are_checked() {
        assert!(super::check_keyspace("tern_test_1").is_ok());
        assert!(super::check_keyspace("tern; DROP").is_err());
        assert!(super::check_keyspace("").is_err());
    }
}
