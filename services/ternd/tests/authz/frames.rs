//! Every client frame kind on a raw TCP connection: sent before any login,
//! after a login with each credential that must be refused (the connection
//! closes before the frame is looked at), and by mallory logged in while
//! aiming at alice's things. Holds the frame table (a sample of each kind)
//! and what a client should see back in each case.

use tern_core::auth::{TokenAuthority, TokenSpec};
use tern_proto::client::{self as wire, ErrorCode, client_frame, server_frame};

use crate::common::{Raw, login_frame};
use crate::setup::{fixture, frame_kinds, revoked_token, server, token};

/// A frame of kind `name`, aimed at alice's things where it names any.
fn sample(name: &str) -> client_frame::Kind {
    use client_frame::Kind as K;
    match name {
        "login" => login_frame(&token("alice", 0, 3600), "laptop"),
        "heartbeat" => K::Heartbeat(wire::Heartbeat {}),
        "send" => K::Send(wire::Send {
            client_msg_id: "m1".into(),
            target: Some(wire::send::Target::Conversation("d:alice:bob".into())),
            body: b"hi".to_vec().into(),
            ..Default::default()
        }),
        "push_ack" => K::PushAck(wire::PushAck { cursor: 1 << 40 }),
        "sync" => K::Sync(wire::SyncRequest {
            request_id: 1,
            after_cursor: 1 << 40,
            limit: 10,
        }),
        "logout" => K::Logout(wire::Logout {}),
        "room_join" => K::RoomJoin(wire::RoomJoin {
            request_id: 1,
            room: "alice-private".into(),
        }),
        "room_leave" => K::RoomLeave(wire::RoomLeave { request_id: 1 }),
        "room_send" => K::RoomSend(wire::RoomSend {
            request_id: 1,
            room: "alice-private".into(),
            body: b"hi".to_vec().into(),
            ..Default::default()
        }),
        "history" => K::History(wire::HistoryRequest {
            request_id: 1,
            conversation: "d:alice:bob".into(),
            ..Default::default()
        }),
        "conversations" => K::Conversations(wire::ConversationsRequest {
            request_id: 1,
            ..Default::default()
        }),
        "mark_read" => K::MarkRead(wire::MarkRead {
            request_id: 1,
            conversation: "d:alice:bob".into(),
            seq: 1,
        }),
        "set_blocked" => K::SetBlocked(wire::SetBlocked {
            request_id: 1,
            user: "alice".into(),
            blocked: true,
        }),
        "blocked_list" => K::BlockedList(wire::BlockedListRequest {
            request_id: 1,
            ..Default::default()
        }),
        other => panic!("no row for the client frame {other}: add it to this test"),
    }
}

/// What a client sees after a frame.
#[derive(Debug, PartialEq)]
enum Seen {
    /// An error frame with this code (and whether it closes the connection).
    Error(ErrorCode, bool),
    /// A frame of this kind.
    Frame(&'static str),
    /// The connection closed without a word.
    Closed,
}

fn seen(frame: Option<server_frame::Kind>) -> Seen {
    use server_frame::Kind as K;
    match frame {
        None => Seen::Closed,
        Some(K::Error(e)) => Seen::Error(e.code(), e.fatal),
        Some(K::HeartbeatAck(_)) => Seen::Frame("HeartbeatAck"),
        Some(K::RoomResult(_)) => Seen::Frame("RoomResult"),
        Some(K::ConversationList(_)) => Seen::Frame("ConversationList"),
        Some(K::SetBlockedResult(_)) => Seen::Frame("SetBlockedResult"),
        Some(K::BlockedList(_)) => Seen::Frame("BlockedList"),
        Some(other) => panic!("unexpected frame {other:?}"),
    }
}

/// What a connection that has not logged in gets for each frame kind.
fn before_login(name: &str) -> Seen {
    match name {
        // alice's valid token: this one logs in (checked separately).
        "login" => Seen::Frame("LoginResult"),
        "heartbeat" => Seen::Frame("HeartbeatAck"),
        "logout" => Seen::Closed,
        _ => Seen::Error(ErrorCode::NotLoggedIn, false),
    }
}

/// What mallory, logged in, gets when aiming a frame at alice's things.
fn as_mallory(name: &str) -> Seen {
    match name {
        "login" => Seen::Error(ErrorCode::InvalidArgument, false),
        "heartbeat" => Seen::Frame("HeartbeatAck"),
        "logout" => Seen::Closed,
        "push_ack" | "sync" => Seen::Error(ErrorCode::BadCursor, false),
        "room_leave" => Seen::Frame("RoomResult"),
        // Only ever about mallory's own things.
        "conversations" => Seen::Frame("ConversationList"),
        "set_blocked" => Seen::Frame("SetBlockedResult"),
        "blocked_list" => Seen::Frame("BlockedList"),
        _ => Seen::Error(ErrorCode::Forbidden, false),
    }
}

#[tokio::test]
async fn every_client_frame_refuses_callers_it_must_refuse() {
    let server = server().await;
    let _fx = fixture(&server).await;
    let addr = server.running.tcp_addr.unwrap();
    let other_key = TokenAuthority::new("some-other-key-0123456789abcdef-xyz")
        .issue(&TokenSpec::new("alice", 3600), tern_core::now_ms());
    let expired = token("alice", 7_200_000, 3600);
    let revoked = revoked_token(&server, "rita").await;
    let bad_logins = [
        ("an empty token", String::new(), ErrorCode::Unauthenticated),
        ("another key", other_key, ErrorCode::Unauthenticated),
        ("expired", expired, ErrorCode::Unauthenticated),
        ("revoked", revoked, ErrorCode::TokenRevoked),
        (
            "the back-end token",
            ternd::TEST_BACKEND_TOKEN.to_owned(),
            ErrorCode::Unauthenticated,
        ),
    ];
    for name in frame_kinds() {
        // No credential: nothing but a login (or a heartbeat) is served.
        let mut raw = Raw::connect(addr).await;
        raw.write(sample(&name)).await;
        let got = match raw.read().await {
            Some(server_frame::Kind::LoginResult(_)) => Seen::Frame("LoginResult"),
            other => seen(other),
        };
        assert_eq!(got, before_login(&name), "{name} before login");

        // A bad credential: the login is refused and the connection closed
        // before the frame after it is looked at.
        for (what, token, code) in &bad_logins {
            let mut raw = Raw::connect(addr).await;
            raw.write(login_frame(token, "phone")).await;
            raw.write(sample(&name)).await;
            let mut frames = Vec::new();
            while let Some(f) = raw.read().await {
                frames.push(f);
            }
            assert_eq!(
                frames.len(),
                1,
                "{name} after a login with {what}: {frames:?}"
            );
            assert_eq!(
                seen(frames.pop()),
                Seen::Error(*code, true),
                "{name} after a login with {what}"
            );
        }

        // Another user's token: mallory reaches nothing of alice's.
        let mut raw = Raw::connect(addr).await;
        raw.write(login_frame(&token("mallory", 0, 3600), "phone"))
            .await;
        assert!(matches!(
            raw.read().await,
            Some(server_frame::Kind::LoginResult(_))
        ));
        raw.write(sample(&name)).await;
        let got = loop {
            match raw.read().await {
                // Pushes of mallory's own (empty) inbox are not answers.
                Some(server_frame::Kind::Push(_)) => continue,
                other => break seen(other),
            }
        };
        assert_eq!(got, as_mallory(&name), "{name} as another user");
    }
}
