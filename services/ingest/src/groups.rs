//! The group calls of the API: create, add and remove members, list them,
//! list a user's groups.
//!
//! Who may do what: a call carrying `authorization: Bearer <token>` acts as
//! the token's user. Only the owner adds or removes others; any member may
//! remove themselves (leave); only members list the members. A call without
//! the header comes from a trusted back end (like the rest of this API) and
//! may do anything.

use prost::Message as _;
use tern_core::groups::{Group as StoredGroup, MAX_GROUP_NAME, initial_members};
use tern_core::ids::{Conversation, check_group, check_user, new_group_id};
use tern_core::log::Record;
use tern_core::now_ms;
use tern_core::proto::api::{
    ChangeMembersRequest, CreateGroupRequest, Group, GroupList, ListGroupsRequest,
    ListMembersRequest, MembersPage,
};
use tern_core::proto::records::{GroupChange, GroupFeedRecord, group_feed_record};
use tern_core::topics;
use tonic::metadata::MetadataMap;

use crate::{Api, IngestError, page_limit};

/// Most users one call adds or removes.
pub const MAX_USERS_PER_CALL: usize = 1000;

/// Who is calling: a user (with a token) or a trusted back end (None).
pub(crate) type Caller = Option<String>;

impl Api {
    /// The user a call acts as, from its `authorization` header.
    pub(crate) fn caller(&self, metadata: &MetadataMap) -> Result<Caller, IngestError> {
        let Some(value) = metadata.get("authorization") else {
            return Ok(None);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                IngestError::Unauthenticated("authorization must be \"Bearer <token>\"".into())
            })?;
        let claims = self
            .deps
            .auth
            .verify(token, tern_core::auth::now_secs())
            .map_err(|e| IngestError::Unauthenticated(e.to_string()))?;
        Ok(Some(claims.sub))
    }

    async fn stored_group(&self, id: &str) -> Result<StoredGroup, IngestError> {
        check_group(id)?;
        self.deps
            .store
            .group(id)
            .await?
            .ok_or_else(|| IngestError::UnknownGroup(id.to_owned()))
    }

    async fn group_reply(&self, g: StoredGroup) -> Result<Group, IngestError> {
        let member_count = self.deps.store.member_count(&g.id).await?;
        Ok(Group {
            conversation: Conversation::Group(g.id.clone()).to_string(),
            id: g.id,
            name: g.name,
            owner: g.owner,
            created_at_ms: g.created_at_ms,
            member_count,
        })
    }

    pub(crate) async fn create_group(
        &self,
        caller: Caller,
        req: CreateGroupRequest,
    ) -> Result<Group, IngestError> {
        let owner = match (caller, req.owner.as_str()) {
            (Some(user), "") => user,
            (Some(user), owner) if owner == user => user,
            (Some(user), owner) => {
                return Err(IngestError::Forbidden(format!(
                    "{user} cannot create a group owned by {owner}"
                )));
            }
            (None, "") => return Err(IngestError::BadRequest("owner is required".into())),
            (None, owner) => owner.to_owned(),
        };
        check_user(&owner)?;
        check_users(&req.members)?;
        if req.name.len() > MAX_GROUP_NAME {
            return Err(IngestError::BadRequest(format!(
                "group name is over the limit of {MAX_GROUP_NAME} bytes"
            )));
        }
        let group = StoredGroup {
            id: new_group_id(),
            name: req.name,
            owner,
            created_at_ms: now_ms(),
        };
        self.deps.store.create_group(&group, &req.members).await?;
        tracing::info!(group = %group.id, owner = %group.owner, members = req.members.len(), "group created");
        let members = initial_members(&group.owner, &req.members);
        self.announce(&group.id, &members, &[]).await?;
        self.group_reply(group).await
    }

    pub(crate) async fn change_members(
        &self,
        caller: Caller,
        req: ChangeMembersRequest,
        add: bool,
    ) -> Result<Group, IngestError> {
        let group = self.stored_group(&req.group).await?;
        check_users(&req.users)?;
        if let Some(user) = &caller {
            let leaving_alone = !add && req.users.iter().all(|u| u == user);
            if *user != group.owner && !leaving_alone {
                return Err(IngestError::Forbidden(format!(
                    "only the owner of group {} adds or removes members; {user} may only remove themselves",
                    group.id
                )));
            }
        }
        if !add && req.users.contains(&group.owner) {
            return Err(IngestError::BadRequest(format!(
                "{} owns group {} and cannot be removed",
                group.owner, group.id
            )));
        }
        let store = &self.deps.store;
        if add {
            store.add_members(&group.id, &req.users).await?;
            self.announce(&group.id, &req.users, &[]).await?;
        } else {
            store.remove_members(&group.id, &req.users).await?;
            self.announce(&group.id, &[], &req.users).await?;
        }
        tracing::info!(group = %group.id, add, users = ?req.users, "group members changed");
        self.group_reply(group).await
    }

    /// Tells every gateway, through the group feed, who joined or left, so
    /// pushes of large-group messages follow membership. After the store:
    /// if this fails the change stands and the caller is told to retry
    /// (gateways also read a user's groups afresh at each login).
    async fn announce(
        &self,
        group: &str,
        added: &[String],
        removed: &[String],
    ) -> Result<(), IngestError> {
        let change = GroupFeedRecord {
            kind: Some(group_feed_record::Kind::Change(GroupChange {
                group: group.to_owned(),
                added: added.to_vec(),
                removed: removed.to_vec(),
            })),
        };
        self.deps
            .log
            .append(
                topics::GROUP_FEED,
                vec![Record::new(
                    group.as_bytes().to_vec(),
                    change.encode_to_vec(),
                )],
            )
            .await
            .map_err(IngestError::Feed)?;
        Ok(())
    }

    pub(crate) async fn list_members(
        &self,
        caller: Caller,
        req: ListMembersRequest,
    ) -> Result<MembersPage, IngestError> {
        let group = self.stored_group(&req.group).await?;
        if let Some(user) = &caller
            && !self.deps.store.is_member(&group.id, user).await?
        {
            return Err(IngestError::Forbidden(format!(
                "{user} is not a member of group {}",
                group.id
            )));
        }
        let limit = page_limit(req.limit);
        // One extra tells whether there is a next page.
        let mut users = self
            .deps
            .store
            .members(&group.id, &req.after, limit + 1)
            .await?;
        let next = if users.len() > limit {
            users.truncate(limit);
            users.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(MembersPage { users, next })
    }

    pub(crate) async fn list_groups(
        &self,
        caller: Caller,
        req: ListGroupsRequest,
    ) -> Result<GroupList, IngestError> {
        let user = subject(caller, &req.user, "list the groups of")?;
        let mut groups = Vec::new();
        for id in self.deps.store.user_groups(&user).await? {
            // A group removed between the two reads is left out.
            if let Some(g) = self.deps.store.group(&id).await? {
                groups.push(self.group_reply(g).await?);
            }
        }
        Ok(GroupList { groups })
    }
}

/// The user a call is about: the caller's own (`requested` empty or the
/// same), or any user for a trusted back end. `what` names the action in
/// the error for a user asking about someone else.
pub(crate) fn subject(caller: Caller, requested: &str, what: &str) -> Result<String, IngestError> {
    let user = match (caller, requested) {
        (Some(me), "") => me,
        (Some(me), user) if user == me => me,
        (Some(me), user) => {
            return Err(IngestError::Forbidden(format!("{me} cannot {what} {user}")));
        }
        (None, user) => user.to_owned(),
    };
    check_user(&user)?;
    Ok(user)
}

fn check_users(users: &[String]) -> Result<(), IngestError> {
    if users.len() > MAX_USERS_PER_CALL {
        return Err(IngestError::BadRequest(format!(
            "{} users in one call; the limit is {MAX_USERS_PER_CALL}",
            users.len()
        )));
    }
    for u in users {
        check_user(u)?;
    }
    Ok(())
}
