//! [`InboxStore`] of the embedded store: inboxes, their counts and trim
//! points, and device cursors.

use std::collections::HashMap;

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable};

use super::{EmbeddedStore, INBOX, INBOX_COUNTS, INBOX_INDEX, INBOX_TRIMS, MAX_TRIM, io};
use crate::ids::MessageId;
use crate::store::{InboxEntry, InboxLimits, InboxPage, InboxStore, StoreError};
use crate::sync;

#[async_trait]
impl InboxStore for EmbeddedStore {
    async fn append_inbox(&self, entries: Vec<InboxEntry>) -> Result<Vec<u64>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let mut cursors = Vec::with_capacity(entries.len());
            {
                let mut inbox = tx.open_table(INBOX).map_err(io)?;
                let mut index = tx.open_table(INBOX_INDEX).map_err(io)?;
                let mut added: HashMap<&str, u64> = HashMap::new();
                for e in &entries {
                    let key = (e.user.as_str(), e.message_id.0);
                    if let Some(existing) = index.get(key).map_err(io)? {
                        cursors.push(existing.value());
                        continue;
                    }
                    index.insert(key, e.cursor).map_err(io)?;
                    inbox
                        .insert(
                            (e.user.as_str(), e.cursor),
                            (e.message_id.0, e.conversation.as_str()),
                        )
                        .map_err(io)?;
                    cursors.push(e.cursor);
                    *added.entry(e.user.as_str()).or_default() += 1;
                }
                let mut counts = tx.open_table(INBOX_COUNTS).map_err(io)?;
                for (user, n) in added {
                    let old = counts.get(user).map_err(io)?.map_or(0, |v| v.value());
                    counts.insert(user, old + n).map_err(io)?;
                }
            }
            tx.commit().map_err(io)?;
            Ok(cursors)
        })
        .await
    }

    async fn read_inbox(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<InboxPage, StoreError> {
        let user = user.to_owned();
        let db = &*self.db;
        let tx = db.begin_read().map_err(io)?;
        let inbox = tx.open_table(INBOX).map_err(io)?;
        let head = inbox
            .range((user.as_str(), 0)..=(user.as_str(), u64::MAX))
            .map_err(io)?
            .next_back()
            .transpose()
            .map_err(io)?
            .map(|(k, _)| k.value().1)
            .unwrap_or(0);
        let mut entries = Vec::new();
        if after < u64::MAX {
            for row in inbox
                .range((user.as_str(), after + 1)..=(user.as_str(), u64::MAX))
                .map_err(io)?
                .take(limit)
            {
                let (k, v) = row.map_err(io)?;
                let (id, conversation) = v.value();
                entries.push(InboxEntry {
                    user: user.clone(),
                    cursor: k.value().1,
                    message_id: MessageId(id),
                    conversation: conversation.to_owned(),
                });
            }
        }
        Ok(InboxPage { entries, head })
    }

    async fn read_inbox_newest(
        &self,
        user: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<InboxEntry>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let inbox = tx.open_table(INBOX).map_err(io)?;
        let mut entries = Vec::new();
        if after == u64::MAX {
            return Ok(entries);
        }
        for row in inbox
            .range((user, after + 1)..=(user, u64::MAX))
            .map_err(io)?
            .rev()
            .take(limit)
        {
            let (k, v) = row.map_err(io)?;
            let (id, conversation) = v.value();
            entries.push(InboxEntry {
                user: user.to_owned(),
                cursor: k.value().1,
                message_id: MessageId(id),
                conversation: conversation.to_owned(),
            });
        }
        Ok(entries)
    }

    async fn trim_inbox(&self, user: &str, limits: InboxLimits) -> Result<u64, StoreError> {
        // Most calls find nothing to trim: decide that without a write.
        {
            let tx = self.db.begin_read().map_err(io)?;
            let count = tx
                .open_table(INBOX_COUNTS)
                .map_err(io)?
                .get(user)
                .map_err(io)?
                .map_or(0, |v| v.value());
            let inbox = tx.open_table(INBOX).map_err(io)?;
            let oldest = inbox
                .range((user, 0)..=(user, u64::MAX))
                .map_err(io)?
                .next()
                .transpose()
                .map_err(io)?
                .map(|(_, v)| MessageId(v.value().0).time_ms());
            if count <= limits.max_entries && oldest.is_none_or(|t| t >= limits.min_time_ms) {
                return self.trimmed_through(user).await;
            }
        }
        let user = user.to_owned();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            let trimmed = {
                let mut inbox = tx.open_table(INBOX).map_err(io)?;
                let mut index = tx.open_table(INBOX_INDEX).map_err(io)?;
                let mut counts = tx.open_table(INBOX_COUNTS).map_err(io)?;
                let mut trims = tx.open_table(INBOX_TRIMS).map_err(io)?;
                let count = counts
                    .get(user.as_str())
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let mut trimmed = trims
                    .get(user.as_str())
                    .map_err(io)?
                    .map_or(0, |v| v.value());
                let excess = count.saturating_sub(limits.max_entries);
                // Oldest first: past the count bound, or too old. Entries
                // are in arrival order, so the first young one ends it.
                let mut doomed: Vec<(u64, u128)> = Vec::new();
                for row in inbox
                    .range((user.as_str(), 0)..=(user.as_str(), u64::MAX))
                    .map_err(io)?
                {
                    let (k, v) = row.map_err(io)?;
                    let id = v.value().0;
                    let too_many = (doomed.len() as u64) < excess;
                    if !(too_many || MessageId(id).time_ms() < limits.min_time_ms)
                        || doomed.len() >= MAX_TRIM
                    {
                        break;
                    }
                    doomed.push((k.value().1, id));
                }
                for (cursor, id) in &doomed {
                    inbox.remove((user.as_str(), *cursor)).map_err(io)?;
                    index.remove((user.as_str(), *id)).map_err(io)?;
                }
                if let Some((last, _)) = doomed.last() {
                    counts
                        .insert(user.as_str(), count.saturating_sub(doomed.len() as u64))
                        .map_err(io)?;
                    trimmed = trimmed.max(*last);
                    trims.insert(user.as_str(), trimmed).map_err(io)?;
                }
                trimmed
            };
            tx.commit().map_err(io)?;
            Ok(trimmed)
        })
        .await
    }

    async fn trimmed_through(&self, user: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        Ok(tx
            .open_table(INBOX_TRIMS)
            .map_err(io)?
            .get(user)
            .map_err(io)?
            .map_or(0, |v| v.value()))
    }

    async fn cursor(&self, user: &str, device: &str) -> Result<u64, StoreError> {
        let pending = sync::lock(&self.cursors)
            .get(&(user.to_owned(), device.to_owned()))
            .copied();
        Ok(pending.unwrap_or(0).max(self.stored_cursor(user, device)?))
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        cursor: u64,
    ) -> Result<(), StoreError> {
        let stored = self.stored_cursor(user, device)?;
        let mut pending = sync::lock(&self.cursors);
        let entry = pending
            .entry((user.to_owned(), device.to_owned()))
            .or_insert(stored);
        *entry = (*entry).max(cursor).max(stored);
        Ok(())
    }
}
