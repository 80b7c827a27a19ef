//! [`HistoryStore`] of the embedded store: bodies, idempotency keys,
//! conversation heads and history.

use async_trait::async_trait;
use prost::Message as _;
use redb::{ReadableDatabase, ReadableTable};

use super::{
    CONVERSATION_HEADS, EmbeddedStore, HISTORY, IDEMPOTENCY, MESSAGES, decode, io, message_id,
};
use crate::ids::MessageId;
use crate::store::{HistoryStore, PutOutcome, StoreError, StoredMessage};

#[async_trait]
impl HistoryStore for EmbeddedStore {
    async fn put_messages(
        &self,
        messages: Vec<StoredMessage>,
    ) -> Result<Vec<PutOutcome>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut out = Vec::with_capacity(messages.len());
            {
                let mut bodies = tx.open_table(MESSAGES).map_err(io)?;
                let mut idem = tx.open_table(IDEMPOTENCY).map_err(io)?;
                let mut heads = tx.open_table(CONVERSATION_HEADS).map_err(io)?;
                let mut history = tx.open_table(HISTORY).map_err(io)?;
                for mut m in messages {
                    let existing = idem
                        .get((m.sender_user.as_str(), m.client_msg_id.as_str()))
                        .map_err(io)?
                        .map(|v| v.value());
                    if let Some(id) = existing {
                        let stored = bodies.get(id).map_err(io)?.ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "idempotency key points at missing message {}",
                                MessageId(id)
                            ))
                        })?;
                        out.push(PutOutcome {
                            message: decode(stored.value())?,
                            duplicate: true,
                        });
                        continue;
                    }
                    let id = message_id(&m)?.0;
                    let seq = heads
                        .get(m.conversation.as_str())
                        .map_err(io)?
                        .map(|v| v.value())
                        .unwrap_or(0)
                        + 1;
                    m.seq = seq;
                    heads.insert(m.conversation.as_str(), seq).map_err(io)?;
                    history
                        .insert((m.conversation.as_str(), seq), id)
                        .map_err(io)?;
                    idem.insert((m.sender_user.as_str(), m.client_msg_id.as_str()), id)
                        .map_err(io)?;
                    bodies
                        .insert(id, m.encode_to_vec().as_slice())
                        .map_err(io)?;
                    out.push(PutOutcome {
                        message: m,
                        duplicate: false,
                    });
                }
            }
            tx.commit().map_err(io)?;
            Ok(out)
        })
        .await
    }

    async fn get_messages(&self, ids: &[MessageId]) -> Result<Vec<StoredMessage>, StoreError> {
        let db = &*self.db;
        let tx = db.begin_read().map_err(io)?;
        let bodies = tx.open_table(MESSAGES).map_err(io)?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(v) = bodies.get(id.0).map_err(io)? {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    async fn history(
        &self,
        conversation: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let conversation = conversation.to_owned();
        let db = &*self.db;
        let tx = db.begin_read().map_err(io)?;
        let history = tx.open_table(HISTORY).map_err(io)?;
        let bodies = tx.open_table(MESSAGES).map_err(io)?;
        let end = if before_seq == 0 {
            u64::MAX
        } else {
            before_seq
        };
        let mut out = Vec::new();
        for row in history
            .range((conversation.as_str(), 0)..(conversation.as_str(), end))
            .map_err(io)?
            .rev()
            .take(limit)
        {
            let (_, id) = row.map_err(io)?;
            if let Some(v) = bodies.get(id.value()).map_err(io)? {
                out.push(decode(v.value())?);
            }
        }
        Ok(out)
    }

    async fn expire_messages(&self, before_ms: u64, max: usize) -> Result<u64, StoreError> {
        // Message ids are UUIDv7: the messages table is in time order, and
        // everything made before `before_ms` sorts below this id.
        let below = (before_ms as u128) << 80;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut expired = 0;
            {
                let mut messages = tx.open_table(MESSAGES).map_err(io)?;
                let mut history = tx.open_table(HISTORY).map_err(io)?;
                let mut idempotency = tx.open_table(IDEMPOTENCY).map_err(io)?;
                let mut doomed = Vec::new();
                for row in messages.range(..below).map_err(io)?.take(max) {
                    let (k, v) = row.map_err(io)?;
                    doomed.push((k.value(), decode(v.value())?));
                }
                for (id, m) in doomed {
                    history
                        .remove((m.conversation.as_str(), m.seq))
                        .map_err(io)?;
                    let key = (m.sender_user.as_str(), m.client_msg_id.as_str());
                    if idempotency.get(key).map_err(io)?.map(|v| v.value()) == Some(id) {
                        idempotency.remove(key).map_err(io)?;
                    }
                    messages.remove(id).map_err(io)?;
                    expired += 1;
                }
            }
            tx.commit().map_err(io)?;
            Ok(expired)
        })
        .await
    }
}
