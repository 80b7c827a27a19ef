//! Legal holds and purge. Archive retention (years) is independent of chat
//! retention; a hold on a user or a conversation keeps every segment that
//! holds their records, whatever its age, until the hold is removed.
//! Purge removes a segment's data and index and records that it did in
//! `purged/`; the manifest stays, so the chain still verifies.

use std::collections::HashSet;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::segment::{
    conversation_key, decode_index, index_name, purged_name, segment_name, seq_of, user_key,
};
use crate::{Archive, ArchiveError};

/// What a hold covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HoldScope {
    /// Every message the user sent or received.
    User(String),
    /// Every message of the conversation (`d:alice:bob`, `g:<group>`).
    Conversation(String),
}

impl HoldScope {
    fn index_key(&self) -> String {
        match self {
            HoldScope::User(u) => user_key(u),
            HoldScope::Conversation(c) => conversation_key(c),
        }
    }
}

impl std::fmt::Display for HoldScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HoldScope::User(u) => write!(f, "user {u}"),
            HoldScope::Conversation(c) => write!(f, "conversation {c}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hold {
    pub id: String,
    pub scope: HoldScope,
    pub reason: String,
    pub created_at_ms: u64,
}

/// What a purge did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Segments whose data was removed.
    pub purged: Vec<u64>,
    /// Expired segments kept, with the holds that keep them.
    pub held: Vec<(u64, Vec<String>)>,
    /// Messages in the purged segments.
    pub records: u64,
}

/// The record left in `purged/` for a purged segment.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PurgeRecord {
    segment: u64,
    purged_at_ms: u64,
    records: u64,
    last_sent_at_ms: u64,
    retention_ms: u64,
}

fn hold_name(id: &str) -> String {
    format!("holds/{id}.json")
}

fn check_hold_id(id: &str) -> Result<(), ArchiveError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(ArchiveError::Invalid(format!(
            "hold id {id:?} must be 1 to 128 letters, digits, '-', '_' or '.'"
        )))
    }
}

impl Archive {
    /// Places a hold. Without an `id` one is made; adding an existing id
    /// is refused (remove it first), so an id always means one decision.
    pub async fn add_hold(
        &self,
        id: Option<String>,
        scope: HoldScope,
        reason: &str,
    ) -> Result<Hold, ArchiveError> {
        let id = id.unwrap_or_else(|| format!("hold-{}", uuid::Uuid::now_v7().simple()));
        check_hold_id(&id)?;
        if reason.trim().is_empty() {
            return Err(ArchiveError::Invalid("a hold needs a reason".into()));
        }
        let (HoldScope::User(who) | HoldScope::Conversation(who)) = &scope;
        if who.is_empty() {
            return Err(ArchiveError::Invalid(
                "a hold needs a user or a conversation".into(),
            ));
        }
        if self.storage().get(&hold_name(&id)).await?.is_some() {
            return Err(ArchiveError::Invalid(format!("hold {id} exists already")));
        }
        let hold = Hold {
            id,
            scope,
            reason: reason.to_owned(),
            created_at_ms: tern_core::now_ms(),
        };
        let bytes =
            serde_json::to_vec_pretty(&hold).map_err(|e| ArchiveError::Format(e.to_string()))?;
        self.storage()
            .put(&hold_name(&hold.id), Bytes::from(bytes))
            .await?;
        tracing::info!(hold = %hold.id, scope = %hold.scope, reason = %hold.reason, "legal hold placed");
        Ok(hold)
    }

    pub async fn remove_hold(&self, id: &str) -> Result<Hold, ArchiveError> {
        check_hold_id(id)?;
        let hold = self
            .holds()
            .await?
            .into_iter()
            .find(|h| h.id == id)
            .ok_or_else(|| ArchiveError::UnknownHold(id.to_owned()))?;
        self.storage().delete(&hold_name(id)).await?;
        tracing::info!(hold = %id, scope = %hold.scope, "legal hold removed");
        Ok(hold)
    }

    /// Every hold, oldest first.
    pub async fn holds(&self) -> Result<Vec<Hold>, ArchiveError> {
        let mut out = Vec::new();
        for name in self.storage().list("holds/").await? {
            let Some(bytes) = self.storage().get(&name).await? else {
                continue;
            };
            let hold: Hold = serde_json::from_slice(&bytes)
                .map_err(|e| ArchiveError::Format(format!("{name}: {e}")))?;
            out.push(hold);
        }
        out.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(out)
    }

    /// Segments already purged.
    pub async fn purged(&self) -> Result<HashSet<u64>, ArchiveError> {
        Ok(self
            .storage()
            .list("purged/")
            .await?
            .iter()
            .filter_map(|n| seq_of(n))
            .collect())
    }

    /// Removes the data of every segment whose newest message is older than
    /// `retention_ms` before `now_ms` and that no hold covers, and logs each.
    pub async fn purge(&self, now_ms: u64, retention_ms: u64) -> Result<PurgeReport, ArchiveError> {
        let cutoff = now_ms.saturating_sub(retention_ms);
        let holds = self.holds().await?;
        let purged = self.purged().await?;
        let mut report = PurgeReport::default();
        // Data left by a purge that crashed after writing its record.
        for name in self.storage().list("segments/").await? {
            if let Some(seq) = seq_of(&name).filter(|s| purged.contains(s)) {
                self.storage().delete(&segment_name(seq)).await?;
                self.storage().delete(&index_name(seq)).await?;
            }
        }
        for seq in self.segments().await? {
            if purged.contains(&seq) {
                continue;
            }
            let Some((manifest, _)) = self.manifest(seq).await? else {
                continue;
            };
            if manifest.last_sent_at_ms >= cutoff {
                // Manifests are in time order only roughly (partitions
                // interleave), so look at every one rather than stop here.
                continue;
            }
            if !holds.is_empty() {
                let index =
                    self.storage().get(&index_name(seq)).await?.ok_or_else(|| {
                        ArchiveError::Format(format!("segment {seq} has no index"))
                    })?;
                let keys = decode_index(&index)
                    .map_err(|e| ArchiveError::Format(format!("index of segment {seq}: {e}")))?;
                let by: Vec<String> = holds
                    .iter()
                    .filter(|h| keys.contains(&h.scope.index_key()))
                    .map(|h| h.id.clone())
                    .collect();
                if !by.is_empty() {
                    tracing::info!(segment = seq, holds = ?by, "expired segment kept: under legal hold");
                    report.held.push((seq, by));
                    continue;
                }
            }
            // The purge record first: a crash after it leaves data that
            // verifies as purged and that the next purge removes.
            let record = PurgeRecord {
                segment: seq,
                purged_at_ms: now_ms,
                records: manifest.records,
                last_sent_at_ms: manifest.last_sent_at_ms,
                retention_ms,
            };
            let bytes = serde_json::to_vec_pretty(&record)
                .map_err(|e| ArchiveError::Format(e.to_string()))?;
            self.storage()
                .put(&purged_name(seq), Bytes::from(bytes))
                .await?;
            self.storage().delete(&segment_name(seq)).await?;
            self.storage().delete(&index_name(seq)).await?;
            tracing::info!(
                segment = seq,
                records = manifest.records,
                last_sent_at_ms = manifest.last_sent_at_ms,
                "archive segment purged: past retention, no hold"
            );
            report.records += manifest.records;
            report.purged.push(seq);
        }
        Ok(report)
    }
}
