//! 1:1 chat through a real ternd: real sockets, real frames.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Server, bodies, eventually, receive};
use tern_client::{Client, Event, LoginOptions, SendOptions};
use tern_proto::client::ErrorCode;

const WAIT: Duration = Duration::from_secs(20);

async fn chat_both_ways(server: &Server, addr: &str) {
    let alice = server.login_at(addr, "alice", "phone").await;
    let bob = server.login_at(addr, "bob", "phone").await;
    for i in 0..20 {
        alice.send_to("bob", format!("a{i}")).await.expect("send");
    }
    let got = receive(&bob, 20, WAIT).await;
    assert_eq!(
        bodies(&got),
        (0..20).map(|i| format!("a{i}")).collect::<Vec<_>>(),
        "in order, each once"
    );
    assert!(
        got.iter()
            .all(|m| m.sender_user == "alice" && m.conversation == "d:alice:bob")
    );
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());

    for i in 0..5 {
        bob.send_to("alice", format!("b{i}")).await.expect("send");
    }
    // alice's own sends come back to her (multi-device sync): she sees all 25 once, in order.
    let got = receive(&alice, 25, WAIT).await;
    let expected: Vec<String> = (0..20)
        .map(|i| format!("a{i}"))
        .chain((0..5).map(|i| format!("b{i}")))
        .collect();
    assert_eq!(bodies(&got), expected);
}

#[tokio::test]
async fn alice_and_bob_chat_over_tcp() {
    let server = Server::start().await;
    chat_both_ways(&server, &server.tcp()).await;
}

#[tokio::test]
async fn alice_and_bob_chat_over_websocket() {
    let server = Server::start().await;
    chat_both_ways(&server, &server.ws()).await;
}

#[tokio::test]
async fn tcp_and_websocket_clients_talk_to_each_other() {
    let server = Server::start().await;
    let alice = server.login_at(&server.ws(), "alice", "browser").await;
    let bob = server.login_at(&server.tcp(), "bob", "phone").await;
    alice.send_to("bob", "from the browser").await.unwrap();
    assert_eq!(
        bodies(&receive(&bob, 1, WAIT).await),
        vec!["from the browser"]
    );
}

#[tokio::test]
async fn offline_user_gets_all_50_in_order_then_nothing_more_after_ack() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    for i in 0..50 {
        alice.send_to("bob", format!("m{i}")).await.expect("send");
    }
    let bob = server.login("bob", "phone").await;
    let got = receive(&bob, 50, WAIT).await;
    assert_eq!(
        bodies(&got),
        (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>()
    );
    drop(bob);

    // After the ACKs, a new login gets nothing old: the first message is the next one sent.
    let bob = server.login("bob", "phone").await;
    alice.send_to("bob", "after").await.unwrap();
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), vec!["after"]);
}

#[tokio::test]
async fn unacked_messages_come_again_on_reconnect() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let bob = server.login("bob", "phone").await;
    alice.send_to("bob", "one").await.unwrap();
    // bob reads the push but never ACKs it, then goes away.
    match tokio::time::timeout(WAIT, bob.next_event()).await.unwrap() {
        Some(Event::Messages { messages, .. }) => assert_eq!(bodies(&messages), vec!["one"]),
        other => panic!("expected the push, got {other:?}"),
    }
    drop(bob);
    let bob = server.login("bob", "phone").await;
    assert_eq!(
        bodies(&receive(&bob, 1, WAIT).await),
        vec!["one"],
        "cursor did not move without an ACK"
    );
}

#[tokio::test]
async fn each_device_has_its_own_cursor() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let phone = server.login("bob", "phone").await;
    alice.send_to("bob", "one").await.unwrap();
    assert_eq!(bodies(&receive(&phone, 1, WAIT).await), vec!["one"]);
    // The laptop was never online: it gets the message although the phone ACKed it.
    let laptop = server.login("bob", "laptop").await;
    assert_eq!(bodies(&receive(&laptop, 1, WAIT).await), vec!["one"]);
    // A message bob sends from the laptop reaches his phone too.
    laptop.send_to("alice", "from laptop").await.unwrap();
    assert_eq!(bodies(&receive(&phone, 1, WAIT).await), vec!["from laptop"]);
}

#[tokio::test]
async fn the_same_client_message_id_twice_is_one_message() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let first = alice
        .send(SendOptions::to_user("bob", "hello").with_client_msg_id("cm-1"))
        .await
        .unwrap();
    let again = alice
        .send(SendOptions::to_user("bob", "hello").with_client_msg_id("cm-1"))
        .await
        .unwrap();
    assert_eq!(first.message_id, again.message_id);
    assert_eq!(first.seq, again.seq);
    alice.send_to("bob", "marker").await.unwrap();
    let bob = server.login("bob", "phone").await;
    assert_eq!(
        bodies(&receive(&bob, 2, WAIT).await),
        vec!["hello", "marker"],
        "stored and delivered once"
    );
}

#[tokio::test]
async fn a_client_message_id_reused_for_another_conversation_is_refused() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    alice
        .send(SendOptions::to_user("bob", "for bob").with_client_msg_id("1"))
        .await
        .unwrap();
    let err = alice
        .send(SendOptions::to_user("carol", "for carol").with_client_msg_id("1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    assert!(err.to_string().contains("already used"), "{err}");
    // carol never sees alice's message to bob; bob gets it once.
    alice.send_to("carol", "marker").await.unwrap();
    let carol = server.login("carol", "phone").await;
    assert_eq!(bodies(&receive(&carol, 1, WAIT).await), vec!["marker"]);
    let bob = server.login("bob", "phone").await;
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), vec!["for bob"]);
}

#[tokio::test]
async fn a_send_only_connection_does_not_displace_the_devices_listener() {
    let server = Server::start().await;
    let listener = server.login("bob", "cli").await;
    let token = server.token("bob").await;
    let (sender, _) = Client::connect(&server.tcp(), LoginOptions::new(token, "cli").send_only())
        .await
        .unwrap();
    sender
        .send_to("alice", "from the same device id")
        .await
        .unwrap();
    // The listener is still logged in and gets bob's own message (multi-device sync).
    assert_eq!(
        bodies(&receive(&listener, 1, WAIT).await),
        vec!["from the same device id"]
    );
}

#[tokio::test]
async fn an_oversized_message_is_refused_and_nothing_is_stored() {
    let server = Server::start_with(|c| c.gateway.max_body_bytes = 1000).await;
    let alice = server.login("alice", "phone").await;
    let err = alice.send_to("bob", vec![b'x'; 1001]).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    assert!(
        err.to_string().contains("over the limit of 1000 bytes"),
        "{err}"
    );
    // The connection stays usable, and bob gets only what was stored.
    alice.send_to("bob", "small").await.unwrap();
    let bob = server.login("bob", "phone").await;
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), vec!["small"]);
}

#[tokio::test]
async fn posting_into_someone_elses_conversation_is_forbidden() {
    let server = Server::start().await;
    let mallory = server.login("mallory", "phone").await;
    let err = mallory
        .send(SendOptions::to_conversation("d:alice:bob", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Forbidden), "{err}");
    let err = mallory
        .send(SendOptions::to_conversation("g:nope", "hi"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::UnknownConversation), "{err}");
    let err = mallory.send_to("not a user!", "hi").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
}

#[tokio::test]
async fn bad_and_expired_tokens_are_refused_at_login() {
    let server = Server::start_with(|c| c.jwt_secret = Some("0123456789abcdef-test".into())).await;
    use tern_core::auth::{TokenAuthority, TokenSpec};
    let authority = TokenAuthority::new("0123456789abcdef-test");
    let now = tern_core::now_ms();
    let alice = TokenSpec::new("alice", 60);
    let cases = [
        ("garbage", "not-a-jwt".to_owned()),
        ("expired", authority.issue(&alice, now - 3_600_000)),
        (
            "other secret",
            TokenAuthority::new("another-secret-xx").issue(&alice, now),
        ),
    ];
    for (what, token) in cases {
        let err = Client::connect(&server.tcp(), LoginOptions::new(token, "phone"))
            .await
            .err()
            .expect(what);
        assert_eq!(
            err.code(),
            Some(ErrorCode::Unauthenticated),
            "{what}: {err}"
        );
    }
    let good = authority.issue(&alice, now);
    Client::connect(&server.tcp(), LoginOptions::new(good, "phone"))
        .await
        .expect("a valid token logs in");
}

#[tokio::test]
async fn the_api_sends_as_a_system_user_and_pages_inbox_and_history() {
    use tern_proto::api::{FetchInboxRequest, HistoryRequest, SendAsSystemRequest};
    let server = Server::start().await;
    let mut api = server.backend().await;
    for i in 0..3 {
        let req = SendAsSystemRequest {
            from_user: "system".into(),
            to_user: "bob".into(),
            client_msg_id: format!("s{i}"),
            body: format!("notice {i}").into(),
            ..Default::default()
        };
        let r = api.send_as_system(req).await.unwrap().into_inner();
        assert_eq!(r.seq, i + 1);
    }
    // A send returns once stored; the inbox entry follows a moment later.
    eventually("three inbox entries", || {
        let mut api = api.clone();
        async move {
            let page = api
                .fetch_inbox(FetchInboxRequest {
                    user: "bob".into(),
                    after_cursor: 0,
                    limit: 10,
                })
                .await
                .ok()?;
            (page.into_inner().messages.len() == 3).then_some(())
        }
    })
    .await;
    let page = api
        .fetch_inbox(FetchInboxRequest {
            user: "bob".into(),
            after_cursor: 0,
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bodies(&page.messages), vec!["notice 0", "notice 1"]);
    assert!(page.has_more);
    let rest = api
        .fetch_inbox(FetchInboxRequest {
            user: "bob".into(),
            after_cursor: page.next_cursor,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bodies(&rest.messages), vec!["notice 2"]);
    assert!(!rest.has_more);
    let history = api
        .history(HistoryRequest {
            conversation: "d:bob:system".into(),
            before_seq: 0,
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        bodies(&history.messages),
        vec!["notice 2", "notice 1"],
        "newest first"
    );
    assert!(history.has_more);
    let bad = api
        .fetch_inbox(FetchInboxRequest {
            user: "bob".into(),
            after_cursor: 1 << 40,
            limit: 10,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    let unknown = api
        .history(HistoryRequest {
            conversation: "x:1".into(),
            before_seq: 0,
            limit: 2,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    // And bob, connected, gets them as pushes.
    let bob = server.login("bob", "phone").await;
    assert_eq!(
        bodies(&receive(&bob, 3, WAIT).await),
        vec!["notice 0", "notice 1", "notice 2"]
    );
}

#[tokio::test]
async fn sync_pulls_pages_and_rejects_a_cursor_past_the_end() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    for i in 0..5 {
        alice.send_to("bob", format!("m{i}")).await.unwrap();
    }
    let token = server.token("bob").await;
    let (bob, _) = Client::connect(
        &server.tcp(),
        LoginOptions::new(token, "tablet").send_only(),
    )
    .await
    .unwrap();
    eventually("five inbox entries", || async {
        (bob.sync(0, 100).await.ok()?.messages.len() == 5).then_some(())
    })
    .await;
    let page = bob.sync(0, 3).await.unwrap();
    assert_eq!(bodies(&page.messages), vec!["m0", "m1", "m2"]);
    assert!(page.has_more && !page.gap);
    let page = bob.sync(page.next_cursor, 100).await.unwrap();
    assert_eq!(bodies(&page.messages), vec!["m3", "m4"]);
    assert!(!page.has_more);
    let err = bob.sync(1 << 40, 10).await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::BadCursor), "{err}");
}

/// A plain HTTP/1.1 GET; returns (status code, body).
async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    let status = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    (
        status,
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default(),
    )
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let server = Server::start().await;
    let admin = server.running.admin_addr.expect("admin endpoints on");
    assert_eq!(http_get(admin, "/healthz").await.0, 200);
    assert_eq!(http_get(admin, "/readyz").await.0, 200);
    let alice = server.login("alice", "phone").await;
    alice.send_to("bob", "counted").await.unwrap();
    let (status, metrics) = http_get(admin, "/metrics").await;
    assert_eq!(status, 200);
    for name in [
        "tern_gateway_connections ",
        "tern_gateway_sends_total ",
        "# TYPE tern_stage_records_total counter",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert_eq!(http_get(admin, "/nope").await.0, 404);
}

#[tokio::test]
async fn on_shutdown_a_gateway_reports_not_ready_and_serves_on_for_the_delay() {
    let delay = Duration::from_secs(3);
    let server = Server::start_with(|c| c.shutdown_delay = delay).await;
    let (admin, tcp) = (server.running.admin_addr.expect("admin on"), server.tcp());
    let bob = server.login("bob", "phone").await;
    let alice_token = server.token("alice").await;
    let Server { running, dir: _dir } = server;
    let asked = tokio::time::Instant::now();
    let stopping = tokio::spawn(running.shutdown());
    // The load balancer is told at once to send nobody new here…
    eventually("/readyz turns 503", || async {
        (http_get(admin, "/readyz").await.0 == 503).then_some(())
    })
    .await;
    assert_eq!(http_get(admin, "/healthz").await.0, 200, "alive all along");
    // …but until it has noticed, whoever arrives is served, and so is
    // everyone already connected.
    let (alice, _) = Client::connect(&tcp, LoginOptions::new(alice_token, "phone"))
        .await
        .expect("a login during the delay is accepted");
    alice.send_to("bob", "still here").await.expect("send");
    assert_eq!(bodies(&receive(&bob, 1, WAIT).await), ["still here"]);
    // Then clients are told to reconnect elsewhere, and not before the delay.
    match tokio::time::timeout(WAIT, bob.next_event()).await {
        Ok(Some(Event::ServerError(e))) => assert_eq!(e.code(), ErrorCode::GoingAway, "{e:?}"),
        other => panic!("bob should be told to reconnect: {other:?}"),
    }
    assert!(asked.elapsed() >= delay, "told after {:?}", asked.elapsed());
    stopping
        .await
        .expect("shutdown task")
        .expect("clean shutdown");
}
