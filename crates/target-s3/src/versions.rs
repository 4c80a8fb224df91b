//! What a versioned or Object-Locked bucket still holds after someone
//! deleted the backups with the VM's own key. A plain S3 delete on such a
//! bucket only adds a delete marker: the object leaves every listing, its
//! versions stay. So an intruder on the VM can hide the offsite copies but
//! not destroy them, and a new VM must be able to find them again: these
//! are the complete backups behind delete markers ("hidden"), listed from
//! `ListObjectVersions`, and fetched by version id. A version is used only
//! with a sidecar version of the same backup, and the download is checked
//! against that sidecar like any other, so a mismatched pair is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mss_backup_core::ArtifactName;
use opendal::ErrorKind;

use crate::{Failure, S3Target, SHA256_METADATA, complete_backups};

/// The stored versions of one key, newest first as S3 lists them.
#[derive(Debug, Default)]
pub(crate) struct Versions {
    /// Ids of the versions that hold data (not delete markers), newest first.
    data: Vec<String>,
    /// The newest version holds data: the key lists.
    current: bool,
}

/// Every version of every object directly under a prefix, by object name.
pub(crate) type VersionMap = BTreeMap<String, Versions>;

/// Complete backups that do not list but whose archive and sidecar each
/// have a version holding data, oldest first.
pub(crate) fn hidden_backups(versions: &VersionMap) -> Vec<ArtifactName> {
    let current: BTreeSet<String> = versions
        .iter()
        .filter(|(_, v)| v.current)
        .map(|(name, _)| name.clone())
        .collect();
    let listed = complete_backups(&current);
    let held = |key: &str| versions.get(key).is_some_and(|v| !v.data.is_empty());
    let mut hidden: Vec<ArtifactName> = versions
        .keys()
        .filter_map(|n| ArtifactName::parse(n))
        .filter(|n| held(&n.file_name()) && held(&n.sidecar_name()))
        .filter(|n| !listed.contains(n))
        .collect();
    hidden.sort_unstable();
    hidden
}

/// Whether the server lacks `ListObjectVersions` (Garage, some gateways):
/// such a bucket has no hidden versions to offer.
pub(crate) fn unsupported(e: &opendal::Error) -> bool {
    e.kind() == ErrorKind::Unsupported || e.message().contains("NotImplemented")
}

/// The sha256 on a sidecar's line (`HASH  NAME`).
fn sidecar_hash(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let hash = text.split_whitespace().next()?;
    (hash.len() == 64 && hash.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hash.to_ascii_lowercase())
}

impl S3Target {
    /// Every version (and delete marker) directly under `prefix`.
    pub(crate) async fn versions_under(&self, prefix: &str) -> Result<VersionMap, Failure> {
        let dir = if prefix.is_empty() { "/" } else { prefix };
        let entries = self
            .operator
            .list_with(dir)
            .versions(true)
            .deleted(true)
            .await?;
        let mut map = VersionMap::new();
        for entry in entries
            .iter()
            .filter(|e| e.metadata().mode().is_file() && !e.path().ends_with('/'))
        {
            let meta = entry.metadata();
            let versions = map.entry(entry.name().to_string()).or_default();
            if meta.is_current() == Some(true) && !meta.is_deleted() {
                versions.current = true;
            }
            if !meta.is_deleted()
                && let Some(id) = meta.version()
            {
                versions.data.push(id.to_string());
            }
        }
        Ok(map)
    }

    /// The machine folders under `root`, including those whose every
    /// object is hidden behind a delete marker (which a plain listing no
    /// longer shows).
    pub(crate) async fn folders_under(&self, root: &str) -> Result<Vec<String>, Failure> {
        let listed = match self
            .operator
            .list_with(root)
            .versions(true)
            .deleted(true)
            .await
        {
            Err(e) if unsupported(&e) => self.operator.list(root).await?,
            other => other?,
        };
        Ok(listed
            .iter()
            .filter(|e| e.metadata().mode().is_dir())
            .map(|e| e.path().to_string())
            .collect())
    }

    /// The hidden backups under `prefix`; none where the server keeps no
    /// versions it can list.
    pub(crate) async fn hidden_under(&self, prefix: &str) -> Result<Vec<ArtifactName>, Failure> {
        match self.versions_under(prefix).await {
            Ok(versions) => Ok(hidden_backups(&versions)),
            Err(Failure::Remote(e)) if unsupported(&e) => Ok(Vec::new()),
            Err(f) => Err(f),
        }
    }

    /// Downloads a stored version of `name`'s sidecar and of its archive
    /// to the hidden paths [`mss_backup_core::target::fetch_checked`] hands
    /// over, which then checks one against the other. The pair is the
    /// newest sidecar version whose hash is an archive version's
    /// `x-amz-meta-sha256` (so a sidecar or archive overwritten since, by
    /// an intruder, say, is passed over); without such a pair, the newest
    /// of each, which the check then refuses if they differ.
    pub(crate) async fn fetch_version_async(
        &self,
        name: &ArtifactName,
        prefix: &str,
        archive: &Path,
        sidecar: &Path,
    ) -> Result<(), Failure> {
        let versions = self.versions_under(prefix).await?;
        let ids = |key: &str| {
            versions
                .get(key)
                .map(|v| v.data.clone())
                .unwrap_or_default()
        };
        let archive_key = format!("{prefix}{}", name.file_name());
        let sidecar_key = format!("{prefix}{}", name.sidecar_name());
        let (archive_ids, sidecar_ids) = (ids(&name.file_name()), ids(&name.sidecar_name()));
        if archive_ids.is_empty() || sidecar_ids.is_empty() {
            return Err(Failure::Remote(opendal::Error::new(
                ErrorKind::NotFound,
                "no stored version of the archive and its sidecar",
            )));
        }
        let mut archive_hashes = Vec::new();
        for id in &archive_ids {
            let meta = self.operator.stat_with(&archive_key).version(id).await?;
            let hash = meta
                .user_metadata()
                .and_then(|m| m.get(SHA256_METADATA))
                .map(|h| h.to_ascii_lowercase());
            archive_hashes.push((id.clone(), hash));
        }
        let mut newest = None;
        let mut matched = None;
        for sidecar_id in &sidecar_ids {
            let bytes = self
                .operator
                .read_with(&sidecar_key)
                .version(sidecar_id)
                .await?
                .to_vec();
            let hash = sidecar_hash(&bytes);
            let archive_id = archive_hashes
                .iter()
                .find(|(_, h)| hash.is_some() && *h == hash)
                .map(|(id, _)| id.clone());
            if let Some(archive_id) = archive_id {
                matched = Some((archive_id, sidecar_id.clone(), bytes));
                break;
            }
            newest.get_or_insert((archive_ids[0].clone(), sidecar_id.clone(), bytes));
        }
        let Some((archive_id, sidecar_id, bytes)) = matched.or(newest) else {
            return Err(Failure::Integrity(
                "no stored version of its sidecar could be read".into(),
            ));
        };
        tracing::info!(target = %self.label, backup = %name, archive_version = %archive_id, sidecar_version = %sidecar_id, "fetching a hidden backup from its stored versions");
        crate::transfer::write_private(sidecar, &bytes)?;
        self.download(&archive_key, Some(&archive_id), archive)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(entries: &[(&str, bool, &[&str])]) -> VersionMap {
        entries
            .iter()
            .map(|(name, current, ids)| {
                (
                    name.to_string(),
                    Versions {
                        data: ids.iter().map(|s| s.to_string()).collect(),
                        current: *current,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn hidden_backups_need_both_halves_and_no_listing() {
        let a = "mss-backup-2026-01-01_031500.tar.gz";
        let b = "mss-backup-2026-01-02_031500.tar.gz";
        let c = "mss-backup-2026-01-03_031500.tar.gz";
        let d = "mss-backup-2026-01-04_031500.tar.gz";
        let map = versions(&[
            // Listed and complete: not hidden.
            (a, true, &["a1"]),
            (&format!("{a}.sha256"), true, &["a2"]),
            // Behind delete markers, both halves kept: hidden.
            (b, false, &["b1"]),
            (&format!("{b}.sha256"), false, &["b2"]),
            // The sidecar deleted for good (only a marker): never offered.
            (c, false, &["c1"]),
            (&format!("{c}.sha256"), false, &[]),
            // Archive listed, sidecar hidden: hidden.
            (d, true, &["d1"]),
            (&format!("{d}.sha256"), false, &["d2"]),
            ("notes.txt", false, &["n1"]),
        ]);
        let names: Vec<String> = hidden_backups(&map)
            .iter()
            .map(ArtifactName::file_name)
            .collect();
        assert_eq!(names, vec![b.to_string(), d.to_string()]);
    }

    #[test]
    fn sidecar_hash_takes_the_line_or_nothing() {
        let hash = "ab".repeat(32);
        assert_eq!(
            sidecar_hash(format!("{hash}  x.tar.gz\n").as_bytes()),
            Some(hash)
        );
        assert_eq!(sidecar_hash(b"garbage"), None);
    }
}
