//! The backup a command reads, named the way the operator names it:
//! `latest`, a backup's name in the archive dir, a path, or `KIND:NAME` for
//! a copy on an offsite target (`s3:latest`, `usb:mss-backup-….tar.gz`).
//! Resolved here once, so `verify`, `copy` and `restore` accept the same
//! words and say the same things about them.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use mss_backup_core::backup;
use mss_backup_core::name::{LATEST, LATEST_AGE};
use mss_backup_core::{Artifact, ArtifactName, Target, verify};

use crate::config::{ConfigError, Settings};
use crate::targets::{self, Kind};

/// Where a backup is to be read from.
pub enum Source<'a> {
    /// `latest`, a name in the archive dir, or a path.
    Local(PathBuf),
    /// `KIND:NAME` on an offsite target; NAME may be `latest`.
    Offsite { kind: &'static Kind, name: &'a str },
}

impl<'a> Source<'a> {
    /// `latest`, NAME, PATH or KIND:NAME. A prefix that is not a kind is
    /// part of a name or path.
    pub fn parse(settings: &Settings, text: &'a str) -> Result<Self, ConfigError> {
        if let Some((kind_name, name)) = text.split_once(':')
            && let Some(kind) = targets::kind(kind_name)
        {
            let name = backup_named(text, kind, name)?;
            return Ok(Self::Offsite { kind, name });
        }
        let local = if text == "latest" { None } else { Some(text) };
        Ok(Self::Local(local_archive(settings, local)))
    }

    /// KIND:NAME only: what `verify --from` takes.
    pub fn offsite(text: &'a str) -> Result<(&'static Kind, &'a str), ConfigError> {
        let (kind_name, name) = text.split_once(':').unwrap_or((text, ""));
        let kind = targets::kind(kind_name).ok_or_else(|| {
            let kinds: Vec<String> = targets::kind_names().map(|k| format!("{k}:NAME")).collect();
            ConfigError(format!(
                "--from {text}: no such target (use {}, NAME being latest or a backup's name)",
                kinds.join(", ")
            ))
        })?;
        Ok((kind, backup_named(text, kind, name)?))
    }
}

/// The NAME of KIND:NAME, which must be there.
fn backup_named<'a>(text: &str, kind: &Kind, name: &'a str) -> Result<&'a str, ConfigError> {
    if name.is_empty() {
        let k = kind.name;
        return Err(ConfigError(format!(
            "--from {text} names no backup (use {k}:latest or {k}:mss-backup-YYYY-MM-DD_HHMMSS.tar.gz)"
        )));
    }
    Ok(name)
}

/// The path of a local backup: the `latest` link for `None`, a path as
/// given, or a name in the archive dir.
pub fn local_archive(settings: &Settings, archive: Option<&str>) -> PathBuf {
    let archive_dir = backup::archive_dir(&settings.backup_dir);
    match archive {
        None => latest_link(&archive_dir),
        Some(a) if a.contains('/') => PathBuf::from(a),
        Some(name) => archive_dir.join(name),
    }
}

/// The `latest` link in `archive_dir`: `mss-backup-latest.tar.gz`, or its
/// `.age` twin when the local backups are encrypted.
pub fn latest_link(archive_dir: &Path) -> PathBuf {
    let plain = archive_dir.join(LATEST);
    let sealed = archive_dir.join(LATEST_AGE);
    if fs::symlink_metadata(&plain).is_err() && fs::symlink_metadata(&sealed).is_ok() {
        sealed
    } else {
        plain
    }
}

/// A backup already on disk, with its sidecar's checksum: the latest, a
/// name in the archive dir, or a path.
pub fn local_artifact(settings: &Settings, archive: Option<&str>) -> Result<Artifact> {
    let given = local_archive(settings, archive);
    let path = fs::canonicalize(&given).map_err(|_| {
        anyhow::anyhow!(
            "Archive {} not found (run `mss-backup list` to see the backups)",
            given.display()
        )
    })?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(ArtifactName::parse);
    let Some(name) = name else {
        bail!(
            "{} is not a backup archive (their names look like mss-backup-YYYY-MM-DD_HHMMSS.tar.gz; run `mss-backup list`)",
            path.display()
        );
    };
    let sha256 = verify::read_sidecar(&path)?;
    let size = fs::metadata(&path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    Ok(Artifact {
        name,
        sidecar: verify::sidecar_path(&path),
        archive: path,
        sha256,
        size,
    })
}

/// The offsite target of `kind` as this command sees it: switched on (or a
/// configuration error naming the setting), narrowed to this machine's
/// backups where the target holds several machines'.
pub fn offsite_target(
    settings: &Settings,
    kind: &Kind,
    name: &str,
    command: &str,
) -> Result<Box<dyn Target>> {
    let enabled = kind.enabled(settings, command)?;
    crate::fleet::only_machine(enabled.destination.target, &format!("{}:{name}", kind.name))
}

/// The backup called `name` (or `latest`) among `target`'s complete ones.
pub fn find_on(target: &dyn Target, name: &str) -> Result<Option<ArtifactName>> {
    target.preflight()?;
    let names = target.list()?;
    Ok(mss_backup_core::name::find(&names, name))
}

/// [`find_on`], counting the backups behind delete markers too (an
/// intruder's deletes on a versioned bucket): `latest` is the newest
/// complete one either way. `true` when the one found is hidden.
pub fn find_with_hidden(target: &dyn Target, name: &str) -> Result<Option<(ArtifactName, bool)>> {
    let listed = find_on(target, name)?;
    let hidden = target.hidden().unwrap_or_else(|e| {
        tracing::warn!("cannot look for hidden backups: {e}");
        Vec::new()
    });
    Ok(match (listed, mss_backup_core::name::find(&hidden, name)) {
        (Some(listed), Some(hidden)) if hidden <= listed => Some((listed, false)),
        (_, Some(hidden)) => Some((hidden, true)),
        (listed, None) => listed.map(|l| (l, false)),
    })
}
