//! What a run checks and tidies around the backup itself: who owns the
//! backup dir, the leftovers of a killed run, and the shrink guard that
//! keeps old backups when a new one holds far less.

use super::*;

/// Compares the backup just made (`now`) with the one before it: holding
/// under `plan.shrink_guard` of its files or bytes is still a success, but
/// a warning, and the previous backup is held back from retention until a
/// backup holds as much again, so an emptied `Sounds/` cannot rotate every
/// good backup out within `keep` nights. A held backup removed by hand is
/// simply forgotten.
pub(super) fn guard_shrink(
    plan: &Plan,
    now: &Holding,
    guard: &mut ShrinkGuard,
    warnings: &mut Vec<String>,
) {
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

pub(super) fn mib(bytes: u64) -> String {
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
pub(super) fn unreachable_dir(backup_dir: &Path, uid: u32, denied: io::Error) -> BackupError {
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
pub(super) fn may_access(path: &Path, mode: libc::c_int) -> bool {
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
pub(super) fn remove_leftovers(plan: &Plan) -> Result<(), BackupError> {
    let archive_dir = plan.archive_dir();
    for (dir, prefix) in [
        (&archive_dir, ".mss-backup-"),
        // A member index's temp file, `.` + `.NAME.index` + `.tmp-PID`.
        (&archive_dir, "..mss-backup-"),
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
            // A member index stays as long as its archive does.
            if let Some(archive) = crate::reuse::indexed_archive(&name)
                && archive_dir.join(archive).exists()
            {
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
pub(super) fn process_is_alive(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only reports whether
    // the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
