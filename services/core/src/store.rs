//! The message store boundary: messages (one copy of each body), inboxes of
//! message ids per user, and a cursor per device. ScyllaDB in production,
//! [`crate::embedded::EmbeddedStore`] embedded.

use async_trait::async_trait;

pub use tern_proto::records::StoredMessage;

use crate::ids::MessageId;

pub use crate::store_error::StoreError;

/// What `put_messages` did with one message.
#[derive(Debug, Clone, PartialEq)]
pub struct PutOutcome {
    /// The message as stored: for a duplicate, the first copy (its id and seq).
    pub message: StoredMessage,
    /// True if (sender, client_msg_id) was already stored.
    pub duplicate: bool,
}

/// One entry of a user's inbox: a reference to a message, not its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboxEntry {
    pub user: String,
    /// Position in the user's inbox; grows with every entry, may skip values.
    pub cursor: u64,
    pub message_id: MessageId,
    pub conversation: String,
}

/// A page of an inbox.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboxPage {
    /// Entries with cursor > the requested one, oldest first.
    pub entries: Vec<InboxEntry>,
    /// Cursor of the newest entry of the inbox (0 if it is empty).
    pub head: u64,
}

/// A message that went into a user's inbox, as the user's conversation list
/// records it (the router writes one per user and conversation it appends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationNote {
    pub user: String,
    pub conversation: String,
    pub seq: u64,
    pub message_id: MessageId,
    /// The user sent it: the conversation is read up to `seq`.
    pub sent_by_user: bool,
}

/// One row of a user's conversation list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationState {
    pub conversation: String,
    /// The newest message the user's inbox got in this conversation.
    pub last_seq: u64,
    pub last_message_id: MessageId,
    /// Every message up to this seq is read (on any of the user's devices).
    pub read_seq: u64,
}

impl ConversationState {
    pub fn unread(&self) -> u64 {
        self.last_seq.saturating_sub(self.read_seq)
    }
}

/// How much of a user's inbox is kept: at most `max_entries` entries, none
/// whose message is older than `min_time_ms` (ms since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxLimits {
    pub max_entries: u64,
    pub min_time_ms: u64,
}

/// Inbox retention as configured: at most `max_entries` entries per user,
/// none older than `max_age` (zero: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InboxRetention {
    pub max_entries: u64,
    pub max_age: std::time::Duration,
}

impl Default for InboxRetention {
    fn default() -> Self {
        InboxRetention {
            max_entries: 100_000,
            max_age: std::time::Duration::from_secs(30 * 86_400),
        }
    }
}

impl InboxRetention {
    /// The limits at `now_ms`.
    pub fn limits_at(&self, now_ms: u64) -> InboxLimits {
        InboxLimits {
            max_entries: if self.max_entries == 0 {
                u64::MAX
            } else {
                self.max_entries
            },
            min_time_ms: if self.max_age.is_zero() {
                0
            } else {
                now_ms.saturating_sub(self.max_age.as_millis() as u64)
            },
        }
    }
}

/// Sorts a user's conversations most recently active first (message ids
/// are UUIDv7, ordered by time) and keeps `limit` of them.
pub fn newest_first(mut list: Vec<ConversationState>, limit: usize) -> Vec<ConversationState> {
    list.sort_by_key(|c| std::cmp::Reverse(c.last_message_id.0));
    list.truncate(limit);
    list
}

/// Groups and per-user safety state (blocks, token revocations) live in the
/// same database as messages, so every store keeps them.
#[async_trait]
pub trait MessageStore: crate::groups::GroupStore + crate::accounts::AccountStore {
    /// Stores messages, each once per (sender_user, client_msg_id), and gives
    /// each new one the next sequence number of its conversation (ignoring
    /// the `seq` passed in). Returns the stored form of each, in order.
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError>;

    /// Bodies for these ids, in the order asked; unknown ids are left out.
    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError>;

    /// Adds entries to inboxes. Replay-safe: an entry whose message is
    /// already in that user's inbox is not added again. Returns the cursor
    /// each message has in its inbox (the existing one for repeats).
    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError>;

    /// Up to `limit` entries of `user`'s inbox after `after`, oldest first.
    async fn read_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError>;

    /// Deletes the oldest entries of `user`'s inbox past `limits` (beyond
    /// the newest `max_entries`, or with a message older than
    /// `min_time_ms`), and returns the trim point: the highest cursor ever
    /// trimmed (0: none). A device whose cursor is below it lost entries.
    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError>;

    /// The trim point of `user`'s inbox (see [`Self::trim_inbox`]).
    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError>;

    /// Deletes messages made before `before_ms` (bodies, history rows and
    /// idempotency keys), at most `max` per call; returns how many. Inbox
    /// entries pointing at them are skipped from then on. A store that
    /// expires rows by itself (CQL TTLs) does nothing and returns 0.
    async fn expire_messages(&self, before_ms: u64, max: usize) -> Result<u64, StoreError>;

    /// Up to `limit` entries of `user`'s inbox after `after`, newest first:
    /// what a device back from a long absence is pushed first.
    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError>;

    /// Records, per user and conversation, the newest message the inbox got
    /// (the highest seq wins, so replays and reordering change nothing) and
    /// moves the read mark to the user's own messages.
    async fn note_conversations(&self, notes: Vec<ConversationNote>) -> Result<(), StoreError>;

    /// Up to `limit` of `user`'s conversations, most recently active first
    /// (message ids are time-ordered). A row with `last_seq` 0 holds only a
    /// read mark (a large group, whose messages skip inboxes).
    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationState>, StoreError>;

    /// Moves `user`'s read mark in `conversation` forward to `seq`, but not
    /// past the newest message there (the newest the user's inbox got, or
    /// the conversation's own newest: a huge `seq` marks everything read).
    /// Returns the read mark now stored (0 for a conversation without
    /// messages).
    async fn mark_read(&self, user: &str, conversation: &str, seq: u64) -> Result<u64, StoreError>;

    /// Up to `limit` messages of a conversation with seq < `before_seq`
    /// (0: from the newest), newest first.
    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// The device's cursor: everything up to it is stored on the device.
    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError>;

    /// Moves the device's cursor forward to `cursor`; a cursor below the
    /// one stored changes nothing.
    async fn advance_cursor(&self, user: &str, device: &str, cursor: u64)
    -> Result<(), StoreError>;
}

/// The client's view of a stored message at `cursor` of an inbox (0 outside one).
pub fn client_message(m: StoredMessage, cursor: u64) -> tern_proto::client::Message {
    tern_proto::client::Message {
        message_id: m.message_id,
        conversation: m.conversation,
        seq: m.seq,
        sender_user: m.sender_user,
        sender_device: m.sender_device,
        content_type: m.content_type,
        body: m.body,
        sent_at_ms: m.sent_at_ms,
        client_msg_id: m.client_msg_id,
        cursor,
    }
}

/// Fetches the bodies of inbox entries in one batch and pairs them with
/// their cursors, oldest first. Entries whose message is gone are skipped.
pub async fn load_entries(
    store: &dyn MessageStore,
    entries: &[InboxEntry],
) -> Result<Vec<tern_proto::client::Message>, StoreError> {
    let ids: Vec<MessageId> = entries.iter().map(|e| e.message_id).collect();
    let mut bodies = bodies_by_id(store, &ids).await?;
    Ok(entries
        .iter()
        .filter_map(|e| {
            let key = e.message_id.to_bytes();
            // The same message can sit at one cursor only, so take it out.
            bodies.remove(&key[..]).map(|m| client_message(m, e.cursor))
        })
        .collect())
}

/// The stored messages with these ids, by id bytes, in one store call.
pub async fn bodies_by_id(
    store: &dyn MessageStore,
    ids: &[MessageId],
) -> Result<std::collections::HashMap<Vec<u8>, StoredMessage>, StoreError> {
    Ok(store
        .get_messages(ids)
        .await?
        .into_iter()
        .map(|m| (m.message_id.to_vec(), m))
        .collect())
}
