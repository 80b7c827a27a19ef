//! [`crate::store::MessageStore`] on a redb file: the tables and the store
//! itself here, and one module per aggregate with its trait's implementation.

mod conversations;
mod groups;
mod history;
mod inbox;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use prost::Message as _;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::io_err;
use crate::ids::MessageId;
use crate::store::{StoreError, StoredMessage};
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
