//! [`ConversationStore`] of the embedded store: each user's conversation
//! list with its read marks.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::{CONVERSATION_HEADS, EmbeddedStore, USER_CONVERSATIONS, io};
use crate::ids::MessageId;
use crate::store::{
    ConversationNote, ConversationState, ConversationStore, StoreError, newest_first,
};

#[async_trait]
impl ConversationStore for EmbeddedStore {
    async fn note_conversations(&self, notes: Vec<ConversationNote>) -> Result<(), StoreError> {
        if notes.is_empty() {
            return Ok(());
        }
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut table = tx.open_table(USER_CONVERSATIONS).map_err(io)?;
                for n in notes {
                    let key = (n.user.as_str(), n.conversation.as_str());
                    let (mut last_seq, mut last_id, mut read_seq) =
                        table.get(key).map_err(io)?.map_or((0, 0, 0), |v| v.value());
                    if n.seq > last_seq {
                        (last_seq, last_id) = (n.seq, n.message_id.0);
                    }
                    if n.sent_by_user {
                        read_seq = read_seq.max(n.seq);
                    }
                    table
                        .insert(key, (last_seq, last_id, read_seq))
                        .map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn conversations(
        &self,
        user: &str,
        limit: usize,
    ) -> Result<Vec<ConversationState>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let table = tx.open_table(USER_CONVERSATIONS).map_err(io)?;
        let mut out = Vec::new();
        for row in table.range((user, "")..).map_err(io)? {
            let (k, v) = row.map_err(io)?;
            let (row_user, conversation) = k.value();
            if row_user != user {
                break;
            }
            let (last_seq, last_id, read_seq) = v.value();
            out.push(ConversationState {
                conversation: conversation.to_owned(),
                last_seq,
                last_message_id: MessageId(last_id),
                read_seq,
            });
        }
        Ok(newest_first(out, limit))
    }

    async fn mark_read(&self, user: &str, conversation: &str, seq: u64) -> Result<u64, StoreError> {
        let (user, conversation) = (user.to_owned(), conversation.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let read_seq = {
                // The bound: the newest message the user got, or the
                // conversation's own newest (large groups skip inboxes).
                let head = tx
                    .open_table(CONVERSATION_HEADS)
                    .map_err(io)?
                    .get(conversation.as_str())
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let mut table = tx.open_table(USER_CONVERSATIONS).map_err(io)?;
                let key = (user.as_str(), conversation.as_str());
                let (last_seq, last_id, read_seq) =
                    table.get(key).map_err(io)?.map_or((0, 0, 0), |v| v.value());
                let new = read_seq.max(seq.min(last_seq.max(head)));
                if new != read_seq {
                    table.insert(key, (last_seq, last_id, new)).map_err(io)?;
                }
                new
            };
            tx.commit().map_err(io)?;
            Ok(read_seq)
        })
        .await
    }
}
