//! Inboxes and cursors: per user, the ids of the messages to deliver, in the
//! order they are delivered, and per device how far it has stored them.

use async_trait::async_trait;

use super::StoreError;
use crate::ids::MessageId;

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

#[async_trait]
pub trait InboxStore: Send + Sync + 'static {
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

    /// Up to `limit` entries of `user`'s inbox after `after`, newest first:
    /// what a device back from a long absence is pushed first.
    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError>;

    /// Deletes the oldest entries of `user`'s inbox past `limits` (beyond
    /// the newest `max_entries`, or with a message older than
    /// `min_time_ms`), and returns the trim point: the highest cursor ever
    /// trimmed (0: none). A device whose cursor is below it lost entries.
    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError>;

    /// The trim point of `user`'s inbox (see [`Self::trim_inbox`]).
    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError>;

    /// The device's cursor: everything up to it is stored on the device.
    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError>;

    /// Moves the device's cursor forward to `cursor`; a cursor below the
    /// one stored changes nothing.
    async fn advance_cursor(&self, user: &str, device: &str, cursor: u64)
    -> Result<(), StoreError>;
}
