//! `mss-backup copy KIND [ARCHIVE]`: puts an existing backup on an
//! offsite target (the stick that was not plugged in last night, a NAS
//! that was down). A copy goes through the nightly run's own delivery (core's
//! `deliver_to`: preflight, room on a full stick, put, retention) under the
//! same lock, so the two never race on a target nor drift apart.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use mss_backup_core::backup::{self, Delivered, Destination, Elsewhere};
use mss_backup_core::{Artifact, ArtifactName, TargetError, seal, verify};

use crate::config::{ConfigError, Settings};
use crate::guard::{RunGuard, check_backup_dir_owner};
use crate::source::local_artifact;
use crate::{EXIT_FAILED, EXIT_LOCKED, targets};

/// `mss-backup copy TARGET [ARCHIVE]`.
pub fn run(settings: &Settings, which: &str, archive: Option<&str>) -> Result<ExitCode> {
    let kind =
        targets::kind(which).ok_or_else(|| ConfigError(format!("copy {which}: no such target")))?;
    let enabled = kind.enabled(settings, &format!("copy {which}"))?;
    check_backup_dir_owner(settings)?;
    let artifact = local_artifact(settings, archive)?;
    let Some(_guard) = RunGuard::take(settings)? else {
        return Ok(ExitCode::from(EXIT_LOCKED));
    };
    let dest = enabled.destination;
    let name = dest.target.name().to_string();
    tracing::info!(target = %name, archive = %artifact.name, "copy started");
    let clock = Instant::now();
    // What the target can never hold is refused before the archive is
    // read (hashing a 4 GiB backup only to learn the stick is FAT).
    if let Err(e) = dest.target.check_fits(&artifact) {
        tracing::error!(target = %name, "copy failed: {e}");
        eprintln!("Copy FAILED: {e}");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    // Checked under the lock, before anything is sent: a local archive
    // that rotted since it was written would count as a complete backup
    // there, and that target's retention could delete a good one for it.
    if let Err(e) = verify::check_sidecar(&artifact.archive) {
        tracing::error!(target = %name, "copy failed: {e}; nothing was sent");
        eprintln!("Copy FAILED: {e}; nothing was sent to {name}");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    // What leaves the machine is encrypted when the nightly run's copies
    // are: encrypted once here, under the lock, and the hidden file removed
    // after (a crash leaves it to the next backup's clean-up).
    let sealed = match crate::crypt::encryption(settings)? {
        Some(encryption) if !artifact.name.is_encrypted() => {
            let archive_dir = backup::archive_dir(&settings.backup_dir);
            let sealed = seal::Recipients::load(&encryption.recipients)
                .and_then(|r| seal::seal(&artifact, &r, &archive_dir, seal::Durability::Transient));
            match sealed {
                Ok(sealed) => Some(sealed),
                Err(_) if was_interrupted() => {
                    return Ok(interrupted(settings, &name));
                }
                Err(e) => {
                    tracing::error!(target = %name, "copy failed: encryption failed, so nothing was sent: {e}");
                    eprintln!("Copy FAILED: encryption failed, so nothing was sent: {e}");
                    return Ok(ExitCode::from(EXIT_FAILED));
                }
            }
        }
        _ => None,
    };
    let artifact = sealed.clone().unwrap_or(artifact);
    let copied = put_and_prune(&dest, &artifact, &settings.backup_dir);
    if let Some(sealed) = &sealed {
        seal::discard(sealed);
    }
    match copied {
        Ok(done) => {
            let (kept, deleted) = (done.kept.len(), &done.deleted);
            tracing::info!(target = %name, kept, deleted = deleted.len(), "copy finished");
            let retention = match &done.elsewhere {
                None => format!(
                    "{} deleted by retention{}",
                    deleted.len(),
                    if deleted.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " ({})",
                            deleted
                                .iter()
                                .map(ArtifactName::file_name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    }
                ),
                Some(Elsewhere::Declared(words)) => words.clone(),
                Some(Elsewhere::Refused(warning)) => {
                    tracing::warn!(target = %name, "{warning}");
                    eprintln!("  warning: {name}: {warning}");
                    format!(
                        "{} deleted by retention, then deletes refused (see the warning)",
                        deleted.len()
                    )
                }
            };
            println!(
                "Copied {} to {name} in {:.1} s; {kept} kept there, {retention}",
                artifact.name,
                clock.elapsed().as_secs_f64(),
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(_) if was_interrupted() => Ok(interrupted(settings, &name)),
        Err(e) => {
            tracing::error!(target = %name, "copy failed: {e}");
            eprintln!("Copy FAILED: {e}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn was_interrupted() -> bool {
    crate::interrupted::received().is_some()
}

/// Reports a copy a signal stopped: the target's own cleanup (hidden
/// partial, aborted upload, rsync's temp file) has run.
fn interrupted(settings: &Settings, target: &str) -> ExitCode {
    crate::interrupted::stopped(
        &settings.backup_dir,
        &format!(
            "the copy to {target} was stopped and its partial copy removed; the backups there are untouched"
        ),
    )
    .unwrap_or(ExitCode::from(EXIT_FAILED))
}

/// The nightly run's delivery (core's `deliver_to`: preflight, room on a
/// full stick, put, retention) with what the shrink guard holds back
/// according to the last run's status.
fn put_and_prune(
    dest: &Destination,
    artifact: &Artifact,
    backup_dir: &Path,
) -> Result<Delivered, TargetError> {
    let held: Vec<ArtifactName> = mss_backup_core::status::read(backup_dir)
        .ok()
        .flatten()
        .map(|s| s.shrink_guard.kept)
        .unwrap_or_default()
        .iter()
        .filter_map(|h| ArtifactName::parse(&h.archive))
        .collect();
    let progress = crate::progress::for_stderr();
    backup::deliver_to(
        dest.target.as_ref(),
        dest.retention,
        artifact,
        &held,
        Some(progress.as_ref()),
    )
}
