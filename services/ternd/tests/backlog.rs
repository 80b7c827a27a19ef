//! Offline backlogs and multi-device sync through a real ternd: a long
//! backlog is pushed newest first and paged back through history, each
//! message exactly once; devices keep their own cursors; the conversation
//! list and read marks; what a client sees for bad requests.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::{Server, bodies, receive};
use futures_util::StreamExt;
use tern_client::{Client, ClientError, Event, LoginOptions, SendOptions};
use tern_proto::client::{ErrorCode, Message};

const WAIT: Duration = Duration::from_secs(30);
const PUSH_MAX: usize = 500;
const PER_CONVERSATION: usize = 200;

/// `from` sends `n` messages to `to` (or to a conversation), many in flight.
async fn send_many(from: Arc<Client>, target: &str, n: usize, to_user: bool) {
    let target = target.to_owned();
    futures_util::stream::iter(0..n)
        .map(|i| {
            let (from, target) = (from.clone(), target.clone());
            async move {
                let body = format!("{}-{i}", from.user_id());
                let options = if to_user {
                    SendOptions::to_user(target, body)
                } else {
                    SendOptions::to_conversation(target, body)
                };
                from.send(options).await.expect("send")
            }
        })
        .buffer_unordered(64)
        .for_each(|_| async {})
        .await;
}

/// Reads pushes until one says nothing more is pending, ACKing each.
/// Returns the messages and whether any push said older ones were left out.
async fn login_push(client: &Client) -> (Vec<Message>, bool, usize) {
    let (mut got, mut older, mut frames) = (Vec::new(), false, 0);
    loop {
        let event = tokio::time::timeout(WAIT, client.next_event())
            .await
            .expect("a push after login");
        match event {
            Some(Event::Messages {
                messages,
                last_cursor,
                more_pending,
                older_not_pushed,
                ..
            }) => {
                frames += 1;
                got.extend(messages);
                older |= older_not_pushed;
                client.ack(last_cursor).await.expect("ack");
                if !more_pending {
                    return (got, older, frames);
                }
            }
            other => panic!("expected a push, got {other:?}"),
        }
    }
}

/// No push arrives within `within`.
async fn assert_quiet(client: &Client, within: Duration) {
    if let Ok(event) = tokio::time::timeout(within, client.next_event()).await {
        panic!("expected nothing, got {event:?}");
    }
}

fn error_code(e: &ClientError) -> Option<ErrorCode> {
    match e {
        ClientError::Server { code, .. } => Some(*code),
        _ => None,
    }
}

#[tokio::test]
async fn a_long_backlog_is_pushed_newest_first_and_paged_back_exactly_once() {
    let server = Server::start_with(|c| {
        c.gateway.login_push_max = PUSH_MAX;
        c.gateway.login_push_per_conversation = PER_CONVERSATION;
    })
    .await;
    // bob is offline while 10,000 messages arrive in three conversations.
    let senders = [("alice", 7_000), ("carol", 2_000), ("dave", 1_000)];
    let mut fills = Vec::new();
    for (user, n) in senders {
        let client = Arc::new(server.login(user, "phone").await);
        fills.push(tokio::spawn(async move {
            send_many(client, "bob", n, true).await;
        }));
    }
    for f in fills {
        f.await.expect("fill");
    }
    // A send is confirmed once stored; the router fills bob's inbox just
    // after. Wait for that, so the login below finds the whole backlog.
    let options = LoginOptions::new(server.token("bob").await, "probe").send_only();
    let (probe, _) = Client::connect(&server.tcp(), options)
        .await
        .expect("probe");
    common::eventually("bob's inbox to hold everything", || async {
        let (mut after, mut count) = (0, 0);
        loop {
            let page = probe.sync(after, 1000).await.expect("sync");
            count += page.messages.len();
            after = page.next_cursor;
            if !page.has_more {
                break;
            }
        }
        (count == 10_000).then_some(())
    })
    .await;

    let bob = server.login("bob", "phone").await;
    let (pushed, older_not_pushed, frames) = login_push(&bob).await;
    assert!(
        older_not_pushed,
        "the push says older messages were left out"
    );
    assert!(
        pushed.len() <= PUSH_MAX,
        "{} pushed, over the limit",
        pushed.len()
    );
    assert!(
        frames <= 2,
        "{frames} push frames for {} messages",
        pushed.len()
    );

    // Per conversation: the newest messages, in order, at most the limit.
    let mut per: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in &pushed {
        per.entry(m.conversation.clone()).or_default().push(m.seq);
    }
    assert_eq!(per.len(), 3, "every conversation is in the push");
    for (conversation, seqs) in &per {
        let last = senders
            .iter()
            .find(|(u, _)| conversation.contains(u))
            .map(|(_, n)| *n as u64)
            .unwrap();
        assert!(
            seqs.len() <= PER_CONVERSATION,
            "{conversation}: {}",
            seqs.len()
        );
        let first = last + 1 - seqs.len() as u64;
        assert_eq!(
            seqs,
            &(first..=last).collect::<Vec<_>>(),
            "{conversation}: the newest, oldest first"
        );
    }

    // The home screen: every conversation, its newest message, all unread.
    let list = bob.conversations(0).await.expect("conversation list");
    assert_eq!(list.len(), 3);
    for c in &list {
        let n = senders
            .iter()
            .find(|(u, _)| c.conversation.contains(u))
            .map(|(_, n)| *n as u64)
            .unwrap();
        assert_eq!((c.last_seq, c.unread, c.read_seq), (n, n, 0), "{c:?}");
        let last = c.last_message.as_ref().expect("newest message");
        assert_eq!(last.seq, n);
    }

    // Scrolling up: each conversation paged back from its oldest pushed
    // seq. Together with the push, every message exactly once, in order.
    let mut ids: HashSet<Vec<u8>> = pushed.iter().map(|m| m.message_id.to_vec()).collect();
    for (conversation, seqs) in &per {
        let mut before = seqs[0];
        let mut pulled = Vec::new();
        loop {
            let (page, next, more) = bob
                .history(conversation, before, 1000)
                .await
                .expect("history page");
            pulled.extend(page.iter().map(|m| m.seq));
            for m in page {
                assert!(
                    ids.insert(m.message_id.to_vec()),
                    "{conversation} seq {} came twice",
                    m.seq
                );
            }
            before = next;
            if !more {
                break;
            }
        }
        let expected: Vec<u64> = (1..seqs[0]).rev().collect();
        assert_eq!(pulled, expected, "{conversation}: newest first, no gap");
    }
    assert_eq!(ids.len(), 10_000);

    // Everything was ACKed: a new login of the same device gets nothing.
    drop(bob);
    let bob = server.login("bob", "phone").await;
    assert_quiet(&bob, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn each_device_gets_what_it_lacks() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let phone = server.login("bob", "phone").await;
    for i in 0..3 {
        alice
            .send(SendOptions::to_user("bob", format!("m{i}")))
            .await
            .unwrap();
    }
    assert_eq!(
        bodies(&receive(&phone, 3, WAIT).await),
        vec!["m0", "m1", "m2"]
    );
    phone.logout().await.unwrap();
    for i in 3..5 {
        alice
            .send(SendOptions::to_user("bob", format!("m{i}")))
            .await
            .unwrap();
    }
    // The laptop never ACKed anything; the phone ACKed the first three.
    let laptop = server.login("bob", "laptop").await;
    assert_eq!(
        bodies(&receive(&laptop, 5, WAIT).await),
        vec!["m0", "m1", "m2", "m3", "m4"]
    );
    let phone = server.login("bob", "phone").await;
    assert_eq!(bodies(&receive(&phone, 2, WAIT).await), vec!["m3", "m4"]);
    assert_quiet(&phone, Duration::from_millis(300)).await;

    // What bob sends from the phone shows up on the laptop too.
    phone
        .send(SendOptions::to_user("alice", "from my phone"))
        .await
        .unwrap();
    let mine = receive(&laptop, 1, WAIT).await;
    assert_eq!(bodies(&mine), vec!["from my phone"]);
    assert_eq!(mine[0].sender_device, "phone");
}

#[tokio::test]
async fn read_marks_are_per_user_and_only_move_forward() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    for i in 0..5 {
        alice
            .send(SendOptions::to_user("bob", format!("m{i}")))
            .await
            .unwrap();
    }
    let phone = server.login("bob", "phone").await;
    receive(&phone, 5, WAIT).await;
    let conversation = "d:alice:bob";
    let unread = |list: &[tern_proto::client::ConversationSummary]| {
        list.iter()
            .find(|c| c.conversation == conversation)
            .map(|c| c.unread)
    };
    assert_eq!(unread(&phone.conversations(0).await.unwrap()), Some(5));
    assert_eq!(phone.mark_read(conversation, 3).await.unwrap(), 3);
    // Another device of bob's sees the same read mark.
    let laptop = server.login("bob", "laptop").await;
    assert_eq!(unread(&laptop.conversations(0).await.unwrap()), Some(2));
    // Backwards is ignored; past the newest marks everything read.
    assert_eq!(laptop.mark_read(conversation, 1).await.unwrap(), 3);
    assert_eq!(laptop.mark_read(conversation, u64::MAX).await.unwrap(), 5);
    assert_eq!(unread(&phone.conversations(0).await.unwrap()), Some(0));

    // alice's own messages count as read for her.
    assert_eq!(unread(&alice.conversations(0).await.unwrap()), Some(0));
    // bob replies: his conversation stays read, alice has one unread.
    phone
        .send(SendOptions::to_user("alice", "ok"))
        .await
        .unwrap();
    common::eventually("alice's unread count", || async {
        (unread(&alice.conversations(0).await.unwrap()) == Some(1)).then_some(())
    })
    .await;
    assert_eq!(unread(&phone.conversations(0).await.unwrap()), Some(0));
}

#[tokio::test]
async fn bad_history_requests_get_clear_errors() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    alice.send(SendOptions::to_user("bob", "hi")).await.unwrap();
    let mallory = server.login("mallory", "phone").await;

    let forbidden = mallory.history("d:alice:bob", 0, 10).await.unwrap_err();
    assert_eq!(
        error_code(&forbidden),
        Some(ErrorCode::Forbidden),
        "{forbidden}"
    );
    // The same code as a send to such a conversation, and as the API's.
    let malformed = mallory.history("no such thing", 0, 10).await.unwrap_err();
    assert_eq!(
        error_code(&malformed),
        Some(ErrorCode::UnknownConversation),
        "{malformed}"
    );
    let not_member = mallory
        .history(format!("g:{}", "0".repeat(32)), 0, 10)
        .await
        .unwrap_err();
    assert_eq!(error_code(&not_member), Some(ErrorCode::Forbidden));
    let read = mallory.mark_read("d:alice:bob", 1).await.unwrap_err();
    assert_eq!(error_code(&read), Some(ErrorCode::Forbidden));
    // An inbox cursor past the end is refused, not treated as "from 0".
    let bad_cursor = alice.sync(1 << 40, 10).await.unwrap_err();
    assert_eq!(
        error_code(&bad_cursor),
        Some(ErrorCode::BadCursor),
        "{bad_cursor}"
    );

    // The connection is still fine after all that.
    let (page, _, more) = alice.history("d:alice:bob", 0, 10).await.unwrap();
    assert_eq!(bodies(&page), vec!["hi"]);
    assert!(!more);
    assert!(mallory.conversations(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_device_behind_the_trim_point_is_told_of_the_gap() {
    let server = Server::start_with(|c| c.gateway.inbox_retention.max_entries = 50).await;
    let alice = server.login("alice", "phone").await;
    let phone = server.login("bob", "phone").await;
    for i in 0..5 {
        alice
            .send(SendOptions::to_user("bob", format!("m{i}")))
            .await
            .unwrap();
    }
    assert_eq!(receive(&phone, 5, WAIT).await.len(), 5);
    phone.logout().await.unwrap();
    // 80 more while the phone is away; the inbox keeps the newest 50.
    let alice = Arc::new(alice);
    send_many(alice.clone(), "bob", 80, true).await;
    let options = LoginOptions::new(server.token("bob").await, "probe").send_only();
    let (probe, _) = Client::connect(&server.tcp(), options)
        .await
        .expect("probe");
    common::eventually("the 80 in bob's inbox", || async {
        let page = probe.sync(0, 1000).await.ok()?;
        (page.messages.len() >= 80).then_some(())
    })
    .await;

    let phone = server.login("bob", "phone").await;
    let (mut got, mut gap) = (Vec::new(), false);
    while got.len() < 50 {
        match tokio::time::timeout(WAIT, phone.next_event())
            .await
            .expect("push")
        {
            Some(Event::Messages {
                messages,
                last_cursor,
                gap: g,
                ..
            }) => {
                gap |= g;
                got.extend(messages);
                phone.ack(last_cursor).await.unwrap();
            }
            other => panic!("expected a push, got {other:?}"),
        }
    }
    assert!(gap, "the push says entries were trimmed");
    assert_eq!(got.len(), 50);
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (36..=85).collect::<Vec<_>>(), "the newest 50");
    assert_quiet(&phone, Duration::from_millis(300)).await;

    // A sync from before the trim point says so and starts at it.
    let page = probe.sync(0, 1000).await.unwrap();
    assert!(page.gap);
    assert_eq!(page.messages.len(), 50);
    assert_eq!(page.messages[0].seq, 36);
    // The conversation's history still has everything.
    let (history, _, more) = phone.history("d:alice:bob", 0, 1000).await.unwrap();
    assert_eq!(history.len(), 85);
    assert!(!more);
}
