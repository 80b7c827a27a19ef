//! Messages and history: one copy of each body, stored once per
//! (sender, client id) with the next seq of its conversation.

use async_trait::async_trait;

use super::{PutOutcome, StoreError, StoredMessage};
use crate::ids::MessageId;

#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// Stores messages, each once per (sender_user, client_msg_id), and gives
    /// each new one the next sequence number of its conversation (ignoring
    /// the `seq` passed in). Returns the stored form of each, in order.
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError>;

    /// Bodies for these ids, in the order asked; unknown ids are left out.
    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError>;

    /// Up to `limit` messages of a conversation with seq < `before_seq`
    /// (0: from the newest), newest first.
    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError>;

    /// Deletes messages made before `before_ms` (bodies, history rows and
    /// idempotency keys), at most `max` per call; returns how many. Inbox
    /// entries pointing at them are skipped from then on. A store that
    /// expires rows by itself (CQL TTLs) does nothing and returns 0.
    async fn expire_messages(&self, before_ms: u64, max: usize) -> Result<u64, StoreError>;
}
