//! [`AccountStore`] of the embedded store: blocks and token revocations, in
//! tables of the same redb file.

use async_trait::async_trait;
use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use super::store::{EmbeddedStore, io};
use crate::accounts::AccountStore;
use crate::store::StoreError;

/// (user, blocked user) → (): whom each user blocks, in id order.
const BLOCKS: TableDefinition<(&str, &str), ()> = TableDefinition::new("blocks");
/// (user, device) → ms before which the user's tokens are revoked for
/// logins as that device; device "" (never a valid device id): every device.
const REVOCATIONS: TableDefinition<(&str, &str), u64> = TableDefinition::new("revocations");

/// Creates the tables, so read transactions never miss one.
pub(super) fn create_tables(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.open_table(BLOCKS).map_err(io)?;
    tx.open_table(REVOCATIONS).map_err(io)?;
    Ok(())
}

#[async_trait]
impl AccountStore for EmbeddedStore {
    async fn set_blocked(&self, user: &str, other: &str, blocked: bool) -> Result<(), StoreError> {
        let (user, other) = (user.to_owned(), other.to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut blocks = tx.open_table(BLOCKS).map_err(io)?;
                let key = (user.as_str(), other.as_str());
                if blocked {
                    blocks.insert(key, ()).map_err(io)?;
                } else {
                    blocks.remove(key).map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn is_blocked(&self, user: &str, other: &str) -> Result<bool, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let blocks = tx.open_table(BLOCKS).map_err(io)?;
        Ok(blocks.get((user, other)).map_err(io)?.is_some())
    }

    async fn blocked_users(
        &self,
        user: &str,
        after: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let blocks = tx.open_table(BLOCKS).map_err(io)?;
        let mut out = Vec::new();
        for row in blocks.range((user, after)..).map_err(io)? {
            let (key, _) = row.map_err(io)?;
            let (u, other) = key.value();
            if u != user || out.len() >= limit {
                break;
            }
            if other != after {
                out.push(other.to_owned());
            }
        }
        Ok(out)
    }

    async fn revoke_tokens(
        &self,
        user: &str,
        device: Option<&str>,
        before_ms: u64,
    ) -> Result<(), StoreError> {
        let (user, device) = (user.to_owned(), device.unwrap_or("").to_owned());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut revocations = tx.open_table(REVOCATIONS).map_err(io)?;
                let key = (user.as_str(), device.as_str());
                let stored = revocations.get(key).map_err(io)?.map_or(0, |v| v.value());
                if before_ms > stored {
                    revocations.insert(key, before_ms).map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await
    }

    async fn revoked_before(&self, user: &str, device: Option<&str>) -> Result<u64, StoreError> {
        let tx = self.db.begin_read().map_err(io)?;
        let revocations = tx.open_table(REVOCATIONS).map_err(io)?;
        let read = |device: &str| -> Result<u64, StoreError> {
            Ok(revocations
                .get((user, device))
                .map_err(io)?
                .map_or(0, |v| v.value()))
        };
        let all = read("")?;
        Ok(match device {
            Some(d) if !d.is_empty() => all.max(read(d)?),
            _ => all,
        })
    }
}
