//! A directory of backups as an mss-backup target. `LocalTarget` is the
//! archive dir on the VM (`~/backups/mss/archive/`, with the
//! `mss-backup-latest.tar.gz` link); the USB target reuses the same
//! directory logic on a mounted stick, where there are no symlinks.
//!
//! The crate keeps the name the design card gives it (`target-local`),
//! though what it holds is the directory target: the archive dir is its
//! one user here, and the USB crate builds on it. It is not a plugin: the
//! local archive is always there, configured by `MSS_BACKUP_DIR`.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use mss_backup_core::durable;
use mss_backup_core::manifest;
use mss_backup_core::name::{LATEST, LATEST_AGE};
use mss_backup_core::target;
use mss_backup_core::{Artifact, ArtifactName, Target, TargetError};

/// A directory holding `NAME.tar.gz` + `NAME.tar.gz.sha256` pairs.
#[derive(Debug, Clone)]
pub struct DirTarget {
    label: String,
    dir: PathBuf,
    latest_link: bool,
}

impl DirTarget {
    /// `label` names the target in messages (`local`, `usb:/media/stick`);
    /// `latest_link` keeps `mss-backup-latest.tar.gz` pointing at the newest.
    pub fn new(label: impl Into<String>, dir: impl Into<PathBuf>, latest_link: bool) -> Self {
        Self {
            label: label.into(),
            dir: dir.into(),
            latest_link,
        }
    }

    /// The directory the backups are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes hidden `.mss-backup-*.partial` files that an interrupted copy
    /// left (a stick pulled out mid-copy, a crash), and sidecars whose
    /// archive is gone (a crash between the two deletes of [`Target::delete`]),
    /// returning their paths. Neither is ever listed; this only tidies up.
    pub fn remove_leftover_partials(&self) -> Result<Vec<PathBuf>, TargetError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| self.failed(format!("listing {}", self.dir.display()), e))?;
        let mut removed = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let partial = name.starts_with(".mss-backup-") && name.ends_with(".partial");
            let lone_sidecar = name
                .strip_suffix(mss_backup_core::name::SIDECAR_SUFFIX)
                .is_some_and(|archive| {
                    ArtifactName::parse(archive).is_some()
                        && fs::symlink_metadata(self.dir.join(archive)).is_err()
                });
            if !(partial || lone_sidecar) {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.failed(format!("removing {}", path.display()), e)),
            }
        }
        Ok(removed)
    }

    fn failed(&self, action: impl Into<String>, detail: impl std::fmt::Display) -> TargetError {
        TargetError::Failed {
            target: self.label.clone(),
            action: action.into(),
            detail: detail.to_string(),
        }
    }

    /// Copies `src` to `dst_dir/file_name` through a hidden partial file:
    /// written, fsynced, read back from the device and, when `expected` is
    /// given, compared with it; only then renamed to its name (and the dir
    /// fsynced). So a file under its name here was read back whole, and a
    /// crash at any point leaves only the hidden partial. Returns the sha256
    /// read back.
    fn copy_in(
        &self,
        src: &Path,
        dst_dir: &Path,
        file_name: &str,
        expected: Option<&str>,
    ) -> Result<String, TargetError> {
        let partial = dst_dir.join(format!(".{file_name}.partial"));
        let dest = dst_dir.join(file_name);
        let copying =
            |e: io::Error| self.failed(format!("copying {file_name} to {}", dst_dir.display()), e);
        let result = (|| {
            copy_synced(src, &partial).map_err(copying)?;
            let file = File::open(&partial)
                .map_err(|e| self.failed(format!("re-reading {}", partial.display()), e))?;
            drop_cached_pages(&file);
            let (hash, _) = manifest::sha256_of(file)
                .map_err(|e| self.failed(format!("re-reading {}", partial.display()), e))?;
            if let Some(expected) = expected
                && hash != expected
            {
                return Err(TargetError::Integrity {
                    target: self.label.clone(),
                    name: file_name.to_string(),
                    detail: format!("expected sha256 {expected}, read back {hash}"),
                });
            }
            fs::rename(&partial, &dest)
                .and_then(|()| durable::fsync_dir(dst_dir))
                .map_err(copying)?;
            Ok(hash)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&partial);
        }
        result
    }
}

/// Asks the kernel to forget the file's cached pages, so the re-read that
/// follows comes from the device (the USB stick) rather than from the memory
/// the copy was just written from. The pages are clean after the fsync, so
/// this loses nothing; it is only advice, and a failure just means the
/// re-read may come from the cache.
fn drop_cached_pages(file: &File) {
    // SAFETY: posix_fadvise only reads the descriptor number, which `file`
    // keeps open for the duration of the call.
    let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

fn copy_synced(src: &Path, partial: &Path) -> io::Result<()> {
    let _ = fs::remove_file(partial);
    let input = File::open(src)?;
    let mut output = durable::create_new_private(partial)?;
    mss_backup_core::interrupt::copy_file(&input, &mut output)?;
    output.sync_all()
}

impl Target for DirTarget {
    fn name(&self) -> &str {
        &self.label
    }

    fn preflight(&self) -> Result<(), TargetError> {
        durable::create_private_dir(&self.dir)
            .map_err(|e| self.failed(format!("creating {}", self.dir.display()), e))
    }

    fn put(&self, artifact: &Artifact) -> Result<(), TargetError> {
        let file_name = artifact.name.file_name();
        let already_here = artifact.archive.parent() == Some(self.dir.as_path());
        if !already_here {
            // The sidecar goes first and the archive's rename last (each
            // read back before it gets its name): an archive under its name
            // here always has its sidecar. A crash in between leaves a lone
            // sidecar, removed by `remove_leftover_partials`; the other
            // order could leave a lone archive that is never listed,
            // kept or deleted.
            let sidecar_name = artifact.name.sidecar_name();
            self.copy_in(&artifact.sidecar, &self.dir, &sidecar_name, None)?;
            if let Err(e) = self.copy_in(
                &artifact.archive,
                &self.dir,
                &file_name,
                Some(&artifact.sha256),
            ) {
                let _ = fs::remove_file(self.dir.join(&sidecar_name));
                return Err(e);
            }
        }
        if self.latest_link {
            let link = artifact.name.latest_link();
            durable::replace_symlink(&self.dir, link, &file_name)
                .map_err(|e| self.failed(format!("pointing {link} at {file_name}"), e))?;
            // The other kind's link would lead to an older backup (and,
            // once retention pruned it, nowhere).
            let other = if link == LATEST { LATEST_AGE } else { LATEST };
            let other = self.dir.join(other);
            if fs::symlink_metadata(&other).is_ok_and(|m| m.file_type().is_symlink()) {
                let _ = fs::remove_file(&other);
            }
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<ArtifactName>, TargetError> {
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| self.failed(format!("listing {}", self.dir.display()), e))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry =
                entry.map_err(|e| self.failed(format!("listing {}", self.dir.display()), e))?;
            let Some(name) = entry.file_name().to_str().and_then(ArtifactName::parse) else {
                continue;
            };
            if self.dir.join(name.sidecar_name()).is_file() {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn get(&self, name: &ArtifactName, dest_dir: &Path) -> Result<PathBuf, TargetError> {
        let src = self.dir.join(name.file_name());
        if !src.is_file() || !self.dir.join(name.sidecar_name()).is_file() {
            return Err(TargetError::NotFound {
                target: self.label.clone(),
                name: name.file_name(),
            });
        }
        if dest_dir == self.dir {
            return Ok(src);
        }
        // Checked against its sidecar before either gets a name: a copy
        // that rotted on the stick must not land under a backup's name.
        target::fetch_checked(&self.label, name, dest_dir, |archive, sidecar| {
            let copying = |file: String| {
                move |e| self.failed(format!("copying {file} to {}", dest_dir.display()), e)
            };
            copy_synced(&self.dir.join(name.sidecar_name()), sidecar)
                .map_err(copying(name.sidecar_name()))?;
            copy_synced(&src, archive).map_err(copying(name.file_name()))
        })
    }

    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError> {
        // Archive first: what a crash in between leaves is a lone sidecar,
        // never listed (only archives are) and removed by the next run. The
        // other order would leave a lone archive that nothing ever lists,
        // keeps or deletes again.
        // The member index of a local backup goes with it (see
        // `mss_backup_core::reuse`); elsewhere there is none.
        for file in [
            name.file_name(),
            name.sidecar_name(),
            mss_backup_core::reuse::index_name(name),
        ] {
            match fs::remove_file(self.dir.join(&file)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.failed(format!("deleting {file}"), e)),
            }
        }
        durable::fsync_dir(&self.dir)
            .map_err(|e| self.failed(format!("syncing {}", self.dir.display()), e))
    }
}

/// The VM's own archive dir, with the `latest` link.
pub fn local(archive_dir: impl Into<PathBuf>) -> DirTarget {
    DirTarget::new("local", archive_dir, true)
}
