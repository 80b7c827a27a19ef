//! Export: every message one user sent or received, or one conversation
//! held, in a time range, as JSON Lines an auditor can read. The index
//! (user and conversation keys per segment) and the manifests' time ranges
//! pick the segments, so an export reads only those.

use std::collections::{HashMap, HashSet};

use base64::Engine as _;
use tern_proto::archive::archive_entry::Kind;

use crate::segment::{
    conversation_key, decode_index, decode_segment, index_name, segment_name, sha256_hex, user_key,
};
use crate::{Archive, ArchiveError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportFilter {
    User(String),
    Conversation(String),
}

/// Lines are handed over in chunks of about this many bytes: a user in
/// every message of a segment does not make one huge chunk.
pub const EXPORT_CHUNK_BYTES: usize = 64 * 1024;

/// Whole JSON lines of an export, and how far it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportChunk {
    pub jsonl: Vec<u8>,
    pub progress: ExportProgress,
}

/// Where an export is: segments to read and read, messages so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportProgress {
    pub segments_done: u64,
    pub segments_total: u64,
    pub messages_written: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportSummary {
    /// Segments in the archive, and those read for this export.
    pub segments_total: u64,
    pub segments_read: u64,
    pub messages: u64,
}

/// One line of an export.
#[derive(Debug, serde::Serialize)]
struct Line<'a> {
    message_id: String,
    conversation: &'a str,
    seq: u64,
    sender_user: &'a str,
    sender_device: &'a str,
    client_msg_id: &'a str,
    content_type: &'a str,
    sent_at_ms: u64,
    /// The body as text when it is UTF-8; otherwise `body_base64`.
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body_base64: Option<String>,
    recipients: &'a [String],
    archived_at_ms: u64,
    segment: u64,
}

impl Archive {
    /// Hands each message matching `filter` with `from_ms <= sent_at_ms <
    /// to_ms` to `emit` as one JSON line, in archive order, in chunks of
    /// whole lines (about [`EXPORT_CHUNK_BYTES`], and one at the end of each
    /// segment, with the progress). `emit` may wait (a slow client): the
    /// export waits with it. An error from `emit` ends the export.
    ///
    /// Every segment read is checked against its manifest's hash first: an
    /// export never returns data the archive cannot vouch for.
    pub async fn export<F, Fut>(
        &self,
        filter: &ExportFilter,
        from_ms: u64,
        to_ms: u64,
        mut emit: F,
    ) -> Result<ExportSummary, ArchiveError>
    where
        F: FnMut(ExportChunk) -> Fut + Send,
        Fut: std::future::Future<Output = Result<(), ArchiveError>> + Send,
    {
        let key = match filter {
            ExportFilter::User(u) => user_key(u),
            ExportFilter::Conversation(c) => conversation_key(c),
        };
        let purged = self.purged().await?;
        let all = self.segments().await?;
        let mut summary = ExportSummary {
            segments_total: all.len() as u64,
            ..Default::default()
        };
        let mut chosen = Vec::new();
        for seq in all {
            if purged.contains(&seq) {
                continue;
            }
            let Some((manifest, _)) = self.manifest(seq).await? else {
                continue;
            };
            if manifest.records == 0
                || manifest.last_sent_at_ms < from_ms
                || manifest.first_sent_at_ms >= to_ms
            {
                continue;
            }
            let index = self
                .storage()
                .get(&index_name(seq))
                .await?
                .ok_or_else(|| ArchiveError::Format(format!("segment {seq} has no index")))?;
            let keys = decode_index(&index)
                .map_err(|e| ArchiveError::Format(format!("index of segment {seq}: {e}")))?;
            if keys.contains(&key) {
                chosen.push(manifest);
            }
        }
        let total = chosen.len() as u64;
        let mut progress = ExportProgress {
            segments_done: 0,
            segments_total: total,
            messages_written: 0,
        };
        emit(ExportChunk {
            jsonl: Vec::new(),
            progress,
        })
        .await?;
        let mut out = Vec::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for (done, manifest) in chosen.iter().enumerate() {
            let seq = manifest.segment;
            let data = self
                .storage()
                .get(&segment_name(seq))
                .await?
                .ok_or_else(|| ArchiveError::Format(format!("{} is missing", segment_name(seq))))?;
            if sha256_hex(&data) != manifest.segment_sha256 {
                return Err(ArchiveError::Format(format!(
                    "{} does not match its manifest's SHA-256: run `tern archive verify`",
                    segment_name(seq)
                )));
            }
            let entries = decode_segment(&data)
                .map_err(|e| ArchiveError::Format(format!("{}: {e}", segment_name(seq))))?;
            let mut groups: HashMap<String, Vec<String>> = HashMap::new();
            for entry in entries {
                let (record, archived_at_ms) = match entry {
                    Kind::Members(g) => {
                        groups.insert(g.group, g.members);
                        continue;
                    }
                    Kind::Message(m) => match m.record {
                        Some(r) => (r, m.archived_at_ms),
                        None => continue,
                    },
                };
                let Some(msg) = &record.message else { continue };
                if msg.sent_at_ms < from_ms || msg.sent_at_ms >= to_ms {
                    continue;
                }
                let recipients: &[String] = if record.large_group.is_empty() {
                    &record.recipients
                } else {
                    groups.get(&record.large_group).map_or(&[], Vec::as_slice)
                };
                let matches = match filter {
                    ExportFilter::User(u) => {
                        &msg.sender_user == u || recipients.iter().any(|r| r == u)
                    }
                    ExportFilter::Conversation(c) => &msg.conversation == c,
                };
                // Each message once, even from an archive written by an
                // older, less careful archiver.
                if !matches || !seen.insert(msg.message_id.to_vec()) {
                    continue;
                }
                let text = std::str::from_utf8(&msg.body).ok();
                let line = Line {
                    message_id: message_id_string(&msg.message_id),
                    conversation: &msg.conversation,
                    seq: msg.seq,
                    sender_user: &msg.sender_user,
                    sender_device: &msg.sender_device,
                    client_msg_id: &msg.client_msg_id,
                    content_type: &msg.content_type,
                    sent_at_ms: msg.sent_at_ms,
                    body: text,
                    body_base64: text
                        .is_none()
                        .then(|| base64::engine::general_purpose::STANDARD.encode(&msg.body)),
                    recipients,
                    archived_at_ms,
                    segment: seq,
                };
                serde_json::to_writer(&mut out, &line)
                    .map_err(|e| ArchiveError::Format(format!("cannot encode a line: {e}")))?;
                out.push(b'\n');
                summary.messages += 1;
                progress.messages_written = summary.messages;
                if out.len() >= EXPORT_CHUNK_BYTES {
                    let jsonl = std::mem::take(&mut out);
                    emit(ExportChunk { jsonl, progress }).await?;
                }
            }
            summary.segments_read += 1;
            progress.segments_done = done as u64 + 1;
            let jsonl = std::mem::take(&mut out);
            emit(ExportChunk { jsonl, progress }).await?;
        }
        Ok(summary)
    }
}

impl Archive {
    /// [`Archive::export`] into memory: every line, for small exports.
    pub async fn export_to_vec(
        &self,
        filter: &ExportFilter,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<(Vec<u8>, ExportSummary), ArchiveError> {
        let mut all = Vec::new();
        let summary = self
            .export(filter, from_ms, to_ms, |chunk| {
                all.extend_from_slice(&chunk.jsonl);
                std::future::ready(Ok(()))
            })
            .await?;
        Ok((all, summary))
    }
}

/// A message id as a UUID (the form clients and logs show).
fn message_id_string(id: &[u8]) -> String {
    match tern_core::ids::MessageId::from_slice(id) {
        Some(m) => m.to_string(),
        None => id.iter().map(|b| format!("{b:02x}")).collect(),
    }
}
