//! Who reads which conversation, from which seq; who changes a group's
//! members and whom they may add.
//!
//! A 1:1 conversation is readable by its two users. A group is readable by
//! its members, from the group's seq at which they joined (so a new member
//! does not read what was said before them), unless the group's history is
//! open. The back end reads everything.

use tern_core::accounts::MAX_BLOCKED;
use tern_core::groups::Group;
use tern_core::ids::{Conversation, check_user, clip};
use tern_core::proto::client::{ErrorCode, Message};
use tern_core::store::{MessageStore, StoreError, client_message};

use crate::{ChatError, Refusal};

/// Who makes a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user, with a login token: acts as themselves only.
    User(String),
    /// The application's back end, with the back-end credential: acts for
    /// any user it names.
    Backend,
}

impl Actor {
    /// The user a request is about. A user may leave `requested` empty or
    /// name themselves; the back end must name one. `what` words the
    /// refusal ("list the groups of").
    pub fn subject(&self, requested: &str, what: &str) -> Result<String, Refusal> {
        let user = match (self, requested) {
            (Actor::User(me), "") => me.clone(),
            (Actor::User(me), user) if user == me => me.clone(),
            (Actor::User(me), user) => {
                return Err(Refusal::forbidden(format!(
                    "{me} cannot {what} {}",
                    clip(user)
                )));
            }
            (Actor::Backend, "") => {
                return Err(Refusal::invalid(format!(
                    "name the user to {what}: the back-end API acts for anyone"
                )));
            }
            (Actor::Backend, user) => user.to_owned(),
        };
        check_user(&user).map_err(|e| Refusal::invalid(e.to_string()))?;
        Ok(user)
    }
}

/// What a reader may see of a conversation: its messages with seq greater
/// than `after_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadAccess {
    pub conversation: Conversation,
    pub after_seq: u64,
}

/// Whether `actor` may read `conversation`, and from where.
pub async fn read_access(
    store: &dyn MessageStore,
    actor: &Actor,
    conversation: &str,
) -> Result<ReadAccess, ChatError> {
    let conv = Conversation::parse(conversation)
        .map_err(|e| Refusal::new(ErrorCode::UnknownConversation, e.to_string()))?;
    let Actor::User(user) = actor else {
        return Ok(ReadAccess {
            conversation: conv,
            after_seq: 0,
        });
    };
    let after_seq = match &conv {
        Conversation::Direct { .. } => conv.has_direct_member(user).and_then(|m| m.then_some(0)),
        Conversation::Group(id) => match store.member_since(id, user).await? {
            Some(0) => Some(0),
            Some(seq) => {
                let open = store.group(id).await?.is_some_and(|g| g.history_open);
                Some(if open { 0 } else { seq })
            }
            None => None,
        },
    };
    match after_seq {
        Some(after_seq) => Ok(ReadAccess {
            conversation: conv,
            after_seq,
        }),
        // Not a member and no such group answer alike: ids are not probed.
        None => Err(Refusal::forbidden(format!("{user} is not in conversation {conv}")).into()),
    }
}

/// A page of history as a reader sees it, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistorySlice {
    pub messages: Vec<Message>,
    /// Older messages the reader may see exist before the oldest here.
    pub has_more: bool,
}

/// Up to `limit` messages before `before_seq` (0: from the newest) that
/// `access` allows, newest first, at most `max_bytes` of them (at least
/// one).
pub async fn history_page(
    store: &dyn MessageStore,
    access: &ReadAccess,
    before_seq: u64,
    limit: usize,
    max_bytes: usize,
) -> Result<HistorySlice, StoreError> {
    if before_seq != 0 && before_seq <= access.after_seq + 1 {
        return Ok(HistorySlice::default());
    }
    let conversation = access.conversation.to_string();
    // Read a chunk at a time, so that a page of large bodies stops near
    // `max_bytes` instead of loading `limit` of them first; one message
    // past the limit tells whether there is more.
    let (mut messages, mut bytes, mut before, mut ended) = (Vec::new(), 0, before_seq, false);
    while messages.len() <= limit && bytes <= max_bytes && !ended {
        let want = (limit + 1 - messages.len()).min(crate::pages::READ_CHUNK);
        let chunk = store.history(&conversation, before, want).await?;
        ended = chunk.len() < want;
        for m in chunk {
            if m.seq <= access.after_seq {
                ended = true;
                break;
            }
            before = m.seq;
            bytes += m.body.len();
            messages.push(client_message(m, 0));
        }
    }
    let read = messages.len();
    messages.truncate(limit);
    if !messages.is_empty() {
        messages = crate::pages::fitting_prefix(messages, max_bytes);
    }
    let oldest = messages.last().map_or(u64::MAX, |m| m.seq);
    Ok(HistorySlice {
        has_more: (!ended || messages.len() < read) && oldest > access.after_seq + 1,
        messages,
    })
}

/// Bounds on group membership, from the settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupLimits {
    /// Users one user call adds or removes (the back end: [`BACKEND_MEMBERS_PER_CALL`]).
    pub members_per_call: usize,
    /// Groups one user may be in (0: no bound).
    pub groups_per_user: usize,
}

/// Users one back-end call adds or removes.
pub const BACKEND_MEMBERS_PER_CALL: usize = 1000;

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            members_per_call: 100,
            groups_per_user: 500,
        }
    }
}

impl GroupLimits {
    fn per_call(&self, actor: &Actor) -> usize {
        match actor {
            Actor::User(_) => self.members_per_call,
            Actor::Backend => BACKEND_MEMBERS_PER_CALL,
        }
    }
}

/// Checks the shape of a member list: valid ids, not too many for one call.
pub fn check_member_list(
    actor: &Actor,
    users: &[String],
    limits: &GroupLimits,
) -> Result<(), Refusal> {
    let max = limits.per_call(actor);
    if users.len() > max {
        return Err(Refusal::invalid(format!(
            "{} users in one call; the limit is {max}",
            users.len()
        )));
    }
    for u in users {
        check_user(u).map_err(|e| Refusal::invalid(e.to_string()))?;
    }
    Ok(())
}

/// Who changes a group's members: its owner (or the back end) adds and
/// removes anyone but the owner; a member removes themselves. A change
/// names at least one user; only a member may leave (so a stranger learns
/// nothing of a group by "leaving" it).
pub async fn check_member_change(
    store: &dyn MessageStore,
    actor: &Actor,
    group: &Group,
    users: &[String],
    add: bool,
) -> Result<(), ChatError> {
    if users.is_empty() {
        return Err(Refusal::invalid("name at least one user to add or remove").into());
    }
    if let Actor::User(user) = actor
        && *user != group.owner
    {
        let leaving = !add && users.iter().all(|u| u == user);
        if !leaving || !store.is_member(&group.id, user).await? {
            return Err(Refusal::forbidden(format!(
                "only the owner of group {} adds or removes members; a member may only remove themselves",
                group.id
            ))
            .into());
        }
    }
    if !add && users.contains(&group.owner) {
        return Err(Refusal::invalid(format!(
            "{} owns group {} and cannot be removed",
            group.owner, group.id
        ))
        .into());
    }
    Ok(())
}

/// Checks that `users` may be added to a group by `actor`: nobody who
/// blocks the adding user, nobody already in as many groups as allowed.
/// The refusal for a user who blocks the adder does not say so: it reads
/// as any user who cannot be added by them, so blocks are not probed.
pub async fn check_addable(
    store: &dyn MessageStore,
    actor: &Actor,
    users: &[String],
    limits: &GroupLimits,
) -> Result<(), ChatError> {
    for u in users {
        if let Actor::User(adder) = actor
            && u != adder
            && store.is_blocked(u, adder).await?
        {
            return Err(
                Refusal::forbidden(format!("{u} cannot be added to a group by {adder}")).into(),
            );
        }
        if limits.groups_per_user > 0 && store.user_groups(u).await?.len() >= limits.groups_per_user
        {
            return Err(Refusal::forbidden(format!(
                "{u} is in {} groups, the most one user may be in",
                limits.groups_per_user
            ))
            .into());
        }
    }
    Ok(())
}

/// `user` blocks (or unblocks) `other`; returns `other`. A user blocks at
/// most [`MAX_BLOCKED`] others.
pub async fn set_blocked(
    store: &dyn MessageStore,
    user: &str,
    other: &str,
    blocked: bool,
) -> Result<String, ChatError> {
    check_user(other).map_err(|e| Refusal::invalid(e.to_string()))?;
    if other == user {
        return Err(Refusal::invalid("a user cannot block themselves").into());
    }
    if blocked
        && !store.is_blocked(user, other).await?
        && store.blocked_users(user, "", MAX_BLOCKED).await?.len() >= MAX_BLOCKED
    {
        return Err(Refusal::invalid(format!(
            "{user} already blocks {MAX_BLOCKED} users, the most allowed"
        ))
        .into());
    }
    store.set_blocked(user, other, blocked).await?;
    Ok(other.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_core::accounts::AccountStore as _;
    use tern_core::embedded::EmbeddedStore;
    use tern_core::groups::GroupStore as _;
    use tern_core::store::StoredMessage;

    fn store() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("s.redb"), 1 << 20).unwrap();
        (dir, store)
    }

    async fn group(store: &EmbeddedStore, id: &str, open: bool) {
        let g = Group {
            id: id.into(),
            name: String::new(),
            owner: "owner".into(),
            created_at_ms: 0,
            history_open: open,
        };
        store.create_group(&g, &["early".into()]).await.unwrap();
    }

    async fn post(store: &EmbeddedStore, conversation: &str, n: usize) {
        let messages = (0..n)
            .map(|i| StoredMessage {
                message_id: tern_core::ids::MessageId::new().to_vec(),
                conversation: conversation.into(),
                sender_user: "owner".into(),
                client_msg_id: format!("{conversation}-{i}-{}", rand_suffix()),
                body: vec![b'x'; 100].into(),
                ..Default::default()
            })
            .collect();
        tern_core::store::HistoryStore::put_messages(store, messages)
            .await
            .unwrap();
    }

    fn rand_suffix() -> u128 {
        tern_core::ids::MessageId::new().0
    }

    fn user(u: &str) -> Actor {
        Actor::User(u.into())
    }

    #[test]
    fn users_act_as_themselves_and_the_back_end_names_someone() {
        assert_eq!(user("a").subject("", "list").unwrap(), "a");
        assert_eq!(user("a").subject("a", "list").unwrap(), "a");
        assert_eq!(
            user("a").subject("b", "list").unwrap_err().code,
            ErrorCode::Forbidden
        );
        assert_eq!(Actor::Backend.subject("b", "list").unwrap(), "b");
        assert_eq!(
            Actor::Backend.subject("", "list").unwrap_err().code,
            ErrorCode::InvalidArgument
        );
    }

    #[tokio::test]
    async fn a_late_member_reads_from_when_they_joined() {
        let (_d, store) = store();
        group(&store, "g1", false).await;
        post(&store, "g:g1", 5).await;
        store.add_members("g1", &["late".into()], 5).await.unwrap();
        post(&store, "g:g1", 3).await;

        let early = read_access(&store, &user("early"), "g:g1").await.unwrap();
        assert_eq!(early.after_seq, 0);
        let page = history_page(&store, &early, 0, 100, 1 << 20).await.unwrap();
        assert_eq!(page.messages.len(), 8);

        let late = read_access(&store, &user("late"), "g:g1").await.unwrap();
        assert_eq!(late.after_seq, 5);
        let page = history_page(&store, &late, 0, 2, 1 << 20).await.unwrap();
        let seqs: Vec<u64> = page.messages.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![8, 7]);
        assert!(page.has_more);
        let page = history_page(&store, &late, 7, 100, 1 << 20).await.unwrap();
        assert_eq!(
            page.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![6]
        );
        assert!(!page.has_more, "seq 5 and before are not theirs");
        let page = history_page(&store, &late, 6, 100, 1 << 20).await.unwrap();
        assert!(page.messages.is_empty() && !page.has_more);

        let stranger = read_access(&store, &user("stranger"), "g:g1")
            .await
            .unwrap_err();
        assert!(matches!(stranger, ChatError::Refused(r) if r.code == ErrorCode::Forbidden));
        let backend = read_access(&store, &Actor::Backend, "g:g1").await.unwrap();
        assert_eq!(backend.after_seq, 0);
    }

    #[tokio::test]
    async fn an_open_group_shows_its_history_to_late_members() {
        let (_d, store) = store();
        group(&store, "g2", true).await;
        store.add_members("g2", &["late".into()], 9).await.unwrap();
        let late = read_access(&store, &user("late"), "g:g2").await.unwrap();
        assert_eq!(late.after_seq, 0);
    }

    #[tokio::test]
    async fn pages_stop_at_their_byte_bound() {
        let (_d, store) = store();
        let conv = "d:a:b";
        post(&store, conv, 10).await;
        let access = read_access(&store, &user("a"), conv).await.unwrap();
        let page = history_page(&store, &access, 0, 100, 500).await.unwrap();
        assert!(page.messages.len() < 10 && !page.messages.is_empty());
        assert!(page.has_more);
        assert!(read_access(&store, &user("c"), conv).await.is_err());
    }

    #[tokio::test]
    async fn blocks_and_full_users_cannot_be_added() {
        let (_d, store) = store();
        store.set_blocked("carol", "owner", true).await.unwrap();
        let limits = GroupLimits {
            members_per_call: 10,
            groups_per_user: 1,
        };
        let err = check_addable(&store, &user("owner"), &["carol".into()], &limits)
            .await
            .unwrap_err()
            .into_refusal();
        assert_eq!(err.code, ErrorCode::Forbidden);
        assert!(!err.message.contains("block"), "{}", err.message);
        // The back end is not the blocked user: it may add carol.
        check_addable(&store, &Actor::Backend, &["carol".into()], &limits)
            .await
            .unwrap();
        group(&store, "g3", false).await; // "early" is now in one group
        let err = check_addable(&store, &Actor::Backend, &["early".into()], &limits)
            .await
            .unwrap_err()
            .into_refusal();
        assert!(err.message.contains("most"), "{}", err.message);
    }

    #[tokio::test]
    async fn only_the_owner_changes_others_and_only_members_leave() {
        let (_d, store) = store();
        group(&store, "g", false).await;
        let g = store.group("g").await.unwrap().unwrap();
        let ok = |r: Result<(), ChatError>| r.is_ok();
        assert!(ok(check_member_change(
            &store,
            &user("owner"),
            &g,
            &["x".into()],
            true
        )
        .await));
        assert!(!ok(check_member_change(
            &store,
            &user("x"),
            &g,
            &["y".into()],
            true
        )
        .await));
        assert!(ok(check_member_change(
            &store,
            &user("early"),
            &g,
            &["early".into()],
            false
        )
        .await));
        assert!(
            !ok(check_member_change(&store, &user("x"), &g, &["x".into()], false).await),
            "a stranger does not leave"
        );
        assert!(!ok(check_member_change(
            &store,
            &user("owner"),
            &g,
            &[],
            false
        )
        .await));
        assert!(!ok(check_member_change(
            &store,
            &Actor::Backend,
            &g,
            &["owner".into()],
            false
        )
        .await));
        let too_many: Vec<String> = (0..11).map(|i| format!("u{i}")).collect();
        let limits = GroupLimits {
            members_per_call: 10,
            groups_per_user: 0,
        };
        assert!(check_member_list(&user("owner"), &too_many, &limits).is_err());
        assert!(check_member_list(&Actor::Backend, &too_many, &limits).is_ok());
    }
}
