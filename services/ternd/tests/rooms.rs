//! Live rooms through a real ternd: join, switch, leave, post; fan-out
//! inside the gateway; a slow viewer loses batches without slowing others.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Raw, Server, login_frame};
use tern_client::{Client, Event};
use tern_proto::client::{ErrorCode, Message, RoomJoin, RoomSend, client_frame, server_frame};

const WAIT: Duration = Duration::from_secs(20);

/// Reads room events until `n` messages of `room` arrived; panics on a
/// message of another room, or after WAIT.
async fn room_messages(client: &Client, room: &str, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got.len() < n {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} room messages", got.len()));
        match event {
            Some(Event::RoomMessages { room: r, messages }) => {
                assert_eq!(r, room, "a batch of another room");
                assert!(
                    messages
                        .iter()
                        .all(|m| m.conversation == format!("r:{room}"))
                );
                got.extend(messages);
            }
            Some(Event::Messages { .. }) => {}
            other => panic!("expected room messages, got {other:?}"),
        }
    }
    got
}

fn texts(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body).into_owned())
        .collect()
}

#[tokio::test]
async fn room_messages_reach_every_viewer_over_tcp_and_websocket() {
    let server = Server::start().await;
    let tcp_viewer = server.login("v1", "phone").await;
    let ws_viewer = server.login_at(&server.ws(), "v2", "browser").await;
    let host = server.login("host", "studio").await;
    for c in [&tcp_viewer, &ws_viewer, &host] {
        c.join_room("concert").await.expect("join");
    }
    for i in 0..20 {
        host.post_to_room("concert", format!("m{i}"))
            .await
            .expect("post");
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    for viewer in [&tcp_viewer, &ws_viewer, &host] {
        let got = room_messages(viewer, "concert", 20).await;
        assert_eq!(texts(&got), expected, "every message once, in order");
        assert!(
            got.iter()
                .all(|m| m.sender_user == "host" && m.seq == 0 && m.cursor == 0)
        );
    }

    // The API posts too (a bot, a system announcement).
    let mut api = server.backend().await;
    api.post_to_room(tern_client::api_proto::PostToRoomRequest {
        room: "concert".into(),
        from_user: "system".into(),
        content_type: "text/plain".into(),
        body: b"intermission".to_vec().into(),
    })
    .await
    .expect("API post");
    let got = room_messages(&tcp_viewer, "concert", 1).await;
    assert_eq!(
        (texts(&got), got[0].sender_user.as_str()),
        (vec!["intermission".to_string()], "system")
    );

    // Room messages are not stored: a viewer who joins later gets nothing old.
    let late = server.login("v3", "phone").await;
    late.join_room("concert").await.unwrap();
    host.post_to_room("concert", "encore").await.unwrap();
    assert_eq!(
        texts(&room_messages(&late, "concert", 1).await),
        vec!["encore"]
    );
}

#[tokio::test]
async fn no_old_room_message_after_the_switch_is_acknowledged_and_every_new_one_after_it() {
    let server = Server::start().await;
    let token = server.token("viewer").await;
    let mut raw = Raw::connect(server.running.tcp_addr.unwrap()).await;
    raw.write(login_frame(&token, "phone")).await;
    assert!(matches!(
        raw.read().await,
        Some(server_frame::Kind::LoginResult(_))
    ));
    raw.write(client_frame::Kind::RoomJoin(RoomJoin {
        request_id: 1,
        room: "one".into(),
    }))
    .await;

    // Room one is busy while the viewer switches.
    let poster = server.login("poster", "p").await;
    poster.join_room("one").await.unwrap();
    let busy = tokio::spawn(async move {
        for i in 0.. {
            if poster
                .post_to_room("one", format!("one-{i}"))
                .await
                .is_err()
            {
                break;
            }
        }
    });
    // Wait until room one's messages flow to the viewer.
    let mut seen_one = 0;
    loop {
        match raw.read().await.expect("open") {
            server_frame::Kind::RoomBatch(b) if b.room == "one" => {
                seen_one += 1;
                if seen_one == 3 {
                    break;
                }
            }
            server_frame::Kind::RoomResult(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    raw.write(client_frame::Kind::RoomJoin(RoomJoin {
        request_id: 2,
        room: "two".into(),
    }))
    .await;
    // Before the answer, room one's batches may still come; not after it.
    loop {
        match raw.read().await.expect("open") {
            server_frame::Kind::RoomResult(r) if r.request_id == 2 => {
                assert_eq!(r.room, "two");
                break;
            }
            server_frame::Kind::RoomBatch(b) => assert_eq!(b.room, "one"),
            other => panic!("unexpected {other:?}"),
        }
    }
    let poster2 = server.login("poster2", "p").await;
    poster2.join_room("two").await.unwrap();
    for i in 0..30 {
        poster2
            .post_to_room("two", format!("two-{i}"))
            .await
            .unwrap();
    }
    let mut got_two = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while got_two.len() < 30 {
        let frame = tokio::time::timeout_at(deadline, raw.read())
            .await
            .expect("room two's messages within 20 s")
            .expect("open");
        match frame {
            server_frame::Kind::RoomBatch(b) => {
                assert_eq!(
                    b.room, "two",
                    "a room-one batch after the switch was acknowledged"
                );
                let messages = tern_wire::unpack_batch(b.codec, &b.payload, 1 << 20).unwrap();
                got_two.extend(texts(&messages));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        got_two,
        (0..30).map(|i| format!("two-{i}")).collect::<Vec<_>>()
    );
    busy.abort();
}

#[tokio::test]
async fn a_slow_viewer_loses_batches_without_delaying_the_others() {
    // No merging: every post is its own batch, so the slow viewer's queue fills.
    let server = Server::start_with(|c| c.gateway.room_window = Duration::ZERO).await;
    let token = server.token("sleepy").await;
    // The slow viewer joins and then never reads its socket.
    let mut slow = Raw::connect(server.running.tcp_addr.unwrap()).await;
    slow.write(login_frame(&token, "phone")).await;
    assert!(matches!(
        slow.read().await,
        Some(server_frame::Kind::LoginResult(_))
    ));
    slow.write(client_frame::Kind::RoomJoin(RoomJoin {
        request_id: 1,
        room: "live".into(),
    }))
    .await;
    assert!(matches!(
        slow.read().await,
        Some(server_frame::Kind::RoomResult(_))
    ));

    let fast = server.login("fast", "phone").await;
    fast.join_room("live").await.unwrap();
    let host = server.login("host", "studio").await;
    host.join_room("live").await.unwrap();
    let dropped_before = tern_gateway::metrics::ROOM_DROPPED.get();
    // About 16 MB in total: far more than the slow viewer's socket buffers hold.
    let body = "x".repeat(32 * 1024);
    const N: usize = 500;
    let poster = tokio::spawn(async move {
        for i in 0..N {
            host.post_to_room("live", format!("{i:04}{body}"))
                .await
                .unwrap();
        }
        host
    });
    let got = room_messages(&fast, "live", N).await;
    let order: Vec<String> = got
        .iter()
        .map(|m| String::from_utf8_lossy(&m.body[..4]).into_owned())
        .collect();
    assert_eq!(
        order,
        (0..N).map(|i| format!("{i:04}")).collect::<Vec<_>>(),
        "the fast viewer got all, in order"
    );
    let _host = poster.await.unwrap();
    assert!(
        tern_gateway::metrics::ROOM_DROPPED.get() > dropped_before,
        "the slow viewer's batches were dropped and counted"
    );
    // The slow viewer is still connected (rooms drop, they do not disconnect
    // within the write timeout).
    let (errors, closed) = slow.drain_available().await;
    assert!(!closed, "slow viewer disconnected: {errors:?}");
}

#[tokio::test]
async fn bad_room_requests_get_clear_errors() {
    let server = Server::start().await;
    let alice = server.login("alice", "phone").await;
    let err = alice.post_to_room("lobby", "hi").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::Forbidden),
        "posting outside the room: {err}"
    );
    let err = alice.join_room("no spaces allowed").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::InvalidArgument), "{err}");
    alice.join_room("lobby").await.unwrap();
    let err = alice
        .post_to_room("lobby", vec![0u8; 64 * 1024 + 1])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge), "{err}");
    alice.leave_room().await.unwrap();
    let err = alice.post_to_room("lobby", "hi").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(ErrorCode::Forbidden),
        "after leaving: {err}"
    );

    // Before login, room frames are refused like any other request.
    let mut raw = Raw::connect(server.running.tcp_addr.unwrap()).await;
    raw.write(client_frame::Kind::RoomSend(RoomSend {
        request_id: 9,
        room: "lobby".into(),
        ..Default::default()
    }))
    .await;
    match raw.read().await {
        Some(server_frame::Kind::Error(e)) => {
            assert_eq!((e.code, e.request_id), (ErrorCode::NotLoggedIn as i32, 9))
        }
        other => panic!("expected NOT_LOGGED_IN, got {other:?}"),
    }
}

#[tokio::test]
async fn viewer_counts_are_served_by_the_api() {
    let server =
        Server::start_with(|c| c.gateway.room_report_every = Duration::from_millis(100)).await;
    let mut viewers = Vec::new();
    for i in 0..3 {
        let c = server.login(&format!("v{i}"), "phone").await;
        c.join_room("stage").await.unwrap();
        viewers.push(c);
    }
    let mut api = server.user_api("v0").await;
    let ask = |api: &mut tern_client::api_proto::user_api_client::UserApiClient<_>| {
        let mut api = api.clone();
        async move {
            api.room_viewers(tern_client::api_proto::RoomViewersRequest {
                rooms: vec!["stage".into(), "empty".into()],
            })
            .await
            .unwrap()
            .into_inner()
            .viewers
        }
    };
    common::eventually("3 viewers reported", || {
        let f = ask(&mut api);
        async move { (f.await.get("stage") == Some(&3)).then_some(()) }
    })
    .await;
    viewers[0].leave_room().await.unwrap();
    drop(viewers.pop());
    common::eventually("1 viewer reported", || {
        let f = ask(&mut api);
        async move {
            let v = f.await;
            (v.get("stage") == Some(&1) && !v.contains_key("empty")).then_some(())
        }
    })
    .await;
}
