//! Per-user safety state, kept by the message store (ScyllaDB in production,
//! redb embedded): whom a user blocks, and which of a user's login tokens
//! are revoked.
//!
//! Blocks are read by the persister for every 1:1 message (a blocked
//! sender's message is refused before it is stored) and by the API when
//! someone adds a user to a group. Revocations are read at every login and
//! every user API call: a token issued before a user's (or a device's)
//! revocation time no longer logs in.

use async_trait::async_trait;

use crate::store_error::StoreError;

/// Most users one user may block (a bound on the block list's size).
pub const MAX_BLOCKED: usize = 10_000;

#[async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// `user` blocks `other` (`blocked` true) or stops blocking them.
    /// Setting what is already set changes nothing.
    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError>;

    /// Whether `user` blocks `other`.
    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError>;

    /// Up to `limit` users `user` blocks with ids after `after` ("" for the
    /// first), in id order.
    async fn blocked_users(
        &self,
        user: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError>;

    /// Revokes the tokens of `user` issued before `before_ms` (ms since the
    /// epoch): for logins as `device`, or as any device when `device` is
    /// None. A revocation only moves forward: an earlier time than the one
    /// stored changes nothing.
    async fn revoke_tokens(
        &self,
        user: &str,
        device: Option<&str>,
        before_ms: u64,
    ) -> Result<(), StoreError>;

    /// The time before which tokens of `user` are revoked: the later of the
    /// user-wide revocation and, when `device` is given, that device's (0:
    /// none).
    async fn revoked_before(&self, user: &str, device: Option<&str>) -> Result<u64, StoreError>;
}
