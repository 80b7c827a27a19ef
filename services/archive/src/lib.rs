//! tern-archive: the compliance archive.
//!
//! The archiver reads the `archive` topic (every message the persister
//! stored, with its recipients) as its own consumer group and writes
//! immutable, compressed, hash-chained segments to object storage (a local
//! directory by default). Each message is archived exactly once: a segment's
//! manifest records the inbound positions it covers, and a restarted
//! archiver skips what the last manifest already holds, whatever the
//! consumer group's offsets say.
//!
//! Operators verify the chain, place legal holds, purge expired segments
//! that no hold covers, and export one user's or one conversation's
//! messages ([`Archive`]). The format is in docs/archive.md.

pub mod archiver;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod export;
pub mod holds;
pub mod metrics;
pub mod segment;
pub mod storage;
pub mod verify;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

pub use archiver::{Archiver, ArchiverConfig};
pub use export::{EXPORT_CHUNK_BYTES, ExportChunk, ExportFilter, ExportProgress, ExportSummary};
pub use holds::{Hold, HoldScope, PurgeReport};
pub use segment::Manifest;
pub use storage::{LocalDir, ObjectStorage};
pub use verify::{Problem, VerifyReport};

use segment::{ClosedSegment, GENESIS, index_name, manifest_name, segment_name, sha256_hex};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive storage: {0}")]
    Storage(String),
    #[error("archive format: {0}")]
    Format(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no such hold: {0}")]
    UnknownHold(String),
}

/// An archive in some object storage.
#[derive(Clone)]
pub struct Archive {
    storage: Arc<dyn ObjectStorage>,
}

/// Where the chain ends: what the next segment continues from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChainHead {
    /// Number of the next segment.
    pub next_segment: u64,
    /// Per inbound partition, the last offset archived.
    pub through: BTreeMap<u32, u64>,
    /// SHA-256 of the last manifest ([`GENESIS`] when there is none).
    pub last_manifest_sha256: String,
}

/// Opens the archive at `location`: a directory, `file:///path`, or "off".
/// Returns None for "off" (or empty). `s3://` is opened by tern-archive-s3.
pub fn open(location: &str) -> Result<Option<Archive>, ArchiveError> {
    let location = location.trim();
    if location.is_empty() || location == "off" {
        return Ok(None);
    }
    if let Some((scheme, rest)) = location.split_once("://") {
        return match scheme {
            "file" => Ok(Some(Archive::new(Arc::new(LocalDir::new(rest))))),
            "s3" => Err(ArchiveError::Invalid(format!(
                "archive {location:?}: s3:// archives need tern-server, which links the S3 client"
            ))),
            other => Err(ArchiveError::Invalid(format!(
                "archive {location:?}: storage {other}:// is not supported; use a directory or file:///path"
            ))),
        };
    }
    Ok(Some(Archive::new(Arc::new(LocalDir::new(location)))))
}

impl Archive {
    pub fn new(storage: Arc<dyn ObjectStorage>) -> Self {
        Archive { storage }
    }

    pub fn storage(&self) -> &dyn ObjectStorage {
        self.storage.as_ref()
    }

    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// Segment numbers with a manifest, in order.
    pub async fn segments(&self) -> Result<Vec<u64>, ArchiveError> {
        Ok(self
            .storage
            .list("manifests/")
            .await?
            .iter()
            .filter_map(|n| segment::seq_of(n))
            .collect())
    }

    pub async fn manifest(&self, seq: u64) -> Result<Option<(Manifest, Bytes)>, ArchiveError> {
        let Some(bytes) = self.storage.get(&manifest_name(seq)).await? else {
            return Ok(None);
        };
        let m = Manifest::parse(&bytes)
            .map_err(|e| ArchiveError::Format(format!("manifest {seq}: {e}")))?;
        Ok(Some((m, bytes)))
    }

    /// The end of the chain, read from the newest manifest.
    pub async fn head(&self) -> Result<ChainHead, ArchiveError> {
        let Some(&last) = self.segments().await?.last() else {
            return Ok(ChainHead {
                next_segment: 0,
                through: BTreeMap::new(),
                last_manifest_sha256: GENESIS.to_owned(),
            });
        };
        let (m, bytes) = self
            .manifest(last)
            .await?
            .ok_or_else(|| ArchiveError::Storage(format!("manifest {last} vanished")))?;
        Ok(ChainHead {
            next_segment: last + 1,
            through: m.through,
            last_manifest_sha256: sha256_hex(&bytes),
        })
    }

    /// Writes a closed segment: the segment, its index, then its manifest,
    /// which is what makes it part of the archive. A crash before the
    /// manifest leaves objects that the next write of this number replaces.
    pub async fn write_segment(&self, closed: &ClosedSegment) -> Result<(), ArchiveError> {
        let seq = closed.manifest.segment;
        self.storage
            .put(&segment_name(seq), closed.segment.clone())
            .await?;
        self.storage
            .put(&index_name(seq), closed.index.clone())
            .await?;
        self.storage
            .put(&manifest_name(seq), closed.manifest_bytes.clone())
            .await
    }
}
