//! The message store boundary, one narrow trait per aggregate:
//! - [`HistoryStore`]: messages (one copy of each body) and each
//!   conversation's history;
//! - [`InboxStore`]: inboxes of message ids per user, and a cursor per device;
//! - [`ConversationStore`]: each user's conversation list and read marks;
//! - [`GroupStore`] and [`AccountStore`] (groups; blocks and revocations).
//!
//! [`MessageStore`] is all of them: ScyllaDB in production,
//! [`crate::embedded::EmbeddedStore`] embedded.

mod conversations;
mod history;
mod inbox;

pub use conversations::{ConversationNote, ConversationState, ConversationStore, newest_first};
pub use history::HistoryStore;
pub use inbox::{InboxEntry, InboxLimits, InboxPage, InboxRetention, InboxStore};

pub use crate::accounts::AccountStore;
pub use crate::groups::GroupStore;

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

/// The whole message database, as the services hold it: every narrow trait
/// below, kept by one backend (ScyllaDB, or redb embedded). A service that
/// needs only part of it can take the narrow trait instead. Groups and
/// per-user safety state (blocks, token revocations) live in the same
/// database as messages, so every store keeps them.
pub trait MessageStore:
    HistoryStore + InboxStore + ConversationStore + GroupStore + AccountStore
{
}

impl<T> MessageStore for T where
    T: HistoryStore + InboxStore + ConversationStore + GroupStore + AccountStore
{
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
    store: &dyn HistoryStore,
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
    store: &dyn HistoryStore,
    ids: &[MessageId],
) -> Result<std::collections::HashMap<Vec<u8>, StoredMessage>, StoreError> {
    Ok(store
        .get_messages(ids)
        .await?
        .into_iter()
        .map(|m| (m.message_id.to_vec(), m))
        .collect())
}
