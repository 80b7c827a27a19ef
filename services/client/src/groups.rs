//! Group management through the gRPC API, acting as the user of a token.

use tern_proto::api::user_api_client::UserApiClient;
use tern_proto::api::{
    ChangeMembersRequest, CreateGroupRequest, Group, ListGroupsRequest, ListMembersRequest,
};
use tonic::transport::Channel;

use crate::ClientError;
use crate::api::{connect_api, with_token};

/// Members fetched per page by [`GroupApi::members`].
const MEMBERS_PAGE: u32 = 1000;

/// The API's group calls, each made as the user whose token this holds
/// (the API checks who may do what; see `api.proto`).
pub struct GroupApi {
    api: UserApiClient<Channel>,
    token: String,
}

impl GroupApi {
    pub async fn connect(api_addr: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        Ok(GroupApi {
            api: connect_api(api_addr).await?,
            token: token.into(),
        })
    }

    fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ClientError> {
        with_token(message, &self.token)
    }

    /// Creates a group owned by the caller, with these other members.
    pub async fn create(&mut self, name: &str, members: &[String]) -> Result<Group, ClientError> {
        let request = self.request(CreateGroupRequest {
            owner: String::new(),
            name: name.to_owned(),
            members: members.to_vec(),
            history_open: false,
        })?;
        Ok(self.api.create_group(request).await?.into_inner())
    }

    pub async fn add(&mut self, group: &str, users: &[String]) -> Result<Group, ClientError> {
        let request = self.request(ChangeMembersRequest {
            group: group.to_owned(),
            users: users.to_vec(),
        })?;
        Ok(self.api.add_members(request).await?.into_inner())
    }

    pub async fn remove(&mut self, group: &str, users: &[String]) -> Result<Group, ClientError> {
        let request = self.request(ChangeMembersRequest {
            group: group.to_owned(),
            users: users.to_vec(),
        })?;
        Ok(self.api.remove_members(request).await?.into_inner())
    }

    /// Every member, in id order (fetched a page at a time).
    pub async fn members(&mut self, group: &str) -> Result<Vec<String>, ClientError> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let request = self.request(ListMembersRequest {
                group: group.to_owned(),
                after: after.clone(),
                limit: MEMBERS_PAGE,
            })?;
            let page = self.api.list_members(request).await?.into_inner();
            all.extend(page.users);
            if page.next.is_empty() {
                return Ok(all);
            }
            after = page.next;
        }
    }

    /// The caller's groups (fetched a page at a time).
    pub async fn list(&mut self) -> Result<Vec<Group>, ClientError> {
        let mut all = Vec::new();
        let mut after = String::new();
        loop {
            let request = self.request(ListGroupsRequest {
                after: after.clone(),
                ..Default::default()
            })?;
            let page = self.api.list_groups(request).await?.into_inner();
            all.extend(page.groups);
            if page.next.is_empty() {
                return Ok(all);
            }
            after = page.next;
        }
    }
}
