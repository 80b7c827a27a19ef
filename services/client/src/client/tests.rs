//! The client against a fake gateway on port 0 that speaks raw frames.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tern_proto::client::{
    Codec, Error as ErrorFrame, ErrorCode, LoginResult, Message, Push, SendResult, SyncPage,
    client_frame, server_frame,
};
use tern_wire::{LengthPrefixed, decode_client, encode_server, pack_batch};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

use super::*;
use crate::transport::FrameCodec;

/// The gateway's end of one TCP connection.
struct FakeGateway {
    conn: Framed<TcpStream, FrameCodec>,
}

impl FakeGateway {
    /// The next frame from the client, skipping heartbeats.
    async fn recv(&mut self) -> client_frame::Kind {
        loop {
            match self.recv_any().await {
                client_frame::Kind::Heartbeat(_) => continue,
                kind => return kind,
            }
        }
    }

    async fn recv_any(&mut self) -> client_frame::Kind {
        let bytes = tokio::time::timeout(Duration::from_secs(5), self.conn.next())
            .await
            .expect("a frame from the client in time")
            .expect("the client is still connected")
            .expect("a well-framed frame");
        decode_client(&bytes).expect("a valid client frame")
    }

    async fn recv_bytes(&mut self) -> Bytes {
        self.conn.next().await.unwrap().unwrap()
    }

    async fn send(&mut self, kind: server_frame::Kind) {
        self.conn.send(encode_server(kind)).await.unwrap();
    }

    /// Waits until the client closes its side.
    async fn expect_eof(&mut self) {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.conn.next())
                .await
                .expect("EOF in time")
            {
                None | Some(Err(_)) => return,
                Some(Ok(_)) => continue,
            }
        }
    }
}

fn login_result(cursor: u64, heartbeat_interval_ms: u32) -> LoginResult {
    LoginResult {
        user_id: "alice".into(),
        device_id: "phone".into(),
        codec: Codec::Zstd as i32,
        heartbeat_interval_ms,
        max_body_bytes: 1024,
        cursor,
        server_time_ms: 1,
        ..Default::default()
    }
}

fn options() -> LoginOptions {
    let mut options = LoginOptions::new("token-for-alice", "phone");
    options.request_timeout = Duration::from_secs(5);
    options
}

/// Connects a client to a fresh fake gateway that accepts the login with `reply`.
async fn connected(options: LoginOptions, reply: LoginResult) -> (Client, FakeGateway) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("tcp://{}", listener.local_addr().unwrap());
    let gateway = async {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut gw = FakeGateway {
            conn: Framed::new(tcp, FrameCodec(LengthPrefixed::default())),
        };
        let client_frame::Kind::Login(login) = gw.recv().await else {
            panic!("expected Login first")
        };
        assert_eq!(login.token, "token-for-alice");
        assert_eq!(login.device_id, "phone");
        assert_eq!(
            login.accept_codecs,
            [Codec::Zstd as i32, Codec::Deflate as i32]
        );
        gw.send(server_frame::Kind::LoginResult(reply)).await;
        gw
    };
    let (client, gw) = tokio::join!(Client::connect(&addr, options), gateway);
    let (client, login) = client.unwrap();
    assert_eq!(login.user_id, "alice");
    (client, gw)
}

fn messages(cursors: std::ops::RangeInclusive<u64>) -> Vec<Message> {
    cursors
        .map(|cursor| Message {
            message_id: Bytes::from(uuid::Uuid::now_v7().as_bytes().to_vec()),
            conversation: "dm:alice:bob".into(),
            seq: cursor,
            sender_user: "bob".into(),
            body: Bytes::from(format!("hello {cursor}")),
            cursor,
            ..Default::default()
        })
        .collect()
}

fn push(cursors: std::ops::RangeInclusive<u64>, codec: Codec) -> server_frame::Kind {
    let (first, last) = (*cursors.start(), *cursors.end());
    let (codec, payload) = pack_batch(messages(cursors), codec, 0);
    server_frame::Kind::Push(Push {
        first_cursor: first,
        last_cursor: last,
        codec: codec as i32,
        payload,
        more_pending: false,
        older_not_pushed: false,
        gap: false,
    })
}

fn sent(client_msg_id: &str, seq: u64) -> server_frame::Kind {
    server_frame::Kind::SendResult(SendResult {
        client_msg_id: client_msg_id.into(),
        message_id: Bytes::from_static(&[7; 16]),
        conversation: "dm:alice:bob".into(),
        seq,
        sent_at_ms: 42,
    })
}

fn cursors_of(event: Option<Event>) -> Vec<u64> {
    match event {
        Some(Event::Messages { messages, .. }) => messages.iter().map(|m| m.cursor).collect(),
        other => panic!("expected messages, got {other:?}"),
    }
}

#[tokio::test]
async fn pipelined_sends_are_matched_by_client_msg_id() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    let gateway = async {
        let mut ids = Vec::new();
        for _ in 0..2 {
            let client_frame::Kind::Send(send) = gw.recv().await else {
                panic!("expected Send")
            };
            assert_eq!(send.content_type, "text/plain");
            ids.push((send.client_msg_id, send.body));
        }
        // Answer in the opposite order.
        gw.send(sent(&ids[1].0, 2)).await;
        gw.send(sent(&ids[0].0, 1)).await;
        ids
    };
    let (first, second, ids) = tokio::join!(
        client.send_to("bob", "one"),
        client.send(SendOptions::to_user("bob", "two").with_client_msg_id("retry-me")),
        gateway
    );
    let (first, second) = (first.unwrap(), second.unwrap());
    assert_eq!(second.client_msg_id, "retry-me");
    assert_eq!(
        second.seq,
        ids.iter().position(|(id, _)| id == "retry-me").unwrap() as u64 + 1
    );
    assert_ne!(first.client_msg_id, "retry-me");
    assert!(
        uuid::Uuid::parse_str(&first.client_msg_id).is_ok(),
        "generated ids are UUIDs"
    );
    assert_eq!(
        message_id_string(&first.message_id),
        "07070707-0707-0707-0707-070707070707"
    );
}

#[tokio::test]
async fn the_same_client_msg_id_twice_in_flight_gets_two_answers() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    let gateway = async {
        for _ in 0..2 {
            let client_frame::Kind::Send(send) = gw.recv().await else {
                panic!("expected Send")
            };
            assert_eq!(send.client_msg_id, "same");
        }
        gw.send(sent("same", 9)).await;
        gw.send(sent("same", 9)).await;
    };
    let again = || client.send(SendOptions::to_user("bob", "x").with_client_msg_id("same"));
    let (a, b, ()) = tokio::join!(again(), again(), gateway);
    assert_eq!(a.unwrap().seq, 9);
    assert_eq!(b.unwrap().seq, 9);
}

#[tokio::test]
async fn an_error_answering_a_send_fails_that_send() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    let gateway = async {
        let client_frame::Kind::Send(send) = gw.recv().await else {
            panic!("expected Send")
        };
        gw.send(server_frame::Kind::Error(ErrorFrame {
            code: ErrorCode::MessageTooLarge as i32,
            message: "body of 2000 bytes is over the limit of 1024".into(),
            client_msg_id: send.client_msg_id,
            ..Default::default()
        }))
        .await;
    };
    let (result, ()) = tokio::join!(client.send_to("bob", vec![b'x'; 2000]), gateway);
    let err = result.unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::MessageTooLarge));
    assert_eq!(
        err.to_string(),
        "body of 2000 bytes is over the limit of 1024 (MESSAGE_TOO_LARGE)"
    );
    // The connection is still usable.
    assert!(client.closed_reason().is_none());
}

#[tokio::test]
async fn a_refused_login_is_a_server_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let gateway = async {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut gw = FakeGateway {
            conn: Framed::new(tcp, FrameCodec(LengthPrefixed::default())),
        };
        gw.recv().await;
        gw.send(server_frame::Kind::Error(ErrorFrame {
            code: ErrorCode::Unauthenticated as i32,
            message: "token expired".into(),
            fatal: true,
            ..Default::default()
        }))
        .await;
    };
    let (result, ()) = tokio::join!(Client::connect(&addr, options()), gateway);
    let err = result.err().expect("login refused");
    assert_eq!(err.code(), Some(ErrorCode::Unauthenticated));
}

#[tokio::test]
async fn pushes_are_decoded_deduplicated_and_acked_by_the_application() {
    let (client, mut gw) = connected(options(), login_result(2, 30_000)).await;
    // 1..=2 were stored before this login; 3..=4 are new.
    gw.send(push(1..=4, Codec::Zstd)).await;
    assert_eq!(cursors_of(client.next_event().await), [3, 4]);
    // Re-sent before the ACK: dropped.
    gw.send(push(3..=4, Codec::Deflate)).await;
    // Overlapping: only the tail.
    gw.send(push(4..=6, Codec::None)).await;
    match client.next_event().await {
        Some(Event::Messages {
            messages,
            last_cursor,
            more_pending,
            ..
        }) => {
            assert_eq!(
                messages.iter().map(|m| m.cursor).collect::<Vec<_>>(),
                [5, 6]
            );
            assert_eq!(messages[0].body, "hello 5");
            assert_eq!(last_cursor, 6);
            assert!(!more_pending);
        }
        other => panic!("expected messages, got {other:?}"),
    }
    client.ack(6).await.unwrap();
    assert_eq!(
        gw.recv().await,
        client_frame::Kind::PushAck(tern_proto::client::PushAck { cursor: 6 })
    );
}

#[tokio::test]
async fn sync_pages_are_matched_by_request_id_and_decoded() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    let gateway = async {
        let client_frame::Kind::Sync(request) = gw.recv().await else {
            panic!("expected SyncRequest")
        };
        assert_eq!((request.after_cursor, request.limit), (10, 3));
        let (codec, payload) = pack_batch(messages(11..=13), Codec::Zstd, 0);
        gw.send(server_frame::Kind::SyncPage(SyncPage {
            request_id: request.request_id,
            codec: codec as i32,
            payload,
            next_cursor: 13,
            has_more: true,
            gap: false,
        }))
        .await;
        let client_frame::Kind::Sync(request) = gw.recv().await else {
            panic!("expected SyncRequest")
        };
        gw.send(server_frame::Kind::Error(ErrorFrame {
            code: ErrorCode::BadCursor as i32,
            message: "cursor 99 is beyond the inbox".into(),
            request_id: request.request_id,
            ..Default::default()
        }))
        .await;
    };
    let run = async {
        let page = client.sync(10, 3).await.unwrap();
        let bad = client.sync(99, 3).await.unwrap_err();
        (page, bad)
    };
    let ((page, bad), ()) = tokio::join!(run, gateway);
    assert_eq!(
        page.messages.iter().map(|m| m.cursor).collect::<Vec<_>>(),
        [11, 12, 13]
    );
    assert_eq!(
        (page.next_cursor, page.has_more, page.gap),
        (13, true, false)
    );
    assert_eq!(bad.code(), Some(ErrorCode::BadCursor));
}

#[tokio::test]
async fn a_fatal_error_closes_the_connection_and_fails_waiting_requests() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    let gateway = async {
        let client_frame::Kind::Send(_) = gw.recv().await else {
            panic!("expected Send")
        };
        gw.send(server_frame::Kind::Error(ErrorFrame {
            code: ErrorCode::SessionReplaced as i32,
            message: "alice/phone logged in elsewhere".into(),
            fatal: true,
            ..Default::default()
        }))
        .await;
        gw.expect_eof().await;
    };
    let (result, ()) = tokio::join!(client.send_to("bob", "hi"), gateway);
    let Err(ClientError::Closed(reason)) = result else {
        panic!("expected Closed, got {result:?}")
    };
    assert!(reason.contains("SESSION_REPLACED"), "{reason}");
    match client.next_event().await {
        Some(Event::ServerError(err)) => assert_eq!(err.code, ErrorCode::SessionReplaced as i32),
        other => panic!("expected the error, got {other:?}"),
    }
    match client.next_event().await {
        Some(Event::Closed { reason }) => assert!(reason.contains("SESSION_REPLACED"), "{reason}"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert_eq!(client.next_event().await, None);
    assert!(matches!(
        client.send_to("bob", "again").await,
        Err(ClientError::Closed(_))
    ));
}

#[tokio::test]
async fn the_gateway_hanging_up_is_a_closed_event() {
    let (client, gw) = connected(options(), login_result(0, 30_000)).await;
    drop(gw);
    match client.next_event().await {
        Some(Event::Closed { reason }) => assert_eq!(reason, "the gateway closed the connection"),
        other => panic!("expected Closed, got {other:?}"),
    }
    assert!(client.closed_reason().is_some());
}

#[tokio::test]
async fn an_unanswered_send_times_out_and_a_late_answer_is_ignored() {
    let mut options = options();
    options.request_timeout = Duration::from_millis(200);
    let (client, mut gw) = connected(options, login_result(0, 30_000)).await;
    assert!(matches!(
        client.send_to("bob", "hi").await,
        Err(ClientError::Timeout)
    ));
    let client_frame::Kind::Send(send) = gw.recv().await else {
        panic!("expected Send")
    };
    gw.send(sent(&send.client_msg_id, 1)).await;
    // Still connected and working.
    let gateway = async {
        let client_frame::Kind::Send(send) = gw.recv().await else {
            panic!("expected Send")
        };
        gw.send(sent(&send.client_msg_id, 2)).await;
    };
    let (result, ()) = tokio::join!(client.send_to("bob", "again"), gateway);
    assert_eq!(result.unwrap().seq, 2);
}

#[tokio::test]
async fn heartbeats_follow_the_interval_from_the_login_result() {
    let (_client, mut gw) = connected(options(), login_result(0, 50)).await;
    for _ in 0..3 {
        assert_eq!(
            gw.recv_any().await,
            client_frame::Kind::Heartbeat(Default::default())
        );
    }
}

#[tokio::test]
async fn heartbeats_can_be_turned_off() {
    let mut options = options();
    options.heartbeats = false;
    let (client, mut gw) = connected(options, login_result(0, 20)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.ack(1).await.unwrap();
    // The ACK is the first frame after login: no heartbeat came before it.
    assert!(matches!(
        gw.recv_any().await,
        client_frame::Kind::PushAck(_)
    ));
}

#[tokio::test]
async fn logout_writes_queued_frames_then_logout_then_closes() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    client.ack(3).await.unwrap();
    let gateway = async {
        assert!(matches!(gw.recv().await, client_frame::Kind::PushAck(_)));
        assert!(matches!(gw.recv().await, client_frame::Kind::Logout(_)));
        gw.expect_eof().await;
        drop(gw);
    };
    let (result, ()) = tokio::join!(client.logout(), gateway);
    result.unwrap();
    assert_eq!(
        client.closed_reason().as_deref(),
        Some("the client logged out")
    );
}

#[tokio::test]
async fn raw_frames_are_written_as_they_are() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    client
        .send_raw_frame(&b"\xff\x00garbage"[..])
        .await
        .unwrap();
    assert_eq!(&gw.recv_bytes().await[..], b"\xff\x00garbage");
    let too_big = vec![0u8; DEFAULT_CLIENT_MAX_FRAME + 1];
    assert!(matches!(
        client.send_raw_frame(too_big).await,
        Err(ClientError::Wire(_))
    ));
}

#[tokio::test]
async fn dropping_the_client_closes_the_connection() {
    let (client, mut gw) = connected(options(), login_result(0, 30_000)).await;
    drop(client);
    gw.expect_eof().await;
}

#[tokio::test]
async fn websocket_carries_one_frame_per_binary_message() {
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = format!("ws://{}/", listener.local_addr().unwrap());
    let gateway = async {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let recv = |msg: Option<Result<WsMessage, _>>| match msg {
            Some(Ok(WsMessage::Binary(bytes))) => decode_client(&bytes).unwrap(),
            other => panic!("expected a binary message, got {other:?}"),
        };
        let client_frame::Kind::Login(_) = recv(ws.next().await) else {
            panic!("expected Login")
        };
        let reply = |kind| WsMessage::Binary(encode_server(kind));
        ws.send(reply(server_frame::Kind::LoginResult(login_result(
            0, 30_000,
        ))))
        .await
        .unwrap();
        ws.send(reply(push(1..=2, Codec::Deflate))).await.unwrap();
        let client_frame::Kind::Send(send) = recv(ws.next().await) else {
            panic!("expected Send")
        };
        ws.send(reply(sent(&send.client_msg_id, 5))).await.unwrap();
        ws
    };
    let client = async {
        let (client, _) = Client::connect(&addr, options()).await.unwrap();
        assert_eq!(cursors_of(client.next_event().await), [1, 2]);
        let result = client.send_to("bob", "over ws").await.unwrap();
        assert_eq!(result.seq, 5);
        client
    };
    let (_client, _ws) = tokio::join!(client, gateway);
}

#[test]
fn a_client_can_be_shared_between_tasks() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Client>();
    shareable::<Event>();
    shareable::<ClientError>();
}
