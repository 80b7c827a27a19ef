//! The group calls: create, add and remove members, list them, list a
//! user's groups. Who may do what is `tern-chat`'s rule
//! ([`tern_chat::access`]): the owner (or the back end) adds and removes
//! others, any member removes themselves, members list the members; nobody
//! adds a user who blocks them or who is in too many groups; a user creates
//! at most `group_creations_per_hour` groups (per API node).

use prost::Message as _;
use tern_chat::Refusal;
use tern_chat::access::{Actor, check_addable, check_member_change, check_member_list};
use tern_chat::pages::{page_limit, with_next};
use tern_core::groups::{Group as StoredGroup, MAX_GROUP_NAME, initial_members};
use tern_core::ids::{Conversation, check_group, new_group_id};
use tern_core::log::Record;
use tern_core::now_ms;
use tern_core::proto::api::{
    ChangeMembersRequest, CreateGroupRequest, Group, GroupList, ListGroupsRequest,
    ListMembersRequest, MembersPage,
};
use tern_core::proto::records::{GroupChange, GroupFeedRecord, group_feed_record};
use tern_core::sync;
use tern_core::topics;

use crate::{Api, ApiError};

impl Api {
    async fn stored_group(&self, id: &str) -> Result<StoredGroup, ApiError> {
        check_group(id)?;
        self.deps
            .store
            .group(id)
            .await?
            .ok_or_else(|| ApiError::UnknownGroup(id.to_owned()))
    }

    async fn group_reply(&self, g: StoredGroup) -> Result<Group, ApiError> {
        let member_count = self.deps.store.member_count(&g.id).await?;
        Ok(Group {
            conversation: Conversation::Group(g.id.clone()).to_string(),
            id: g.id,
            name: g.name,
            owner: g.owner,
            created_at_ms: g.created_at_ms,
            member_count,
            history_open: g.history_open,
        })
    }

    pub(crate) async fn create_group(
        &self,
        actor: &Actor,
        req: CreateGroupRequest,
    ) -> Result<Group, ApiError> {
        let owner = actor.subject(&req.owner, "create a group owned by")?;
        let limits = &self.config.group_limits;
        check_member_list(actor, &req.members, limits)?;
        if req.name.len() > MAX_GROUP_NAME {
            return Err(Refusal::invalid(format!(
                "group name is over the limit of {MAX_GROUP_NAME} bytes"
            ))
            .into());
        }
        if let Actor::User(user) = actor {
            let now = tokio::time::Instant::now().into_std();
            let taken = sync::lock(&self.group_creations).take(user, now);
            if let Err(after) = taken {
                crate::metrics::API_LIMITED.inc("group_creations");
                return Err(Refusal::rate_limited(
                    format!(
                        "{user} created the most groups allowed per hour ({})",
                        self.config.group_creations.burst
                    ),
                    after,
                )
                .into());
            }
        }
        let members = initial_members(&owner, &req.members);
        check_addable(self.deps.store.as_ref(), actor, &members, limits).await?;
        let group = StoredGroup {
            id: new_group_id(),
            name: req.name,
            owner,
            created_at_ms: now_ms(),
            history_open: req.history_open,
        };
        self.deps.store.create_group(&group, &req.members).await?;
        tracing::info!(group = %group.id, owner = %group.owner, members = members.len(), "group created");
        self.announce(&group.id, &members, &[]).await?;
        self.group_reply(group).await
    }

    pub(crate) async fn change_members(
        &self,
        actor: &Actor,
        req: ChangeMembersRequest,
        add: bool,
    ) -> Result<Group, ApiError> {
        let group = self.stored_group(&req.group).await?;
        check_member_list(actor, &req.users, &self.config.group_limits)?;
        check_member_change(self.deps.store.as_ref(), actor, &group, &req.users, add).await?;
        let store = &self.deps.store;
        if add {
            check_addable(store.as_ref(), actor, &req.users, &self.config.group_limits).await?;
            // New members read what is posted from now on (unless the
            // group's history is open): they join after its newest message.
            let conversation = Conversation::Group(group.id.clone()).to_string();
            let head = store
                .history(&conversation, 0, 1)
                .await?
                .first()
                .map_or(0, |m| m.seq);
            store.add_members(&group.id, &req.users, head).await?;
            self.announce(&group.id, &req.users, &[]).await?;
        } else {
            store.remove_members(&group.id, &req.users).await?;
            self.announce(&group.id, &[], &req.users).await?;
        }
        tracing::info!(group = %group.id, add, users = req.users.len(), "group members changed");
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
    ) -> Result<(), ApiError> {
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
            .map_err(ApiError::Feed)?;
        Ok(())
    }

    pub(crate) async fn list_members(
        &self,
        actor: &Actor,
        req: ListMembersRequest,
    ) -> Result<MembersPage, ApiError> {
        let group = self.stored_group(&req.group).await?;
        if let Actor::User(user) = actor
            && !self.deps.store.is_member(&group.id, user).await?
        {
            return Err(Refusal::forbidden(format!(
                "{user} is not a member of group {}",
                group.id
            ))
            .into());
        }
        let limit = page_limit(req.limit);
        // One extra tells whether there is a next page.
        let read = self
            .deps
            .store
            .members(&group.id, &req.after, limit + 1)
            .await?;
        let (users, next) = with_next(read, limit);
        Ok(MembersPage { users, next })
    }

    pub(crate) async fn list_groups(
        &self,
        actor: &Actor,
        req: ListGroupsRequest,
    ) -> Result<GroupList, ApiError> {
        let user = actor.subject(&req.user, "list the groups of")?;
        let limit = page_limit(req.limit);
        let ids: Vec<String> = self
            .deps
            .store
            .user_groups(&user)
            .await?
            .into_iter()
            .filter(|id| req.after.is_empty() || *id > req.after)
            .collect();
        let mut groups = Vec::new();
        for id in ids.iter().take(limit) {
            // A group removed between the two reads is left out.
            if let Some(g) = self.deps.store.group(id).await? {
                groups.push(self.group_reply(g).await?);
            }
        }
        let next = if ids.len() > limit {
            ids[limit - 1].clone()
        } else {
            String::new()
        };
        Ok(GroupList { groups, next })
    }
}
