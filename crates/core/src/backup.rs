//! One backup run, start to finish: take the lock, snapshot the database,
//! stream `cloud-data/` into a hidden partial file, check it, rename it
//! into place, hand it to every target, apply retention, and record what
//! happened. A crash at any point leaves no file under a backup's name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{Local, SecondsFormat};

use crate::archive::{self, ArchiveError, ArchiveWriter, DB_PATH, Section};
use crate::durable;
use crate::gz::GzOptions;
use crate::inventory::{self, InventoryInput};
use crate::lock::{self, LockError};
use crate::manifest;
use crate::name::ArtifactName;
use crate::retention::{self, RetentionPolicy};
use crate::snapshot;
use crate::status::{self, Outcome, RetentionStatus, RunStatus, TargetStatus};
use crate::target::{Artifact, Target};
use crate::verify;

/// What to back up, where, and how many to keep.
#[derive(Debug, Clone)]
pub struct Plan {
    pub project_dir: PathBuf,
    pub data_dir: PathBuf,
    pub backup_dir: PathBuf,
    pub retention: RetentionPolicy,
    /// How long to keep retrying while the database is locked.
    pub db_busy_timeout: Duration,
    pub gz: GzOptions,
}

impl Plan {
    /// `<backup dir>/archive`, where the local backups live.
    pub fn archive_dir(&self) -> PathBuf {
        archive_dir(&self.backup_dir)
    }
}

/// `<backup dir>/archive`.
pub fn archive_dir(backup_dir: &Path) -> PathBuf {
    backup_dir.join("archive")
}

/// A target to copy each backup to, with its own retention.
pub struct Destination {
    pub target: Box<dyn Target>,
    pub retention: RetentionPolicy,
}

/// Why a backup failed: one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Worded as the operator documentation says.
    #[error("Cloud data directory not found: {0}")]
    DataDirMissing(PathBuf),
    #[error(
        "Database not found: {0} (MSS keeps it at cloud-data/{DB_PATH}; check MSS_BACKUP_DATA_DIR)"
    )]
    DatabaseMissing(PathBuf),
    #[error(
        "Not enough free space in {dir}: the backup needs up to {needed} MiB, {available} MiB available (free some space or lower MSS_BACKUP_RETENTION)"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error(
        "The disk holding {0} filled up during the backup; the partial archive was removed (free some space or lower MSS_BACKUP_RETENTION)"
    )]
    DiskFull(PathBuf),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(transparent)]
    Verify(#[from] verify::VerifyError),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BackupError {
    let path = path.to_path_buf();
    move |source| BackupError::Io {
        action,
        path,
        source,
    }
}

/// Runs one backup under the lock. `Err` only when another run holds the
/// lock (nothing was touched); every other outcome is in the returned
/// status, which has also been written to `last_backup.json`.
pub fn run(
    plan: &Plan,
    local: &dyn Target,
    offsite: &[Destination],
) -> Result<RunStatus, LockError> {
    durable::create_private_dir(&plan.backup_dir).map_err(|source| LockError::Io {
        path: plan.backup_dir.clone(),
        source,
    })?;
    let _lock = lock::acquire(&plan.backup_dir)?;
    let clock = Instant::now();
    let started_at = now_rfc3339();
    tracing::info!(data_dir = %plan.data_dir.display(), "backup started");
    let mut report = RunStatus {
        status: Outcome::Failure,
        started_at,
        finished_at: String::new(),
        duration_seconds: 0.0,
        archive: None,
        size_bytes: None,
        sha256: None,
        files: 0,
        warnings: Vec::new(),
        error: None,
        targets: Vec::new(),
        retention: RetentionStatus::default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        host: status::host_name(),
    };
    match make_artifact(plan, &mut report.warnings) {
        Ok((artifact, files)) => {
            report.archive = Some(artifact.name.file_name());
            report.size_bytes = Some(artifact.size);
            report.sha256 = Some(artifact.sha256.clone());
            report.files = files;
            deliver(plan, local, offsite, &artifact, &mut report);
        }
        Err(e) => {
            tracing::error!("backup failed: {e}");
            report.error = Some(e.to_string());
        }
    }
    report.finished_at = now_rfc3339();
    report.duration_seconds = round_ms(clock.elapsed());
    if let Err(e) = status::write(&plan.backup_dir, &report) {
        tracing::error!("cannot write {}: {e}", status::STATUS_FILE);
        report.status = Outcome::Failure;
        report
            .error
            .get_or_insert(format!("cannot write {}: {e}", status::STATUS_FILE));
    }
    tracing::info!(status = ?report.status, seconds = report.duration_seconds, "backup finished");
    Ok(report)
}

/// Local first, then every offsite target; then retention. The run is a
/// success only if every target took the backup.
fn deliver(
    plan: &Plan,
    local: &dyn Target,
    offsite: &[Destination],
    artifact: &Artifact,
    report: &mut RunStatus,
) {
    let local_ok = put_and_prune(local, plan.retention, artifact, report, true);
    let mut all_ok = local_ok;
    for dest in offsite {
        all_ok &= put_and_prune(
            dest.target.as_ref(),
            dest.retention,
            artifact,
            report,
            false,
        );
    }
    if all_ok {
        report.status = Outcome::Success;
    } else if report.error.is_none() {
        let failed: Vec<&str> = report
            .targets
            .iter()
            .filter(|t| t.status == Outcome::Failure)
            .map(|t| t.name.as_str())
            .collect();
        report.error = Some(format!(
            "the backup {} was made, but copying it failed for: {}",
            artifact.name,
            failed.join(", ")
        ));
    }
}

fn put_and_prune(
    target: &dyn Target,
    policy: RetentionPolicy,
    artifact: &Artifact,
    report: &mut RunStatus,
    is_local: bool,
) -> bool {
    let clock = Instant::now();
    let outcome = (|| {
        target.preflight()?;
        target.put(artifact)?;
        let names = target.list()?;
        let doomed = retention::to_delete(&names, policy, Some(&artifact.name));
        let mut deleted = Vec::new();
        for name in &doomed {
            target.delete(name)?;
            deleted.push(name.file_name());
        }
        let kept = names
            .iter()
            .filter(|n| !doomed.contains(n))
            .map(ArtifactName::file_name)
            .collect::<Vec<_>>();
        Ok::<_, crate::target::TargetError>((kept, deleted))
    })();
    let (status, detail, ok) = match outcome {
        Ok((mut kept, deleted)) => {
            kept.sort_unstable_by(|a, b| b.cmp(a));
            let detail = format!(
                "stored {}; {} kept, {} deleted by retention",
                artifact.name,
                kept.len(),
                deleted.len()
            );
            if is_local {
                report.retention = RetentionStatus { kept, deleted };
            }
            tracing::info!(target = target.name(), "{detail}");
            (Outcome::Success, detail, true)
        }
        Err(e) => {
            tracing::error!(target = target.name(), "{e}");
            (Outcome::Failure, e.to_string(), false)
        }
    };
    report.targets.push(TargetStatus {
        name: target.name().to_string(),
        status,
        detail,
        duration_seconds: round_ms(clock.elapsed()),
    });
    ok
}

/// Builds, checks and publishes the archive in the local archive dir.
/// Returns the artifact and how many files it holds.
fn make_artifact(plan: &Plan, warnings: &mut Vec<String>) -> Result<(Artifact, u64), BackupError> {
    if !plan.data_dir.is_dir() {
        return Err(BackupError::DataDirMissing(plan.data_dir.clone()));
    }
    let live_db = plan.data_dir.join(DB_PATH);
    let live_db_meta =
        fs::metadata(&live_db).map_err(|_| BackupError::DatabaseMissing(live_db.clone()))?;
    let archive_dir = plan.archive_dir();
    durable::create_private_dir(&archive_dir).map_err(io_err("cannot create", &archive_dir))?;
    remove_leftovers(plan)?;

    let listing = archive::list(&plan.data_dir).map_err(io_err("cannot list", &plan.data_dir))?;
    warnings.extend(listing.warnings.iter().cloned());
    for (section, rel) in [
        (Section::ServerId, archive::SERVER_ID_PATH),
        (Section::Config, "config"),
        (Section::Exports, "data/exports"),
        (Section::Log, "log"),
    ] {
        if !plan.data_dir.join(rel).exists() {
            let warning = format!(
                "{} not found in {}; backed up the rest",
                section.label(),
                plan.data_dir.display()
            );
            tracing::warn!("{warning}");
            warnings.push(warning);
        }
    }

    let needed = listing.bytes() + live_db_meta.len() + (1 << 20);
    let space = durable::fs_space(&archive_dir).map_err(io_err("cannot stat", &archive_dir))?;
    if needed > space.available {
        return Err(BackupError::NoSpace {
            dir: archive_dir,
            needed: needed.div_ceil(1 << 20),
            available: space.available >> 20,
        });
    }

    let staging = plan
        .backup_dir
        .join(format!(".staging-{}", std::process::id()));
    durable::create_private_dir(&staging).map_err(io_err("cannot create", &staging))?;
    let result = write_archive(
        plan,
        &archive_dir,
        &staging,
        &listing,
        &live_db,
        &live_db_meta,
        warnings,
    );
    let _ = fs::remove_dir_all(&staging);
    result
}

fn write_archive(
    plan: &Plan,
    archive_dir: &Path,
    staging: &Path,
    listing: &archive::Listing,
    live_db: &Path,
    live_db_meta: &fs::Metadata,
    warnings: &mut Vec<String>,
) -> Result<(Artifact, u64), BackupError> {
    let snapshot_path = staging.join("sound_machine.db");
    let db = snapshot::snapshot(live_db, &snapshot_path, plan.db_busy_timeout)?;
    tracing::info!(
        pages = db.page_count,
        "database snapshot passed integrity_check"
    );

    let mut name = ArtifactName::at(Local::now().naive_local());
    while archive_dir.join(name.file_name()).exists()
        || archive_dir.join(name.sidecar_name()).exists()
    {
        name = name.next_second();
    }
    let partial = archive_dir.join(format!(".{}.partial", name.file_name()));
    let final_path = archive_dir.join(name.file_name());
    let written = (|| {
        let file =
            durable::create_new_private(&partial).map_err(io_err("cannot create", &partial))?;
        let mut writer = ArchiveWriter::new(file, plan.gz);
        let write_err = |e: ArchiveError| match e {
            ArchiveError::Write(e) if durable::is_disk_full(&e) => {
                BackupError::DiskFull(archive_dir.to_path_buf())
            }
            ArchiveError::Write(e) => BackupError::Io {
                action: "cannot write",
                path: partial.clone(),
                source: e,
            },
            ArchiveError::Read { path, source } => BackupError::Io {
                action: "cannot read",
                path,
                source,
            },
        };
        writer
            .add_file(Section::Database, DB_PATH, &snapshot_path, live_db_meta)
            .map_err(write_err)?;
        for entry in &listing.entries {
            writer.add_entry(entry).map_err(write_err)?;
        }
        let time = now_rfc3339();
        let host = status::host_name();
        let inventory = inventory::render(&InventoryInput {
            time: &time,
            host: &host,
            project_dir: &plan.project_dir,
            data_dir: &plan.data_dir,
            backup_dir: &plan.backup_dir,
            sections: writer.sections(),
            db: &db,
        });
        writer
            .add_bytes(
                Section::Inventory,
                archive::INVENTORY_PATH,
                inventory.as_bytes(),
            )
            .map_err(write_err)?;
        let (file, written) = writer.finish().map_err(write_err)?;
        file.sync_all().map_err(|e| {
            if durable::is_disk_full(&e) {
                BackupError::DiskFull(archive_dir.to_path_buf())
            } else {
                io_err("cannot sync", &partial)(e)
            }
        })?;
        // Read back what reached the disk before giving it a backup's name.
        verify::verify_against(&partial, &written.sha256, staging)?;
        Ok(written)
    })();
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e);
        }
    };
    warnings.extend(written.warnings.iter().cloned());

    fs::rename(&partial, &final_path).map_err(io_err("cannot rename", &partial))?;
    durable::fsync_dir(archive_dir).map_err(io_err("cannot sync", archive_dir))?;
    let sidecar = archive_dir.join(name.sidecar_name());
    let line = manifest::sha256sum_line(&written.sha256, &name.file_name());
    durable::write_atomic(&sidecar, line.as_bytes()).map_err(io_err("cannot write", &sidecar))?;
    tracing::info!(archive = %final_path.display(), bytes = written.size, sha256 = %written.sha256, "archive written and verified");
    Ok((
        Artifact {
            name,
            archive: final_path,
            sidecar,
            sha256: written.sha256,
            size: written.size,
        },
        written.files,
    ))
}

/// Removes what an interrupted run left: hidden partial and temp files of
/// ours in the archive dir, and staging dirs in the backup dir.
fn remove_leftovers(plan: &Plan) -> Result<(), BackupError> {
    let archive_dir = plan.archive_dir();
    for (dir, prefix) in [
        (&archive_dir, ".mss-backup-"),
        (&plan.backup_dir, ".staging-"),
    ] {
        let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with(prefix) {
                continue;
            }
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing leftover of an interrupted run");
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(io_err("cannot remove", &path))?;
        }
    }
    Ok(())
}

fn now_rfc3339() -> String {
    Local::now().to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
