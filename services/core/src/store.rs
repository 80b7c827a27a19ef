//! The message store boundary: messages (one copy of each body), inboxes of
//! message ids per user, and a cursor per device. ScyllaDB in production,
//! [`crate::embedded::EmbeddedStore`] embedded.

use async_trait::async_trait;

pub use tern_proto::records::StoredMessage;

use crate::ids::MessageId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message store unavailable: {0}")]
    Unavailable(String),
    #[error("message store I/O failed: {0}")]
    Io(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

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

/// Groups live in the same database as messages, so every store keeps them.
#[async_trait]
pub trait MessageStore: crate::groups::GroupStore {
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

    /// Moves the device's cursor forward to `cursor` (never back); returns
    /// the cursor now stored.
    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<u64, StoreError>;
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
    let mut bodies: std::collections::HashMap<Vec<u8>, StoredMessage> = store
        .get_messages(&ids)
        .await?
        .into_iter()
        .map(|m| (m.message_id.to_vec(), m))
        .collect();
    Ok(entries
        .iter()
        .filter_map(|e| {
            let key = e.message_id.to_bytes();
            // The same message can sit at one cursor only, so take it out.
            bodies.remove(&key[..]).map(|m| client_message(m, e.cursor))
        })
        .collect())
}
