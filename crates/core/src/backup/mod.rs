//! One backup run, start to finish: take the lock, snapshot the database,
//! stream `cloud-data/` into a hidden partial file, check it, rename it
//! into place, hand it to every target, apply retention, and record what
//! happened. A crash at any point leaves no file under a backup's name.
//!
//! This module is the run; `write` makes the archive, `deliver` hands it
//! to a target (the nightly run and `copy` share it), `housekeeping`
//! checks the backup dir and tidies what a killed run left.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{Local, SecondsFormat};

use crate::archive::{self, ArchiveError, ArchiveWriter, DB_PATH, Section};
use crate::durable;
use crate::gz::GzOptions;
use crate::inflate;
use crate::inventory::{self, InventoryInput};
use crate::lock::{self, LockError};
use crate::manifest;
use crate::name::ArtifactName;
use crate::progress::{NoProgress, OffsetWatch, Phase, Progress};
use crate::retention::{self, RetentionPolicy};
use crate::reuse::{self, FullPolicy, Made};
use crate::seal;
use crate::snapshot;
use crate::status::{
    self, Holding, Outcome, RetentionStatus, RunStatus, ShrinkGuard, TargetStatus,
};
use crate::target::{Artifact, Target};

mod deliver;
mod housekeeping;
mod write;

pub use deliver::*;
pub use housekeeping::*;
use write::*;

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
    /// A backup holding under this fraction of the previous one's files or
    /// bytes is a warning, and the previous one is held back from
    /// retention (see [`status::ShrinkGuard`]); `None` switches it off.
    pub shrink_guard: Option<f64>,
    /// Encrypt what leaves the machine with age; `None`: plain copies.
    pub encryption: Option<Encryption>,
    /// When every file is read and compressed again, instead of copying
    /// unchanged files' members from the previous backup.
    pub full: FullPolicy,
}

/// Encryption of the offsite copies (and optionally the local one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encryption {
    pub recipients: seal::RecipientSource,
    /// Keep the local backup encrypted too (`MSS_BACKUP_ENCRYPT_LOCAL`);
    /// otherwise it stays a plain `.tar.gz` for the `tar -xzf` runbook.
    pub local: bool,
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
    /// Worded as the operator documentation says, then the settings that
    /// point at it, as `doctor` names them.
    #[error(
        "Cloud data directory not found: {0} (check MSS_BACKUP_DATA_DIR or MSS_BACKUP_PROJECT_DIR)"
    )]
    DataDirMissing(PathBuf),
    #[error(
        "Database not found: {0} (MSS keeps it at cloud-data/{DB_PATH}; check MSS_BACKUP_DATA_DIR)"
    )]
    DatabaseMissing(PathBuf),
    #[error(
        "Not enough free space in {dir}: the backup needs up to {needed} MiB, {available} MiB available (free some space there, e.g. delete its oldest backup; then lower MSS_BACKUP_RETENTION so it does not fill again)"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
    },
    #[error(
        "The disk holding {0} filled up during the backup; the partial archive was removed (free some space there, e.g. delete its oldest backup; then lower MSS_BACKUP_RETENTION so it does not fill again)"
    )]
    DiskFull(PathBuf),
    #[error(
        "cannot read {path}: {source} (a backup without it would be incomplete: make it readable for the user mss-backup runs as, or move it out of cloud-data)"
    )]
    Unreadable { path: PathBuf, source: io::Error },
    #[error(
        "{0} is a symlink: mss-backup never follows archive/ out of the backup dir (make it a real directory, or point MSS_BACKUP_DIR at the other disk)"
    )]
    ArchiveDirSymlink(PathBuf),
    #[error(
        "the backup dir {dir} belongs to {owner}, but mss-backup runs as {user}: {why} ({fix})"
    )]
    OtherOwner {
        dir: PathBuf,
        owner: String,
        user: String,
        why: String,
        fix: String,
    },
    /// The backup dir cannot even be looked at: a dir on its way is
    /// another user's and closed to this one.
    #[error(
        "the backup dir {dir} is inside {blocker}, which belongs to {owner} (mode {mode:o}), but mss-backup runs as {user}, who cannot open it ({fix})"
    )]
    Unreachable {
        dir: PathBuf,
        blocker: PathBuf,
        owner: String,
        mode: u32,
        user: String,
        fix: String,
    },
    /// Root about to create the backup dir for data another user owns.
    #[error(
        "the backup dir {dir} does not exist yet and {data_dir} belongs to {owner}, but mss-backup runs as root: a backup dir made now would be root's, and {owner}'s own runs could not use it (run it as {owner}, e.g. `sudo -u {owner} mss-backup ...`, or set MSS_BACKUP_ALLOW_OTHER_OWNER=true if root is meant to run the backups)"
    )]
    NewForOtherOwner {
        dir: PathBuf,
        data_dir: PathBuf,
        owner: String,
    },
    #[error(
        "the archive would hold two members named {0}, which `verify` and `restore` refuse; it was removed and nothing got a backup's name (a bug in mss-backup: please report this line)"
    )]
    DuplicateMember(String),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    #[error(
        "the archive {path} does not read back as written: {detail} (check the disk; the partial was removed)"
    )]
    ReadBack { path: PathBuf, detail: String },
    /// A stop signal came (see [`crate::interrupt`]); what the run was
    /// making has been removed.
    #[error("{0}; the partial backup was removed, previous backups untouched")]
    Interrupted(crate::interrupt::Interrupted),
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

/// What the caller sees of a run while it happens: the binary's progress
/// bars and monitoring pings, without core knowing either.
pub struct Hooks<'a> {
    /// Called once the lock is held, before any work. A run refused by the
    /// lock never calls it, so a monitor is never told that a run started
    /// when it did not.
    pub started: &'a dyn Fn(),
    /// Bytes archived, read back and copied to each offsite target.
    pub progress: &'a dyn Progress,
    /// Asks an offsite target whether it can take the backup now: its
    /// preflight, which the binary asks again for a while when the network
    /// is not up yet (the catch-up run at boot).
    pub preflight: Preflight<'a>,
}

impl Hooks<'static> {
    /// No progress, nobody told.
    pub const NONE: Hooks<'static> = Hooks {
        started: &|| {},
        progress: &NoProgress,
        preflight: &|target| target.preflight(),
    };
}

/// Runs one backup under the lock. `Err` only when another run holds the
/// lock (nothing was touched); every other outcome is in the returned
/// status, which has also been written to `last_backup.json`.
pub fn run(
    plan: &Plan,
    local: &dyn Target,
    offsite: &[Destination],
) -> Result<RunStatus, LockError> {
    run_with(plan, local, offsite, &Hooks::NONE)
}

/// [`run`], telling `hooks` when the run starts and how far it got.
pub fn run_with(
    plan: &Plan,
    local: &dyn Target,
    offsite: &[Destination],
    hooks: &Hooks<'_>,
) -> Result<RunStatus, LockError> {
    durable::create_private_dir(&plan.backup_dir).map_err(|source| LockError::Io {
        path: plan.backup_dir.clone(),
        source,
    })?;
    let _lock = lock::acquire(&plan.backup_dir)?;
    (hooks.started)();
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
        // Carried over: a failed run changes nothing the guard knows.
        shrink_guard: status::read(&plan.backup_dir)
            .ok()
            .flatten()
            .map(|previous| previous.shrink_guard)
            .unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        host: status::host_name(),
        encrypted_for: None,
        reuse: None,
    };
    // The keys are read before the archive is made, and the encryption runs
    // beside the post-write check; a bad key fails the offsite copies only.
    let (job, sealing) = sealing(plan, offsite);
    match make_artifact(
        plan,
        &mut report.warnings,
        hooks.progress,
        job,
        &mut report.reuse,
    ) {
        Ok((plain, files, sealed)) => {
            let sealed = match sealing {
                Sealing::Off => None,
                Sealing::Failed(e) => Some(Err(e)),
                Sealing::To(recipients) => Some(
                    sealed
                        .unwrap_or(Err(seal::SealError::Thread))
                        .map(|s| (s, recipients)),
                ),
            };
            let (artifact, offsite_copy) = encrypt(plan, plain, sealed, &mut report);
            report.archive = Some(artifact.name.file_name());
            report.size_bytes = Some(artifact.size);
            report.sha256 = Some(artifact.sha256.clone());
            report.files = files;
            let holding = Holding {
                archive: artifact.name.file_name(),
                files,
                size_bytes: artifact.size,
            };
            guard_shrink(
                plan,
                &holding,
                &mut report.shrink_guard,
                &mut report.warnings,
            );
            deliver(
                plan,
                local,
                offsite,
                &artifact,
                &offsite_copy,
                &mut report,
                hooks,
            );
            if let Ok(copy) = &offsite_copy
                && copy.archive != artifact.archive
            {
                seal::discard(copy);
            }
        }
        Err(e) => {
            // Whatever step noticed the signal failed with its own words;
            // the cause is the signal, and its cleanup has run.
            let e = match crate::interrupt::received() {
                Some(signal) => BackupError::Interrupted(signal),
                None => e,
            };
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

fn now_rfc3339() -> String {
    Local::now().to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encrypted_run_needs_room_for_two_archives() {
        let data = 400 << 20;
        assert_eq!(space_needed(data, false), data + (1 << 20));
        // The encrypted copy: as big again, plus 16 bytes for each of the
        // 6400 chunks of 64 KiB that age seals.
        assert_eq!(space_needed(data, true), 2 * data + 6400 * 16 + (1 << 20));
    }
}
