//! Message bodies recently pushed, shared by every session of a gateway.
//! A group message reaches many members on one gateway at about the same
//! time; without the cache each member's session would read the same body
//! from the store. Bounded by count; the oldest entry leaves first (a
//! message is hot for seconds, so recency of insertion is enough).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::metrics;
use tern_core::ids::MessageId;
use tern_core::proto::client::Message;
use tern_core::store::{HistoryStore, InboxEntry, StoreError, StoredMessage, client_message};
use tern_core::sync;

pub(crate) struct BodyCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    bodies: HashMap<u128, StoredMessage>,
    /// Insertion order, for eviction.
    order: VecDeque<u128>,
}

impl BodyCache {
    pub fn new(capacity: usize) -> Self {
        BodyCache {
            capacity,
            inner: Mutex::default(),
        }
    }

    /// The messages of `entries` with their cursors, in order; bodies not
    /// cached are read from the store in one call, and kept. Entries whose
    /// message is gone (expired) are skipped.
    pub async fn load(
        &self,
        store: &dyn HistoryStore,
        entries: &[InboxEntry],
    ) -> Result<Vec<Message>, StoreError> {
        let mut found: HashMap<u128, StoredMessage> = HashMap::with_capacity(entries.len());
        let mut missing: Vec<MessageId> = Vec::new();
        {
            let inner = sync::lock(&self.inner);
            for e in entries {
                match inner.bodies.get(&e.message_id.0) {
                    Some(m) => {
                        found.insert(e.message_id.0, m.clone());
                    }
                    None => missing.push(e.message_id),
                }
            }
        }
        metrics::BODY_CACHE_HITS.add(found.len() as u64);
        metrics::BODY_CACHE_MISSES.add(missing.len() as u64);
        if !missing.is_empty() {
            let read = store.get_messages(&missing).await?;
            let mut inner = sync::lock(&self.inner);
            for m in read {
                let Some(id) = MessageId::from_slice(&m.message_id) else {
                    continue;
                };
                if self.capacity > 0 && inner.bodies.insert(id.0, m.clone()).is_none() {
                    inner.order.push_back(id.0);
                    while inner.order.len() > self.capacity {
                        if let Some(old) = inner.order.pop_front() {
                            inner.bodies.remove(&old);
                        }
                    }
                }
                found.insert(id.0, m);
            }
        }
        Ok(entries
            .iter()
            .filter_map(|e| {
                found
                    .get(&e.message_id.0)
                    .map(|m| client_message(m.clone(), e.cursor))
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::embedded::EmbeddedStore;

    fn message(id: MessageId, n: u64) -> StoredMessage {
        StoredMessage {
            message_id: id.to_vec(),
            conversation: "d:a:b".into(),
            sender_user: "a".into(),
            client_msg_id: format!("c{n}"),
            body: format!("body {n}").into_bytes().into(),
            ..Default::default()
        }
    }

    fn entry(id: MessageId, cursor: u64) -> InboxEntry {
        InboxEntry {
            user: "b".into(),
            cursor,
            message_id: id,
            conversation: "d:a:b".into(),
        }
    }

    #[tokio::test]
    async fn bodies_come_from_the_cache_once_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        let ids: Vec<MessageId> = (0..3).map(|_| MessageId::new()).collect();
        store
            .put_messages(ids.iter().zip(0..).map(|(id, n)| message(*id, n)).collect())
            .await
            .unwrap();
        let cache = BodyCache::new(2);
        let entries: Vec<InboxEntry> = ids.iter().zip(1..).map(|(id, c)| entry(*id, c)).collect();
        let first = cache.load(&store, &entries).await.unwrap();
        assert_eq!(
            first.iter().map(|m| m.cursor).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        assert_eq!(first[2].body.as_ref(), b"body 2");
        // Capacity 2: the first body was evicted, the last two are kept.
        {
            let inner = cache.inner.lock().unwrap();
            assert!(!inner.bodies.contains_key(&ids[0].0));
            assert!(inner.bodies.contains_key(&ids[2].0));
        }
        // Another user's entries for the same messages, other cursors.
        let again = cache
            .load(&store, &[entry(ids[2], 40), entry(MessageId::new(), 41)])
            .await
            .unwrap();
        assert_eq!(again.len(), 1, "an unknown message is skipped");
        assert_eq!(
            (again[0].cursor, again[0].body.as_ref()),
            (40, &b"body 2"[..])
        );
    }
}
