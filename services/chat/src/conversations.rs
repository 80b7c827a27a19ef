//! A page of a user's conversation list, for the wire and the API alike:
//! most recently active first, bounded by count and bytes (each entry
//! carries the conversation's newest message, up to the body limit).

use tern_core::ids::MessageId;
use tern_core::proto::client::ConversationSummary;
use tern_core::store::{MessageStore, conversation_summaries};

use crate::{ChatError, Refusal};

/// One page of the list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationSummary>,
    /// Where the next page starts (the newest message id of the last
    /// conversation here); empty when this is the last page.
    pub next: Vec<u8>,
}

/// Up to `limit` of `user`'s conversations after the page that ended at
/// `before` (empty: from the most recent), within `max_bytes`.
pub async fn conversation_page(
    store: &dyn MessageStore,
    user: &str,
    before: &[u8],
    limit: usize,
    max_bytes: usize,
) -> Result<ConversationPage, ChatError> {
    let before = match before {
        [] => None,
        bytes => Some(MessageId::from_slice(bytes).ok_or_else(|| {
            Refusal::invalid("`before` is not a page position this server handed out")
        })?),
    };
    // One extra tells whether there is a next page.
    let mut conversations = conversation_summaries(store, user, before, limit + 1).await?;
    let mut more = conversations.len() > limit;
    conversations.truncate(limit);
    let total = conversations.len();
    conversations = crate::pages::fitting_prefix(conversations, max_bytes);
    more |= conversations.len() < total;
    let next = match conversations.last().and_then(|c| c.last_message.as_ref()) {
        Some(m) if more => m.message_id.to_vec(),
        _ => Vec::new(),
    };
    Ok(ConversationPage {
        conversations,
        next,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::embedded::EmbeddedStore;
    use tern_core::store::{ConversationNote, StoredMessage};

    #[tokio::test]
    async fn pages_cover_every_conversation_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        let mut notes = Vec::new();
        for i in 0..7 {
            let conversation = format!("d:alice:u{i}");
            let m = StoredMessage {
                message_id: MessageId::new().to_vec(),
                conversation: conversation.clone(),
                sender_user: format!("u{i}"),
                client_msg_id: format!("c{i}"),
                body: vec![b'x'; 300].into(),
                ..Default::default()
            };
            let stored = store.put_messages(vec![m]).await.unwrap().remove(0).message;
            notes.push(ConversationNote {
                user: "alice".into(),
                conversation,
                seq: stored.seq,
                message_id: MessageId::from_slice(&stored.message_id).unwrap(),
                sent_by_user: false,
            });
        }
        store.note_conversations(notes).await.unwrap();
        let mut seen = Vec::new();
        let mut before = Vec::new();
        loop {
            let page = conversation_page(&store, "alice", &before, 3, 1000)
                .await
                .unwrap();
            assert!(!page.conversations.is_empty() && page.conversations.len() <= 3);
            seen.extend(page.conversations.iter().map(|c| c.conversation.clone()));
            if page.next.is_empty() {
                break;
            }
            before = page.next;
        }
        let expected: Vec<String> = (0..7).rev().map(|i| format!("d:alice:u{i}")).collect();
        assert_eq!(
            seen, expected,
            "newest first, each once, bytes bounding pages too"
        );
        let refused = conversation_page(&store, "alice", b"xx", 3, 1000)
            .await
            .unwrap_err();
        assert!(matches!(refused, ChatError::Refused(_)));
    }
}
