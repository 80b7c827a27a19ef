//! `tern archive verify`: checks every manifest, every hash and the chain,
//! and says exactly where the first problem is.

use std::collections::HashSet;

use crate::segment::{
    GENESIS, Manifest, decode_segment, index_name, manifest_name, segment_name, seq_of, sha256_hex,
};
use crate::{Archive, ArchiveError};

/// One thing wrong with the archive, in the segment where it shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub segment: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {}: {}", self.segment, self.what)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Manifests checked.
    pub segments: u64,
    /// Of those, segments purged by retention (manifest kept, data removed).
    pub purged: u64,
    /// Messages in the segments that are still there.
    pub records: u64,
    /// In chain order; empty when the archive is whole.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(&mut self, segment: u64, what: String) {
        tracing::debug!(segment, %what, "archive problem");
        self.problems.push(Problem { segment, what });
    }
}

impl Archive {
    /// Reads every manifest, segment and index and checks their hashes,
    /// record counts and the chain of manifests. Storage errors are errors;
    /// anything wrong with the archive's content is a [`Problem`].
    pub async fn verify(&self) -> Result<VerifyReport, ArchiveError> {
        let storage = self.storage();
        let purged: HashSet<u64> = storage
            .list("purged/")
            .await?
            .iter()
            .filter_map(|n| seq_of(n))
            .collect();
        let mut report = VerifyReport::default();
        // The hash the next manifest must name, and the number it must have.
        let mut expected_previous = GENESIS.to_owned();
        let mut expected_seq = 0u64;
        for seq in self.segments().await? {
            report.segments += 1;
            if seq != expected_seq {
                let missing = if seq == expected_seq + 1 {
                    format!("the manifest of segment {expected_seq} is missing")
                } else {
                    format!(
                        "the manifests of segments {expected_seq} to {} are missing",
                        seq - 1
                    )
                };
                let what = match expected_seq {
                    0 => format!("{missing}: the chain starts at segment {seq}"),
                    n => format!("{missing}: the chain jumps from segment {} to {seq}", n - 1),
                };
                report.problem(expected_seq, what);
            }
            expected_seq = seq + 1;
            let Some(bytes) = storage.get(&manifest_name(seq)).await? else {
                report.problem(seq, "manifest vanished while verifying".into());
                continue;
            };
            let this_hash = sha256_hex(&bytes);
            let previous = std::mem::replace(&mut expected_previous, this_hash);
            let manifest = match Manifest::parse(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    report.problem(
                        seq,
                        format!("{} is not a valid manifest: {e}", manifest_name(seq)),
                    );
                    continue;
                }
            };
            if manifest.segment != seq {
                report.problem(
                    seq,
                    format!(
                        "{} names segment {} (a manifest was renamed or copied)",
                        manifest_name(seq),
                        manifest.segment
                    ),
                );
            }
            if manifest.previous_manifest_sha256 != previous {
                report.problem(
                    seq,
                    format!(
                        "the chain is broken: this manifest says the previous one hashes to {}, but it hashes to {previous}",
                        manifest.previous_manifest_sha256
                    ),
                );
            }
            if purged.contains(&seq) {
                report.purged += 1;
                continue;
            }
            self.check_data(seq, &manifest, &mut report).await?;
        }
        Ok(report)
    }

    async fn check_data(
        &self,
        seq: u64,
        manifest: &Manifest,
        report: &mut VerifyReport,
    ) -> Result<(), ArchiveError> {
        match self.checked_messages(seq, manifest).await? {
            Ok(messages) => report.records += messages,
            Err(what) => report.problem(seq, what),
        }
        let index = index_name(seq);
        match self.storage().get(&index).await? {
            None => report.problem(seq, format!("{index} is missing and was not purged")),
            Some(bytes) if sha256_hex(&bytes) != manifest.index_sha256 => report.problem(
                seq,
                format!("{index} was changed: its SHA-256 does not match the manifest"),
            ),
            Some(_) => {}
        }
        Ok(())
    }

    /// The number of messages segment `seq` holds, or what is wrong with it.
    async fn checked_messages(
        &self,
        seq: u64,
        manifest: &Manifest,
    ) -> Result<Result<u64, String>, ArchiveError> {
        let name = segment_name(seq);
        let Some(data) = self.storage().get(&name).await? else {
            return Ok(Err(format!("{name} is missing and was not purged")));
        };
        let hash = sha256_hex(&data);
        if hash != manifest.segment_sha256 {
            return Ok(Err(format!(
                "{name} was changed: its SHA-256 is {hash}, its manifest says {}",
                manifest.segment_sha256
            )));
        }
        let entries = match decode_segment(&data) {
            Ok(entries) => entries,
            Err(e) => return Ok(Err(format!("{name} cannot be read: {e}"))),
        };
        let messages = entries
            .iter()
            .filter(|e| matches!(e, tern_proto::archive::archive_entry::Kind::Message(_)))
            .count() as u64;
        if messages != manifest.records {
            return Ok(Err(format!(
                "{name} holds {messages} messages, its manifest says {}",
                manifest.records
            )));
        }
        Ok(Ok(messages))
    }
}
