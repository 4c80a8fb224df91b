//! A directory of backups as an mss-backup target. `LocalTarget` is the
//! archive dir on the VM (`~/backups/mss/archive/`, with the
//! `mss-backup-latest.tar.gz` link); the USB target reuses the same
//! directory logic on a mounted stick, where there are no symlinks.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use mss_backup_core::durable;
use mss_backup_core::manifest;
use mss_backup_core::name::LATEST;
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

    fn failed(&self, action: impl Into<String>, detail: impl std::fmt::Display) -> TargetError {
        TargetError::Failed {
            target: self.label.clone(),
            action: action.into(),
            detail: detail.to_string(),
        }
    }

    /// Copies `src` to `dst_dir/file_name` through a hidden partial file,
    /// fsynced and renamed; returns the sha256 of what was read back from
    /// the copy.
    fn copy_in(&self, src: &Path, dst_dir: &Path, file_name: &str) -> Result<String, TargetError> {
        let partial = dst_dir.join(format!(".{file_name}.partial"));
        let dest = dst_dir.join(file_name);
        let result = copy_durably(src, &partial, &dest);
        if result.is_err() {
            let _ = fs::remove_file(&partial);
        }
        result
            .map_err(|e| self.failed(format!("copying {file_name} to {}", dst_dir.display()), e))?;
        let file = File::open(&dest)
            .map_err(|e| self.failed(format!("re-reading {}", dest.display()), e))?;
        manifest::sha256_of(file)
            .map(|(hash, _)| hash)
            .map_err(|e| self.failed(format!("re-reading {}", dest.display()), e))
    }
}

fn copy_durably(src: &Path, partial: &Path, dest: &Path) -> io::Result<()> {
    let _ = fs::remove_file(partial);
    let mut input = File::open(src)?;
    let mut output = durable::create_new_private(partial)?;
    io::copy(&mut input, &mut output)?;
    output.sync_all()?;
    fs::rename(partial, dest)?;
    durable::fsync_dir(durable::parent_dir(dest))
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
            let hash = self.copy_in(&artifact.archive, &self.dir, &file_name)?;
            if hash != artifact.sha256 {
                let _ = fs::remove_file(self.dir.join(&file_name));
                return Err(TargetError::Integrity {
                    target: self.label.clone(),
                    name: file_name,
                    detail: format!("expected sha256 {}, read back {hash}", artifact.sha256),
                });
            }
            // The sidecar goes last: its presence marks a complete backup.
            self.copy_in(&artifact.sidecar, &self.dir, &artifact.name.sidecar_name())?;
        }
        if self.latest_link {
            durable::replace_symlink(&self.dir, LATEST, &file_name)
                .map_err(|e| self.failed(format!("pointing {LATEST} at {file_name}"), e))?;
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
        self.copy_in(
            &self.dir.join(name.sidecar_name()),
            dest_dir,
            &name.sidecar_name(),
        )?;
        self.copy_in(&src, dest_dir, &name.file_name())?;
        Ok(dest_dir.join(name.file_name()))
    }

    fn delete(&self, name: &ArtifactName) -> Result<(), TargetError> {
        // Sidecar first: an archive without one is incomplete, never listed.
        for file in [name.sidecar_name(), name.file_name()] {
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
