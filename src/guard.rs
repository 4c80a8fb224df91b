//! The run guard: what every command that writes in the backup dir does
//! first, in this order. The owner check refuses another user's dir before
//! anything is written; the dir is created private; the run lock keeps a
//! backup's retention from deleting what a copy, drill or restore is
//! reading; and `backup.log` gets the run's history. A command that does
//! this by hand would sooner or later do it in another order.

use std::path::Path;

use anyhow::{Context, Result};
use mss_backup_core::backup;
use mss_backup_core::lock::{LockError, RunLock};

use crate::config::{ConfigError, Settings};

/// Held for the length of a command that reads or writes backups.
pub struct RunGuard {
    _lock: RunLock,
}

impl RunGuard {
    /// Owner check, private backup dir, lock, log. `None` when another run
    /// holds the lock, after saying so (the caller exits 75).
    pub fn take(settings: &Settings) -> Result<Option<Self>> {
        check_backup_dir_owner(settings)?;
        mss_backup_core::durable::create_private_dir(&settings.backup_dir)
            .with_context(|| format!("cannot create {}", settings.backup_dir.display()))?;
        let Some(lock) = take_lock(&settings.backup_dir)? else {
            return Ok(None);
        };
        crate::logging::to_backup_log(&settings.backup_dir)
            .with_context(|| format!("cannot open the log in {}", settings.backup_dir.display()))?;
        Ok(Some(Self { _lock: lock }))
    }
}

/// Takes the run lock for a backup-dir command; `None` when another run
/// holds it, after saying so (the caller exits 75).
pub fn take_lock(backup_dir: &Path) -> Result<Option<RunLock>> {
    match mss_backup_core::lock::acquire(backup_dir) {
        Ok(lock) => Ok(Some(lock)),
        Err(e @ LockError::Held { .. }) => {
            eprintln!("{e}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Refuses, before anything is written, a backup dir that belongs to
/// another user or that this user cannot reach, and root creating one for
/// another user's data, unless `MSS_BACKUP_ALLOW_OTHER_OWNER` says it is
/// meant; and a symlinked `archive/`, which the run would write and prune
/// in: a configuration mistake, so exit 78 with the log and status file
/// untouched, as the README says.
pub fn check_backup_dir_owner(settings: &Settings) -> Result<(), ConfigError> {
    check_dir_use(settings, backup::DirUse::Write)?;
    backup::check_archive_dir(&settings.backup_dir).map_err(|e| ConfigError(e.to_string()))
}

/// Refuses, before anything is read, a backup dir this user cannot read,
/// with the owner and the fix (a bare `Permission denied`, or "no backups",
/// would not be true).
pub fn check_backup_dir_readable(settings: &Settings) -> Result<(), ConfigError> {
    check_dir_use(settings, backup::DirUse::Read)
}

fn check_dir_use(settings: &Settings, usage: backup::DirUse) -> Result<(), ConfigError> {
    let allow = settings.flag("allow_other_owner")?.unwrap_or(false);
    backup::check_dir_owner(&settings.backup_dir, &settings.data_dir, usage, allow)
        .map_err(|e| ConfigError(e.to_string()))
}
