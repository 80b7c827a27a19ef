//! proptest strategies for every client protocol frame, shared by the
//! round-trip and malformed-input suites.
//!
//! Enum fields (`Codec`, `ErrorCode`) take any `i32`, not only the known
//! values: proto3 enums are open, so a newer peer's value must survive the
//! trip through an older build unchanged.

// Each test binary uses a different subset of these strategies.
#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use tern_proto::client::{
    BlockedList, BlockedListRequest, Codec, ConversationsRequest, Error, Heartbeat, HeartbeatAck,
    HistoryPage, HistoryRequest, Limits, Login, LoginResult, Logout, MarkRead, Message, Push,
    PushAck, Send, SendResult, SetBlocked, SetBlockedResult, SyncPage, SyncRequest, client_frame,
    send, server_frame,
};

/// Short text, any Unicode, including the empty string.
pub fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

/// Bytes up to `max` long.
pub fn blob(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

/// A codec as it travels: mostly known values, sometimes one from the future.
pub fn codec_number() -> impl Strategy<Value = i32> {
    prop_oneof![
        3 => prop_oneof![
            Just(Codec::None as i32),
            Just(Codec::Zstd as i32),
            Just(Codec::Deflate as i32),
        ],
        1 => any::<i32>(),
    ]
}

pub fn login() -> impl Strategy<Value = Login> {
    (text(), text(), vec(codec_number(), 0..4), any::<bool>()).prop_map(
        |(token, device_id, accept_codecs, send_only)| Login {
            token,
            device_id,
            accept_codecs,
            send_only,
        },
    )
}

pub fn send_frame() -> impl Strategy<Value = Send> {
    let target = prop_oneof![
        Just(None),
        text().prop_map(|u| Some(send::Target::ToUser(u))),
        text().prop_map(|c| Some(send::Target::Conversation(c))),
    ];
    (text(), target, text(), blob(256)).prop_map(|(client_msg_id, target, content_type, body)| {
        Send {
            client_msg_id,
            target,
            content_type,
            body,
        }
    })
}

pub fn sync_request() -> impl Strategy<Value = SyncRequest> {
    (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(|(request_id, after_cursor, limit)| {
        SyncRequest {
            request_id,
            after_cursor,
            limit,
        }
    })
}

pub fn history_request() -> impl Strategy<Value = HistoryRequest> {
    (any::<u64>(), text(), any::<u64>(), any::<u32>()).prop_map(
        |(request_id, conversation, before_seq, limit)| HistoryRequest {
            request_id,
            conversation,
            before_seq,
            limit,
        },
    )
}

pub fn history_page() -> impl Strategy<Value = HistoryPage> {
    (
        any::<u64>(),
        text(),
        codec_number(),
        blob(512),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_map(
            |(request_id, conversation, codec, payload, next_before_seq, has_more)| HistoryPage {
                request_id,
                conversation,
                codec,
                payload,
                next_before_seq,
                has_more,
            },
        )
}

/// Every kind of frame a client sends.
pub fn client_kind() -> impl Strategy<Value = client_frame::Kind> {
    prop_oneof![
        login().prop_map(client_frame::Kind::Login),
        Just(client_frame::Kind::Heartbeat(Heartbeat {})),
        send_frame().prop_map(client_frame::Kind::Send),
        any::<u64>().prop_map(|cursor| client_frame::Kind::PushAck(PushAck { cursor })),
        sync_request().prop_map(client_frame::Kind::Sync),
        Just(client_frame::Kind::Logout(Logout {})),
        history_request().prop_map(client_frame::Kind::History),
        (any::<u64>(), text(), any::<u64>()).prop_map(|(request_id, conversation, seq)| {
            client_frame::Kind::MarkRead(MarkRead {
                request_id,
                conversation,
                seq,
            })
        }),
        (any::<u64>(), text(), any::<bool>()).prop_map(|(request_id, user, blocked)| {
            client_frame::Kind::SetBlocked(SetBlocked {
                request_id,
                user,
                blocked,
            })
        }),
        (any::<u64>(), any::<u32>(), blob(16)).prop_map(|(request_id, limit, before)| {
            client_frame::Kind::Conversations(ConversationsRequest {
                request_id,
                limit,
                before,
            })
        }),
        (any::<u64>(), text(), any::<u32>()).prop_map(|(request_id, after, limit)| {
            client_frame::Kind::BlockedList(BlockedListRequest {
                request_id,
                after,
                limit,
            })
        }),
    ]
}

pub fn login_result() -> impl Strategy<Value = LoginResult> {
    (
        text(),
        text(),
        codec_number(),
        any::<u32>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        (any::<u32>(), any::<u32>()),
    )
        .prop_map(
            |(
                user_id,
                device_id,
                codec,
                heartbeat_interval_ms,
                max_body_bytes,
                cursor,
                now,
                (login_push_max, login_push_per_conversation),
            )| {
                LoginResult {
                    user_id,
                    device_id,
                    codec,
                    heartbeat_interval_ms,
                    max_body_bytes,
                    cursor,
                    server_time_ms: now,
                    login_push_max,
                    login_push_per_conversation,
                    limits: Some(Limits {
                        max_frame_bytes: max_body_bytes,
                        max_sends_in_flight: login_push_max,
                        sends_per_second: login_push_per_conversation,
                        send_burst: heartbeat_interval_ms,
                        frames_per_second: max_body_bytes,
                        max_page_messages: login_push_max,
                    }),
                }
            },
        )
}

pub fn send_result() -> impl Strategy<Value = SendResult> {
    (text(), blob(16), text(), any::<u64>(), any::<u64>()).prop_map(
        |(client_msg_id, message_id, conversation, seq, sent_at_ms)| SendResult {
            client_msg_id,
            message_id,
            conversation,
            seq,
            sent_at_ms,
        },
    )
}

pub fn push() -> impl Strategy<Value = Push> {
    (
        any::<u64>(),
        any::<u64>(),
        codec_number(),
        blob(512),
        any::<bool>(),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(first_cursor, last_cursor, codec, payload, more_pending, (older_not_pushed, gap))| {
                Push {
                    first_cursor,
                    last_cursor,
                    codec,
                    payload,
                    more_pending,
                    older_not_pushed,
                    gap,
                }
            },
        )
}

pub fn sync_page() -> impl Strategy<Value = SyncPage> {
    (
        any::<u64>(),
        codec_number(),
        blob(512),
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(request_id, codec, payload, next_cursor, has_more, gap)| SyncPage {
                request_id,
                codec,
                payload,
                next_cursor,
                has_more,
                gap,
            },
        )
}

pub fn error() -> impl Strategy<Value = Error> {
    (
        any::<i32>(),
        text(),
        text(),
        any::<u64>(),
        any::<bool>(),
        any::<u64>(),
    )
        .prop_map(
            |(code, message, client_msg_id, request_id, fatal, retry_after_ms)| Error {
                code,
                message,
                client_msg_id,
                request_id,
                fatal,
                retry_after_ms,
            },
        )
}

/// Every kind of frame a gateway sends.
pub fn server_kind() -> impl Strategy<Value = server_frame::Kind> {
    prop_oneof![
        login_result().prop_map(server_frame::Kind::LoginResult),
        any::<u64>().prop_map(
            |server_time_ms| server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms })
        ),
        send_result().prop_map(server_frame::Kind::SendResult),
        push().prop_map(server_frame::Kind::Push),
        sync_page().prop_map(server_frame::Kind::SyncPage),
        error().prop_map(server_frame::Kind::Error),
        history_page().prop_map(server_frame::Kind::HistoryPage),
        (any::<u64>(), text(), any::<bool>()).prop_map(|(request_id, user, blocked)| {
            server_frame::Kind::SetBlockedResult(SetBlockedResult {
                request_id,
                user,
                blocked,
            })
        }),
        (any::<u64>(), vec(text(), 0..4), text()).prop_map(|(request_id, users, next)| {
            server_frame::Kind::BlockedList(BlockedList {
                request_id,
                users,
                next,
            })
        }),
    ]
}

/// A chat message with a body up to `max_body` bytes. Bodies are sometimes
/// repetitive (compressible, like real text) and sometimes random (not).
pub fn message(max_body: usize) -> impl Strategy<Value = Message> {
    let body = prop_oneof![
        blob(max_body),
        (any::<u8>(), 0..=max_body).prop_map(|(b, n)| Bytes::from(vec![b; n])),
    ];
    (
        (blob(16), text(), any::<u64>(), text(), text()),
        (text(), body, any::<u64>(), text(), any::<u64>()),
    )
        .prop_map(
            |(
                (message_id, conversation, seq, sender_user, sender_device),
                (content_type, body, sent_at_ms, client_msg_id, cursor),
            )| Message {
                message_id,
                conversation,
                seq,
                sender_user,
                sender_device,
                content_type,
                body,
                sent_at_ms,
                client_msg_id,
                cursor,
            },
        )
}

/// The three codecs a batch can be packed with.
pub fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Zstd), Just(Codec::Deflate)]
}
