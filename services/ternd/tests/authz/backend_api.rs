//! The back-end API's table: how to call each `BackendApi` method with a
//! given credential, aimed at alice's things where it names any. Only the
//! back-end token may call these, so unlike the user API there is no
//! per-user column. A method with no row here panics, so a new one cannot
//! go untested.

use tern_proto::api::backend_api_client::BackendApiClient;
use tern_proto::api::*;
use tonic::Code;
use tonic::transport::Channel;

use crate::setup::{Fixture, code, req};

/// Calls `method` of the back-end API with `credential`.
pub async fn backend_call(
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
