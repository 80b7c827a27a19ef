//! Large groups, pushed from inside the gateway.
//!
//! A message to a group with more than `large_group_members` members is
//! not copied into each member's inbox (that write fan-out is what stops
//! paying for big groups: see docs/benchmarks.md). The persister stores it
//! once, in the group's history, and appends it to the `group-feed` topic,
//! which every gateway reads whole (its own consumer group, from the end).
//! Each gateway knows which groups the users online on it are in
//! ([`GroupMembers`]: read from the store at each login, then kept current
//! by the membership changes the API appends to the same topic, in order
//! with the posts), and pushes each post to those users' connections,
//! encoded once per codec.
//!
//! These pushes are live-only: not ACKed, not re-sent, dropped for a
//! connection whose queues are full. The messages are in the group's
//! history; a client that was offline, or sees a gap in the group's seq
//! numbers, pages it (the conversation list tells it which groups moved).
//!
//! The same feed carries token revocations: each gateway closes the
//! connections that logged in with a revoked token. (Logins check the
//! store, so a revocation this feed misses, while the gateway's feed had
//! no partition, only leaves connections that were already open.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use tern_core::ids::Conversation;
use tern_core::log::{LogError, Subscription};
use tern_core::proto::client::{Codec, GroupMessages, server_frame};
use tern_core::proto::records::{GroupChange, GroupFeedRecord, group_feed_record};
use tern_core::stage::stopped;
use tern_core::store::{StoredMessage, client_message};
use tern_core::sync;
use tern_core::topics;

use crate::metrics;
use tokio::sync::watch;

use crate::Shared;
use crate::hub::SessionEvent;

/// Which groups the users online on this gateway are in.
#[derive(Default)]
pub struct GroupMembers {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// group → its members online here.
    by_group: HashMap<String, HashSet<String>>,
    /// user online here → (receiving connections, their groups).
    by_user: HashMap<String, (usize, HashSet<String>)>,
}

impl GroupMembers {
    /// A receiving connection of `user` logged in; `groups` are the user's
    /// groups as the store has them now.
    pub fn online(&self, user: &str, groups: Vec<String>) {
        let mut inner = sync::write(&self.inner);
        for g in &groups {
            inner
                .by_group
                .entry(g.clone())
                .or_default()
                .insert(user.to_owned());
        }
        let entry = inner.by_user.entry(user.to_owned()).or_default();
        entry.0 += 1;
        entry.1.extend(groups);
    }

    /// A receiving connection of `user` ended.
    pub fn offline(&self, user: &str) {
        let mut inner = sync::write(&self.inner);
        let Inner { by_group, by_user } = &mut *inner;
        let Some((conns, groups)) = by_user.get_mut(user) else {
            return;
        };
        *conns -= 1;
        if *conns > 0 {
            return;
        }
        for g in groups.iter() {
            remove_member(by_group, g, user);
        }
        by_user.remove(user);
    }

    /// Applies a membership change to the users online here.
    pub fn apply(&self, change: &GroupChange) {
        let mut inner = sync::write(&self.inner);
        let Inner { by_group, by_user } = &mut *inner;
        for user in &change.added {
            if let Some((_, groups)) = by_user.get_mut(user) {
                groups.insert(change.group.clone());
                by_group
                    .entry(change.group.clone())
                    .or_default()
                    .insert(user.clone());
            }
        }
        for user in &change.removed {
            if let Some((_, groups)) = by_user.get_mut(user) {
                groups.remove(&change.group);
                remove_member(by_group, &change.group, user);
            }
        }
    }

    /// Sets `user`'s groups to `groups` (read afresh from the store), if the
    /// user is still online here.
    pub fn refresh(&self, user: &str, groups: Vec<String>) {
        let mut inner = sync::write(&self.inner);
        let Inner { by_group, by_user } = &mut *inner;
        let Some((_, old)) = by_user.get_mut(user) else {
            return;
        };
        for g in old.iter() {
            remove_member(by_group, g, user);
        }
        *old = groups.into_iter().collect();
        for g in old.iter() {
            by_group
                .entry(g.clone())
                .or_default()
                .insert(user.to_owned());
        }
    }

    /// The users online here.
    pub fn online_users(&self) -> Vec<String> {
        let inner = sync::read(&self.inner);
        inner.by_user.keys().cloned().collect()
    }

    /// The members of `group` online here.
    pub fn online_members(&self, group: &str) -> Vec<String> {
        let inner = sync::read(&self.inner);
        inner
            .by_group
            .get(group)
            .map(|users| users.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn remove_member(by_group: &mut HashMap<String, HashSet<String>>, group: &str, user: &str) {
    if let Some(users) = by_group.get_mut(group) {
        users.remove(user);
        if users.is_empty() {
            by_group.remove(group);
        }
    }
}

/// How often the groups of the users online here are read again from the
/// store: a safety net for changes the feed could not show (appended while
/// this gateway's feed was starting, before its offset was set).
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// The consumer group of this gateway's group feed: every gateway has its
/// own, so every gateway reads every post and change.
fn consumer_group(node: &str) -> String {
    format!("group-feed.{node}")
}

/// Subscribes before the gateway accepts connections.
pub(crate) async fn subscribe(shared: &Shared) -> Result<Box<dyn Subscription>, LogError> {
    shared
        .deps
        .log
        .subscribe(
            topics::GROUP_FEED,
            &consumer_group(&shared.config.node_id),
            tern_core::log::StartFrom::Latest,
        )
        .await
}

/// Reads the group feed until `shutdown`: pushes posts, applies changes.
pub(crate) async fn run_feed(
    shared: Arc<Shared>,
    mut sub: Box<dyn Subscription>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_millis(50);
    let mut refresh = tokio::time::interval(REFRESH_EVERY);
    refresh.tick().await;
    loop {
        let polled = tokio::select! {
            b = sub.poll(1024) => b,
            _ = refresh.tick() => {
                tokio::spawn(refresh_all(shared.clone()));
                continue;
            }
            _ = stopped(&mut shutdown) => return,
        };
        if sub.take_reassigned() {
            // Changes appended while this gateway's feed had no partition
            // (starting, or after a broker outage) were not read here.
            tokio::spawn(refresh_all(shared.clone()));
        }
        match polled {
            Ok(batch) => {
                backoff = Duration::from_millis(50);
                for d in &batch {
                    match GroupFeedRecord::decode(d.value.clone()).map(|r| r.kind) {
                        Ok(Some(group_feed_record::Kind::Post(m))) => {
                            // The last hop of a large-group message's trace.
                            let span = tern_core::message_span!("push.group", &d.headers, conversation = %m.conversation);
                            span.in_scope(|| push(&shared, m))
                        }
                        Ok(Some(group_feed_record::Kind::Change(c))) => {
                            tracing::debug!(group = %c.group, added = c.added.len(), removed = c.removed.len(), "group membership change");
                            shared.groups.apply(&c);
                        }
                        Ok(Some(group_feed_record::Kind::Revoked(r))) => {
                            let device = (!r.device.is_empty()).then_some(r.device.as_str());
                            let ended = shared.hub.revoke(&r.user, device, r.before_ms);
                            tracing::info!(user = %r.user, device = device.unwrap_or("*"), ended, "tokens revoked: connections closed");
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(offset = d.position.offset, error = %e, "skipping undecodable group feed record")
                        }
                    }
                }
                // Committed only so the embedded log can trim the topic: a
                // post missed in a crash is in the group's history.
                if let Err(e) = sub.commit(&batch).await {
                    tracing::debug!(error = %e, "group feed commit failed");
                }
            }
            Err(LogError::Closed) => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "group feed poll failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match subscribe(&shared).await {
                    Ok(fresh) => tern_core::stage::retire(std::mem::replace(&mut sub, fresh)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to the group feed again yet")
                    }
                }
            }
        }
    }
}

/// Reads the groups of every user online here from the store again.
async fn refresh_all(shared: Arc<Shared>) {
    let users = shared.groups.online_users();
    let count = users.len();
    for user in users {
        match shared.deps.store.user_groups(&user).await {
            Ok(groups) => shared.groups.refresh(&user, groups),
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh group membership; using what this gateway had");
                return;
            }
        }
    }
    tracing::info!(
        users = count,
        "group membership refreshed after the group feed was reassigned"
    );
}

/// Hands one post to every connection of the group's members online here.
fn push(shared: &Shared, m: StoredMessage) {
    let Ok(Conversation::Group(group)) = Conversation::parse(&m.conversation) else {
        tracing::error!(conversation = %m.conversation, "group feed post outside a group; skipped");
        return;
    };
    metrics::GROUP_FEED_POSTS.inc();
    let conversation = m.conversation.clone();
    let message = client_message(m, 0);
    let mut encoded: HashMap<Codec, Bytes> = HashMap::new();
    let (mut reached, mut dropped) = (0, 0);
    for user in shared.groups.online_members(&group) {
        for conn in shared.hub.user_conns(&user) {
            let frame = encoded
                .entry(conn.codec)
                .or_insert_with(|| {
                    let (used, payload) = tern_wire::pack_batch(
                        vec![message.clone()],
                        conn.codec,
                        shared.config.compress_min_bytes,
                    );
                    tern_wire::encode_server(server_frame::Kind::GroupMessages(GroupMessages {
                        conversation: conversation.clone(),
                        codec: used as i32,
                        payload,
                    }))
                })
                .clone();
            if conn.offer_best_effort(SessionEvent::GroupPush(frame)) {
                reached += 1;
            } else {
                dropped += 1;
            }
        }
    }
    tracing::debug!(%group, reached, dropped, "large-group post pushed");
    metrics::GROUP_FEED_FRAMES.add(reached);
    metrics::GROUP_FEED_DROPPED.add(dropped);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(group: &str, added: &[&str], removed: &[&str]) -> GroupChange {
        GroupChange {
            group: group.into(),
            added: added.iter().map(|s| s.to_string()).collect(),
            removed: removed.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn membership_follows_logins_and_changes() {
        let m = GroupMembers::default();
        m.online("ann", vec!["g1".into(), "g2".into()]);
        m.online("bob", vec!["g1".into()]);
        assert_eq!(sorted(m.online_members("g1")), vec!["ann", "bob"]);
        // Changes only concern users online here.
        m.apply(&change("g2", &["bob", "carl"], &["ann"]));
        assert_eq!(m.online_members("g2"), vec!["bob"]);
        // Two connections of ann: she stays until the last one ends.
        m.online("ann", vec!["g1".into()]);
        m.offline("ann");
        assert_eq!(sorted(m.online_members("g1")), vec!["ann", "bob"]);
        m.offline("ann");
        assert_eq!(m.online_members("g1"), vec!["bob"]);
        // A refresh from the store replaces what the changes said.
        m.refresh("bob", vec!["g3".into()]);
        assert!(m.online_members("g1").is_empty());
        assert_eq!(m.online_members("g3"), vec!["bob"]);
        m.refresh("nobody", vec!["g3".into()]);
        assert_eq!(m.online_users(), vec!["bob"]);
        m.offline("bob");
        assert!(m.online_members("g3").is_empty());
        assert!(m.online_members("g2").is_empty());
        m.offline("nobody");
    }
}
