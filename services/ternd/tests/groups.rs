//! Group chat through a real ternd: membership through the gRPC API, fan-out
//! to members in the pipeline, what non-members and removed members see.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Server, bodies, receive};
use tern_client::{Event, GroupApi, SendOptions};
use tern_proto::client::ErrorCode;

const WAIT: Duration = Duration::from_secs(20);

async fn groups_as(server: &Server, user: &str) -> GroupApi {
    GroupApi::connect(&server.api(), server.token(user).await)
        .await
        .expect("API")
}

#[tokio::test]
async fn a_group_message_reaches_every_member_and_stops_at_removal() {
    let server = Server::start().await;
    let mut api = groups_as(&server, "alice").await;
    let group = api
        .create("team", &["bob".into(), "carol".into()])
        .await
        .expect("create");
    assert_eq!(group.owner, "alice");
    assert_eq!(group.member_count, 3);
    assert_eq!(group.conversation, format!("g:{}", group.id));
    assert_eq!(
        api.members(&group.id).await.unwrap(),
        vec!["alice", "bob", "carol"]
    );

    // bob is online, carol is not.
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    for i in 0..3 {
        let sent = alice
            .send(SendOptions::to_conversation(
                &group.conversation,
                format!("g{i}"),
            ))
            .await
            .expect("a member posts");
        assert_eq!(sent.seq, i + 1);
    }
    let got = receive(&bob, 3, WAIT).await;
    assert_eq!(bodies(&got), vec!["g0", "g1", "g2"]);
    assert!(
        got.iter()
            .all(|m| m.conversation == group.conversation && m.sender_user == "alice")
    );

    // carol gets them when she logs in, from her inbox.
    let carol = server.login("carol", "phone").await;
    assert_eq!(
        bodies(&receive(&carol, 3, WAIT).await),
        vec!["g0", "g1", "g2"]
    );

    // After her removal carol gets nothing more from the group, and may not post.
    api.remove(&group.id, &["carol".into()])
        .await
        .expect("remove");
    alice
        .send(SendOptions::to_conversation(
            &group.conversation,
            "after removal",
        ))
        .await
        .unwrap();
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), vec!["after removal"]);
    // Her deliveries are ordered: had the group message reached her inbox,
    // it would come before this later 1:1 message.
    alice.send_to("carol", "marker").await.unwrap();
    assert_eq!(bodies(&receive(&carol, 1, WAIT).await), vec!["marker"]);
    let err = carol
        .send(SendOptions::to_conversation(
            &group.conversation,
            "let me back",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    assert!(err.to_string().contains("not a member"), "{err}");

    // The group's history has the four messages, in order.
    let mut raw = server.backend().await;
    let history = raw
        .history(tern_proto::api::HistoryRequest {
            conversation: group.conversation.clone(),
            before_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bodies(&history.messages),
        vec!["after removal", "g2", "g1", "g0"]
    );
}

#[tokio::test]
async fn a_non_member_cannot_post_and_an_unknown_group_is_unknown() {
    let server = Server::start().await;
    let mut api = groups_as(&server, "alice").await;
    let group = api.create("", &["bob".into()]).await.unwrap();
    let dave = server.login("dave", "phone").await;
    let err = dave
        .send(SendOptions::to_conversation(&group.conversation, "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    let err = dave
        .send(SendOptions::to_conversation(
            "g:0000000000000000000000000000dead",
            "hi",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownConversation), "{err}");

    // The refusal stored nothing: bob gets only the next real message.
    let bob = server.login("bob", "phone").await;
    let alice = server.login("alice", "phone").await;
    alice
        .send(SendOptions::to_conversation(&group.conversation, "real"))
        .await
        .unwrap();
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), vec!["real"]);
}

#[tokio::test]
async fn only_the_owner_manages_members_and_members_may_leave() {
    let server = Server::start().await;
    let mut alice = groups_as(&server, "alice").await;
    let group = alice.create("team", &["bob".into()]).await.unwrap();

    let mut bob = groups_as(&server, "bob").await;
    let err = bob.add(&group.id, &["dave".into()]).await.unwrap_err();
    assert!(
        matches!(
            &err,
            tern_client::ClientError::Api {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(bob.list().await.unwrap().len(), 1, "bob sees his group");

    let mut dave = groups_as(&server, "dave").await;
    let err = dave.members(&group.id).await.unwrap_err();
    assert!(
        matches!(
            &err,
            tern_client::ClientError::Api {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "a non-member cannot list members: {err}"
    );
    let err = dave.members("nosuchgroup").await.unwrap_err();
    assert!(
        matches!(
            &err,
            tern_client::ClientError::Api {
                code: tonic::Code::NotFound,
                ..
            }
        ),
        "{err}"
    );

    // bob leaves; the owner cannot be removed.
    let left = bob.remove(&group.id, &["bob".into()]).await.unwrap();
    assert_eq!(left.member_count, 1);
    assert!(bob.list().await.unwrap().is_empty());
    let err = alice
        .remove(&group.id, &["alice".into()])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            tern_client::ClientError::Api {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ),
        "{err}"
    );

    // A bad token is refused, not treated as a trusted call.
    let mut forged = GroupApi::connect(&server.api(), "not.a.token")
        .await
        .unwrap();
    let err = forged.create("x", &[]).await.unwrap_err();
    assert!(
        matches!(
            &err,
            tern_client::ClientError::Api {
                code: tonic::Code::Unauthenticated,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn a_member_sees_their_own_group_message_on_their_other_device() {
    let server = Server::start().await;
    let mut api = groups_as(&server, "alice").await;
    let group = api.create("", &["bob".into()]).await.unwrap();
    let laptop = server.login("alice", "laptop").await;
    let phone = server.login("alice", "phone").await;
    phone
        .send(SendOptions::to_conversation(
            &group.conversation,
            "from the phone",
        ))
        .await
        .unwrap();
    assert_eq!(
        bodies(&receive(&laptop, 1, WAIT).await),
        vec!["from the phone"]
    );
    // No stray events on the phone other than its own copy.
    match tokio::time::timeout(WAIT, phone.next_event())
        .await
        .unwrap()
    {
        Some(Event::Messages { messages, .. }) => {
            assert_eq!(bodies(&messages), vec!["from the phone"])
        }
        other => panic!("expected the phone's own copy, got {other:?}"),
    }
}

/// Reads events until `n` large-group messages arrived; an inbox push
/// instead fails the test (large groups skip inboxes).
async fn receive_live(client: &tern_client::Client, n: usize) -> Vec<tern_proto::client::Message> {
    let mut got = Vec::new();
    while got.len() < n {
        match tokio::time::timeout(WAIT, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} group messages", got.len()))
        {
            Some(Event::GroupMessages { messages, .. }) => got.extend(messages),
            other => panic!("expected large-group messages, got {other:?}"),
        }
    }
    got
}

async fn quiet(client: &tern_client::Client) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(500), client.next_event()).await {
        panic!("expected nothing, got {e:?}");
    }
}

#[tokio::test]
async fn a_large_group_is_pushed_live_and_read_from_its_history() {
    // Over 1 member is large here: no inbox entry per member.
    let server = Server::start_with(|c| c.large_group_members = 1).await;
    let mut api = groups_as(&server, "alice").await;
    let group = api
        .create("big", &["bob".into(), "carol".into()])
        .await
        .expect("create");
    let conv = group.conversation.clone();
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    for i in 0..3 {
        let sent = alice
            .send(SendOptions::to_conversation(&conv, format!("g{i}")))
            .await
            .expect("a member posts");
        assert_eq!(sent.seq, i + 1);
    }
    // bob, online, gets them live, in order.
    let got = receive_live(&bob, 3).await;
    assert_eq!(bodies(&got), vec!["g0", "g1", "g2"]);
    assert_eq!(got.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    // Nothing went to any inbox.
    assert!(bob.sync(0, 100).await.unwrap().messages.is_empty());

    // carol was offline: no push at login; the list and history have it.
    let carol = server.login("carol", "phone").await;
    quiet(&carol).await;
    let list = carol.conversations(0).await.unwrap();
    let entry = list
        .iter()
        .find(|c| c.conversation == conv)
        .expect("listed");
    assert_eq!((entry.last_seq, entry.unread), (3, 3));
    assert_eq!(entry.last_message.as_ref().unwrap().body.as_ref(), b"g2");
    let (history, _, more) = carol.history(&conv, 0, 100).await.unwrap();
    assert_eq!(bodies(&history), vec!["g2", "g1", "g0"]);
    assert!(!more);
    assert_eq!(carol.mark_read(&conv, 2).await.unwrap(), 2);
    let list = carol.conversations(0).await.unwrap();
    assert_eq!(
        list.iter().find(|c| c.conversation == conv).unwrap().unread,
        1
    );

    // Removed while online: carol gets nothing more; bob does.
    api.remove(&group.id, &["carol".into()])
        .await
        .expect("remove");
    alice
        .send(SendOptions::to_conversation(&conv, "g3"))
        .await
        .unwrap();
    assert_eq!(bodies(&receive_live(&bob, 1).await), vec!["g3"]);
    quiet(&carol).await;
    let refused = carol.history(&conv, 0, 10).await.unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));

    // Added while online: dave gets the next one live.
    let dave = server.login("dave", "phone").await;
    api.add(&group.id, &["dave".into()]).await.expect("add");
    alice
        .send(SendOptions::to_conversation(&conv, "g4"))
        .await
        .unwrap();
    assert_eq!(bodies(&receive_live(&dave, 1).await), vec!["g4"]);
    assert_eq!(bodies(&receive_live(&bob, 1).await), vec!["g4"]);

    // Only members post.
    let mallory = server.login("mallory", "phone").await;
    let err = mallory
        .send(SendOptions::to_conversation(&conv, "let me in"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
}
