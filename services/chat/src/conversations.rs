//! A page of a user's conversation list, for the wire and the API alike:
//! most recently active first, bounded by count and bytes (each entry
//! carries the conversation's newest message, up to the body limit).

use tern_core::ids::{Conversation, MessageId};
use tern_core::proto::client::ConversationSummary;
use tern_core::store::{
    ConversationState, MessageStore, StoreError, bodies_by_id, client_message, newest_first,
};

use crate::access::{Actor, read_access};
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
    let mut states = conversation_states(store, user, before, limit + 1).await?;
    let mut more = states.len() > limit;
    states.truncate(limit);
    // Each entry carries its newest message: bodies a chunk at a time, up
    // to the byte bound (a list of large last messages does not load its
    // whole count first).
    let (mut conversations, mut bytes) = (Vec::with_capacity(states.len()), 0);
    for chunk in states.chunks(crate::pages::READ_CHUNK) {
        if bytes > max_bytes {
            more = true;
            break;
        }
        let ids: Vec<MessageId> = chunk.iter().map(|s| s.last_message_id).collect();
        let mut bodies = bodies_by_id(store, &ids).await?;
        for s in chunk {
            let last_message = bodies
                .remove(&s.last_message_id.to_bytes()[..])
                .map(|m| client_message(m, 0));
            bytes += last_message.as_ref().map_or(0, |m| m.body.len());
            conversations.push(ConversationSummary {
                last_message,
                unread: s.unread(),
                conversation: s.conversation.clone(),
                last_seq: s.last_seq,
                read_seq: s.read_seq,
            });
        }
    }
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

/// A user's conversations, most recently active first (message ids are
/// time-ordered), with the newest message id of each. With `before`, only
/// conversations whose newest message is older than that message (the next
/// page). A group shows what its member may read: nothing from before they
/// joined, and unread counts from there.
async fn conversation_states(
    store: &dyn MessageStore,
    user: &str,
    before: Option<MessageId>,
    limit: usize,
) -> Result<Vec<ConversationState>, StoreError> {
    let mut states = store.conversations(user, usize::MAX).await?;
    // Large groups' messages skip members' inboxes, so the list does not
    // note them: each group's own newest message does. And a member's view
    // of any group starts where they joined.
    let reader = Actor::User(user.to_owned());
    for group in store.user_groups(user).await? {
        let conversation = Conversation::Group(group).to_string();
        let after_seq = match read_access(store, &reader, &conversation).await {
            Ok(access) => access.after_seq,
            Err(ChatError::Store(e)) => return Err(e),
            // Left between the two reads.
            Err(ChatError::Refused(_)) => continue,
        };
        let head = store.history(&conversation, 0, 1).await?.pop();
        let visible = head
            .filter(|h| h.seq > after_seq)
            .and_then(|h| Some((h.seq, MessageId::from_slice(&h.message_id)?)));
        match states.iter_mut().find(|s| s.conversation == conversation) {
            Some(s) => {
                if let Some((seq, id)) = visible
                    && seq > s.last_seq
                {
                    (s.last_seq, s.last_message_id) = (seq, id);
                }
                s.read_seq = s.read_seq.max(after_seq);
                if s.last_seq <= after_seq {
                    s.last_seq = 0;
                }
            }
            None => {
                if let Some((seq, id)) = visible {
                    states.push(ConversationState {
                        conversation,
                        last_seq: seq,
                        last_message_id: id,
                        read_seq: after_seq,
                    });
                }
            }
        }
    }
    states.retain(|s| s.last_seq > 0 && before.is_none_or(|b| s.last_message_id < b));
    Ok(newest_first(states, limit))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::embedded::EmbeddedStore;
    use tern_core::store::{
        ConversationNote, ConversationStore as _, HistoryStore as _, StoredMessage,
    };

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

    #[tokio::test]
    async fn a_late_member_sees_a_group_from_when_they_joined() {
        use tern_core::groups::{Group, GroupStore as _};
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        let group = Group {
            id: "g1".into(),
            name: String::new(),
            owner: "owner".into(),
            created_at_ms: 0,
            history_open: false,
        };
        store.create_group(&group, &[]).await.unwrap();
        let post = |i: usize| StoredMessage {
            message_id: MessageId::new().to_vec(),
            conversation: "g:g1".into(),
            sender_user: "owner".into(),
            client_msg_id: format!("g{i}"),
            ..Default::default()
        };
        store
            .put_messages((0..5).map(post).collect())
            .await
            .unwrap();
        store.add_members("g1", &["late".into()], 5).await.unwrap();
        let page = conversation_page(&store, "late", &[], 10, 1 << 20)
            .await
            .unwrap();
        assert!(
            page.conversations.is_empty(),
            "nothing of the group is theirs yet"
        );
        store.put_messages(vec![post(5)]).await.unwrap();
        let page = conversation_page(&store, "late", &[], 10, 1 << 20)
            .await
            .unwrap();
        let c = &page.conversations[0];
        assert_eq!((c.last_seq, c.read_seq, c.unread), (6, 5, 1));
        let owner = conversation_page(&store, "owner", &[], 10, 1 << 20)
            .await
            .unwrap();
        assert_eq!(
            owner.conversations[0].unread, 6,
            "the owner's view is whole"
        );
    }
}
