//! Conversations and read marks: each user's conversation list, with the
//! newest message the user's inbox got in each and how far it is read.

use async_trait::async_trait;

use super::StoreError;
use crate::ids::MessageId;

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

/// Sorts a user's conversations most recently active first (message ids
/// are UUIDv7, ordered by time) and keeps `limit` of them.
pub fn newest_first(mut list: Vec<ConversationState>, limit: usize) -> Vec<ConversationState> {
    list.sort_by_key(|c| std::cmp::Reverse(c.last_message_id.0));
    list.truncate(limit);
    list
}

#[async_trait]
pub trait ConversationStore: Send + Sync + 'static {
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
}
