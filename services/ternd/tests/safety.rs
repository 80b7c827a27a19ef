//! What users of a public chat service expect of it: logging a device out
//! works at once, keys rotate without logging anyone out, a new group
//! member does not read what was said before them, rooms follow the token,
//! a blocked user reaches nobody, pages fit stock clients, and errors do
//! not echo what a client sent.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Server, bodies, eventually};
use tern_client::{Client, GroupApi, LoginOptions, SendOptions};
use tern_core::auth::{TokenAuthority, TokenSpec};
use tern_proto::api::*;
use tern_proto::client::ErrorCode;

fn refused_with(err: tern_client::ClientError, code: ErrorCode) {
    assert_eq!(err.code(), Some(code), "{err}");
}

#[tokio::test]
async fn a_revoked_device_is_disconnected_at_once_and_cannot_log_in_again() {
    let server = Server::start().await;
    let phone_token = server.token("alice").await;
    let (phone, _) = Client::connect(
        &server.tcp(),
        LoginOptions::new(phone_token.clone(), "phone"),
    )
    .await
    .unwrap();
    let laptop = server.login("alice", "laptop").await;

    // The back end logs the lost phone out.
    let started = Instant::now();
    server
        .backend()
        .await
        .revoke_tokens(RevokeTokensRequest {
            user: "alice".into(),
            device: "phone".into(),
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), phone.closed())
        .await
        .expect("the phone is disconnected within 5 s");
    eprintln!("revoked phone closed after {:?}", started.elapsed());
    let reason = phone.closed_reason().unwrap();
    assert!(reason.contains("TOKEN_REVOKED"), "{reason}");
    assert_eq!(laptop.closed_reason(), None, "the laptop stays");

    // The old token no longer logs the phone in; a new one does.
    let err = Client::connect(&server.tcp(), LoginOptions::new(phone_token, "phone"))
        .await
        .err()
        .expect("refused");
    refused_with(err, ErrorCode::TokenRevoked);
    let fresh = server.login("alice", "phone").await;

    // Alice logs out everywhere herself, through the user API.
    server
        .user_api("alice")
        .await
        .revoke_tokens(RevokeTokensRequest::default())
        .await
        .unwrap();
    for client in [&laptop, &fresh] {
        tokio::time::timeout(Duration::from_secs(5), client.closed())
            .await
            .expect("every device is disconnected within 5 s");
        assert!(client.closed_reason().unwrap().contains("TOKEN_REVOKED"));
    }
    server.login("alice", "laptop").await;
}

#[tokio::test]
async fn tokens_of_the_previous_key_work_during_a_rotation_and_not_after() {
    const OLD: &str = "rotation-old-key-0123456789abcdef-old";
    const NEW: &str = "rotation-new-key-0123456789abcdef-new";
    let old_token =
        TokenAuthority::new(OLD).issue(&TokenSpec::new("alice", 3600), tern_core::now_ms());
    let new_token =
        TokenAuthority::new(NEW).issue(&TokenSpec::new("alice", 3600), tern_core::now_ms());
    // A data directory each: the first server's connection tasks may still
    // hold its files for a moment after it stopped.
    let (first, second) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let start = |previous: Option<&str>| {
        let dir = if previous.is_some() { &first } else { &second };
        let mut config = ternd::TerndConfig::for_tests(dir.path()).unwrap();
        config.dev_mode = false;
        config.api.dev_mode = false;
        config.jwt_secret = Some(NEW.into());
        config.jwt_secret_previous = previous.map(Into::into);
        ternd::start(config)
    };
    let running = start(Some(OLD)).await.unwrap();
    let tcp = format!("tcp://{}", running.tcp_addr.unwrap());
    for token in [&old_token, &new_token] {
        Client::connect(&tcp, LoginOptions::new(token.clone(), "phone"))
            .await
            .expect("both keys log in during the rotation");
    }
    running.shutdown().await.unwrap();

    let running = start(None).await.unwrap();
    let tcp = format!("tcp://{}", running.tcp_addr.unwrap());
    let err = Client::connect(&tcp, LoginOptions::new(old_token, "phone"))
        .await
        .err()
        .expect("the old key is gone");
    refused_with(err, ErrorCode::Unauthenticated);
    Client::connect(&tcp, LoginOptions::new(new_token, "phone"))
        .await
        .expect("the new key logs in");
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn dev_tokens_live_at_most_a_day() {
    let server = Server::start().await;
    let mut api = tern_client::connect_api(&server.api()).await.unwrap();
    let token = api
        .issue_dev_token(IssueDevTokenRequest {
            user: "alice".into(),
            ttl_seconds: 10 * 365 * 86_400,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let secret = std::fs::read(server.dir.path().join("dev-jwt-secret")).unwrap();
    let claims = TokenAuthority::new(secret)
        .verify(&token, tern_core::now_ms())
        .unwrap();
    assert!(
        claims.exp as f64 - claims.iat <= 86_400.0 + 1.0,
        "{claims:?}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(server.dir.path().join("dev-jwt-secret"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the dev secret is private");
}

async fn post(client: &Client, conversation: &str, text: &str) {
    client
        .send(SendOptions::to_conversation(conversation, text.to_owned()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_late_group_member_reads_only_what_follows_their_joining() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let mut groups = GroupApi::connect(&server.api(), server.token("alice").await)
        .await
        .unwrap();
    let closed = groups.create("closed", &["bob".into()]).await.unwrap();
    for text in ["before 1", "before 2"] {
        post(&alice, &closed.conversation, text).await;
    }
    groups.add(&closed.id, &["carol".into()]).await.unwrap();
    post(&alice, &closed.conversation, "after").await;

    let carol = server.login("carol", "phone").await;
    let (page, _, has_more) = carol.history(&closed.conversation, 0, 100).await.unwrap();
    assert_eq!(bodies(&page), vec!["after"]);
    assert!(!has_more, "nothing before her joining is hers to page");
    let api_page = server
        .user_api("carol")
        .await
        .history(HistoryRequest {
            conversation: closed.conversation.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bodies(&api_page.messages), vec!["after"]);
    // Bob, there from the start, reads everything.
    let bob = server.login("bob", "phone").await;
    let (page, _, _) = bob.history(&closed.conversation, 0, 100).await.unwrap();
    assert_eq!(bodies(&page), vec!["after", "before 2", "before 1"]);

    // A group made with open history shows it to late members.
    let open = server
        .user_api("alice")
        .await
        .create_group(CreateGroupRequest {
            name: "open".into(),
            members: vec!["bob".into()],
            history_open: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    post(&alice, &open.conversation, "old news").await;
    groups.add(&open.id, &["carol".into()]).await.unwrap();
    let (page, _, _) = carol.history(&open.conversation, 0, 100).await.unwrap();
    assert_eq!(bodies(&page), vec!["old news"]);
}

#[tokio::test]
async fn rooms_follow_the_token_when_the_policy_says_so() {
    let server =
        Server::start_with(|c| c.gateway.room_policy = tern_chat::rooms::RoomPolicy::Token).await;
    let token = tern_client::dev_token_with(
        &server.api(),
        IssueDevTokenRequest {
            user: "fan".into(),
            rooms: vec!["match-*".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (fan, _) = Client::connect(&server.tcp(), LoginOptions::new(token, "phone"))
        .await
        .unwrap();
    fan.join_room("match-42").await.expect("an allowed room");
    fan.post_to_room("match-42", "goal!").await.unwrap();
    let err = fan.join_room("vip-lounge").await.unwrap_err();
    refused_with(err, ErrorCode::Forbidden);
    let err = fan.post_to_room("vip-lounge", "hi").await.unwrap_err();
    refused_with(err, ErrorCode::Forbidden);
    // A token without the claim enters no room at all.
    let plain = server.login("someone", "phone").await;
    refused_with(
        plain.join_room("match-42").await.unwrap_err(),
        ErrorCode::Forbidden,
    );
}

#[tokio::test]
async fn a_blocked_sender_reaches_nobody_and_cannot_add_the_blocker_to_a_group() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    assert!(bob.set_blocked("alice", true).await.unwrap());
    assert_eq!(bob.blocked_users().await.unwrap(), vec!["alice"]);

    let err = alice.send_to("bob", "let me in").await.unwrap_err();
    refused_with(err, ErrorCode::Blocked);
    let mut backend = server.backend().await;
    let history = backend
        .history(HistoryRequest {
            conversation: "d:alice:bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(history.messages.is_empty(), "stored nowhere");
    let inbox = backend
        .fetch_inbox(FetchInboxRequest {
            user: "bob".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(inbox.messages.is_empty(), "in no inbox");
    // Bob may still write to alice.
    bob.send_to("alice", "I can write to you").await.unwrap();

    // Nor does a group get around it, and the refusal does not say why.
    let mut groups = GroupApi::connect(&server.api(), server.token("alice").await)
        .await
        .unwrap();
    let err = groups.create("trap", &["bob".into()]).await.unwrap_err();
    let tern_client::ClientError::Api { code, message } = &err else {
        panic!("{err}")
    };
    assert_eq!(*code, tonic::Code::PermissionDenied);
    assert!(!message.contains("block"), "{message}");

    assert!(!bob.set_blocked("alice", false).await.unwrap());
    assert!(bob.blocked_users().await.unwrap().is_empty());
    alice
        .send_to("bob", "hello again")
        .await
        .expect("unblocked");
    eventually("the message after unblocking to arrive", || async {
        let page = server
            .backend()
            .await
            .fetch_inbox(FetchInboxRequest {
                user: "bob".into(),
                ..Default::default()
            })
            .await
            .ok()?
            .into_inner();
        // Bob's own message is in his inbox too (for his other devices).
        let got = bodies(&page.messages);
        assert!(!got.contains(&"let me in".to_string()), "{got:?}");
        got.contains(&"hello again".to_string()).then_some(())
    })
    .await;
    drop(alice);
}

#[tokio::test]
async fn api_pages_fit_a_stock_grpc_client_whatever_the_limit_asked() {
    let server = Server::start().await;
    let mut backend = server.backend().await;
    let body = vec![b'x'; 60 * 1024];
    for i in 0..100 {
        backend
            .send_as_system(SendAsSystemRequest {
                from_user: "alice".into(),
                to_user: "bob".into(),
                client_msg_id: format!("big-{i}"),
                body: body.clone().into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    // A stock client (4 MiB default limit) asking for everything at once.
    let mut bob = server.user_api("bob").await;
    let mut seen = 0;
    let mut before = 0;
    loop {
        let page = bob
            .history(HistoryRequest {
                conversation: "d:alice:bob".into(),
                before_seq: before,
                limit: u32::MAX,
            })
            .await
            .expect("a page a stock client accepts")
            .into_inner();
        let bytes: usize = page.messages.iter().map(|m| m.body.len()).sum();
        assert!(bytes <= 1 << 20, "{bytes} bytes in one page");
        seen += page.messages.len();
        if !page.has_more {
            break;
        }
        before = page.messages.last().unwrap().seq;
    }
    assert_eq!(seen, 100, "every message, once, across the pages");
}

#[tokio::test]
async fn errors_do_not_echo_what_the_client_sent() {
    let server = Server::start().await;
    let huge = "x".repeat(60_000);
    let err = server
        .user_api("alice")
        .await
        .history(HistoryRequest {
            conversation: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().len() < 300, "{} bytes", err.message().len());
    let err = server
        .backend()
        .await
        .fetch_inbox(FetchInboxRequest {
            user: huge.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().len() < 300, "{} bytes", err.message().len());
    let token = server.token("alice").await;
    let err = Client::connect(&server.tcp(), LoginOptions::new(token, "d".repeat(20_000)))
        .await
        .err()
        .expect("a 20 KB device id is refused");
    let text = err.to_string();
    assert!(text.len() < 300, "{} bytes", text.len());
    refused_with(err, ErrorCode::InvalidArgument);
}
