//! Delivery: the one path by which an archive reaches a target, for the
//! nightly run and for `copy` alike: sealed where configured, room made
//! where the target can tell its free space, put, listed, and pruned by
//! that target's retention with what the shrink guard holds.

use super::*;

/// Whether this run encrypts, and to how many recipients.
pub(super) enum Sealing {
    Off,
    To(usize),
    /// Configured, but the keys cannot be used: no offsite copy is sent.
    Failed(seal::SealError),
}

/// The keys to encrypt to, read once before the archive is made (and the
/// durability the encrypted file needs), when the plan encrypts anything:
/// offsite copies, or the local backup with `local`.
pub(super) fn sealing(plan: &Plan, offsite: &[Destination]) -> (Option<SealJob>, Sealing) {
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
pub(super) struct SealJob {
    pub(super) recipients: seal::Recipients,
    pub(super) durability: seal::Durability,
}

/// Turns the encrypted copy made beside the archive into what each target
/// gets. Returns the local artifact and what the offsite targets get: the
/// plain one, the encrypted one, or (encryption configured but failed) the
/// one line that tells them why they get nothing. With `local` encryption
/// the plain archive is replaced by the encrypted one; if encryption
/// failed it stays, with a warning: a plain backup beats none.
pub(super) fn encrypt(
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
            let _ = fs::remove_file(crate::reuse::index_path(&dir, &plain.name));
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
pub(super) fn deliver(
    plan: &Plan,
    local: &dyn Target,
    offsite: &[Destination],
    artifact: &Artifact,
    offsite_copy: &Result<Artifact, String>,
    report: &mut RunStatus,
    hooks: &Hooks,
) {
    let progress = hooks.progress;
    let preflight = hooks.preflight;
    // The backup is made and named: `latest` and local retention follow
    // it even after a signal (a few renames and deletes), so the archive
    // dir stays as consistent as after any run.
    let local_ok = put_and_prune(
        local,
        plan.retention,
        artifact,
        report,
        true,
        progress,
        &|t| t.preflight(),
    );
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
                preflight,
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

pub(super) fn put_and_prune(
    target: &dyn Target,
    policy: RetentionPolicy,
    artifact: &Artifact,
    report: &mut RunStatus,
    is_local: bool,
    progress: &dyn Progress,
    preflight: Preflight,
) -> bool {
    let clock = Instant::now();
    let held: Vec<ArtifactName> = report
        .shrink_guard
        .kept
        .iter()
        .filter_map(|h| ArtifactName::parse(&h.archive))
        .collect();
    let progress = (!is_local).then_some(progress);
    let outcome = deliver_with(target, policy, artifact, &held, progress, preflight).map(|done| {
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
    deliver_with(target, policy, artifact, held, progress, &|t| t.preflight())
}

/// How a delivery asks a target whether it can take a backup now: its own
/// preflight, or (the nightly run at boot) that preflight asked again while
/// the network comes up ([`Hooks::preflight`]).
pub type Preflight<'a> = &'a dyn Fn(&dyn Target) -> Result<(), crate::target::TargetError>;

/// [`deliver_to`] with the run's own way of asking the target first.
pub(super) fn deliver_with(
    target: &dyn Target,
    policy: RetentionPolicy,
    artifact: &Artifact,
    held: &[ArtifactName],
    progress: Option<&dyn Progress>,
    preflight: Preflight,
) -> Result<Delivered, crate::target::TargetError> {
    preflight(target)?;
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
pub(super) type Sealed = Option<Result<Artifact, seal::SealError>>;

/// Before a copy that would not fit on `target`: deletes the backups
/// retention would delete once the copy is in, when that frees enough.
/// They are due to go anyway, so a full stick recovers on its own, and
/// lowering its retention is enough to make room. Nothing is deleted when
/// it would not be enough: the put then fails on its own space check.
pub(super) fn make_room(
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
