//! [`AccountStore`] of the CQL store: blocks and token revocations, in the
//! tables of migration 007 (`blocks`, `token_revocations`).

use async_trait::async_trait;
use scylla::client::session::Session;
use scylla::statement::prepared::PreparedStatement;
use tern_core::accounts::AccountStore;
use tern_core::store::StoreError;

use crate::{ScyllaStore, cql};

/// Device of the revocation row that covers every device ("" is never a
/// valid device id).
const ALL_DEVICES: &str = "";

pub(crate) struct Statements {
    insert_block: PreparedStatement,
    delete_block: PreparedStatement,
    select_block: PreparedStatement,
    select_blocks_page: PreparedStatement,
    write_revocation: PreparedStatement,
    select_revocations: PreparedStatement,
}

pub(crate) async fn prepare(s: &Session, keyspace: &str) -> Result<Statements, StoreError> {
    let p = |q| cql::prepare(s, keyspace, q);
    Ok(Statements {
        insert_block: p("INSERT INTO {ks}.blocks (user_id, blocked_user) VALUES (?, ?)").await?,
        delete_block: p("DELETE FROM {ks}.blocks WHERE user_id = ? AND blocked_user = ?").await?,
        select_block: p("SELECT blocked_user FROM {ks}.blocks WHERE user_id = ? AND blocked_user = ?").await?,
        select_blocks_page: p("SELECT blocked_user FROM {ks}.blocks WHERE user_id = ? AND blocked_user > ? LIMIT ?").await?,
        write_revocation: p("UPDATE {ks}.token_revocations USING TIMESTAMP ? SET before_ms = ? WHERE user_id = ? AND device = ?").await?,
        select_revocations: p("SELECT before_ms FROM {ks}.token_revocations WHERE user_id = ? AND device IN ?").await?,
    })
}

/// The write timestamp of a revocation at `before_ms`: the time itself, in
/// microseconds like the server's own timestamps, so the latest revocation
/// wins whatever order the writes arrive in (a tie keeps the larger value,
/// which is the same one) and a wall-clock write made later still beats it.
fn revocation_timestamp(before_ms: i64) -> i64 {
    before_ms.saturating_mul(1000)
}

#[async_trait]
impl AccountStore for ScyllaStore {
    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError> {
        let st = if blocked {
            &self.st.accounts.insert_block
        } else {
            &self.st.accounts.delete_block
        };
        cql!(
            "write block",
            self.session.execute_unpaged(st, (user, other))
        )?;
        Ok(())
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError> {
        Ok(self
            .first::<(String,)>("read block", &self.st.accounts.select_block, (user, other))
            .await?
            .is_some())
    }

    async fn blocked_users(
        &self,
        user: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(i32::MAX as usize) as i32;
        let rows: Vec<(String,)> = self
            .all(
                "read blocks",
                &self.st.accounts.select_blocks_page,
                (user, after, limit),
            )
            .await?;
        Ok(rows.into_iter().map(|(u,)| u).collect())
    }

    async fn revoke_tokens(
        &self,
        user: &str,
        device: Option<&str>,
        before_ms: u64,
    ) -> Result<(), StoreError> {
        // No read: the write timestamp orders revocations (see
        // `revocation_timestamp`); an earlier one written later loses.
        let before_ms = before_ms.min(i64::MAX as u64) as i64;
        cql!(
            "write token revocation",
            self.session.execute_unpaged(
                &self.st.accounts.write_revocation,
                (
                    revocation_timestamp(before_ms),
                    before_ms,
                    user,
                    device.unwrap_or(ALL_DEVICES)
                )
            )
        )?;
        Ok(())
    }

    async fn revoked_before(&self, user: &str, device: Option<&str>) -> Result<u64, StoreError> {
        // The user-wide row and the device's, in one slice of the user's
        // partition.
        let devices: Vec<&str> = match device {
            Some(d) if d != ALL_DEVICES => vec![ALL_DEVICES, d],
            _ => vec![ALL_DEVICES],
        };
        let rows: Vec<(Option<i64>,)> = self
            .all(
                "read token revocations",
                &self.st.accounts.select_revocations,
                (user, devices),
            )
            .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(b,)| b)
            .max()
            .map_or(0, |b| b.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn revocation_timestamps_are_microseconds_and_do_not_overflow() {
        assert_eq!(
            super::revocation_timestamp(1_700_000_000_000),
            1_700_000_000_000_000
        );
        assert_eq!(super::revocation_timestamp(i64::MAX), i64::MAX);
    }
}
