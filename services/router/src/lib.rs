//! tern-router: the second pipeline stage.
//!
//! Reads `deliver` (keyed by recipient user, so one user's entries are
//! handled in order by one consumer), appends each message id to the user's
//! inbox, looks up the gateways of the user's devices in the route directory
//! (one lookup per batch) and hands each gateway the new inbox entries of its
//! users through its push topic.
//!
//! Inbox cursors are the deliver record's log offset + 1: monotonic per user
//! (a user's records share one partition) and identical when a record is
//! replayed, so appends need no read-modify-write and no lightweight
//! transactions. The store drops a repeated message for the same user.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prost::Message as _;
use tern_core::ids::MessageId;
use tern_core::log::{Delivery, EventLog, Headers, Record};
use tern_core::proto::records::{DeliverRecord, Deliveries, InboxRef, PushRecord, push_record};
use tern_core::routes::RouteDirectory;
use tern_core::stage::{BatchHandler, run_topic_stage};
use tern_core::store::{ConversationNote, InboxEntry, InboxRetention, MessageStore};
use tern_core::topics;
use tokio::sync::watch;

/// Consumer group of every router instance.
pub const GROUP: &str = "router";

/// A user's inbox is checked against the retention limits at most this
/// often by one router (the gateway checks it exactly at each login).
const TRIM_EVERY: Duration = Duration::from_secs(60);
/// Users remembered as recently checked; past it the memory starts over.
const MAX_TRIM_MEMORY: usize = 100_000;

pub struct Router {
    log: Arc<dyn EventLog>,
    store: Arc<dyn MessageStore>,
    routes: Arc<dyn RouteDirectory>,
    retention: InboxRetention,
    /// When each user's inbox was last checked for trimming.
    last_trim: HashMap<String, Instant>,
}

impl Router {
    pub fn new(
        log: Arc<dyn EventLog>,
        store: Arc<dyn MessageStore>,
        routes: Arc<dyn RouteDirectory>,
        retention: InboxRetention,
    ) -> Self {
        Router {
            log,
            store,
            routes,
            retention,
            last_trim: HashMap::new(),
        }
    }

    /// Trims the inboxes of `users` not checked lately. A failure is only
    /// logged: the next check (or the user's next login) trims instead.
    async fn trim(&mut self, users: &[String]) {
        let now = Instant::now();
        if self.last_trim.len() > MAX_TRIM_MEMORY {
            self.last_trim.clear();
        }
        let limits = self.retention.limits_at(tern_core::now_ms());
        for user in users {
            if self
                .last_trim
                .get(user)
                .is_some_and(|at| now.duration_since(*at) < TRIM_EVERY)
            {
                continue;
            }
            self.last_trim.insert(user.clone(), now);
            match self.store.trim_inbox(user, limits).await {
                Ok(_) => {}
                Err(e) => tracing::warn!(%user, error = %e, "inbox trim failed"),
            }
        }
    }

    /// Consumes `deliver` until `shutdown` turns true.
    pub async fn run(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> Result<(), tern_core::log::LogError> {
        let log = self.log.clone();
        run_topic_stage("router", log, topics::DELIVER, GROUP, self, shutdown).await
    }
}

/// Removes the routes of dead gateways every `every` until `shutdown`:
/// pushes stop going to a gateway that crashed (its devices reconnect
/// elsewhere and catch up from their inboxes).
pub async fn sweep_routes(
    routes: Arc<dyn RouteDirectory>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = tern_core::routes::sweep_dead_gateways(routes.as_ref()).await {
            tracing::warn!(error = %e, "route sweep failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = tern_core::stage::stopped(&mut shutdown) => return,
        }
    }
}

/// Per user and conversation, only what changes the list: the newest note,
/// and the user's own newest message (their read mark) if it is older. A
/// batch of a busy group holds several messages for each member.
fn newest_notes(notes: Vec<ConversationNote>) -> Vec<ConversationNote> {
    use std::collections::hash_map::Entry;
    // (user, conversation) → (newest note, the user's own newest note)
    type Newest = (ConversationNote, Option<ConversationNote>);
    let mut by_key: HashMap<(String, String), Newest> = HashMap::with_capacity(notes.len());
    for n in notes {
        let own = n.sent_by_user.then(|| n.clone());
        match by_key.entry((n.user.clone(), n.conversation.clone())) {
            Entry::Vacant(v) => {
                v.insert((n, own));
            }
            Entry::Occupied(mut o) => {
                let (last, last_own) = o.get_mut();
                if n.seq > last.seq {
                    *last = n;
                }
                if let Some(own) = own
                    && last_own.as_ref().is_none_or(|o| o.seq < own.seq)
                {
                    *last_own = Some(own);
                }
            }
        }
    }
    by_key
        .into_values()
        .flat_map(|(last, own)| {
            // The newest note marks the read itself when it is the user's own.
            let own = own.filter(|o| o.seq != last.seq);
            std::iter::once(last).chain(own)
        })
        .collect()
}

/// The inbox cursor of a deliver record at this log position.
pub fn cursor_of(d: &Delivery) -> u64 {
    d.position.offset + 1
}

#[async_trait]
impl BatchHandler for Router {
    async fn handle(&mut self, batch: &[Delivery]) -> Result<(), String> {
        let mut entries = Vec::with_capacity(batch.len());
        let mut notes = Vec::with_capacity(batch.len());
        // Per entry: its message's span here (see tern_core::trace).
        let mut spans = Vec::with_capacity(batch.len());
        for d in batch {
            let record = match DeliverRecord::decode(d.value.clone()) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition = d.position.partition, offset = d.position.offset, error = %e, "skipping undecodable deliver record");
                    continue;
                }
            };
            let Some(message_id) = MessageId::from_slice(&record.message_id) else {
                tracing::error!(
                    offset = d.position.offset,
                    "skipping deliver record with a bad message id"
                );
                continue;
            };
            spans.push(tern_core::message_span!("router.route", &d.headers, user = %record.user));
            notes.push(ConversationNote {
                sent_by_user: record.sender_user == record.user,
                user: record.user.clone(),
                conversation: record.conversation.clone(),
                seq: record.seq,
                message_id,
            });
            entries.push(InboxEntry {
                user: record.user,
                cursor: cursor_of(d),
                message_id,
                conversation: record.conversation,
            });
        }
        if entries.is_empty() {
            return Ok(());
        }
        // In this order, each step retried with the batch on failure (all
        // are idempotent): the conversation list first, so a device that
        // finds a message in its inbox finds its conversation listed; the
        // inbox before the route lookup, so a device that registers its
        // route after the lookup still reads the entry at login (see the
        // gateway's session docs); skipping the push would leave online
        // devices waiting.
        self.store
            .note_conversations(newest_notes(notes))
            .await
            .map_err(|e| e.to_string())?;
        let cursors = self
            .store
            .append_inbox(entries.clone())
            .await
            .map_err(|e| e.to_string())?;
        let mut users: Vec<String> = entries.iter().map(|e| e.user.clone()).collect();
        users.sort_unstable();
        users.dedup();
        let routes = self
            .routes
            .lookup(&users)
            .await
            .map_err(|e| e.to_string())?;

        // gateway → user → refs, in inbox order. Each ref carries its own
        // message's trace context (several messages share one record); the
        // record's headers carry the first's, for tools that read headers.
        let mut per_gateway: HashMap<&str, HashMap<&str, (Vec<InboxRef>, Headers)>> =
            HashMap::new();
        for ((entry, cursor), span) in entries.iter().zip(cursors).zip(&spans) {
            let Some(user_routes) = routes.get(&entry.user) else {
                continue;
            };
            let traceparent = tern_core::trace::traceparent_of(span);
            let mut gateways: Vec<&str> = user_routes.iter().map(|r| r.gateway.as_str()).collect();
            gateways.sort_unstable();
            gateways.dedup();
            for gw in gateways {
                per_gateway
                    .entry(gw)
                    .or_default()
                    .entry(entry.user.as_str())
                    .or_insert_with(|| (Vec::new(), tern_core::trace::headers_of(span)))
                    .0
                    .push(InboxRef {
                        cursor,
                        message_id: entry.message_id.to_vec(),
                        traceparent: traceparent.clone(),
                    });
            }
        }
        let mut out = Vec::with_capacity(per_gateway.len());
        for (gateway, users) in per_gateway {
            let records = users
                .into_iter()
                .map(|(user, (refs, headers))| {
                    let value = PushRecord {
                        kind: Some(push_record::Kind::Deliveries(Deliveries {
                            user: user.to_owned(),
                            refs,
                        })),
                    };
                    Record::new(user.as_bytes().to_vec(), value.encode_to_vec())
                        .with_headers(headers)
                })
                .collect();
            out.push((topics::push_topic(gateway), records));
        }
        self.log.append_many(out).await.map_err(|e| e.to_string())?;
        // Retention last: it is not urgent, and pushes should not wait on it.
        self.trim(&users).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(user: &str, conversation: &str, seq: u64, own: bool) -> ConversationNote {
        ConversationNote {
            user: user.into(),
            conversation: conversation.into(),
            seq,
            message_id: MessageId::new(),
            sent_by_user: own,
        }
    }

    #[test]
    fn only_the_newest_note_and_the_own_read_mark_are_kept() {
        let mut kept = newest_notes(vec![
            note("bob", "g:1", 1, false),
            note("bob", "g:1", 3, false),
            note("bob", "g:1", 2, true),
            note("bob", "g:2", 7, true),
            note("bob", "g:2", 5, true),
            note("amy", "g:1", 3, false),
        ]);
        kept.sort_by_key(|n| (n.user.clone(), n.conversation.clone(), n.seq));
        let summary: Vec<(&str, &str, u64, bool)> = kept
            .iter()
            .map(|n| {
                (
                    n.user.as_str(),
                    n.conversation.as_str(),
                    n.seq,
                    n.sent_by_user,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("amy", "g:1", 3, false),
                ("bob", "g:1", 2, true),
                ("bob", "g:1", 3, false),
                ("bob", "g:2", 7, true),
            ]
        );
    }
}
