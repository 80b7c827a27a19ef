//! [`MessageStore`] on a redb file.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::io_err;
use crate::ids::MessageId;
use crate::store::{InboxEntry, InboxPage, MessageStore, PutOutcome, StoreError, StoredMessage};

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

/// The embedded message store: one redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
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
        }
        tx.commit().map_err(io)?;
        Ok(EmbeddedStore { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(io_err(e))
}

fn decode(bytes: &[u8]) -> Result<StoredMessage, StoreError> {
    StoredMessage::decode(bytes).map_err(|e| StoreError::Corrupt(format!("message record: {e}")))
}

fn message_id(m: &StoredMessage) -> Result<MessageId, StoreError> {
    MessageId::from_slice(&m.message_id)
        .ok_or_else(|| StoreError::Corrupt("message id is not 16 bytes".into()))
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
        let ids = ids.to_vec();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let bodies = tx.open_table(MESSAGES).map_err(io)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(v) = bodies.get(id.0).map_err(io)? {
                    out.push(decode(v.value())?);
                }
            }
            Ok(out)
        })
        .await
    }

    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut cursors = Vec::with_capacity(entries.len());
            {
                let mut inbox = tx.open_table(INBOX).map_err(io)?;
                let mut index = tx.open_table(INBOX_INDEX).map_err(io)?;
                for e in entries {
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
        self.blocking(move |db| {
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
        self.blocking(move |db| {
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
        })
        .await
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(CURSORS).map_err(io)?;
            Ok(t.get((user.as_str(), device.as_str()))
                .map_err(io)?
                .map(|v| v.value())
                .unwrap_or(0))
        })
        .await
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<u64, StoreError> {
        let (user, device) = (user.to_owned(), device.to_owned());
        self.blocking(move |db| {
            let mut tx = db.begin_write().map_err(io)?;
            // A lost cursor update only means a re-push the device drops as a
            // duplicate, so cursors do not pay an fsync each: they become
            // durable with the next durable commit (the next stored message).
            tx.set_durability(Durability::None).map_err(io)?;
            let now = {
                let mut t = tx.open_table(CURSORS).map_err(io)?;
                let old = t
                    .get((user.as_str(), device.as_str()))
                    .map_err(io)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                let now = old.max(cursor);
                if now != old {
                    t.insert((user.as_str(), device.as_str()), now)
                        .map_err(io)?;
                }
                now
            };
            tx.commit().map_err(io)?;
            Ok(now)
        })
        .await
    }
}
