//! [`GroupStore`] of the CQL store: groups (`groups`), their members with
//! each one's join point (`group_members`) and each user's groups
//! (`user_groups`).

use std::collections::HashSet;

use async_trait::async_trait;
use futures_util::future::try_join_all;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tern_core::groups::{Group, GroupStore, initial_members};
use tern_core::store::StoreError;

use crate::{ScyllaStore, cql};

/// Users per `IN` list when looking up which of them are members.
const MEMBER_LOOKUP: usize = 100;

pub(crate) struct Statements {
    insert_group: PreparedStatement,
    select_group: PreparedStatement,
    insert_member: PreparedStatement,
    delete_member: PreparedStatement,
    insert_user_group: PreparedStatement,
    delete_user_group: PreparedStatement,
    select_members_page: PreparedStatement,
    select_member: PreparedStatement,
    select_members_among: PreparedStatement,
    select_member_since: PreparedStatement,
    count_members: PreparedStatement,
    select_user_groups: PreparedStatement,
}

pub(crate) async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let p = |q| cql::prepare(s, keyspace, q);
    Ok(Statements {
        insert_group: p("INSERT INTO {ks}.groups (group_id, name, owner, created_at_ms, history_open) VALUES (?, ?, ?, ?, ?)").await?,
        select_group: p("SELECT name, owner, created_at_ms, history_open FROM {ks}.groups WHERE group_id = ?").await?,
        insert_member: p("INSERT INTO {ks}.group_members (group_id, user_id, joined_after_seq) VALUES (?, ?, ?)").await?,
        delete_member: p("DELETE FROM {ks}.group_members WHERE group_id = ? AND user_id = ?").await?,
        insert_user_group: p("INSERT INTO {ks}.user_groups (user_id, group_id) VALUES (?, ?)").await?,
        delete_user_group: p("DELETE FROM {ks}.user_groups WHERE user_id = ? AND group_id = ?").await?,
        select_members_page: p("SELECT user_id FROM {ks}.group_members WHERE group_id = ? AND user_id > ? LIMIT ?").await?,
        select_member: p("SELECT user_id FROM {ks}.group_members WHERE group_id = ? AND user_id = ?").await?,
        select_members_among: p("SELECT user_id FROM {ks}.group_members WHERE group_id = ? AND user_id IN ?").await?,
        select_member_since: p("SELECT joined_after_seq FROM {ks}.group_members WHERE group_id = ? AND user_id = ?").await?,
        count_members: p("SELECT COUNT(*) FROM {ks}.group_members WHERE group_id = ?").await?,
        select_user_groups: p("SELECT group_id FROM {ks}.user_groups WHERE user_id = ?").await?,
    })
}

impl ScyllaStore {
    /// Writes both rows of each membership, in parallel: the member's row
    /// with join point `joined_after_seq`, except for users in `keep`
    /// (members already, whose row and join point stay as they are), and
    /// the user's index row for every user (rewriting it repairs an add
    /// that stopped between the two rows).
    async fn write_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
        keep: &HashSet<String>,
    ) -> Result<(), StoreError> {
        let s = &self.st.groups;
        try_join_all(users.iter().map(|user| async move {
            if !keep.contains(user) {
                cql!(
                    "write group member",
                    self.session
                        .execute_unpaged(&s.insert_member, (group, user, joined_after_seq as i64))
                )?;
            }
            cql!(
                "write user group",
                self.session
                    .execute_unpaged(&s.insert_user_group, (user, group))
            )
        }))
        .await?;
        Ok(())
    }

    /// Deletes both rows of each membership, in parallel.
    async fn delete_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        let s = &self.st.groups;
        try_join_all(users.iter().map(|user| async move {
            cql!(
                "delete group member",
                self.session
                    .execute_unpaged(&s.delete_member, (group, user))
            )?;
            cql!(
                "delete user group",
                self.session
                    .execute_unpaged(&s.delete_user_group, (user, group))
            )
        }))
        .await?;
        Ok(())
    }

    /// Which of `users` are members of `group`: one slice of the group's
    /// partition per [`MEMBER_LOOKUP`] users, in parallel.
    async fn members_among(
        &self,
        group: &str,
        users: &[String],
    ) -> Result<HashSet<String>, StoreError> {
        let found = try_join_all(users.chunks(MEMBER_LOOKUP).map(|chunk| {
            self.all::<(String,)>(
                "read group members",
                &self.st.groups.select_members_among,
                (group, chunk),
            )
        }))
        .await?;
        Ok(found.into_iter().flatten().map(|(u,)| u).collect())
    }
}

#[async_trait]
impl GroupStore for ScyllaStore {
    async fn create_group(&self, group: &Group, members: &[String]) -> Result<(), StoreError> {
        if self.group(&group.id).await?.is_some() {
            return Ok(());
        }
        // Members first, the group row last: a retry after a crash in
        // between finds no group and writes the members again.
        let members = initial_members(&group.owner, members);
        self.write_members(&group.id, &members, 0, &HashSet::new())
            .await?;
        cql!(
            "write group",
            self.session.execute_unpaged(
                &self.st.groups.insert_group,
                (
                    &group.id,
                    &group.name,
                    &group.owner,
                    group.created_at_ms as i64,
                    group.history_open
                )
            )
        )?;
        Ok(())
    }

    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        Ok(self
            .first::<(String, String, i64, Option<bool>)>(
                "read group",
                &self.st.groups.select_group,
                (id,),
            )
            .await?
            .map(|(name, owner, created, history_open)| Group {
                id: id.to_owned(),
                name,
                owner,
                created_at_ms: created as u64,
                // Null in groups made before migration 007: closed.
                history_open: history_open.unwrap_or(false),
            }))
    }

    async fn add_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
    ) -> Result<(), StoreError> {
        // Members already in keep their join point, so only newcomers' rows
        // are written: a plain INSERT would overwrite it. Without a
        // lightweight transaction the read and the writes race: two adds of
        // the same user at once both find them missing and the last write's
        // join point stands (one of the two the callers gave); a remove
        // between an add's read and its writes leaves the user out of the
        // group but (as before 007, where rows were written in either
        // order) may leave their `user_groups` row behind.
        let keep = self.members_among(group, users).await?;
        self.write_members(group, users, joined_after_seq, &keep)
            .await
    }

    async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        self.delete_members(group, users).await
    }

    async fn member_since(&self, group: &str, user: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .first::<(Option<i64>,)>(
                "read group member",
                &self.st.groups.select_member_since,
                (group, user),
            )
            .await?
            // Null in rows from before migration 007: from the start.
            .map(|(seq,)| seq.map_or(0, |s| s.max(0) as u64)))
    }

    async fn members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let limit = limit.clamp(1, i32::MAX as usize) as i32;
        let rows: Vec<(String,)> = self
            .all(
                "read group members",
                &self.st.groups.select_members_page,
                (group, after, limit),
            )
            .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    async fn is_member(&self, group: &str, user: &str) -> Result<bool, StoreError> {
        Ok(self
            .first::<(String,)>(
                "read group member",
                &self.st.groups.select_member,
                (group, user),
            )
            .await?
            .is_some())
    }

    async fn member_count(&self, group: &str) -> Result<u64, StoreError> {
        Ok(self
            .first::<(i64,)>(
                "count group members",
                &self.st.groups.count_members,
                (group,),
            )
            .await?
            .map_or(0, |(n,)| n as u64))
    }

    async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = self
            .all(
                "read user groups",
                &self.st.groups.select_user_groups,
                (user,),
            )
            .await?;
        Ok(rows.into_iter().map(|(g,)| g).collect())
    }
}
