//! The user API's table: how to call each `UserApi` method with a given
//! credential, aimed at alice's things where it names any, and what mallory
//! (a valid user, but not alice) gets back from each. A method with no row
//! here panics, so a new one cannot go untested.

use tern_proto::api::user_api_client::UserApiClient;
use tern_proto::api::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::setup::{Fixture, code, req};

/// Calls `method` of the user API with `credential`, aimed at alice's
/// things where it names any.
pub async fn user_call(
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
pub fn as_another_user(method: &str) -> Code {
    match method {
        // Dev mode is off: the method does not exist.
        "IssueDevToken" => Code::Unimplemented,
        // Public counts, and calls that only ever act on the caller's own.
        "RoomViewers" | "SetBlocked" | "ListBlocked" => Code::Ok,
        _ => Code::PermissionDenied,
    }
}
