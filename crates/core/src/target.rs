//! What a backup target is: a place that can hold complete artifacts. A
//! target puts, lists, gets and deletes files; it never decides what to keep
//! (retention is decided once, in [`crate::retention`]).

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::durable;
use crate::manifest;
use crate::name::ArtifactName;
use crate::progress::Progress;
use crate::verify;

/// A complete backup on local disk: the archive and its checksum sidecar.
/// Handed to targets as paths, not a stream: rsync needs a file, retries
/// reopen it, and the checksum is computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub name: ArtifactName,
    pub archive: PathBuf,
    pub sidecar: PathBuf,
    pub sha256: String,
    pub size: u64,
}

/// A target's failure: one line that names the target, what went wrong and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The target is not usable now (not mounted, unreachable, refused).
    #[error("{target}: {reason}")]
    Unavailable { target: String, reason: String },
    /// An operation failed part-way.
    #[error("{target}: {action} failed: {detail}")]
    Failed {
        target: String,
        action: String,
        detail: String,
    },
    /// What arrived is not what was sent.
    #[error("{target}: {name} does not match its checksum ({detail})")]
    Integrity {
        target: String,
        name: String,
        detail: String,
    },
    /// An on-demand target that is not there now, as expected (a USB stick
    /// that is not plugged in): the nightly run skips it instead of
    /// failing, and says so. `reason` says how to bring it back.
    #[error("{target}: {reason}")]
    Absent { target: String, reason: String },
    /// The named backup is not there.
    #[error("{target}: no backup named {name}")]
    NotFound { target: String, name: String },
    /// The target refused to delete (an append-only key, a bucket policy
    /// without delete): not a failed copy, since keeping more than asked
    /// loses nothing. Retention is then the storage's own business; the
    /// run says so once and stops deleting. `reason` says what refused and
    /// which setting declares it.
    #[error("{target}: {reason}")]
    DeleteRefused { target: String, reason: String },
}

/// One machine's complete backups, where several machines share a target
/// (S3 keeps each under `mss/<server id>/`), oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// The server id (the folder it is kept under).
    pub id: String,
    pub backups: Vec<ArtifactName>,
    /// The size of the newest backup's archive, where the target can tell.
    pub newest_size: Option<u64>,
    /// Complete backups no longer listed but still held (see
    /// [`Target::hidden`]), oldest first.
    pub hidden: Vec<ArtifactName>,
}

/// What an intruder holding this machine's credentials could do to the
/// backups on a target, as `doctor` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    /// They cannot destroy the backups there (they may still hide them).
    pub safe: bool,
    /// One line: what was found and what it means.
    pub words: String,
}

/// A place backups are copied to. Implementations are small: the run,
/// retention and reporting live in core.
pub trait Target: Send + Sync {
    /// How the operator knows it, e.g. `local`, `usb:/media/stick`.
    fn name(&self) -> &str;
    /// Cheap check that the target can take a backup now (mounted? reachable?).
    fn preflight(&self) -> Result<(), TargetError>;
    /// Stores the artifact; the sidecar goes last and marks it complete. An
    /// interrupted put leaves nothing under the backup's name.
    fn put(&self, artifact: &Artifact) -> Result<(), TargetError>;
    /// [`Target::put`] that reports the archive bytes it has sent to
    /// `progress` (whose phase the caller started with the archive's size).
    /// A target that cannot tell how far a copy got keeps this default:
    /// its bar then fills at the end.
    fn put_with_progress(
        &self,
        artifact: &Artifact,
        progress: &dyn Progress,
    ) -> Result<(), TargetError> {
        let _ = progress;
        self.put(artifact)
    }
    /// Refuses at once an artifact this target can never hold (a file over
    /// FAT's 4 GiB limit), before anyone reads or sends a byte of it.
    /// `Ok` where there is no such limit or it cannot be known now; `put`
    /// checks again either way.
    fn check_fits(&self, artifact: &Artifact) -> Result<(), TargetError> {
        let _ = artifact;
        Ok(())
    }
    /// The complete backups present (names that parse and have a sidecar).
    fn list(&self) -> Result<Vec<ArtifactName>, TargetError>;
    /// Whether the target knows which machine's backups are its own. An S3
    /// target on a new VM does not: its place (`mss/<server id>/`) is named
    /// by a server id that was in the data that was lost.
    fn knows_machine(&self) -> bool {
        true
    }
    /// Every machine's backups, where several machines share the target;
    /// `None` where its layout holds one machine's.
    fn machines(&self) -> Option<Result<Vec<Machine>, TargetError>> {
        None
    }
    /// The same target at machine `id`'s place, where it has such places.
    fn for_machine(&self, id: &str) -> Option<Box<dyn Target>> {
        let _ = id;
        None
    }
    /// Brings a backup into `dest_dir`, returning the archive's path.
    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError>;
    /// Removes a backup and its sidecar.
    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError>;
    /// Where the storage itself expires old backups (a bucket's lifecycle
    /// rule, declared in the settings): the words for it, and retention
    /// deletes nothing there. `None`: retention deletes as its policy says.
    fn retention_elsewhere(&self) -> Option<String> {
        None
    }
    /// Complete backups the target no longer lists but still holds, and
    /// that [`Target::get`] can bring back: on a versioned bucket, the
    /// versions behind delete markers (what an intruder's deletes leave).
    /// Oldest first; empty where the target keeps no such thing.
    fn hidden(&self) -> Result<Vec<ArtifactName>, TargetError> {
        Ok(Vec::new())
    }
    /// What an intruder with this machine's credentials could do to the
    /// backups here, found by trying on a probe of the target's own (never
    /// on a backup); `None` where the target cannot tell.
    fn exposure(&self) -> Option<Result<Exposure, TargetError>> {
        None
    }
    /// How many bytes `artifact` lacks on a target with a space limit it
    /// can see (a mounted disk): `Some(0)` when it fits, `None` where
    /// there is no such limit or it cannot be known now.
    fn shortfall(&self, artifact: &Artifact) -> Option<u64> {
        let _ = artifact;
        None
    }
    /// The bytes a stored backup takes (archive and sidecar), where known.
    fn size_of(&self, name: &ArtifactName) -> Option<u64> {
        let _ = name;
        None
    }
}

/// Brings a backup into `dest_dir` the one way every target's
/// [`Target::get`] does. `download` writes the archive and its sidecar to
/// the two hidden paths it is handed: dot-prefixed, so
/// [`ArtifactName::parse`] never takes them for a backup (never listed,
/// counted by retention or preferred by a restore), and named
/// `.mss-backup-…`, which a backup's clean-up removes should a crash leave
/// them. The archive is then hashed as it lies on disk and compared with
/// the sidecar's line; only a match is named, the sidecar first and the
/// archive last, as everywhere. Otherwise both are removed: a damaged copy
/// is [`TargetError::Integrity`], naming `target` and the backup.
pub fn fetch_checked(
    target: &str,
    name: &ArtifactName,
    dest_dir: &Path,
    download: impl FnOnce(&Path, &Path) -> Result<(), TargetError>,
) -> Result<PathBuf, TargetError> {
    let file_name = name.file_name();
    let sidecar_name = name.sidecar_name();
    let archive_tmp = dest_dir.join(format!(".{file_name}.fetch"));
    let sidecar_tmp = dest_dir.join(format!(".{sidecar_name}.fetch"));
    let discard = || {
        let _ = fs::remove_file(&archive_tmp);
        let _ = fs::remove_file(&sidecar_tmp);
    };
    let failed = |action: &str, detail: std::io::Error| TargetError::Failed {
        target: target.to_string(),
        action: format!("{action} {file_name} in {}", dest_dir.display()),
        detail: detail.to_string(),
    };
    let integrity = |detail: String| TargetError::Integrity {
        target: target.to_string(),
        name: file_name.clone(),
        detail: format!("{detail}; the fetched copy was removed"),
    };
    // What an earlier fetch that crashed left under these names.
    discard();
    let result = (|| {
        download(&archive_tmp, &sidecar_tmp)?;
        let expected = verify::sidecar_line(&sidecar_tmp, &file_name).map_err(|e| match e {
            verify::VerifyError::Sidecar { reason, .. } => {
                integrity(format!("its sidecar {sidecar_name} is unusable: {reason}"))
            }
            e => integrity(e.to_string()),
        })?;
        let file = File::open(&archive_tmp).map_err(|e| failed("reading", e))?;
        let (hash, size) = manifest::sha256_of(&file).map_err(|e| failed("reading", e))?;
        if hash != expected {
            return Err(integrity(format!(
                "its sidecar says sha256 {expected}, the {size} bytes fetched have {hash}"
            )));
        }
        // Private whatever the download did: rsync carries the remote
        // file's mode over, masked only by the caller's umask.
        for path in [&archive_tmp, &sidecar_tmp] {
            fs::set_permissions(path, fs::Permissions::from_mode(durable::FILE_MODE))
                .map_err(|e| failed("protecting", e))?;
        }
        // Not every way of downloading syncs what it wrote (rsync does
        // not): a crash after the names must not leave empty files there.
        file.sync_all().map_err(|e| failed("syncing", e))?;
        File::open(&sidecar_tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| failed("syncing", e))?;
        let dest = dest_dir.join(&file_name);
        fs::rename(&sidecar_tmp, dest_dir.join(&sidecar_name))
            .and_then(|()| fs::rename(&archive_tmp, &dest))
            .and_then(|()| durable::fsync_dir(dest_dir))
            .map_err(|e| failed("naming", e))?;
        Ok(dest)
    })();
    if result.is_err() {
        discard();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name() -> ArtifactName {
        ArtifactName::parse("mss-backup-2026-01-02_030405.tar.gz").unwrap()
    }

    /// A download that writes `archive` and a sidecar for `sidecar_of`.
    fn writes<'a>(
        archive: &'a [u8],
        sidecar_of: &'a [u8],
    ) -> impl FnOnce(&Path, &Path) -> Result<(), TargetError> + 'a {
        move |a, s| {
            let (hash, _) = manifest::sha256_of(sidecar_of).unwrap();
            fs::write(a, archive).unwrap();
            fs::write(s, manifest::sha256sum_line(&hash, &name().file_name())).unwrap();
            Ok(())
        }
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_good_copy_gets_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let got = fetch_checked("usb:/x", &name(), dir.path(), writes(b"abc", b"abc")).unwrap();
        assert_eq!(got, dir.path().join(name().file_name()));
        assert_eq!(fs::read(&got).unwrap(), b"abc");
        // Written 0644 by the download (the test's umask): private once named.
        for file in [&got, &dir.path().join(name().sidecar_name())] {
            let mode = fs::metadata(file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", file.display());
        }
        assert_eq!(
            entries(dir.path()),
            vec![name().file_name(), name().sidecar_name()]
        );
    }

    #[test]
    fn a_damaged_copy_is_removed_and_named_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_checked("usb:/x", &name(), dir.path(), writes(b"abd", b"abc"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "usb:/x: {} does not match its checksum (its sidecar says sha256 ba7816bf",
                name().file_name()
            )) && err.contains("the 3 bytes fetched have")
                && !err.contains('\n'),
            "{err}"
        );
        assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
    }

    #[test]
    fn a_failed_or_sidecarless_download_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err = fetch_checked("rsync:h:/d", &name(), dir.path(), |a, _| {
            fs::write(a, b"half").unwrap();
            Err(TargetError::Failed {
                target: "rsync:h:/d".into(),
                action: "downloading".into(),
                detail: "connection closed".into(),
            })
        })
        .unwrap_err();
        assert!(matches!(err, TargetError::Failed { .. }), "{err}");
        assert!(entries(dir.path()).is_empty());
        let err = fetch_checked("rsync:h:/d", &name(), dir.path(), |a, _| {
            fs::write(a, b"abc").unwrap();
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("its sidecar") && err.contains("unusable"),
            "{err}"
        );
        assert!(entries(dir.path()).is_empty());
    }
}
