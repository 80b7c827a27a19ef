//! The user API: each call authenticated as a user (see [`crate::authz`]),
//! then handed to the operation it names.

use tern_core::proto::api::user_api_server::UserApi;
use tern_core::proto::api::*;
use tonic::{Request, Response, Status};

use crate::authz::{Authorized, UserService};

#[tonic::async_trait]
impl UserApi for UserService {
    async fn issue_dev_token(
        &self,
        r: Request<IssueDevTokenRequest>,
    ) -> Result<Response<IssueDevTokenResponse>, Status> {
        // The one call without a credential: it exists in dev mode only.
        self.0.dev_mode_only()?;
        Ok(Response::new(self.0.issue_dev_token(r.into_inner())?))
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

    async fn room_viewers(
        &self,
        r: Request<RoomViewersRequest>,
    ) -> Result<Response<RoomViewersResponse>, Status> {
        // Viewer counts only of the rooms the token may enter.
        let claims = self.0.user_claims(r.metadata(), r.extensions()).await?;
        let policy = self.0.config.room_policy;
        for room in &r.get_ref().rooms {
            tern_chat::rooms::check_room(policy, claims.rooms.as_deref(), room)
                .map_err(|refusal| Status::from(crate::ApiError::from(refusal)))?;
        }
        let who = tern_chat::access::Actor::User(claims.sub);
        Ok(Response::new(
            self.0.room_viewers(&who, r.into_inner()).await?,
        ))
    }

    async fn set_blocked(
        &self,
        r: Request<SetBlockedRequest>,
    ) -> Result<Response<SetBlockedResponse>, Status> {
        self.call(r, |api, who, req| async move {
            api.set_blocked(&who, req).await
        })
        .await
    }

    async fn list_blocked(
        &self,
        r: Request<ListBlockedRequest>,
    ) -> Result<Response<BlockedList>, Status> {
        self.call(r, |api, who, req| async move {
            api.list_blocked(&who, req).await
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
