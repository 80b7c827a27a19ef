//! [`MessageStore`] on a redb file.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use async_trait::async_trait;
use prost::Message as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::io_err;
use crate::groups::{Group, GroupStore, initial_members};
use crate::ids::MessageId;
use crate::store::{
    ConversationNote, ConversationState, InboxEntry, InboxLimits, InboxPage, MessageStore,
    PutOutcome, StoreError, StoredMessage, newest_first,
};
use crate::sync;

/// message id → encoded `StoredMessage` (the one copy of the body).
const MESSAGES: TableDefinition<u128, &[u8]> = TableDefinition::new("messages");
/// (sender, client_msg_id) → message id: makes sends idempotent.
const IDEMPOTENCY: TableDefinition<(&str, &str), u128> = TableDefinition::new("idempotency");
/// conversation → last seq given out.
const CONVERSATION_HEADS: TableDefinition<&str, u64> = TableDefinition::new("conversation_heads");
/// (conversation, seq) → message id: history pages.
const HISTORY: TableDefinition<(&str, u64), u128> = TableDefinition::new("history");
/// (user, cursor) → (message id, conversation): the inbox.
const INBOX: TableDefinition<(&str, u64), (u128, &str)> = TableDefinition::new("inbox");
/// (user, message id) → cursor: keeps replays from adding an entry twice.
const INBOX_INDEX: TableDefinition<(&str, u128), u64> = TableDefinition::new("inbox_index");
/// (user, device) → cursor acknowledged by the device.
const CURSORS: TableDefinition<(&str, &str), u64> = TableDefinition::new("cursors");
/// group id → (name, owner, created_at_ms).
const GROUPS: TableDefinition<&str, (&str, &str, u64)> = TableDefinition::new("groups");
/// (group id, user) → (): the members, in id order.
const GROUP_MEMBERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("group_members");
/// (user, group id) → (): the groups of a user.
const USER_GROUPS: TableDefinition<(&str, &str), ()> = TableDefinition::new("user_groups");
/// (group id, user) → the group's seq when the member joined, for members
/// added after the group was made (absent: 0, from the start). A table of
/// its own so that stores made before it keep their `group_members`.
const GROUP_JOINS: TableDefinition<(&str, &str), u64> = TableDefinition::new("group_joins");
/// Groups whose history is open to members who join later (absent: closed).
const OPEN_HISTORY_GROUPS: TableDefinition<&str, ()> = TableDefinition::new("open_history_groups");
/// user → entries in their inbox (kept with the inbox, for the count bound).
const INBOX_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("inbox_counts");
/// user → highest inbox cursor trimmed by retention.
const INBOX_TRIMS: TableDefinition<&str, u64> = TableDefinition::new("inbox_trims");
/// Most entries one trim deletes (one transaction); the rest go next time.
const MAX_TRIM: usize = 100_000;
/// (user, conversation) → (last seq, last message id, read seq): the
/// conversation list.
const USER_CONVERSATIONS: TableDefinition<(&str, &str), (u64, u128, u64)> =
    TableDefinition::new("user_conversations");

/// How often ACKed cursors are written, coalesced, in one transaction.
const CURSOR_FLUSH_EVERY: Duration = Duration::from_millis(20);

/// Cursors ACKed since the last flush: (user, device) → cursor.
type PendingCursors = Mutex<HashMap<(String, String), u64>>;

/// The embedded message store: one redb file.
///
/// Writes that must be durable (messages, inbox entries) run on the
/// blocking pool, one fsync'd transaction per call (callers batch). Reads
/// run inline: they are served from redb's page cache in microseconds, and
/// a hop to another thread per read cost more than the read (profiled).
/// Device cursors, one per ACK, are coalesced in memory and written every
/// `CURSOR_FLUSH_EVERY` by a background thread without an fsync of their
/// own (they become durable with the next message write): a cursor lost in
/// a crash only means the device is pushed those messages again, which a
/// client that remembers what it stored drops by message id or cursor.
#[derive(Clone)]
pub struct EmbeddedStore {
    pub(super) db: Arc<Database>,
    cursors: Arc<PendingCursors>,
    /// Dropped with the last clone of the store: stops the flusher, which
    /// first writes what is pending, durably.
    _flusher: Arc<Flusher>,
}

struct Flusher {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Flusher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            // Joined so that the file is closed when the store is dropped.
            let _ = t.join();
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store at `path`, with a page cache of
    /// `cache_bytes` (redb's default of 1 GiB is too much for small installs).
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(|e| StoreError::Io(format!("cannot open store {}: {e}", path.display())))?;
        // Create every table up front so read transactions never miss one.
        let tx = db.begin_write().map_err(io)?;
        {
            tx.open_table(MESSAGES).map_err(io)?;
            tx.open_table(IDEMPOTENCY).map_err(io)?;
            tx.open_table(CONVERSATION_HEADS).map_err(io)?;
            tx.open_table(HISTORY).map_err(io)?;
            tx.open_table(INBOX).map_err(io)?;
            tx.open_table(INBOX_INDEX).map_err(io)?;
            tx.open_table(CURSORS).map_err(io)?;
            tx.open_table(GROUPS).map_err(io)?;
            tx.open_table(GROUP_MEMBERS).map_err(io)?;
            tx.open_table(USER_GROUPS).map_err(io)?;
            tx.open_table(USER_CONVERSATIONS).map_err(io)?;
            tx.open_table(INBOX_COUNTS).map_err(io)?;
            tx.open_table(INBOX_TRIMS).map_err(io)?;
            tx.open_table(GROUP_JOINS).map_err(io)?;
            tx.open_table(OPEN_HISTORY_GROUPS).map_err(io)?;
            super::accounts::create_tables(&tx)?;
        }
        tx.commit().map_err(io)?;
        let db = Arc::new(db);
        let cursors: Arc<PendingCursors> = Arc::default();
        let (stop, stopped) = mpsc::channel();
        let (flush_db, flush_cursors) = (db.clone(), cursors.clone());
        let thread = std::thread::Builder::new()
            .name("tern-cursor-flush".into())
            .spawn(move || flush_cursors_loop(&flush_db, &flush_cursors, &stopped))
            .map_err(io)?;
        let flusher = Flusher {
            stop: Some(stop),
            thread: Some(thread),
        };
        Ok(EmbeddedStore {
            db,
            cursors,
            _flusher: Arc::new(flusher),
        })
    }

    fn stored_cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let t = tx.open_table(CURSORS).map_err(io)?;
        Ok(t.get((user, device))
            .map_err(io)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    /// Runs blocking redb work off the async threads.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }
}

fn flush_cursors_loop(db: &Database, pending: &PendingCursors, stop: &mpsc::Receiver<()>) {
    loop {
        let last = matches!(
            stop.recv_timeout(CURSOR_FLUSH_EVERY),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        // A copy: entries stay visible to `cursor()` until they are written.
        let batch = sync::lock(pending).clone();
        if !batch.is_empty() {
            let durability = if last {
                Durability::Immediate
            } else {
                Durability::None
            };
            match write_cursors(db, &batch, durability) {
                Ok(()) => {
                    // Forget what was written, unless it moved on meanwhile.
                    let mut map = sync::lock(pending);
                    for (key, written) in batch {
                        if map.get(&key) == Some(&written) {
                            map.remove(&key);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, cursors = batch.len(), "cursors not saved yet; retrying")
                }
            }
        }
        if last {
            return;
        }
    }
}

fn write_cursors(
    db: &Database,
    batch: &HashMap<(String, String), u64>,
    durability: Durability,
) -> Result<(), StoreError> {
    let mut tx = db.begin_write().map_err(io)?;
    tx.set_durability(durability).map_err(io)?;
    {
        let mut t = tx.open_table(CURSORS).map_err(io)?;
        for ((user, device), cursor) in batch {
            let key = (user.as_str(), device.as_str());
            let old = t.get(key).map_err(io)?.map(|v| v.value()).unwrap_or(0);
            if *cursor > old {
                t.insert(key, *cursor).map_err(io)?;
            }
        }
    }
    tx.commit().map_err(io)
}

pub(super) fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(io_err(e))
}

fn decode(bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    StoredMessage::decode(bytes).map_err(|e| StoreError::Corrupt(format!("message record: {e}")))
}

fn message_id(m: &StoredMessage) -> Result<MessageId, StoreError> {
    MessageId::from_slice(&m.message_id)
        .ok_or_else(|| StoreError::Corrupt("message id is not 16 bytes".into()))
}

/// Adds members who joined after `joined_after_seq` (Some) or removes
/// members (None) of `group`, in one durable transaction.
fn change_members(
    db: &Database,
    group: &str,
    users: &[String],
    joined_after_seq: Option<u64>,
) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(io)?;
    {
        let mut members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        let mut by_user = tx.open_table(USER_GROUPS).map_err(io)?;
        let mut joins = tx.open_table(GROUP_JOINS).map_err(io)?;
        for user in users {
            let key = (group, user.as_str());
            match joined_after_seq {
                // A member already in keeps the join point they have.
                Some(seq) => {
                    if members.insert(key, ()).map_err(io)?.is_none() && seq > 0 {
                        joins.insert(key, seq).map_err(io)?;
                    }
                    by_user.insert((user.as_str(), group), ()).map_err(io)?;
                }
                None => {
                    members.remove(key).map_err(io)?;
                    joins.remove(key).map_err(io)?;
                    by_user.remove((user.as_str(), group)).map_err(io)?;
                }
            }
        }
    }
    tx.commit().map_err(io)
}

#[async_trait]
impl GroupStore for EmbeddedStore {
    async fn create_group(&self, group: &Group, members: &[String]) -> Result<(), StoreError> {
        let group = group.clone();
        let members = initial_members(&group.owner, members);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut groups = tx.open_table(GROUPS).map_err(io)?;
                if groups.get(group.id.as_str()).map_err(io)?.is_some() {
                    return Ok(());
                }
                groups
                    .insert(
                        group.id.as_str(),
                        (
                            group.name.as_str(),
                            group.owner.as_str(),
                            group.created_at_ms,
                        ),
                    )
                    .map_err(io)?;
                if group.history_open {
                    let mut open = tx.open_table(OPEN_HISTORY_GROUPS).map_err(io)?;
                    open.insert(group.id.as_str(), ()).map_err(io)?;
                }
                let mut by_group = tx.open_table(GROUP_MEMBERS).map_err(io)?;
                let mut by_user = tx.open_table(USER_GROUPS).map_err(io)?;
                for user in &members {
                    by_group
                        .insert((group.id.as_str(), user.as_str()), ())
                        .map_err(io)?;
                    by_user
                        .insert((user.as_str(), group.id.as_str()), ())
                        .map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let groups = tx.open_table(GROUPS).map_err(io)?;
        let history_open = tx
            .open_table(OPEN_HISTORY_GROUPS)
            .map_err(io)?
            .get(id)
            .map_err(io)?
            .is_some();
        Ok(groups.get(id).map_err(io)?.map(|v| {
            let (name, owner, created_at_ms) = v.value();
            Group {
                id: id.to_owned(),
                name: name.to_owned(),
                owner: owner.to_owned(),
                created_at_ms,
                history_open,
            }
        }))
    }

    async fn add_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
    ) -> Result<(), StoreError> {
        let (group, users) = (group.to_owned(), users.to_vec());
        self.blocking(move |db| change_members(db, &group, &users, Some(joined_after_seq)))
            .await
    }

    async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        let (group, users) = (group.to_owned(), users.to_vec());
        self.blocking(move |db| change_members(db, &group, &users, None))
            .await
    }

    async fn member_since(&self, group: &str, user: &str) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        if members.get((group, user)).map_err(io)?.is_none() {
            return Ok(None);
        }
        let joins = tx.open_table(GROUP_JOINS).map_err(io)?;
        Ok(Some(
            joins
                .get((group, user))
                .map_err(io)?
                .map_or(0, |v| v.value()),
        ))
    }

    async fn members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        let mut out = Vec::new();
        for row in members.range((group, after)..).map_err(io)? {
            let (key, _) = row.map_err(io)?;
            let (g, user) = key.value();
            if g != group || out.len() >= limit {
                break;
            }
            if user != after {
                out.push(user.to_owned());
            }
        }
        Ok(out)
    }

    async fn is_member(&self, group: &str, user: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        Ok(members.get((group, user)).map_err(io)?.is_some())
    }

    async fn member_count(&self, group: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        let mut n = 0;
        for row in members.range((group, "")..).map_err(io)? {
            if row.map_err(io)?.0.value().0 != group {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let by_user = tx.open_table(USER_GROUPS).map_err(io)?;
        let mut out = Vec::new();
        for row in by_user.range((user, "")..).map_err(io)? {
            let (key, _) = row.map_err(io)?;
            let (u, group) = key.value();
            if u != user {
                break;
            }
            out.push(group.to_owned());
        }
        Ok(out)
    }
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut out = Vec::with_capacity(messages.len());
            {
                let mut bodies = tx.open_table(MESSAGES).map_err(io)?;
                let mut idem = tx.open_table(IDEMPOTENCY).map_err(io)?;
                let mut heads = tx.open_table(CONVERSATION_HEADS).map_err(io)?;
                let mut history = tx.open_table(HISTORY).map_err(io)?;
                for mut m in messages {
                    let existing = idem
                        .get((m.sender_user.as_str(), m.client_msg_id.as_str()))
                        .map_err(io)?
                        .map(|v| v.value());
                    if let Some(id) = existing {
                        let stored = bodies.get(id).map_err(io)?.ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "idempotency key points at missing message {}",
                                MessageId(id)
                            ))
                        })?;
                        out.push(PutOutcome {
                            message: decode(stored.value())?,
                            duplicate: true,
                        });
                        continue;
                    }
                    let id = message_id(&m)?.0;
                    let seq = heads
                        .get(m.conversation.as_str())
                        .map_err(io)?
                        .map(|v| v.value())
                        .unwrap_or(0)
                        + 1;
                    m.seq = seq;
                    heads.insert(m.conversation.as_str(), seq).map_err(io)?;
                    history
                        .insert((m.conversation.as_str(), seq), id)
                        .map_err(io)?;
                    idem.insert((m.sender_user.as_str(), m.client_msg_id.as_str()), id)
                        .map_err(io)?;
                    bodies
                        .insert(id, m.encode_to_vec().as_slice())
                        .map_err(io)?;
                    out.push(PutOutcome {
                        message: m,
                        duplicate: false,
                    });
                }
            }
            tx.commit().map_err(io)?;
            Ok(out)
        })
        .await
    }

    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError> {
        let db = &*self.db;
        let tx = db.begin_read().map_err(io)?;
        let bodies = tx.open_table(MESSAGES).map_err(io)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = bodies.get(id.0).map_err(io)? {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut cursors = Vec::with_capacity(entries.len());
            {
                let mut inbox = tx.open_table(INBOX).map_err(io)?;
                let mut index = tx.open_table(INBOX_INDEX).map_err(io)?;
                let mut added: HashMap<&str, u64> = HashMap::new();
                for e in &entries {
                    let key = (e.user.as_str(), e.message_id.0);
                    if let Some(existing) = index.get(key).map_err(io)? {
                        cursors.push(existing.value());
                        continue;
                    }
                    index.insert(key, e.cursor).map_err(io)?;
                    inbox
                        .insert(
                            (e.user.as_str(), e.cursor),
                            (e.message_id.0, e.conversation.as_str()),
                        )
                        .map_err(io)?;
                    cursors.push(e.cursor);
                    *added.entry(e.user.as_str()).or_default() += 1;
                }
                let mut counts = tx.open_table(INBOX_COUNTS).map_err(io)?;
                for (user, n) in added {
                    let old = counts.get(user).map_err(io)?.map_or(0, |v| v.value());
                    counts.insert(user, old + n).map_err(io)?;
                }
            }
            tx.commit().map_err(io)?;
            Ok(cursors)
        })
        .await
    }

    async fn read_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let user = user.to_owned();
        let db = &*self.db;
        let tx = db.begin_read().map_err(io)?;
        let inbox = tx.open_table(INBOX).map_err(io)?;
        let head = inbox
            .range((user.as_str(), 0)..=(user.as_str(), u64::MAX))
            .map_err(io)?
            .next_back()
            .transpose()
            .map_err(io)?
            .map(|(k, _)| k.value().1)
            .unwrap_or(0);
        let mut entries = Vec::new();
        if after < u64::MAX {
            for row in inbox
                .range((user.as_str(), after + 1)..=(user.as_str(), u64::MAX))
                .map_err(io)?
                .take(limit)
            {
                let (k, v) = row.map_err(io)?;
                let (id, conversation) = v.value();
                entries.push(InboxEntry {
                    user: user.clone(),
                    cursor: k.value().1,
                    message_id: MessageId(id),
                    conversation: conversation.to_owned(),
                });
            }
        }
        Ok(InboxPage { entries, head })
    }

    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError> {
        // Most calls find nothing to trim: decide that without a write.
        {
            let tx = self.db.begin_read().map_err(io)?;
            let count = tx
                .open_table(INBOX_COUNTS)
                .map_err(io)?
                .get(user)
                .map_err(io)?
                .map_or(0, |v| v.value());
            let inbox = tx.open_table(INBOX).map_err(io)?;
            let oldest = inbox
                .range((user, 0)..=(user, u64::MAX))
                .map_err(io)?
                .next()
                .transpose()
                .map_err(io)?
                .map(|(_, v)| MessageId(v.value().0).time_ms());
            if count <= limits.max_entries && oldest.is_none_or(|t| t >= limits.min_time_ms) {
                return self.trimmed_through(user).await;
            }
        }
        let user = user.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let trimmed = {
                let mut inbox = tx.open_table(INBOX).map_err(io)?;
                let mut index = tx.open_table(INBOX_INDEX).map_err(io)?;
                let mut counts = tx.open_table(INBOX_COUNTS).map_err(io)?;
                let mut trims = tx.open_table(INBOX_TRIMS).map_err(io)?;
                let count = counts
                    .get(user.as_str())
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let mut trimmed = trims
                    .get(user.as_str())
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let excess = count.saturating_sub(limits.max_entries);
                // Oldest first: past the count bound, or too old. Entries
                // are in arrival order, so the first young one ends it.
                let mut doomed: Vec<(u64, u128)> = Vec::new();
                for row in inbox
                    .range((user.as_str(), 0)..=(user.as_str(), u64::MAX))
                    .map_err(io)?
                {
                    let (k, v) = row.map_err(io)?;
                    let id = v.value().0;
                    let too_many = (doomed.len() as u64) < excess;
                    if !(too_many || MessageId(id).time_ms() < limits.min_time_ms)
                        || doomed.len() >= MAX_TRIM
                    {
                        break;
                    }
                    doomed.push((k.value().1, id));
                }
                for (cursor, id) in &doomed {
                    inbox.remove((user.as_str(), *cursor)).map_err(io)?;
                    index.remove((user.as_str(), *id)).map_err(io)?;
                }
                if let Some((last, _)) = doomed.last() {
                    counts
                        .insert(user.as_str(), count.saturating_sub(doomed.len() as u64))
                        .map_err(io)?;
                    trimmed = trimmed.max(*last);
                    trims.insert(user.as_str(), trimmed).map_err(io)?;
                }
                trimmed
            };
            tx.commit().map_err(io)?;
            Ok(trimmed)
        })
        .await
    }

    async fn expire_messages(&self, before_ms: u64, max: usize) -> Result<u64, StoreError> {
        // Message ids are UUIDv7: the messages table is in time order, and
        // everything made before `before_ms` sorts below this id.
        let below = (before_ms as u128) << 80;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut expired = 0;
            {
                let mut messages = tx.open_table(MESSAGES).map_err(io)?;
                let mut history = tx.open_table(HISTORY).map_err(io)?;
                let mut idempotency = tx.open_table(IDEMPOTENCY).map_err(io)?;
                let mut doomed = Vec::new();
                for row in messages.range(..below).map_err(io)?.take(max) {
                    let (k, v) = row.map_err(io)?;
                    doomed.push((k.value(), decode(v.value())?));
                }
                for (id, m) in doomed {
                    history
                        .remove((m.conversation.as_str(), m.seq))
                        .map_err(io)?;
                    let key = (m.sender_user.as_str(), m.client_msg_id.as_str());
                    if idempotency.get(key).map_err(io)?.map(|v| v.value()) == Some(id) {
                        idempotency.remove(key).map_err(io)?;
                    }
                    messages.remove(id).map_err(io)?;
                    expired += 1;
                }
            }
            tx.commit().map_err(io)?;
            Ok(expired)
        })
        .await
    }

    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        Ok(tx
            .open_table(INBOX_TRIMS)
            .map_err(io)?
            .get(user)
            .map_err(io)?
            .map_or(0, |v| v.value()))
    }

    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let inbox = tx.open_table(INBOX).map_err(io)?;
        let mut entries = Vec::new();
        if after == u64::MAX {
            return Ok(entries);
        }
        for row in inbox
            .range((user, after + 1)..=(user, u64::MAX))
            .map_err(io)?
            .rev()
            .take(limit)
        {
            let (k, v) = row.map_err(io)?;
            let (id, conversation) = v.value();
            entries.push(InboxEntry {
                user: user.to_owned(),
                cursor: k.value().1,
                message_id: MessageId(id),
                conversation: conversation.to_owned(),
            });
        }
        Ok(entries)
    }

    async fn note_conversations(&self, notes: Vec<ConversationNote>) -> Result<(), StoreError> {
        if notes.is_empty() {
            return Ok(());
        }
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut table = tx.open_table(USER_CONVERSATIONS).map_err(io)?;
                for n in notes {
                    let key = (n.user.as_str(), n.conversation.as_str());
                    let (mut last_seq, mut last_id, mut read_seq) =
                        table.get(key).map_err(io)?.map_or((0, 0, 0), |v| v.value());
                    if n.seq > last_seq {
                        (last_seq, last_id) = (n.seq, n.message_id.0);
                    }
                    if n.sent_by_user {
                        read_seq = read_seq.max(n.seq);
                    }
                    table
                        .insert(key, (last_seq, last_id, read_seq))
                        .map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationState>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(USER_CONVERSATIONS).map_err(io)?;
        let mut out = Vec::new();
        for row in table.range((user, "")..).map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let (row_user, conversation) = k.value();
            if row_user != user {
                break;
            }
            let (last_seq, last_id, read_seq) = v.value();
            out.push(ConversationState {
                conversation: conversation.to_owned(),
                last_seq,
                last_message_id: MessageId(last_id),
                read_seq,
            });
        }
        Ok(newest_first(out, limit))
    }

    async fn mark_read(&self, user: &str, conversation: &str, seq: u64) -> Result<u64, StoreError> {
        let (user, conversation) = (user.to_owned(), conversation.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let read_seq = {
                // The bound: the newest message the user got, or the
                // conversation's own newest (large groups skip inboxes).
                let head = tx
                    .open_table(CONVERSATION_HEADS)
                    .map_err(io)?
                    .get(conversation.as_str())
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let mut table = tx.open_table(USER_CONVERSATIONS).map_err(io)?;
                let key = (user.as_str(), conversation.as_str());
                let (last_seq, last_id, read_seq) =
                    table.get(key).map_err(io)?.map_or((0, 0, 0), |v| v.value());
                let new = read_seq.max(seq.min(last_seq.max(head)));
                if new != read_seq {
                    table.insert(key, (last_seq, last_id, new)).map_err(io)?;
                }
                new
            };
            tx.commit().map_err(io)?;
            Ok(read_seq)
        })
        .await
    }

    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conversation = conversation.to_owned();
        let db = &*self.db;
        let tx = db.begin_read().map_err(io)?;
        let history = tx.open_table(HISTORY).map_err(io)?;
        let bodies = tx.open_table(MESSAGES).map_err(io)?;
        let end = if before_seq == 0 {
            u64::MAX
        } else {
            before_seq
        };
        let mut out = Vec::new();
        for row in history
            .range((conversation.as_str(), 0)..(conversation.as_str(), end))
            .map_err(io)?
            .rev()
            .take(limit)
        {
            let (_, id) = row.map_err(io)?;
            if let Some(v) = bodies.get(id.value()).map_err(io)? {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        let pending = sync::lock(&self.cursors)
            .get(&(user.to_owned(), device.to_owned()))
            .copied();
        Ok(pending.unwrap_or(0).max(self.stored_cursor(user, device)?))
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), StoreError> {
        let stored = self.stored_cursor(user, device)?;
        let mut pending = sync::lock(&self.cursors);
        let entry = pending
            .entry((user.to_owned(), device.to_owned()))
            .or_insert(stored);
        *entry = (*entry).max(cursor).max(stored);
        Ok(())
    }
}
