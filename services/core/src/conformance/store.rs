//! The message store scenarios: every aggregate, retention, groups, blocks and
//! revocations.

// Test code (built only for tests): a failed unwrap is a failed scenario.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use super::fresh;
use crate::groups::Group;
use crate::ids::MessageId;
use crate::store::{ConversationNote, InboxEntry, MessageStore, StoredMessage};

fn message(conversation: &str, sender: &str, client_id: &str, body: &str) -> StoredMessage {
    StoredMessage {
        message_id: MessageId::new().to_vec(),
        conversation: conversation.into(),
        sender_user: sender.into(),
        sender_device: "d1".into(),
        client_msg_id: client_id.into(),
        content_type: "text/plain".into(),
        body: body.as_bytes().to_vec().into(),
        sent_at_ms: crate::now_ms(),
        seq: 0,
    }
}

pub async fn store_scenarios(store: Arc<dyn MessageStore>) {
    let alice = fresh("alice");
    let bob = fresh("bob");
    let conv = format!("d:{alice}:{bob}");

    // Sequence numbers from 1 without gaps; a retried send is stored once.
    let first = store
        .put_messages(vec![
            message(&conv, &alice, "c1", "one"),
            message(&conv, &alice, "c2", "two"),
        ])
        .await
        .expect("put");
    assert_eq!(
        first.iter().map(|o| o.message.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert!(first.iter().all(|o| !o.duplicate));
    let retry = store
        .put_messages(vec![message(&conv, &alice, "c1", "one again")])
        .await
        .expect("put");
    assert!(retry[0].duplicate);
    assert_eq!(
        retry[0].message, first[0].message,
        "a retry returns the first copy"
    );
    // The same client id from another sender is another message.
    let other = store
        .put_messages(vec![message(&conv, &bob, "c1", "bob's")])
        .await
        .expect("put");
    assert!(!other[0].duplicate);
    assert_eq!(other[0].message.seq, 3);

    // Bodies by id, in the order asked, unknown ids left out.
    let ids: Vec<MessageId> = first
        .iter()
        .map(|o| MessageId::from_slice(&o.message.message_id).unwrap())
        .collect();
    let got = store
        .get_messages(&[ids[1], MessageId::new(), ids[0]])
        .await
        .expect("get");
    assert_eq!(
        got.iter().map(|m| m.body.as_ref()).collect::<Vec<_>>(),
        vec![&b"two"[..], b"one"]
    );

    // History: newest first, before a seq.
    let h = store.history(&conv, 0, 10).await.expect("history");
    assert_eq!(h.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![3, 2, 1]);
    let h = store.history(&conv, 3, 1).await.expect("history");
    assert_eq!(h.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2]);

    // Inbox: replays do not add entries twice; pages after a cursor.
    let entry = |cursor, id| InboxEntry {
        user: bob.clone(),
        cursor,
        message_id: id,
        conversation: conv.clone(),
    };
    let c = store
        .append_inbox(vec![entry(10, ids[0]), entry(11, ids[1])])
        .await
        .expect("append");
    assert_eq!(c, vec![10, 11]);
    let c = store
        .append_inbox(vec![entry(10, ids[0]), entry(15, ids[0])])
        .await
        .expect("append replay");
    assert_eq!(c, vec![10, 10], "a repeated message keeps its first cursor");
    let page = store.read_inbox(&bob, 0, 10).await.expect("read");
    assert_eq!(page.head, 11);
    assert_eq!(
        page.entries.iter().map(|e| e.cursor).collect::<Vec<_>>(),
        vec![10, 11]
    );
    let page = store.read_inbox(&bob, 10, 10).await.expect("read");
    assert_eq!(
        page.entries
            .iter()
            .map(|e| e.message_id)
            .collect::<Vec<_>>(),
        vec![ids[1]]
    );
    let page = store.read_inbox(&bob, 0, 1).await.expect("read");
    assert_eq!(page.entries.len(), 1);
    let empty = store
        .read_inbox(&fresh("nobody"), 0, 10)
        .await
        .expect("read");
    assert_eq!(empty, Default::default());

    // Cursors per device, never moving back.
    assert_eq!(store.cursor(&bob, "phone").await.unwrap(), 0);
    store.advance_cursor(&bob, "phone", 11).await.unwrap();
    assert_eq!(store.cursor(&bob, "phone").await.unwrap(), 11);
    store.advance_cursor(&bob, "phone", 10).await.unwrap();
    assert_eq!(store.cursor(&bob, "phone").await.unwrap(), 11, "never back");
    store.advance_cursor(&bob, "phone", 12).await.unwrap();
    assert_eq!(store.cursor(&bob, "phone").await.unwrap(), 12);
    assert_eq!(store.cursor(&bob, "laptop").await.unwrap(), 0);

    // Newest first, after a cursor; in a bucketed store the scan crosses
    // buckets (cursors 2^20 apart).
    let far = 3 << 20;
    store
        .append_inbox(vec![entry(far, ids[1]), entry(far + 1, other_id(&other))])
        .await
        .expect("append");
    let newest = store.read_inbox_newest(&bob, 0, 3).await.expect("newest");
    assert_eq!(
        newest.iter().map(|e| e.cursor).collect::<Vec<_>>(),
        vec![far + 1, 11, 10],
        "ids[1] at `far` is a repeat, so it keeps cursor 11"
    );
    let newest = store.read_inbox_newest(&bob, 10, 10).await.expect("newest");
    assert_eq!(
        newest.iter().map(|e| e.cursor).collect::<Vec<_>>(),
        vec![far + 1, 11]
    );
    assert!(
        store
            .read_inbox_newest(&bob, far + 1, 10)
            .await
            .unwrap()
            .is_empty()
    );

    conversation_list_scenarios(store.as_ref()).await;
    retention_scenarios(store.as_ref()).await;
    group_scenarios(store.as_ref()).await;
    join_point_scenarios(store.as_ref()).await;
    block_scenarios(store.as_ref()).await;
    revocation_scenarios(store.as_ref()).await;
}

async fn retention_scenarios(store: &dyn MessageStore) {
    use crate::store::InboxLimits;
    let user = fresh("erin");
    let now = crate::now_ms();
    // Cursors 1..=10: the first three are a day old, the rest are new.
    let entries: Vec<InboxEntry> = (1..=10)
        .map(|cursor| InboxEntry {
            user: user.clone(),
            cursor,
            message_id: MessageId::at_time_ms(if cursor <= 3 { now - 86_400_000 } else { now }),
            conversation: "d:a:erin".into(),
        })
        .collect();
    store.append_inbox(entries).await.expect("append");
    let cursors = |page: crate::store::InboxPage| -> Vec<u64> {
        page.entries.iter().map(|e| e.cursor).collect()
    };
    let limits = |max_entries, min_time_ms| InboxLimits {
        max_entries,
        min_time_ms,
    };
    assert_eq!(store.trimmed_through(&user).await.unwrap(), 0);
    // Nothing past the limits: nothing trimmed.
    assert_eq!(store.trim_inbox(&user, limits(10, 0)).await.unwrap(), 0);
    // By age: an hour ago as the limit trims the day-old three.
    let hour_ago = now - 3_600_000;
    assert_eq!(
        store
            .trim_inbox(&user, limits(100, hour_ago))
            .await
            .unwrap(),
        3
    );
    let page = store.read_inbox(&user, 0, 100).await.unwrap();
    assert_eq!(cursors(page), (4..=10).collect::<Vec<_>>());
    // By count: 7 left, keep 5.
    assert_eq!(
        store.trim_inbox(&user, limits(5, hour_ago)).await.unwrap(),
        5
    );
    let page = store.read_inbox(&user, 0, 100).await.unwrap();
    assert_eq!(page.head, 10);
    assert_eq!(cursors(page), (6..=10).collect::<Vec<_>>());
    assert_eq!(
        store.trim_inbox(&user, limits(5, hour_ago)).await.unwrap(),
        5
    );
    assert_eq!(store.trimmed_through(&user).await.unwrap(), 5);
    // The count follows appends after a trim.
    store
        .append_inbox(vec![InboxEntry {
            user: user.clone(),
            cursor: 11,
            message_id: MessageId::new(),
            conversation: "d:a:erin".into(),
        }])
        .await
        .expect("append");
    assert_eq!(
        store.trim_inbox(&user, limits(5, hour_ago)).await.unwrap(),
        6
    );
    let page = store.read_inbox(&user, 0, 100).await.unwrap();
    assert_eq!(cursors(page), (7..=11).collect::<Vec<_>>());
    assert_eq!(store.trimmed_through(&fresh("nobody")).await.unwrap(), 0);
}

fn other_id(outcomes: &[crate::store::PutOutcome]) -> MessageId {
    MessageId::from_slice(&outcomes[0].message.message_id).unwrap()
}

async fn conversation_list_scenarios(store: &dyn MessageStore) {
    let (carol, dave, erin) = (fresh("carol"), fresh("dave"), fresh("erin"));
    let with_dave = format!("d:{carol}:{dave}");
    let with_erin = format!("d:{carol}:{erin}");
    let note = |conversation: &str, seq, sent_by_user| ConversationNote {
        user: carol.clone(),
        conversation: conversation.to_owned(),
        seq,
        message_id: MessageId::new(),
        sent_by_user,
    };
    let (d5, d3, e2) = (
        note(&with_dave, 5, false),
        note(&with_dave, 3, false),
        note(&with_erin, 2, false),
    );
    // A replayed older note (seq 3) after seq 5 changes nothing.
    store
        .note_conversations(vec![d5.clone(), e2.clone(), d3])
        .await
        .expect("note");
    let list = store.conversations(&carol, 10).await.expect("list");
    assert_eq!(
        list.iter()
            .map(|c| (c.conversation.as_str(), c.last_seq, c.unread()))
            .collect::<Vec<_>>(),
        vec![(with_erin.as_str(), 2, 2), (with_dave.as_str(), 5, 5)],
        "most recently active first (erin's message id is newer)"
    );
    assert_eq!(list[1].last_message_id, d5.message_id);
    assert_eq!(store.conversations(&carol, 1).await.unwrap().len(), 1);

    // Read marks: forward only, never past the newest message; carol's own
    // message marks the conversation read.
    assert_eq!(store.mark_read(&carol, &with_dave, 4).await.unwrap(), 4);
    assert_eq!(store.mark_read(&carol, &with_dave, 2).await.unwrap(), 4);
    assert_eq!(store.mark_read(&carol, &with_dave, 99).await.unwrap(), 5);
    assert_eq!(store.mark_read(&carol, "d:x:y", 3).await.unwrap(), 0);
    store
        .note_conversations(vec![note(&with_erin, 3, true)])
        .await
        .expect("note");
    let list = store.conversations(&carol, 10).await.expect("list");
    assert_eq!(
        list.iter()
            .map(|c| (c.conversation.as_str(), c.last_seq, c.read_seq))
            .collect::<Vec<_>>(),
        vec![(with_erin.as_str(), 3, 3), (with_dave.as_str(), 5, 5)]
    );
    assert!(
        store
            .conversations(&fresh("nobody"), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn group_scenarios(store: &dyn MessageStore) {
    let id = crate::ids::new_group_id();
    let (owner, a, b) = (fresh("owner"), fresh("a"), fresh("b"));
    let group = Group {
        id: id.clone(),
        name: "team".into(),
        owner: owner.clone(),
        created_at_ms: 1_700_000_000_000,
        history_open: false,
    };
    assert_eq!(store.group(&id).await.unwrap(), None);
    store
        .create_group(&group, &[a.clone(), a.clone()])
        .await
        .expect("create");
    assert_eq!(store.group(&id).await.unwrap(), Some(group.clone()));
    // A retried create changes nothing, not even the members.
    store
        .create_group(
            &Group {
                name: "other".into(),
                ..group.clone()
            },
            std::slice::from_ref(&b),
        )
        .await
        .expect("create again");
    assert_eq!(store.group(&id).await.unwrap().unwrap().name, "team");
    let mut expected = vec![owner.clone(), a.clone()];
    expected.sort();
    assert_eq!(store.members(&id, "", 100).await.unwrap(), expected);
    assert!(!store.is_member(&id, &b).await.unwrap());

    store
        .add_members(&id, &[b.clone(), a.clone()], 0)
        .await
        .expect("add");
    assert_eq!(store.member_count(&id).await.unwrap(), 3);
    assert!(store.is_member(&id, &b).await.unwrap());
    // Pages in id order, starting after the given member.
    let mut all = [owner.clone(), a.clone(), b.clone()];
    all.sort();
    assert_eq!(store.members(&id, "", 2).await.unwrap(), all[..2].to_vec());
    assert_eq!(
        store.members(&id, &all[1], 2).await.unwrap(),
        all[2..].to_vec()
    );
    assert_eq!(store.user_groups(&b).await.unwrap(), vec![id.clone()]);

    store
        .remove_members(&id, &[b.clone(), fresh("stranger")])
        .await
        .expect("remove");
    assert!(!store.is_member(&id, &b).await.unwrap());
    assert_eq!(store.member_count(&id).await.unwrap(), 2);
    assert!(store.user_groups(&b).await.unwrap().is_empty());
    assert_eq!(store.member_count("nosuchgroup").await.unwrap(), 0);
    assert!(
        store
            .members("nosuchgroup", "", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Where members start reading a group's history, and whether it is open.
async fn join_point_scenarios(store: &dyn MessageStore) {
    let id = crate::ids::new_group_id();
    let (owner, a, b, c) = (fresh("owner"), fresh("a"), fresh("b"), fresh("c"));
    let group = Group {
        id: id.clone(),
        name: "joins".into(),
        owner: owner.clone(),
        created_at_ms: 1_700_000_000_000,
        history_open: false,
    };
    store
        .create_group(&group, std::slice::from_ref(&a))
        .await
        .expect("create");
    // The members it was created with read from the start.
    assert_eq!(store.member_since(&id, &owner).await.unwrap(), Some(0));
    assert_eq!(store.member_since(&id, &a).await.unwrap(), Some(0));
    assert_eq!(store.member_since(&id, &b).await.unwrap(), None);
    assert_eq!(store.member_since("nosuchgroup", &a).await.unwrap(), None);

    // Added later: from the seq given. Someone already in keeps their
    // join point, in the same call as newcomers or in a later one.
    store
        .add_members(&id, &[b.clone(), a.clone()], 7)
        .await
        .expect("add");
    assert_eq!(store.member_since(&id, &b).await.unwrap(), Some(7));
    assert_eq!(store.member_since(&id, &a).await.unwrap(), Some(0));
    store
        .add_members(&id, &[b.clone(), c.clone()], 9)
        .await
        .expect("add again");
    assert_eq!(store.member_since(&id, &b).await.unwrap(), Some(7));
    assert_eq!(store.member_since(&id, &c).await.unwrap(), Some(9));
    assert_eq!(store.member_count(&id).await.unwrap(), 4);

    // Removed then added again: a new join point.
    store
        .remove_members(&id, std::slice::from_ref(&b))
        .await
        .expect("remove");
    assert_eq!(store.member_since(&id, &b).await.unwrap(), None);
    store
        .add_members(&id, std::slice::from_ref(&b), 12)
        .await
        .expect("add after removal");
    assert_eq!(store.member_since(&id, &b).await.unwrap(), Some(12));
    assert_eq!(store.user_groups(&b).await.unwrap(), vec![id.clone()]);

    // Open history round-trips; closed is the default (checked above too).
    let open = Group {
        id: crate::ids::new_group_id(),
        history_open: true,
        ..group.clone()
    };
    store.create_group(&open, &[]).await.expect("create open");
    assert_eq!(store.group(&open.id).await.unwrap(), Some(open.clone()));
    assert!(!store.group(&id).await.unwrap().unwrap().history_open);
}

async fn block_scenarios(store: &dyn MessageStore) {
    let (ann, ben, cat, dan) = (fresh("ann"), fresh("ben"), fresh("cat"), fresh("dan"));
    assert!(!store.is_blocked(&ann, &ben).await.unwrap());
    assert!(store.blocked_users(&ann, "", 10).await.unwrap().is_empty());

    // Blocking twice is blocking once; a block is one way.
    store.set_blocked(&ann, &ben, true).await.expect("block");
    store
        .set_blocked(&ann, &ben, true)
        .await
        .expect("block again");
    assert!(store.is_blocked(&ann, &ben).await.unwrap());
    assert!(!store.is_blocked(&ben, &ann).await.unwrap(), "one way");
    assert!(store.blocked_users(&ben, "", 10).await.unwrap().is_empty());

    // The list pages in id order, after the given id (prefixes b < c < d).
    store.set_blocked(&ann, &dan, true).await.expect("block");
    store.set_blocked(&ann, &cat, true).await.expect("block");
    let all = vec![ben.clone(), cat.clone(), dan.clone()];
    assert_eq!(store.blocked_users(&ann, "", 10).await.unwrap(), all);
    assert_eq!(store.blocked_users(&ann, "", 2).await.unwrap(), all[..2]);
    assert_eq!(store.blocked_users(&ann, &cat, 2).await.unwrap(), all[2..]);
    assert!(store.blocked_users(&ann, &dan, 2).await.unwrap().is_empty());
    assert!(store.blocked_users(&ann, "", 0).await.unwrap().is_empty());

    // Unblocking twice, or someone never blocked, is fine too.
    store.set_blocked(&ann, &cat, false).await.expect("unblock");
    store
        .set_blocked(&ann, &cat, false)
        .await
        .expect("unblock again");
    store
        .set_blocked(&ann, &fresh("stranger"), false)
        .await
        .expect("unblock a stranger");
    assert!(!store.is_blocked(&ann, &cat).await.unwrap());
    assert_eq!(
        store.blocked_users(&ann, "", 10).await.unwrap(),
        vec![ben.clone(), dan.clone()]
    );
}

async fn revocation_scenarios(store: &dyn MessageStore) {
    let user = fresh("rae");
    let now = crate::now_ms();
    let before = |device: Option<&'static str>| {
        let user = user.clone();
        async move { store.revoked_before(&user, device).await.unwrap() }
    };
    assert_eq!(before(None).await, 0, "nothing revoked");
    assert_eq!(before(Some("phone")).await, 0);

    // One device's revocation is that device's only.
    store
        .revoke_tokens(&user, Some("phone"), now)
        .await
        .expect("revoke");
    assert_eq!(before(Some("phone")).await, now);
    assert_eq!(before(Some("laptop")).await, 0);
    assert_eq!(before(None).await, 0, "not user-wide");

    // A user-wide one covers every device; the later of the two counts.
    store
        .revoke_tokens(&user, None, now - 1000)
        .await
        .expect("revoke all");
    assert_eq!(before(None).await, now - 1000);
    assert_eq!(before(Some("laptop")).await, now - 1000);
    assert_eq!(before(Some("phone")).await, now);

    // Only forward: an earlier time changes nothing, a later one moves it.
    store.revoke_tokens(&user, None, now - 5000).await.unwrap();
    store
        .revoke_tokens(&user, Some("phone"), now - 500)
        .await
        .unwrap();
    assert_eq!(before(None).await, now - 1000);
    assert_eq!(before(Some("phone")).await, now);
    store.revoke_tokens(&user, None, now + 1000).await.unwrap();
    assert_eq!(before(None).await, now + 1000);
    assert_eq!(before(Some("phone")).await, now + 1000);

    assert_eq!(
        store
            .revoked_before(&fresh("nobody"), Some("phone"))
            .await
            .unwrap(),
        0
    );
}
