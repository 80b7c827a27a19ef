//! Who may call what, tried as an outsider would: every gRPC method of
//! every service, and every client frame kind, with no credential, a token
//! signed with another key, an expired token, a revoked token, the wrong
//! kind of credential, and another user's token. The methods and frame
//! kinds are read from the protobuf descriptors, so one added later without
//! a row here fails the test ("no row for …").

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Raw, Server, login_frame};
use prost::Message as _;
use tern_core::auth::{TokenAuthority, TokenSpec};
use tern_proto::api::archive_admin_client::ArchiveAdminClient;
use tern_proto::api::backend_api_client::BackendApiClient;
use tern_proto::api::user_api_client::UserApiClient;
use tern_proto::api::*;
use tern_proto::client::{self as wire, ErrorCode, client_frame, server_frame};
use tonic::Code;
use tonic::transport::Channel;

const SECRET: &str = "authz-test-signing-key-0123456789abcdef";
const ADMIN: &str = "authz-test-admin-token-0123456789abcdef";

/// The descriptors of every `.proto` file.
fn descriptors() -> prost_types::FileDescriptorSet {
    prost_types::FileDescriptorSet::decode(tern_proto::FILE_DESCRIPTOR_SET).unwrap()
}

/// The methods of `service` in `tern.api.v1`, in declaration order.
fn methods(service: &str) -> Vec<String> {
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "tern.api.v1")
        .unwrap();
    let service = file
        .service
        .iter()
        .find(|s| s.name() == service)
        .unwrap_or_else(|| panic!("no service {service}"));
    service.method.iter().map(|m| m.name().to_owned()).collect()
}

/// Every client frame kind, by its field name in `ClientFrame.kind`.
fn frame_kinds() -> Vec<String> {
    let set = descriptors();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "tern.client.v1")
        .unwrap();
    let frame = file
        .message_type
        .iter()
        .find(|m| m.name() == "ClientFrame")
        .unwrap();
    frame.field.iter().map(|f| f.name().to_owned()).collect()
}

/// A token for `user` signed with the server's key, issued `age_ms` ago and
/// valid for `ttl_secs`.
fn token(user: &str, age_ms: u64, ttl_secs: u64) -> String {
    let spec = TokenSpec {
        rooms: Some(vec!["public".into()]),
        ..TokenSpec::new(user, ttl_secs)
    };
    TokenAuthority::new(SECRET).issue(&spec, tern_core::now_ms() - age_ms)
}

/// A server with dev mode off (tokens come from its secret), a back-end
/// token, an archive with an admin token, and rooms by token.
async fn server() -> Server {
    Server::start_with(|c| {
        c.dev_mode = false;
        c.api.dev_mode = false;
        c.jwt_secret = Some(SECRET.into());
        c.api.admin_token = Some(ADMIN.into());
        c.archive = Some(ternd::ArchiveSettings {
            location: c.data_dir.join("archive").to_str().unwrap().into(),
            retention: Duration::from_secs(86_400),
            archiver: Default::default(),
        });
        c.gateway.room_policy = tern_chat::rooms::RoomPolicy::Token;
        c.api.room_policy = tern_chat::rooms::RoomPolicy::Token;
    })
    .await
}

/// What alice owns, for others to try to reach.
struct Fixture {
    group: String,
}

async fn fixture(server: &Server) -> Fixture {
    let mut backend = server.backend().await;
    backend
        .send_as_system(SendAsSystemRequest {
            from_user: "alice".into(),
            to_user: "bob".into(),
            client_msg_id: "first".into(),
            body: b"hello bob".to_vec().into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let group = backend
        .create_group(CreateGroupRequest {
            owner: "alice".into(),
            name: "alice's".into(),
            members: vec!["bob".into()],
            history_open: false,
        })
        .await
        .unwrap()
        .into_inner();
    Fixture { group: group.id }
}

/// A request with `authorization: Bearer <credential>`, or none.
fn req<T>(message: T, credential: Option<&str>) -> tonic::Request<T> {
    match credential {
        Some(c) => tern_client::with_token(message, c).unwrap(),
        None => tonic::Request::new(message),
    }
}

fn code<T>(result: Result<tonic::Response<T>, tonic::Status>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

/// Calls `method` of the user API with `credential`, aimed at alice's
/// things where it names any.
async fn user_call(
    api: &UserApiClient<Channel>,
    method: &str,
    credential: Option<&str>,
    fx: &Fixture,
) -> Code {
    let mut api = api.clone();
    let c = credential;
    match method {
        "IssueDevToken" => code(
            api.issue_dev_token(req(
                IssueDevTokenRequest {
                    user: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "History" => code(
            api.history(req(
                HistoryRequest {
                    conversation: "d:alice:bob".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "ListConversations" => code(
            api.list_conversations(req(
                ListConversationsRequest {
                    user: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "MarkRead" => code(
            api.mark_read(req(
                MarkReadRequest {
                    user: "alice".into(),
                    conversation: "d:alice:bob".into(),
                    seq: 1,
                },
                c,
            ))
            .await,
        ),
        "CreateGroup" => code(
            api.create_group(req(
                CreateGroupRequest {
                    owner: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "AddMembers" => code(
            api.add_members(req(
                ChangeMembersRequest {
                    group: fx.group.clone(),
                    users: vec!["mallory".into()],
                },
                c,
            ))
            .await,
        ),
        "RemoveMembers" => code(
            api.remove_members(req(
                ChangeMembersRequest {
                    group: fx.group.clone(),
                    users: vec!["bob".into()],
                },
                c,
            ))
            .await,
        ),
        "ListMembers" => code(
            api.list_members(req(
                ListMembersRequest {
                    group: fx.group.clone(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "ListGroups" => code(
            api.list_groups(req(
                ListGroupsRequest {
                    user: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "RoomViewers" => code(
            api.room_viewers(req(
                RoomViewersRequest {
                    rooms: vec!["public".into()],
                },
                c,
            ))
            .await,
        ),
        "SetBlocked" => code(
            api.set_blocked(req(
                SetBlockedRequest {
                    user: "carol".into(),
                    blocked: true,
                },
                c,
            ))
            .await,
        ),
        "ListBlocked" => code(
            api.list_blocked(req(ListBlockedRequest::default(), c))
                .await,
        ),
        "RevokeTokens" => code(
            api.revoke_tokens(req(
                RevokeTokensRequest {
                    user: "alice".into(),
                    device: "old-phone".into(),
                },
                c,
            ))
            .await,
        ),
        other => panic!("no row for UserApi.{other}: add it to this test"),
    }
}

/// What another user (mallory) gets when aiming at alice's things.
fn as_another_user(method: &str) -> Code {
    match method {
        // Dev mode is off: the method does not exist.
        "IssueDevToken" => Code::Unimplemented,
        // Public counts, and calls that only ever act on the caller's own.
        "RoomViewers" | "SetBlocked" | "ListBlocked" => Code::Ok,
        _ => Code::PermissionDenied,
    }
}

/// Calls `method` of the back-end API with `credential`.
async fn backend_call(
    api: &BackendApiClient<Channel>,
    method: &str,
    credential: Option<&str>,
    fx: &Fixture,
) -> Code {
    let mut api = api.clone();
    let c = credential;
    match method {
        "SendAsSystem" => code(
            api.send_as_system(req(
                SendAsSystemRequest {
                    from_user: "system".into(),
                    to_user: "alice".into(),
                    client_msg_id: "authz".into(),
                    body: b"notice".to_vec().into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "FetchInbox" => code(
            api.fetch_inbox(req(
                FetchInboxRequest {
                    user: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "History" => code(
            api.history(req(
                HistoryRequest {
                    conversation: "d:alice:bob".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "ListConversations" => code(
            api.list_conversations(req(
                ListConversationsRequest {
                    user: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "MarkRead" => code(
            api.mark_read(req(
                MarkReadRequest {
                    user: "alice".into(),
                    conversation: "d:alice:bob".into(),
                    seq: 1,
                },
                c,
            ))
            .await,
        ),
        "CreateGroup" => code(
            api.create_group(req(
                CreateGroupRequest {
                    owner: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "AddMembers" => code(
            api.add_members(req(
                ChangeMembersRequest {
                    group: fx.group.clone(),
                    users: vec!["dan".into()],
                },
                c,
            ))
            .await,
        ),
        "RemoveMembers" => code(
            api.remove_members(req(
                ChangeMembersRequest {
                    group: fx.group.clone(),
                    users: vec!["dan".into()],
                },
                c,
            ))
            .await,
        ),
        "ListMembers" => code(
            api.list_members(req(
                ListMembersRequest {
                    group: fx.group.clone(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "ListGroups" => code(
            api.list_groups(req(
                ListGroupsRequest {
                    user: "alice".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "PostToRoom" => code(
            api.post_to_room(req(
                PostToRoomRequest {
                    room: "public".into(),
                    from_user: "system".into(),
                    body: b"hi".to_vec().into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "RoomViewers" => code(
            api.room_viewers(req(
                RoomViewersRequest {
                    rooms: vec!["public".into()],
                },
                c,
            ))
            .await,
        ),
        "RevokeTokens" => code(
            api.revoke_tokens(req(
                RevokeTokensRequest {
                    user: "zed".into(),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        other => panic!("no row for BackendApi.{other}: add it to this test"),
    }
}

/// Calls `method` of the archive administration with `credential`.
async fn archive_call(
    api: &ArchiveAdminClient<Channel>,
    method: &str,
    credential: Option<&str>,
) -> Code {
    let mut api = api.clone();
    let c = credential;
    match method {
        "Verify" => code(api.verify(req(VerifyArchiveRequest {}, c)).await),
        "Export" => code(
            api.export(req(
                ExportArchiveRequest {
                    who: Some(export_archive_request::Who::User("alice".into())),
                    ..Default::default()
                },
                c,
            ))
            .await,
        ),
        "AddHold" => code(
            api.add_hold(req(
                AddHoldRequest {
                    id: "authz-hold".into(),
                    scope: Some(add_hold_request::Scope::User("alice".into())),
                    reason: "test".into(),
                },
                c,
            ))
            .await,
        ),
        "RemoveHold" => code(
            api.remove_hold(req(
                RemoveHoldRequest {
                    id: "authz-hold".into(),
                },
                c,
            ))
            .await,
        ),
        "ListHolds" => code(api.list_holds(req(ListHoldsRequest {}, c)).await),
        other => panic!("no row for ArchiveAdmin.{other}: add it to this test"),
    }
}

async fn channel(addr: &str) -> Channel {
    Channel::from_shared(addr.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A token that was valid until its user was logged out everywhere.
async fn revoked_token(server: &Server, user: &str) -> String {
    let t = token(user, 1000, 3600);
    server
        .backend()
        .await
        .revoke_tokens(RevokeTokensRequest {
            user: user.into(),
            device: String::new(),
        })
        .await
        .unwrap();
    t
}

#[tokio::test]
async fn every_rpc_refuses_callers_it_must_refuse() {
    let server = server().await;
    let fx = fixture(&server).await;
    let (api, backend_addr) = (server.api(), server.backend_addr());
    let user_api = UserApiClient::new(channel(&api).await);
    let backend_api = BackendApiClient::new(channel(&backend_addr).await);
    let archive_api = ArchiveAdminClient::new(channel(&backend_addr).await);

    let services: BTreeSet<String> = descriptors()
        .file
        .iter()
        .filter(|f| f.package() == "tern.api.v1")
        .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
        .collect();
    assert_eq!(
        services,
        BTreeSet::from(["ArchiveAdmin".into(), "BackendApi".into(), "UserApi".into()]),
        "a new service needs its own table here"
    );

    let other_key = TokenAuthority::new("some-other-key-0123456789abcdef-xyz")
        .issue(&TokenSpec::new("alice", 3600), tern_core::now_ms());
    let expired = token("alice", 7_200_000, 3600);
    let revoked = revoked_token(&server, "rita").await;
    let alice = token("alice", 0, 3600);
    let mallory = token("mallory", 0, 3600);
    let backend_token = ternd::TEST_BACKEND_TOKEN;

    // The user API: a valid login token of the user the call is about, or nothing.
    let bad_user_credentials: [(&str, Option<&str>); 5] = [
        ("no credential", None),
        ("another key", Some(&other_key)),
        ("expired", Some(&expired)),
        ("revoked", Some(&revoked)),
        ("the back-end token", Some(backend_token)),
    ];
    for method in methods("UserApi") {
        for (what, credential) in &bad_user_credentials {
            let got = user_call(&user_api, &method, *credential, &fx).await;
            if method == "IssueDevToken" {
                // Outside dev mode it is not there: refused by the gate
                // (no valid signature) or as unimplemented (past it).
                assert!(
                    matches!(got, Code::Unauthenticated | Code::Unimplemented),
                    "UserApi.{method} with {what}: {got:?}"
                );
            } else {
                assert_eq!(got, Code::Unauthenticated, "UserApi.{method} with {what}");
            }
        }
        let got = user_call(&user_api, &method, Some(&mallory), &fx).await;
        assert_eq!(
            got,
            as_another_user(&method),
            "UserApi.{method} as another user"
        );
    }
    // The same calls as alice herself succeed: the refusals above are not
    // a broken server refusing everyone.
    for method in methods("UserApi") {
        let expected = if method == "IssueDevToken" {
            Code::Unimplemented
        } else {
            Code::Ok
        };
        let got = user_call(&user_api, &method, Some(&alice), &fx).await;
        assert_eq!(got, expected, "UserApi.{method} as alice");
    }

    // The back-end API: the back-end token only.
    let bad_backend_credentials: [(&str, Option<&str>, Code); 5] = [
        ("no credential", None, Code::Unauthenticated),
        (
            "a wrong back-end token",
            Some("wrong-backend-token-0123456789abcdef"),
            Code::Unauthenticated,
        ),
        ("a user's token", Some(&alice), Code::PermissionDenied),
        (
            "an expired user token",
            Some(&expired),
            Code::Unauthenticated,
        ),
        ("the admin token", Some(ADMIN), Code::Unauthenticated),
    ];
    for method in methods("BackendApi") {
        for (what, credential, expected) in &bad_backend_credentials {
            let got = backend_call(&backend_api, &method, *credential, &fx).await;
            assert_eq!(got, *expected, "BackendApi.{method} with {what}");
        }
        let got = backend_call(&backend_api, &method, Some(backend_token), &fx).await;
        assert_eq!(got, Code::Ok, "BackendApi.{method} with the back-end token");
        // Not served on the public listener at all: the back-end token is
        // no credential there, and past the gate the method is not there.
        let on_user_listener = BackendApiClient::new(channel(&api).await);
        let got = backend_call(&on_user_listener, &method, Some(backend_token), &fx).await;
        assert_eq!(
            got,
            Code::Unauthenticated,
            "BackendApi.{method} on api_listen"
        );
        let got = backend_call(&on_user_listener, &method, Some(&alice), &fx).await;
        assert_eq!(
            got,
            Code::Unimplemented,
            "BackendApi.{method} on api_listen as alice"
        );
    }
    for method in methods("UserApi") {
        let on_backend_listener = UserApiClient::new(channel(&backend_addr).await);
        let got = user_call(&on_backend_listener, &method, Some(&alice), &fx).await;
        assert_eq!(
            got,
            Code::PermissionDenied,
            "UserApi.{method} on backend_listen"
        );
        let got = user_call(&on_backend_listener, &method, Some(backend_token), &fx).await;
        assert_eq!(
            got,
            Code::Unimplemented,
            "UserApi.{method} on backend_listen, back-end token"
        );
    }

    // The archive: the admin token only.
    let bad_admin_credentials: [(&str, Option<&str>, Code); 4] = [
        ("no credential", None, Code::Unauthenticated),
        ("a user's token", Some(&alice), Code::PermissionDenied),
        (
            "the back-end token",
            Some(backend_token),
            Code::Unauthenticated,
        ),
        (
            "an expired user token",
            Some(&expired),
            Code::Unauthenticated,
        ),
    ];
    for method in methods("ArchiveAdmin") {
        for (what, credential, expected) in &bad_admin_credentials {
            let got = archive_call(&archive_api, &method, *credential).await;
            assert_eq!(got, *expected, "ArchiveAdmin.{method} with {what}");
        }
        let got = archive_call(&archive_api, &method, Some(ADMIN)).await;
        assert_eq!(got, Code::Ok, "ArchiveAdmin.{method} with the admin token");
    }
}

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
