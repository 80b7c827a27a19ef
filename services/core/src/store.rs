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

#[async_trait]
pub trait MessageStore: Send + Sync + 'static {
    /// Stores messages, each once per (sender_user, client_msg_id), and gives
    /// each new one the next sequence number of its conversation (ignoring
    /// the `seq` passed in). Returns the stored form of each, in order.
    async fn put_messages(&self, messages: Vec<StoredMessage>) -> Result<Vec<PutOutcome>, StoreError>;

    /// Bodies for these ids, in the order asked; unknown ids are left out.
    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError>;

    /// Adds entries to inboxes. Replay-safe: an entry whose message is
    /// already in that user's inbox is not added again. Returns the cursor
    /// each message has in its inbox (the existing one for repeats).
    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError>;

    /// Up to `limit` entries of `user`'s inbox after `after`, oldest first.
    async fn read_inbox(&self, user: &str, after: u64, limit: usize) -> Result<InboxPage, StoreError>;

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
    async fn advance_cursor(&self, user: &str, device: &str, cursor: u64) -> Result<u64, StoreError>;
}
