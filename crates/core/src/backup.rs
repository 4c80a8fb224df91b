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
use crate::inflate;
use crate::inventory::{self, InventoryInput};
use crate::lock::{self, LockError};
use crate::manifest;
use crate::name::ArtifactName;
use crate::progress::{NoProgress, OffsetWatch, Phase, Progress};
use crate::retention::{self, RetentionPolicy};
use crate::seal;
use crate::snapshot;
use crate::status::{
    self, Holding, Outcome, RetentionStatus, RunStatus, ShrinkGuard, TargetStatus,
};
use crate::target::{Artifact, Target};

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
}

impl Hooks<'static> {
    /// No progress, nobody told.
    pub const NONE: Hooks<'static> = Hooks {
        started: &|| {},
        progress: &NoProgress,
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
    };
    // The keys are read before the archive is made, and the encryption runs
    // beside the post-write check; a bad key fails the offsite copies only.
    let (job, sealing) = sealing(plan, offsite);
    match make_artifact(plan, &mut report.warnings, hooks.progress, job) {
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
                hooks.progress,
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

/// Whether this run encrypts, and to how many recipients.
enum Sealing {
    Off,
    To(usize),
    /// Configured, but the keys cannot be used: no offsite copy is sent.
    Failed(seal::SealError),
}

/// The keys to encrypt to, read once before the archive is made (and the
/// durability the encrypted file needs), when the plan encrypts anything:
/// offsite copies, or the local backup with `local`.
fn sealing(plan: &Plan, offsite: &[Destination]) -> (Option<SealJob>, Sealing) {
    let Some(encryption) = &plan.encryption else {
        return (None, Sealing::Off);
    };
    if offsite.is_empty() && !encryption.local {
        return (None, Sealing::Off);
    }
    match seal::Recipients::load(&encryption.recipients) {
        Ok(recipients) => {
            let count = recipients.len();
            let durability = if encryption.local {
                seal::Durability::Synced
            } else {
                seal::Durability::Transient
            };
            (
                Some(SealJob {
                    recipients,
                    durability,
                }),
                Sealing::To(count),
            )
        }
        Err(e) => (None, Sealing::Failed(e)),
    }
}

/// What [`write_archive`] encrypts beside its read-back.
struct SealJob {
    recipients: seal::Recipients,
    durability: seal::Durability,
}

/// Turns the encrypted copy made beside the archive into what each target
/// gets. Returns the local artifact and what the offsite targets get: the
/// plain one, the encrypted one, or (encryption configured but failed) the
/// one line that tells them why they get nothing. With `local` encryption
/// the plain archive is replaced by the encrypted one; if encryption
/// failed it stays, with a warning: a plain backup beats none.
fn encrypt(
    plan: &Plan,
    plain: Artifact,
    sealed: Option<Result<(Artifact, usize), seal::SealError>>,
    report: &mut RunStatus,
) -> (Artifact, Result<Artifact, String>) {
    let (Some(encryption), Some(sealed)) = (&plan.encryption, sealed) else {
        let copy = plain.clone();
        return (plain, Ok(copy));
    };
    let dir = plan.archive_dir();
    let sealed = match sealed {
        Ok((sealed, recipients)) => {
            report.encrypted_for = Some(recipients);
            sealed
        }
        Err(e) => {
            let why = format!("encryption failed, so nothing was sent: {e}");
            tracing::error!("{why}");
            if encryption.local {
                let warning = format!("the local backup {} was kept unencrypted: {e}", plain.name);
                tracing::warn!("{warning}");
                report.warnings.push(warning);
            }
            return (plain, Err(why));
        }
    };
    if !encryption.local {
        return (plain, Ok(sealed));
    }
    match seal::publish(&sealed, &dir) {
        Ok(published) => {
            // The encrypted backup has its names; only then does the plain
            // one go (archive first, as every delete here).
            let _ = fs::remove_file(&plain.archive);
            let _ = fs::remove_file(&plain.sidecar);
            let copy = published.clone();
            (published, Ok(copy))
        }
        Err(e) => {
            seal::discard(&sealed);
            let warning = format!("the local backup {} was kept unencrypted: {e}", plain.name);
            tracing::warn!("{warning}");
            report.warnings.push(warning);
            (
                plain,
                Err(format!("encryption failed, so nothing was sent: {e}")),
            )
        }
    }
}

/// Local first, then every offsite target; then retention. The run is a
/// success only if every target took the backup.
fn deliver(
    plan: &Plan,
    local: &dyn Target,
    offsite: &[Destination],
    artifact: &Artifact,
    offsite_copy: &Result<Artifact, String>,
    report: &mut RunStatus,
    progress: &dyn Progress,
) {
    // The backup is made and named: `latest` and local retention follow
    // it even after a signal (a few renames and deletes), so the archive
    // dir stays as consistent as after any run.
    let local_ok = put_and_prune(local, plan.retention, artifact, report, true, progress);
    let mut all_ok = local_ok;
    for dest in offsite {
        if let Some(signal) = crate::interrupt::received() {
            report.targets.push(TargetStatus {
                name: dest.target.name().to_string(),
                status: Outcome::Failure,
                detail: format!("not copied: {signal}"),
                duration_seconds: 0.0,
            });
            all_ok = false;
            continue;
        }
        let ok = match offsite_copy {
            Ok(copy) => put_and_prune(
                dest.target.as_ref(),
                dest.retention,
                copy,
                report,
                false,
                progress,
            ),
            Err(why) => {
                report.targets.push(TargetStatus {
                    name: dest.target.name().to_string(),
                    status: Outcome::Failure,
                    detail: why.clone(),
                    duration_seconds: 0.0,
                });
                false
            }
        };
        all_ok &= ok;
    }
    if all_ok {
        report.status = Outcome::Success;
    } else if let Some(signal) = crate::interrupt::received() {
        report.error = Some(format!(
            "{signal}: the backup {} was made, but not copied to every target; partial copies were removed",
            artifact.name
        ));
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
    progress: &dyn Progress,
) -> bool {
    let clock = Instant::now();
    let held: Vec<ArtifactName> = report
        .shrink_guard
        .kept
        .iter()
        .filter_map(|h| ArtifactName::parse(&h.archive))
        .collect();
    let progress = (!is_local).then_some(progress);
    let outcome = deliver_to(target, policy, artifact, &held, progress).map(|done| {
        let names = |list: Vec<ArtifactName>| -> Vec<String> {
            list.iter().map(ArtifactName::file_name).collect()
        };
        (names(done.kept), names(done.deleted), done.elsewhere)
    });
    let (status, detail, ok) = match outcome {
        Ok((mut kept, deleted, elsewhere)) => {
            kept.sort_unstable_by(|a, b| b.cmp(a));
            let retention = match elsewhere {
                None => format!("{} deleted by retention", deleted.len()),
                Some(Elsewhere::Declared(words)) => words,
                Some(Elsewhere::Refused(warning)) => {
                    let warning = format!("{}: {warning}", target.name());
                    tracing::warn!("{warning}");
                    report.warnings.push(warning);
                    format!(
                        "{} deleted by retention, then deletes refused (see the warning)",
                        deleted.len()
                    )
                }
            };
            let detail = format!("stored {}; {} kept, {retention}", artifact.name, kept.len());
            if is_local {
                report.retention = RetentionStatus { kept, deleted };
            }
            tracing::info!(target = target.name(), "{detail}");
            (Outcome::Success, detail, true)
        }
        Err(crate::target::TargetError::Absent { reason, .. })
            if crate::interrupt::received().is_none() =>
        {
            tracing::warn!(target = target.name(), "skipped: {reason}");
            (Outcome::Skipped, reason, true)
        }
        Err(e) => {
            let detail = match crate::interrupt::received() {
                Some(signal) => format!("{signal}; the partial copy was removed"),
                None => e.to_string(),
            };
            tracing::error!(target = target.name(), "{detail}");
            (Outcome::Failure, detail, false)
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

/// What one delivery left on its target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// The complete backups the target keeps, the new one among them.
    pub kept: Vec<ArtifactName>,
    /// The backups retention deleted there (to make room first, or after).
    pub deleted: Vec<ArtifactName>,
    /// Retention was left to the storage, not done here.
    pub elsewhere: Option<Elsewhere>,
}

/// Why retention did not delete what its policy let go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elsewhere {
    /// The settings say the storage expires old backups itself (see
    /// [`Target::retention_elsewhere`]): these words say so.
    Declared(String),
    /// The target refused a delete (see
    /// [`crate::target::TargetError::DeleteRefused`]): one warning, these
    /// words, and no more deletes this run.
    Refused(String),
}

/// Puts `artifact` on `target` and applies that target's retention: the
/// one delivery path, for the nightly run and for `mss-backup copy` alike
/// (they had drifted: copy could not make room on a full stick). Preflight
/// (mounted? reachable?), make room where the target can tell its free
/// space, put (with `progress` where there is something to show), list,
/// then delete what `policy` lets go, never the new backup nor one the
/// shrink guard `held`. The caller checks the archive against its sidecar
/// and seals it first where that applies.
pub fn deliver_to(
    target: &dyn Target,
    policy: RetentionPolicy,
    artifact: &Artifact,
    held: &[ArtifactName],
    progress: Option<&dyn Progress>,
) -> Result<Delivered, crate::target::TargetError> {
    target.preflight()?;
    let mut deleted = make_room(target, policy, artifact, held)?;
    match progress {
        Some(progress) => {
            progress.start(Phase::Upload(target.name()), artifact.size);
            let put = target.put_with_progress(artifact, progress);
            progress.finish();
            put?;
        }
        None => target.put(artifact)?,
    }
    let names = target.list()?;
    if let Some(words) = target.retention_elsewhere() {
        return Ok(Delivered {
            kept: names,
            deleted,
            elsewhere: Some(Elsewhere::Declared(words)),
        });
    }
    let doomed = retention::to_delete_holding(&names, policy, Some(&artifact.name), held);
    let mut elsewhere = None;
    for name in &doomed {
        match target.delete(name) {
            Ok(()) => deleted.push(name.clone()),
            // One refusal says it for all: the key cannot delete.
            Err(crate::target::TargetError::DeleteRefused { reason, .. }) => {
                elsewhere = Some(Elsewhere::Refused(reason));
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let kept = names.into_iter().filter(|n| !deleted.contains(n)).collect();
    Ok(Delivered {
        kept,
        deleted,
        elsewhere,
    })
}

/// An encrypted copy made beside the archive, if one was asked for.
type Sealed = Option<Result<Artifact, seal::SealError>>;

/// Before a copy that would not fit on `target`: deletes the backups
/// retention would delete once the copy is in, when that frees enough.
/// They are due to go anyway, so a full stick recovers on its own, and
/// lowering its retention is enough to make room. Nothing is deleted when
/// it would not be enough: the put then fails on its own space check.
fn make_room(
    target: &dyn Target,
    policy: RetentionPolicy,
    artifact: &Artifact,
    held: &[ArtifactName],
) -> Result<Vec<ArtifactName>, crate::target::TargetError> {
    let Some(short) = target.shortfall(artifact).filter(|&short| short > 0) else {
        return Ok(Vec::new());
    };
    let mut names = target.list()?;
    names.push(artifact.name.clone());
    let doomed = retention::to_delete_holding(&names, policy, Some(&artifact.name), held);
    let freed = doomed
        .iter()
        .map(|n| target.size_of(n))
        .sum::<Option<u64>>();
    if doomed.is_empty() || freed.is_none_or(|freed| freed < short) {
        return Ok(Vec::new());
    }
    let mut deleted = Vec::new();
    for name in &doomed {
        target.delete(name)?;
        tracing::info!(target = target.name(), backup = %name, "deleted by retention before the copy, to make room for it");
        deleted.push(name.clone());
    }
    Ok(deleted)
}

/// The free space a run needs in the archive dir before it writes
/// anything, for `data_bytes` of files and database: an archive as big as
/// its input (media barely compresses), and with `sealed_copy` a second
/// one, the encrypted copy made beside it (`.NAME.tar.gz.age.sealed`,
/// which exists together with the archive until the targets have it),
/// with age's 16 bytes per 64 KiB chunk. Plus 1 MiB for tar headers, the
/// manifest, the inventory and age's header.
pub fn space_needed(data_bytes: u64, sealed_copy: bool) -> u64 {
    let sealed = if sealed_copy {
        data_bytes.saturating_add(data_bytes / 4096)
    } else {
        0
    };
    data_bytes.saturating_add(sealed).saturating_add(1 << 20)
}

/// Builds, checks and publishes the archive in the local archive dir, and
/// with a `job` its encrypted copy (hidden, see [`seal::seal`]). Returns
/// the artifact, how many files it holds, and the encrypted copy.
fn make_artifact(
    plan: &Plan,
    warnings: &mut Vec<String>,
    progress: &dyn Progress,
    job: Option<SealJob>,
) -> Result<(Artifact, u64, Sealed), BackupError> {
    // A restore killed mid-swap is finished first, so what is backed up is
    // whole (and its safety net is where the log said).
    for line in crate::restore::recover_interrupted(&plan.data_dir) {
        warnings.push(line);
    }
    if !plan.data_dir.is_dir() {
        return Err(BackupError::DataDirMissing(plan.data_dir.clone()));
    }
    let live_db = plan.data_dir.join(DB_PATH);
    let live_db_meta =
        fs::metadata(&live_db).map_err(|_| BackupError::DatabaseMissing(live_db.clone()))?;
    let archive_dir = plan.archive_dir();
    check_archive_dir(&plan.backup_dir)?;
    durable::create_private_dir(&archive_dir).map_err(io_err("cannot create", &archive_dir))?;
    remove_leftovers(plan)?;

    let listing = archive::list(&plan.data_dir).map_err(|e| match e {
        ArchiveError::Read { path, source } => BackupError::Unreadable { path, source },
        ArchiveError::Write(source) => io_err("cannot list", &plan.data_dir)(source),
        ArchiveError::Duplicate(name) => BackupError::DuplicateMember(name),
    })?;
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

    let needed = space_needed(listing.bytes() + live_db_meta.len(), job.is_some());
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
        progress,
        job,
    );
    let _ = fs::remove_dir_all(&staging);
    result
}

// The second half of `make_artifact`, split off to scope the staging dir;
// a struct for its inputs would only rename them.
#[allow(clippy::too_many_arguments)]
fn write_archive(
    plan: &Plan,
    archive_dir: &Path,
    staging: &Path,
    listing: &archive::Listing,
    live_db: &Path,
    live_db_meta: &fs::Metadata,
    warnings: &mut Vec<String>,
    progress: &dyn Progress,
    job: Option<SealJob>,
) -> Result<(Artifact, u64, Sealed), BackupError> {
    let mut job = job;
    let mut sealed: Sealed = None;
    let snapshot_path = staging.join("sound_machine.db");
    // The snapshot is written in the backup dir too: a full disk there is
    // the same fault as during the archive, and gets the same message.
    let db =
        snapshot::snapshot(live_db, &snapshot_path, plan.db_busy_timeout).map_err(|e| match e {
            snapshot::SnapshotError::Copy {
                source: rusqlite::Error::SqliteFailure(ref failure, _),
                ..
            } if failure.code == rusqlite::ErrorCode::DiskFull => {
                BackupError::DiskFull(archive_dir.to_path_buf())
            }
            e => BackupError::Snapshot(e),
        })?;
    tracing::info!(
        pages = db.page_count,
        "database snapshot passed integrity_check"
    );

    // A second that already has a backup, plain or encrypted (local
    // encryption leaves only the `.age`), is taken: the next one is used.
    let taken = |name: &ArtifactName| {
        [name.plain(), name.encrypted()].iter().any(|n| {
            archive_dir.join(n.file_name()).exists() || archive_dir.join(n.sidecar_name()).exists()
        })
    };
    let mut name = ArtifactName::at(Local::now().naive_local());
    while taken(&name) {
        name = name.next_second();
    }
    let partial = archive_dir.join(format!(".{}.partial", name.file_name()));
    let final_path = archive_dir.join(name.file_name());
    let db_size = fs::metadata(&snapshot_path).map(|m| m.len()).unwrap_or(0);
    let written = (|| {
        let file =
            durable::create_new_private(&partial).map_err(io_err("cannot create", &partial))?;
        let mut writer = ArchiveWriter::new(durable::Writeback::new(file), plan.gz);
        let write_err = |e: ArchiveError| match e {
            ArchiveError::Write(e) if durable::is_disk_full(&e) => {
                BackupError::DiskFull(archive_dir.to_path_buf())
            }
            ArchiveError::Write(e) => BackupError::Io {
                action: "cannot write",
                path: partial.clone(),
                source: e,
            },
            ArchiveError::Read { path, source } => BackupError::Unreadable { path, source },
            ArchiveError::Duplicate(name) => BackupError::DuplicateMember(name),
        };
        progress.start(Phase::Archive, db_size + listing.bytes());
        let added = (|| {
            writer
                .add_file(Section::Database, DB_PATH, &snapshot_path, live_db_meta)
                .map_err(write_err)?;
            progress.advance(db_size);
            for entry in &listing.entries {
                writer.add_entry(entry).map_err(write_err)?;
                progress.advance(entry.size);
            }
            Ok::<(), BackupError>(())
        })();
        progress.finish();
        added?;
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
        file.sync_all().map(drop).map_err(|e| {
            if durable::is_disk_full(&e) {
                BackupError::DiskFull(archive_dir.to_path_buf())
            } else {
                io_err("cannot sync", &partial)(e)
            }
        })?;
        tracing::info!(bytes = written.size, "archive written, reading it back");
        // Read back what reached the disk before giving it a backup's name:
        // the bytes on disk have the CRC-32 and length of the bytes written
        // (whose sha256 goes in the sidecar), and what was written is only
        // gzip members each proven, before it was written, to decode with a
        // good CRC to exactly its input (`gz::ParallelGz`). (Files were
        // hashed into the manifest as they were read; `mss-backup verify`
        // rechecks them all.)
        let unreadable = |detail: String| BackupError::ReadBack {
            path: partial.clone(),
            detail,
        };
        // The encrypted copy is made from the same partial meanwhile, on
        // other cores; it is discarded below if the read-back fails.
        let digest = std::thread::scope(|scope| {
            let sealing = job.take().map(|job| {
                let source = Artifact {
                    name: name.clone(),
                    archive: partial.clone(),
                    sidecar: PathBuf::new(),
                    sha256: written.sha256.clone(),
                    size: written.size,
                };
                scope.spawn(move || {
                    let clock = Instant::now();
                    let sealed = seal::seal(&source, &job.recipients, archive_dir, job.durability);
                    if let Ok(sealed) = &sealed {
                        tracing::info!(
                            recipients = job.recipients.len(),
                            bytes = sealed.size,
                            seconds = round_ms(clock.elapsed()),
                            "encrypted with age"
                        );
                    }
                    sealed
                })
            });
            let digest = read_back(&partial, written.size, progress);
            sealed = sealing.map(|h| h.join().unwrap_or(Err(seal::SealError::Thread)));
            digest
        })
        .map_err(|e| unreadable(e.to_string()))?;
        if digest != (written.crc32, written.size) {
            return Err(unreadable(format!(
                "CRC-32 {:08x} ({} bytes) on disk, {:08x} ({} bytes) written",
                digest.0, digest.1, written.crc32, written.size
            )));
        }
        Ok(written)
    })();
    let discard_sealed = |sealed: &Sealed| {
        if let Some(Ok(sealed)) = sealed {
            seal::discard(sealed);
        }
    };
    // A signal that came during the read-back stops the run here, before
    // the archive gets a name.
    let written = written.and_then(|written| match crate::interrupt::received() {
        Some(signal) => Err(BackupError::Interrupted(signal)),
        None => Ok(written),
    });
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            discard_sealed(&sealed);
            return Err(e);
        }
    };
    warnings.extend(written.warnings.iter().cloned());

    // The sidecar goes in first and the archive's rename last, so in the
    // local archive dir an archive under its name always has its sidecar.
    // A crash between the two leaves a lone sidecar, which the next run
    // removes; the other order could leave a lone archive, which no run
    // would ever list, keep or delete.
    let sidecar = archive_dir.join(name.sidecar_name());
    let line = manifest::sha256sum_line(&written.sha256, &name.file_name());
    // A second signal waits for the sidecar and the rename: it would
    // otherwise leave a lone sidecar for the next run to remove.
    let critical = crate::interrupt::Critical::enter();
    let published = durable::write_atomic(&sidecar, line.as_bytes())
        .map_err(|e| {
            if durable::is_disk_full(&e) {
                BackupError::DiskFull(archive_dir.to_path_buf())
            } else {
                io_err("cannot write", &sidecar)(e)
            }
        })
        .and_then(|()| {
            fs::rename(&partial, &final_path).map_err(io_err("cannot rename", &partial))
        });
    if let Err(e) = published {
        let _ = fs::remove_file(&partial);
        let _ = fs::remove_file(&sidecar);
        discard_sealed(&sealed);
        return Err(e);
    }
    drop(critical);
    if let Err(e) = durable::fsync_dir(archive_dir) {
        discard_sealed(&sealed);
        return Err(io_err("cannot sync", archive_dir)(e));
    }
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
        sealed,
    ))
}

/// The CRC-32 and size of the archive at `path` as it is on disk
/// ([`inflate::crc_file`]), reporting the bytes read.
fn read_back(path: &Path, size: u64, progress: &dyn Progress) -> io::Result<(u32, u64)> {
    let file = fs::File::open(path)?;
    progress.start(Phase::ReadBack, size);
    let result = (|| {
        let mut watch = OffsetWatch::new(&file, progress)?;
        inflate::crc_file(&file, || watch.update())
    })();
    progress.finish();
    result
}

/// Compares the backup just made (`now`) with the one before it: holding
/// under `plan.shrink_guard` of its files or bytes is still a success, but
/// a warning, and the previous backup is held back from retention until a
/// backup holds as much again, so an emptied `Sounds/` cannot rotate every
/// good backup out within `keep` nights. A held backup removed by hand is
/// simply forgotten.
fn guard_shrink(plan: &Plan, now: &Holding, guard: &mut ShrinkGuard, warnings: &mut Vec<String>) {
    let last = guard.last.replace(now.clone());
    let Some(fraction) = plan.shrink_guard else {
        guard.kept.clear();
        return;
    };
    let below = |then: &Holding| {
        (now.files as f64) < fraction * then.files as f64
            || (now.size_bytes as f64) < fraction * then.size_bytes as f64
    };
    let archive_dir = plan.archive_dir();
    guard.kept.retain(|held| {
        let present = archive_dir.join(&held.archive).is_file();
        let keep = present && below(held);
        if !keep {
            tracing::info!(archive = %held.archive, present, "shrink guard: no longer holding it back from retention");
        }
        keep
    });
    let Some(last) = last.filter(|last| last.archive != now.archive && below(last)) else {
        return;
    };
    let warning = format!(
        "this backup holds {} files, {}, under {:.0}% of the previous backup {} ({} files, {}): is data missing from {}? {} is kept beyond retention until a backup holds as much again (MSS_BACKUP_SHRINK_GUARD)",
        now.files,
        mib(now.size_bytes),
        fraction * 100.0,
        last.archive,
        last.files,
        mib(last.size_bytes),
        plan.data_dir.display(),
        last.archive
    );
    tracing::warn!("{warning}");
    warnings.push(warning);
    if archive_dir.join(&last.archive).is_file()
        && !guard.kept.iter().any(|h| h.archive == last.archive)
    {
        guard.kept.push(last);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// Refuses an `archive/` that is a symlink: retention deletes in there, and
/// must never do so outside the backup dir.
pub fn check_archive_dir(backup_dir: &Path) -> Result<(), BackupError> {
    let dir = archive_dir(backup_dir);
    match fs::symlink_metadata(&dir) {
        Ok(meta) if meta.file_type().is_symlink() => Err(BackupError::ArchiveDirSymlink(dir)),
        _ => Ok(()),
    }
}

/// What a command does in the backup dir, for [`check_dir_owner`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirUse {
    /// Only reads (`status`, `list`, `verify`): another user's dir is fine
    /// as long as this user can read it.
    Read,
    /// Writes or may create it (backup, restore, copy).
    Write,
}

/// Checks, before anything is read or written, that this user can use the
/// backup dir, so the wrong user gets one true message naming the dir and
/// the fix instead of a bare `Permission denied` (or an empty listing).
///
/// For [`DirUse::Write`], another user's dir is refused unless
/// `allow_other_owner` (root running a manual backup in mss's dir would
/// leave root's files, which the nightly run as mss cannot replace or
/// append to), and so is root creating the dir for a `data_dir` another
/// user owns: the dir would be root's from the start.
pub fn check_dir_owner(
    backup_dir: &Path,
    data_dir: &Path,
    usage: DirUse,
    allow_other_owner: bool,
) -> Result<(), BackupError> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let meta = match fs::metadata(backup_dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let data_owner = fs::metadata(data_dir).map(|m| m.uid()).unwrap_or(uid);
            if usage == DirUse::Write && uid == 0 && data_owner != 0 && !allow_other_owner {
                return Err(BackupError::NewForOtherOwner {
                    dir: backup_dir.to_path_buf(),
                    data_dir: data_dir.to_path_buf(),
                    owner: user_name(data_owner),
                });
            }
            return Ok(());
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(unreachable_dir(backup_dir, uid, e));
        }
        Err(e) => return Err(io_err("cannot read", backup_dir)(e)),
    };
    if meta.uid() == uid {
        return Ok(());
    }
    let allowed = match usage {
        DirUse::Read => may_access(backup_dir, libc::R_OK | libc::X_OK),
        DirUse::Write => allow_other_owner,
    };
    if allowed {
        return Ok(());
    }
    let (owner, user) = (user_name(meta.uid()), user_name(uid));
    let (why, fix) = if meta.uid() == 0 {
        // The usual story: one `sudo mss-backup` made the dir root's.
        (
            format!("a run as root made it, and {user} cannot use it"),
            format!(
                "if {user} runs the backups, give it back: `sudo chown -R {user}: {}`; otherwise run it as root",
                backup_dir.display()
            ),
        )
    } else if usage == DirUse::Read {
        (
            format!("{user} cannot read it"),
            format!("run it as {owner}, e.g. `sudo -u {owner} mss-backup ...`"),
        )
    } else {
        (
            "files written now would not be usable by the owner's nightly run".to_string(),
            format!(
                "run it as {owner}, e.g. `sudo -u {owner} mss-backup ...`, or set MSS_BACKUP_ALLOW_OTHER_OWNER=true"
            ),
        )
    };
    Err(BackupError::OtherOwner {
        dir: backup_dir.to_path_buf(),
        owner,
        user,
        why,
        fix,
    })
}

/// The error for a backup dir whose lookup was refused: names the nearest
/// dir above it that can be seen (the one this user may not enter).
fn unreachable_dir(backup_dir: &Path, uid: u32, denied: io::Error) -> BackupError {
    use std::os::unix::fs::MetadataExt;
    let blocker = backup_dir
        .ancestors()
        .skip(1)
        .find_map(|dir| fs::metadata(dir).ok().map(|meta| (dir, meta)));
    let Some((blocker, meta)) = blocker else {
        return io_err("cannot read", backup_dir)(denied);
    };
    let (owner, user) = (user_name(meta.uid()), user_name(uid));
    let fix = if meta.uid() == 0 {
        format!(
            "a run as root made it? if {user} runs the backups, give it back: `sudo chown -R {user}: {}`",
            blocker.display()
        )
    } else {
        format!("run it as {owner}, e.g. `sudo -u {owner} mss-backup ...`")
    };
    BackupError::Unreachable {
        dir: backup_dir.to_path_buf(),
        blocker: blocker.to_path_buf(),
        owner,
        mode: meta.mode() & 0o7777,
        user,
        fix,
    }
}

/// Whether this process, by its effective ids (those the owner check
/// compares), may access `path` as `mode` (`R_OK`, ...).
fn may_access(path: &Path, mode: libc::c_int) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is a valid NUL-terminated string for the call's length.
    unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), mode, libc::AT_EACCESS) == 0 }
}

/// The user id this process acts as (what owner checks compare with).
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The login name of `uid` from `/etc/passwd`, or `uid N`.
pub fn user_name(uid: u32) -> String {
    fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse() == Ok(uid)).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Prefix of the dir, in the backup dir, where `verify` or `restore` of an
/// encrypted archive decrypts it, followed by the process id. A `verify`
/// runs without the lock, so a backup removes only those whose process is
/// gone.
pub const OPENED_PREFIX: &str = ".open-";

/// Removes what an interrupted run left: hidden partial and temp files of
/// ours in the archive dir, staging dirs in the backup dir (decrypted
/// copies only once their process has ended), and sidecars whose archive
/// never got its name (see `write_archive`).
fn remove_leftovers(plan: &Plan) -> Result<(), BackupError> {
    let archive_dir = plan.archive_dir();
    for (dir, prefix) in [
        (&archive_dir, ".mss-backup-"),
        (&plan.backup_dir, ".staging-"),
        (&plan.backup_dir, OPENED_PREFIX),
    ] {
        let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Some(rest) = name.strip_prefix(prefix) else {
                continue;
            };
            if prefix == OPENED_PREFIX && rest.parse().is_ok_and(process_is_alive) {
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
    let entries = fs::read_dir(&archive_dir).map_err(io_err("cannot list", &archive_dir))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(archive) = name
            .to_str()
            .and_then(|n| n.strip_suffix(crate::name::SIDECAR_SUFFIX))
            .filter(|a| ArtifactName::parse(a).is_some())
        else {
            continue;
        };
        if fs::symlink_metadata(archive_dir.join(archive)).is_err() {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing a sidecar whose archive an interrupted run never published");
            fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        }
    }
    Ok(())
}

/// Whether process `pid` exists (signal 0 only checks; EPERM means it
/// exists under another user).
fn process_is_alive(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only reports whether
    // the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
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
