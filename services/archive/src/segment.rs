//! Segments and their manifests: the archive's stable on-disk format
//! (docs/archive.md).
//!
//! A segment is one zstd frame of length-delimited `ArchiveEntry` protobufs.
//! Its manifest (JSON) says what the segment holds and carries the SHA-256
//! of the segment, of its index, and of the previous manifest: manifests
//! form a hash chain, so a changed, removed or reordered segment or
//! manifest shows. Segments, indexes and manifests are written once and
//! never changed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tern_proto::archive::{ArchiveEntry, ArchivedMessage, GroupMembers, archive_entry};
use tern_proto::records::ArchiveRecord;

use crate::ArchiveError;

/// Version of the manifest and segment format.
pub const FORMAT: u32 = 1;
/// The chain's start: the "previous manifest hash" of segment 0.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub fn manifest_name(seq: u64) -> String {
    format!("manifests/{seq:020}.json")
}
pub fn segment_name(seq: u64) -> String {
    format!("segments/{seq:020}.seg.zst")
}
pub fn index_name(seq: u64) -> String {
    format!("index/{seq:020}.idx.zst")
}
pub fn purged_name(seq: u64) -> String {
    format!("purged/{seq:020}.json")
}

/// The segment number in an object name made by the functions above.
pub fn seq_of(name: &str) -> Option<u64> {
    let file = name.rsplit('/').next()?;
    file.split('.').next()?.parse().ok()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Inbound log positions a segment holds, for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionRange {
    pub partition: u32,
    pub first: u64,
    pub last: u64,
}

/// What a closed segment holds; written after the segment and its index,
/// so a manifest only ever names objects that are complete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub segment: u64,
    /// Messages in the segment (group member lists not counted).
    pub records: u64,
    /// Size of the segment object (compressed) and of its entries before compression.
    pub bytes: u64,
    pub raw_bytes: u64,
    /// Oldest and newest `sent_at_ms` of its messages.
    pub first_sent_at_ms: u64,
    pub last_sent_at_ms: u64,
    pub closed_at_ms: u64,
    /// The inbound positions of its messages, per partition.
    pub positions: Vec<PositionRange>,
    /// Per inbound partition, the last offset archived in this segment or
    /// an earlier one: where an archiver resumes after a crash.
    pub through: BTreeMap<u32, u64>,
    pub segment_sha256: String,
    pub index_sha256: String,
    /// SHA-256 of the previous manifest's bytes ([`GENESIS`] for segment 0).
    pub previous_manifest_sha256: String,
}

impl Manifest {
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// Index keys: a user who sent or received, a conversation.
pub fn user_key(user: &str) -> String {
    format!("u:{user}")
}
pub fn conversation_key(conversation: &str) -> String {
    format!("c:{conversation}")
}

/// The open segment: entries encoded as they come, closed into a
/// [`ClosedSegment`] by size or age.
#[derive(Debug, Default)]
pub struct SegmentBuilder {
    raw: Vec<u8>,
    records: u64,
    first_sent_at_ms: u64,
    last_sent_at_ms: u64,
    positions: BTreeMap<u32, (u64, u64)>,
    keys: BTreeSet<String>,
    groups_listed: HashSet<String>,
}

/// The three objects of a closed segment, ready to write in this order.
#[derive(Debug, Clone)]
pub struct ClosedSegment {
    pub segment: Bytes,
    pub index: Bytes,
    pub manifest: Manifest,
    pub manifest_bytes: Bytes,
}

impl SegmentBuilder {
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes of entries so far, before compression.
    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// Whether the members of large group `group` are in this segment yet.
    pub fn lists_group(&self, group: &str) -> bool {
        self.groups_listed.contains(group)
    }

    fn push_entry(&mut self, kind: archive_entry::Kind) {
        let entry = ArchiveEntry { kind: Some(kind) };
        self.raw
            .extend_from_slice(&entry.encode_length_delimited_to_vec());
    }

    /// Records a large group's members (once per segment, before its messages).
    pub fn push_members(&mut self, group: &str, members: Vec<String>, now_ms: u64) {
        for m in &members {
            self.keys.insert(user_key(m));
        }
        self.groups_listed.insert(group.to_owned());
        self.push_entry(archive_entry::Kind::Members(GroupMembers {
            group: group.to_owned(),
            members,
            read_at_ms: now_ms,
        }));
    }

    pub fn push_message(&mut self, record: ArchiveRecord, now_ms: u64) {
        let m = record.message.clone().unwrap_or_default();
        self.keys.insert(user_key(&m.sender_user));
        self.keys.insert(conversation_key(&m.conversation));
        for r in &record.recipients {
            self.keys.insert(user_key(r));
        }
        if self.records == 0 {
            self.first_sent_at_ms = m.sent_at_ms;
            self.last_sent_at_ms = m.sent_at_ms;
        }
        self.first_sent_at_ms = self.first_sent_at_ms.min(m.sent_at_ms);
        self.last_sent_at_ms = self.last_sent_at_ms.max(m.sent_at_ms);
        let range = self
            .positions
            .entry(record.inbound_partition)
            .or_insert((record.inbound_offset, record.inbound_offset));
        range.0 = range.0.min(record.inbound_offset);
        range.1 = range.1.max(record.inbound_offset);
        self.records += 1;
        self.push_entry(archive_entry::Kind::Message(ArchivedMessage {
            record: Some(record),
            archived_at_ms: now_ms,
        }));
    }

    /// Compresses the segment and makes its index and manifest as segment
    /// `seq`, chained to the previous manifest.
    pub fn close(
        self,
        seq: u64,
        through: &BTreeMap<u32, u64>,
        previous_manifest_sha256: &str,
        now_ms: u64,
    ) -> Result<ClosedSegment, ArchiveError> {
        let segment = Bytes::from(
            zstd::bulk::compress(&self.raw, 3)
                .map_err(|e| ArchiveError::Format(format!("cannot compress segment: {e}")))?,
        );
        let keys: Vec<&str> = self.keys.iter().map(String::as_str).collect();
        let index = Bytes::from(
            zstd::bulk::compress(keys.join("\n").as_bytes(), 3)
                .map_err(|e| ArchiveError::Format(format!("cannot compress index: {e}")))?,
        );
        let manifest = Manifest {
            format: FORMAT,
            segment: seq,
            records: self.records,
            bytes: segment.len() as u64,
            raw_bytes: self.raw.len() as u64,
            first_sent_at_ms: self.first_sent_at_ms,
            last_sent_at_ms: self.last_sent_at_ms,
            closed_at_ms: now_ms,
            positions: self
                .positions
                .iter()
                .map(|(&partition, &(first, last))| PositionRange {
                    partition,
                    first,
                    last,
                })
                .collect(),
            through: through.clone(),
            segment_sha256: sha256_hex(&segment),
            index_sha256: sha256_hex(&index),
            previous_manifest_sha256: previous_manifest_sha256.to_owned(),
        };
        let manifest_bytes = Bytes::from(
            serde_json::to_vec_pretty(&manifest)
                .map_err(|e| ArchiveError::Format(format!("cannot encode manifest: {e}")))?,
        );
        Ok(ClosedSegment {
            segment,
            index,
            manifest,
            manifest_bytes,
        })
    }
}

/// Decompresses a segment into its entries.
pub fn decode_segment(bytes: &[u8]) -> Result<Vec<archive_entry::Kind>, String> {
    let raw = zstd::stream::decode_all(bytes).map_err(|e| format!("not a zstd frame: {e}"))?;
    let mut buf = raw.as_slice();
    let mut out = Vec::new();
    while !buf.is_empty() {
        let entry = ArchiveEntry::decode_length_delimited(&mut buf)
            .map_err(|e| format!("entry {} cannot be decoded: {e}", out.len()))?;
        match entry.kind {
            Some(k) => out.push(k),
            None => return Err(format!("entry {} is empty", out.len())),
        }
    }
    Ok(out)
}

/// The keys of a segment's index.
pub fn decode_index(bytes: &[u8]) -> Result<HashSet<String>, String> {
    let raw = zstd::stream::decode_all(bytes).map_err(|e| format!("not a zstd frame: {e}"))?;
    let text = String::from_utf8(raw).map_err(|e| format!("not UTF-8: {e}"))?;
    Ok(text
        .split('\n')
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_proto::records::StoredMessage;

    fn record(partition: u32, offset: u64, sent_at_ms: u64) -> ArchiveRecord {
        ArchiveRecord {
            message: Some(StoredMessage {
                message_id: vec![7; 16].into(),
                conversation: "d:alice:bob".into(),
                sender_user: "alice".into(),
                body: "hi".into(),
                sent_at_ms,
                ..Default::default()
            }),
            recipients: vec!["alice".into(), "bob".into()],
            inbound_partition: partition,
            inbound_offset: offset,
            ..Default::default()
        }
    }

    #[test]
    fn a_closed_segment_decodes_to_what_was_pushed_and_its_manifest_says_so() {
        let mut b = SegmentBuilder::default();
        b.push_members("big", vec!["carol".into(), "dan".into()], 5);
        b.push_message(record(1, 10, 300), 5);
        b.push_message(record(0, 4, 100), 5);
        b.push_message(record(1, 11, 200), 5);
        let through = BTreeMap::from([(0, 4), (1, 11)]);
        let closed = b.close(3, &through, GENESIS, 9).unwrap();
        let m = &closed.manifest;
        assert_eq!((m.segment, m.records), (3, 3));
        assert_eq!((m.first_sent_at_ms, m.last_sent_at_ms), (100, 300));
        assert_eq!(
            m.positions,
            vec![
                PositionRange {
                    partition: 0,
                    first: 4,
                    last: 4
                },
                PositionRange {
                    partition: 1,
                    first: 10,
                    last: 11
                }
            ]
        );
        assert_eq!(m.segment_sha256, sha256_hex(&closed.segment));
        assert_eq!(Manifest::parse(&closed.manifest_bytes).unwrap(), *m);
        let entries = decode_segment(&closed.segment).unwrap();
        assert_eq!(entries.len(), 4, "the member list and three messages");
        let keys = decode_index(&closed.index).unwrap();
        for k in ["u:alice", "u:bob", "u:carol", "u:dan", "c:d:alice:bob"] {
            assert!(keys.contains(k), "{k} is indexed");
        }
        assert_eq!(seq_of(&segment_name(3)), Some(3));
    }
}
