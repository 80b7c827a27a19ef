//! [`GroupStore`] of the embedded store: groups, members both ways, join
//! points.

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable};

use super::{
    EmbeddedStore, GROUP_JOINS, GROUP_MEMBERS, GROUPS, OPEN_HISTORY_GROUPS, USER_GROUPS, io,
};
use crate::groups::{Group, GroupStore, initial_members};
use crate::store::StoreError;

/// Adds members who joined after `joined_after_seq` (Some) or removes
/// members (None) of `group`, in one durable transaction.
fn change_members(
    db: &Database,
    group: &str,
    users: &[String],
    joined_after_seq: Option<u64>,
) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(io)?;
    {
        let mut members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        let mut by_user = tx.open_table(USER_GROUPS).map_err(io)?;
        let mut joins = tx.open_table(GROUP_JOINS).map_err(io)?;
        for user in users {
            let key = (group, user.as_str());
            match joined_after_seq {
                // A member already in keeps the join point they have.
                Some(seq) => {
                    if members.insert(key, ()).map_err(io)?.is_none() && seq > 0 {
                        joins.insert(key, seq).map_err(io)?;
                    }
                    by_user.insert((user.as_str(), group), ()).map_err(io)?;
                }
                None => {
                    members.remove(key).map_err(io)?;
                    joins.remove(key).map_err(io)?;
                    by_user.remove((user.as_str(), group)).map_err(io)?;
                }
            }
        }
    }
    tx.commit().map_err(io)
}

#[async_trait]
impl GroupStore for EmbeddedStore {
    async fn create_group(&self, group: &Group, members: &[String]) -> Result<(), StoreError> {
        let group = group.clone();
        let members = initial_members(&group.owner, members);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut groups = tx.open_table(GROUPS).map_err(io)?;
                if groups.get(group.id.as_str()).map_err(io)?.is_some() {
                    return Ok(());
                }
                groups
                    .insert(
                        group.id.as_str(),
                        (
                            group.name.as_str(),
                            group.owner.as_str(),
                            group.created_at_ms,
                        ),
                    )
                    .map_err(io)?;
                if group.history_open {
                    let mut open = tx.open_table(OPEN_HISTORY_GROUPS).map_err(io)?;
                    open.insert(group.id.as_str(), ()).map_err(io)?;
                }
                let mut by_group = tx.open_table(GROUP_MEMBERS).map_err(io)?;
                let mut by_user = tx.open_table(USER_GROUPS).map_err(io)?;
                for user in &members {
                    by_group
                        .insert((group.id.as_str(), user.as_str()), ())
                        .map_err(io)?;
                    by_user
                        .insert((user.as_str(), group.id.as_str()), ())
                        .map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let groups = tx.open_table(GROUPS).map_err(io)?;
        let history_open = tx
            .open_table(OPEN_HISTORY_GROUPS)
            .map_err(io)?
            .get(id)
            .map_err(io)?
            .is_some();
        Ok(groups.get(id).map_err(io)?.map(|v| {
            let (name, owner, created_at_ms) = v.value();
            Group {
                id: id.to_owned(),
                name: name.to_owned(),
                owner: owner.to_owned(),
                created_at_ms,
                history_open,
            }
        }))
    }

    async fn add_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
    ) -> Result<(), StoreError> {
        let (group, users) = (group.to_owned(), users.to_vec());
        self.blocking(move |db| change_members(db, &group, &users, Some(joined_after_seq)))
            .await
    }

    async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), StoreError> {
        let (group, users) = (group.to_owned(), users.to_vec());
        self.blocking(move |db| change_members(db, &group, &users, None))
            .await
    }

    async fn member_since(&self, group: &str, user: &str) -> Result<Option<u64>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        if members.get((group, user)).map_err(io)?.is_none() {
            return Ok(None);
        }
        let joins = tx.open_table(GROUP_JOINS).map_err(io)?;
        Ok(Some(
            joins
                .get((group, user))
                .map_err(io)?
                .map_or(0, |v| v.value()),
        ))
    }

    async fn members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        let mut out = Vec::new();
        for row in members.range((group, after)..).map_err(io)? {
            let (key, _) = row.map_err(io)?;
            let (g, user) = key.value();
            if g != group || out.len() >= limit {
                break;
            }
            if user != after {
                out.push(user.to_owned());
            }
        }
        Ok(out)
    }

    async fn is_member(&self, group: &str, user: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        Ok(members.get((group, user)).map_err(io)?.is_some())
    }

    async fn member_count(&self, group: &str) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let members = tx.open_table(GROUP_MEMBERS).map_err(io)?;
        let mut n = 0;
        for row in members.range((group, "")..).map_err(io)? {
            if row.map_err(io)?.0.value().0 != group {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let by_user = tx.open_table(USER_GROUPS).map_err(io)?;
        let mut out = Vec::new();
        for row in by_user.range((user, "")..).map_err(io)? {
            let (key, _) = row.map_err(io)?;
            let (u, group) = key.value();
            if u != user {
                break;
            }
            out.push(group.to_owned());
        }
        Ok(out)
    }
}
