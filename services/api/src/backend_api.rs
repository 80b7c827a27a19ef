//! The back-end API: each call authenticated by the back-end token (see
//! [`crate::authz`]), then handed to the operation it names, acting for
//! whichever user the request names.

use tern_core::proto::api::backend_api_server::BackendApi;
use tern_core::proto::api::*;
use tonic::{Request, Response, Status};

use crate::authz::{Authorized, BackendService};

#[tonic::async_trait]
impl BackendApi for BackendService {
    async fn send_as_system(
        &self,
        r: Request<SendAsSystemRequest>,
    ) -> Result<Response<SendAsSystemResponse>, Status> {
        self.call(r, |api, who, req| async move {
            api.send_as_system(&who, req).await
        })
        .await
    }

    async fn fetch_inbox(
        &self,
        r: Request<FetchInboxRequest>,
    ) -> Result<Response<InboxPage>, Status> {
        self.call(r, |api, who, req| async move {
            api.fetch_inbox(&who, req).await
        })
        .await
    }

    async fn history(&self, r: Request<HistoryRequest>) -> Result<Response<HistoryPage>, Status> {
        self.call(
            r,
            |api, who, req| async move { api.history(&who, req).await },
        )
        .await
    }

    async fn list_conversations(
        &self,
        r: Request<ListConversationsRequest>,
    ) -> Result<Response<ConversationList>, Status> {
        self.call(r, |api, who, req| async move {
            api.list_conversations(&who, req).await
        })
        .await
    }

    async fn mark_read(
        &self,
        r: Request<MarkReadRequest>,
    ) -> Result<Response<MarkReadResponse>, Status> {
        self.call(
            r,
            |api, who, req| async move { api.mark_read(&who, req).await },
        )
        .await
    }

    async fn create_group(
        &self,
        r: Request<CreateGroupRequest>,
    ) -> Result<Response<Group>, Status> {
        self.call(r, |api, who, req| async move {
            api.create_group(&who, req).await
        })
        .await
    }

    async fn add_members(
        &self,
        r: Request<ChangeMembersRequest>,
    ) -> Result<Response<Group>, Status> {
        self.call(r, |api, who, req| async move {
            api.change_members(&who, req, true).await
        })
        .await
    }

    async fn remove_members(
        &self,
        r: Request<ChangeMembersRequest>,
    ) -> Result<Response<Group>, Status> {
        self.call(r, |api, who, req| async move {
            api.change_members(&who, req, false).await
        })
        .await
    }

    async fn list_members(
        &self,
        r: Request<ListMembersRequest>,
    ) -> Result<Response<MembersPage>, Status> {
        self.call(r, |api, who, req| async move {
            api.list_members(&who, req).await
        })
        .await
    }

    async fn list_groups(
        &self,
        r: Request<ListGroupsRequest>,
    ) -> Result<Response<GroupList>, Status> {
        self.call(r, |api, who, req| async move {
            api.list_groups(&who, req).await
        })
        .await
    }

    async fn post_to_room(
        &self,
        r: Request<PostToRoomRequest>,
    ) -> Result<Response<PostToRoomResponse>, Status> {
        self.call(r, |api, who, req| async move {
            api.post_to_room(&who, req).await
        })
        .await
    }

    async fn room_viewers(
        &self,
        r: Request<RoomViewersRequest>,
    ) -> Result<Response<RoomViewersResponse>, Status> {
        self.call(r, |api, who, req| async move {
            api.room_viewers(&who, req).await
        })
        .await
    }

    async fn revoke_tokens(
        &self,
        r: Request<RevokeTokensRequest>,
    ) -> Result<Response<RevokeTokensResponse>, Status> {
        self.call(r, |api, who, req| async move {
            api.revoke_tokens(&who, req).await
        })
        .await
    }
}
