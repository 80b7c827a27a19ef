//! Groups and their members, kept by the message store (ScyllaDB in
//! production, redb embedded). The persister reads members to expand a group
//! message into one deliver record per member; the API changes them.
//!
//! A change is visible to the next read: a message the persister stores after
//! a member was removed is not delivered to them.

use async_trait::async_trait;

use crate::store_error::StoreError;

/// Longest group name accepted.
pub const MAX_GROUP_NAME: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: String,
    pub name: String,
    /// The user who created it; the only one who adds or removes others.
    pub owner: String,
    pub created_at_ms: u64,
    /// Members added later read the history from before they joined too.
    /// Off (the default), a member reads only what was posted after they
    /// joined (see [`GroupStore::member_since`]).
    pub history_open: bool,
}

#[async_trait]
pub trait GroupStore: Send + Sync + 'static {
    /// Creates `group` with `members` (the owner is added if missing).
    /// Creating an id that exists changes nothing (a retried call).
    async fn create_group(&self, group: &Group, members: &[String]) -> Result<(), StoreError>;

    async fn group(&self, id: &str) -> Result<Option<Group>, StoreError>;

    /// Adds users who join after the group's message `joined_after_seq`
    /// (see [`Self::member_since`]); ones already members are left as they
    /// are, their join point too.
    async fn add_members(
        &self,
        group: &str,
        users: &[String],
        joined_after_seq: u64,
    ) -> Result<(), StoreError>;

    /// Removes users; ones not members are ignored.
    async fn remove_members(&self, group: &str, users: &[String]) -> Result<(), StoreError>;

    /// Up to `limit` members with ids after `after` ("" for the first), in
    /// id order: big groups are read a page at a time.
    async fn members(
        &self,
        group: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    async fn is_member(&self, group: &str, user: &str) -> Result<bool, StoreError>;

    /// None if `user` is not a member of `group`; otherwise the seq of the
    /// group's newest message when they joined (0 for the members it was
    /// created with): what they may read of its history is after it,
    /// unless the group's history is open.
    async fn member_since(&self, group: &str, user: &str) -> Result<Option<u64>, StoreError>;

    async fn member_count(&self, group: &str) -> Result<u64, StoreError>;

    /// Ids of the groups `user` belongs to, in id order (oldest first).
    async fn user_groups(&self, user: &str) -> Result<Vec<String>, StoreError>;
}

/// Members read per store call by [`all_members`].
const MEMBER_PAGE: usize = 1000;

/// Every member of `group`, read a page at a time (empty for no such group).
pub async fn all_members<S: GroupStore + ?Sized>(
    store: &S,
    group: &str,
) -> Result<Vec<String>, StoreError> {
    let mut all: Vec<String> = Vec::new();
    loop {
        let after = all.last().map_or("", String::as_str);
        let page = store.members(group, after, MEMBER_PAGE).await?;
        let done = page.len() < MEMBER_PAGE;
        all.extend(page);
        if done {
            return Ok(all);
        }
    }
}

/// The owner and the other members of a new group, without repeats,
/// in id order.
pub fn initial_members(owner: &str, members: &[String]) -> Vec<String> {
    let mut all: Vec<String> = members.to_vec();
    all.push(owner.to_owned());
    all.sort_unstable();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_is_always_a_member_once() {
        let m = initial_members("bob", &["carol".into(), "bob".into(), "alice".into()]);
        assert_eq!(m, vec!["alice", "bob", "carol"]);
        assert_eq!(initial_members("bob", &[]), vec!["bob"]);
    }
}
