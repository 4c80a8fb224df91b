//! The swap: the staged copy takes the live paths' place by rename, what
//! it replaces moves aside as the safety net, and any failed step rolls
//! everything back. Signals wait until it is over.

use super::*;

/// Renames `from` to `to` only if nothing is at `to`: a restore must never
/// overwrite anything, least of all a safety net.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (c_from, c_to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both are valid C strings; AT_FDCWD makes them relative to the cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // File systems without RENAME_NOREPLACE: look, then rename (we hold
        // the run lock and MSS is stopped, so nobody races us here).
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(io::Error::from(io::ErrorKind::AlreadyExists));
            }
            fs::rename(from, to)
        }
        _ => Err(err),
    }
}

/// Where a replaced path went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetEntry {
    pub original: PathBuf,
    pub net: PathBuf,
}

/// A finished swap.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// What was replaced and where it is now; the first entry is the main
    /// one (the database, `Sounds/` or `cloud-data/`). Empty when nothing
    /// was there to replace.
    pub safety_net: Vec<NetEntry>,
    /// The live path that now holds the restored data.
    pub restored: PathBuf,
    /// Non-fatal problems after the swap (metadata, fsync, cleanup).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error(
        "Restore FAILED while {step}: {source}. Everything was put back as it was; nothing changed"
    )]
    RolledBack { step: String, source: io::Error },
    #[error(
        "Restore FAILED while {step}: {source}. Putting things back failed too; fix by hand: {stuck}"
    )]
    Stuck {
        step: String,
        source: io::Error,
        stuck: String,
    },
}

/// The safety-net name for `path` at `stamp`.
pub(super) fn net_path(path: &Path, stamp: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    durable::parent_dir(path).join(format!("{name}{NET_MARK}{stamp}"))
}

/// The safety-net names of every live path `mode` replaces. The database's
/// side files keep SQLite's naming next to the moved database
/// (`sound_machine.db.pre-restore-T-wal`), so opening the safety net with
/// sqlite3 still sees what its WAL held.
pub(super) fn net_paths(mode: Mode, data_dir: &Path, stamp: &str) -> Vec<(PathBuf, PathBuf)> {
    let live = live_paths(mode, data_dir);
    match mode {
        Mode::Db => {
            let db_net = net_path(&live[0], stamp);
            let mut pairs = vec![(live[0].clone(), db_net.clone())];
            for (side, suffix) in live[1..].iter().zip(DB_SIDE_SUFFIXES) {
                pairs.push((side.clone(), with_suffix(&db_net, suffix)));
            }
            pairs
        }
        Mode::Sounds | Mode::All => live
            .into_iter()
            .map(|p| {
                let net = net_path(&p, stamp);
                (p, net)
            })
            .collect(),
    }
}

/// Moves what `staged` replaces aside as the safety net and renames the
/// staged data into place. If any step fails, the moves made so far are
/// undone and the error says whether that worked. SIGINT, SIGTERM and
/// SIGHUP wait until the swap is over: blocked on this thread, and only
/// recorded by the handler of [`crate::interrupt`] (if installed) on any
/// other, a second one included; the caller sees them after.
pub fn swap(mut staged: Staged, now: NaiveDateTime) -> Result<Swapped, SwapError> {
    // Dropped in reverse: signals are unblocked while the section is still
    // open, so one that waited is recorded, never acted on mid-swap.
    let _critical = crate::interrupt::Critical::enter();
    let _signals = SignalGuard::block();
    let Some(root) = staged.staging.clone() else {
        return Err(SwapError::RolledBack {
            step: "starting the swap".to_string(),
            source: io::Error::other("the staged copy is gone"),
        });
    };
    let staged_item = staged.staged_item(&root);
    let live_item = staged.live_item();
    let mut stamp_time = now;
    let pairs = loop {
        let stamp = stamp_time.format(STAMP_FORMAT).to_string();
        let pairs = net_paths(staged.mode, &staged.data_dir, &stamp);
        if pairs
            .iter()
            .all(|(_, net)| fs::symlink_metadata(net).is_err())
        {
            break pairs;
        }
        stamp_time += chrono::TimeDelta::seconds(1);
    };
    let mut warnings = Vec::new();
    if staged.mode == Mode::Db
        && let Some(dir) = live_item.parent()
        && !dir.is_dir()
    {
        durable::create_private_dir(dir).map_err(|source| SwapError::RolledBack {
            step: format!("creating {}", dir.display()),
            source,
        })?;
    }
    let move_in_step = || {
        format!(
            "moving the restored {} into place at {}",
            staged.mode.what(),
            live_item.display()
        )
    };
    let mut pairs = pairs.into_iter();
    let Some((_, main_net)) = pairs.next() else {
        return Err(SwapError::RolledBack {
            step: "starting the swap".to_string(),
            source: io::Error::other("nothing to swap"),
        });
    };
    let sides: Vec<(PathBuf, PathBuf)> = pairs.collect();
    let staged_id = fs::symlink_metadata(&staged_item)
        .map(|m| (m.dev(), m.ino()))
        .map_err(|source| SwapError::RolledBack {
            step: move_in_step(),
            source,
        })?;
    // Written before the first rename and removed after the last: a swap
    // killed in between (SIGKILL, power loss) is finished by the next run
    // (see `recover_interrupted`) instead of leaving the data from before
    // the restore in a staging dir that looks like debris.
    let journal = SwapJournal {
        pid: std::process::id(),
        live: live_item.clone(),
        staged: staged_item.clone(),
        staged_id,
        net: main_net.clone(),
        sides: sides.clone(),
        staging_root: root.clone(),
    };
    let journal_path = journal_path(&root);
    journal
        .write(&journal_path)
        .map_err(|source| SwapError::RolledBack {
            step: format!("writing the swap journal {}", journal_path.display()),
            source,
        })?;
    tracing::info!(
        live = %live_item.display(),
        safety_net = %main_net.display(),
        journal = %journal_path.display(),
        "restore: swapping the restored data in; what it replaces goes to the safety net {}",
        main_net.display()
    );
    let fail = |done: &[NetEntry], step: String, source: io::Error| {
        let err = roll_back(done, step, source);
        if matches!(err, SwapError::RolledBack { .. }) {
            let _ = fs::remove_file(&journal_path);
        }
        err
    };
    // The database's side files go first: a stale WAL must never sit next
    // to the restored database, not even for an instant.
    let mut done: Vec<NetEntry> = Vec::new();
    for (live, net) in sides {
        if fs::symlink_metadata(&live).is_err() {
            continue;
        }
        if let Err(source) = rename_noreplace(&live, &net) {
            let step = format!("moving {} aside to {}", live.display(), net.display());
            return Err(fail(&done, step, source));
        }
        tracing::info!(from = %live.display(), to = %net.display(), "restore: moved aside as the safety net");
        done.push(NetEntry {
            original: live,
            net,
        });
    }
    let main = NetEntry {
        original: live_item.clone(),
        net: main_net.clone(),
    };
    // The restored top dir gets its mode before it goes live, so a kill
    // right after the swap cannot leave it with the staging dir's 0700. A
    // read-only one waits until after the move (moving a dir to another
    // parent needs write access to it); it is applied again after anyway,
    // as the move may touch its times.
    if let Some(top) = staged.top
        && top.mode & 0o200 != 0
    {
        let _ = top.apply_to_dir(&staged_item);
    }
    if fs::symlink_metadata(&live_item).is_err() {
        if let Err(source) = rename_noreplace(&staged_item, &live_item) {
            return Err(fail(&done, move_in_step(), source));
        }
    } else {
        match exchange(&staged_item, &live_item) {
            Ok(()) => {
                // One atomic step: the live path held the old data until
                // now and holds the restored data from now on; the old
                // data is where the staged copy was.
                if staged.mode == Mode::All {
                    staged.staging = None;
                }
                if let Err(source) = rename_noreplace(&staged_item, &main_net) {
                    let step = format!(
                        "moving {} aside to {}",
                        live_item.display(),
                        main_net.display()
                    );
                    if let Err(e) = exchange(&staged_item, &live_item) {
                        // The data from before the restore is inside the
                        // staging dir now: it must outlive this run, for
                        // the operator's mv or the next run's recovery.
                        staged.staging = None;
                        return Err(SwapError::Stuck {
                            step,
                            source,
                            stuck: format!(
                                "the restored data is in place at {}, and the data from before the restore is at {} ({e}); keep it with: mv {} {}",
                                live_item.display(),
                                staged_item.display(),
                                staged_item.display(),
                                main_net.display()
                            ),
                        });
                    }
                    if staged.mode == Mode::All {
                        staged.staging = Some(root.clone());
                    }
                    return Err(fail(&done, step, source));
                }
            }
            // A file system without RENAME_EXCHANGE: two renames, with the
            // live path missing for an instant in between.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) => {
                if let Err(source) = rename_noreplace(&live_item, &main_net) {
                    let step = format!(
                        "moving {} aside to {}",
                        live_item.display(),
                        main_net.display()
                    );
                    return Err(fail(&done, step, source));
                }
                if let Err(source) = rename_noreplace(&staged_item, &live_item) {
                    let mut all = vec![main.clone()];
                    all.extend(done.iter().cloned());
                    return Err(fail(&all, move_in_step(), source));
                }
            }
            Err(source) => return Err(fail(&done, move_in_step(), source)),
        }
        tracing::info!(from = %live_item.display(), to = %main_net.display(), "restore: moved aside as the safety net");
        done.insert(0, main);
    }
    tracing::info!(path = %live_item.display(), "restore: restored data moved into place");
    if staged.mode == Mode::All {
        // The staging dir is the live cloud-data now: never remove it.
        staged.staging = None;
    }
    if let Some(top) = staged.top
        && let Err(e) = top.apply_to_dir(&live_item)
    {
        warnings.push(format!(
            "could not set the mode and mtime of {}: {e}",
            live_item.display()
        ));
    }
    let mut synced: Vec<&Path> = vec![durable::parent_dir(&live_item)];
    synced.extend(done.iter().map(|n| durable::parent_dir(&n.net)));
    for dir in synced {
        if let Err(e) = durable::fsync_dir(dir) {
            warnings.push(format!("could not flush {}: {e}", dir.display()));
        }
    }
    if let Err(e) = fs::remove_file(&journal_path)
        .and_then(|()| durable::fsync_dir(durable::parent_dir(&journal_path)))
    {
        warnings.push(format!(
            "could not remove the swap journal {}: {e}",
            journal_path.display()
        ));
    }
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    Ok(Swapped {
        safety_net: done,
        restored: live_item,
        warnings,
    })
}

/// Swaps `a` and `b` in one atomic step (`renameat2(RENAME_EXCHANGE)`).
pub(super) fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let (c_a, c_b) = (c_path(a)?, c_path(b)?);
    // SAFETY: both are valid C strings; AT_FDCWD makes them relative to the cwd.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_a.as_ptr(),
            libc::AT_FDCWD,
            c_b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Undoes the moves in `done`, newest first.
pub(super) fn roll_back(done: &[NetEntry], step: String, source: io::Error) -> SwapError {
    tracing::error!("restore: {step} failed: {source}; putting the safety net back");
    let mut stuck = Vec::new();
    for entry in done.iter().rev() {
        if let Err(e) = rename_noreplace(&entry.net, &entry.original) {
            tracing::error!(
                "restore: cannot put {} back at {}: {e}",
                entry.net.display(),
                entry.original.display()
            );
            stuck.push(format!(
                "{} could not go back to {} ({e}); move it back with: mv {} {}",
                entry.net.display(),
                entry.original.display(),
                entry.net.display(),
                entry.original.display()
            ));
        }
    }
    for dir in done.iter().map(|n| durable::parent_dir(&n.original)) {
        let _ = durable::fsync_dir(dir);
    }
    if stuck.is_empty() {
        SwapError::RolledBack { step, source }
    } else {
        SwapError::Stuck {
            step,
            source,
            stuck: stuck.join("; "),
        }
    }
}

/// Blocks the signals an operator or systemd sends to stop a run, for as
/// long as it lives: a swap interrupted half-way would leave the data
/// neither old nor new. They are delivered when it is dropped.
pub(super) struct SignalGuard {
    pub(super) old: libc::sigset_t,
}

impl SignalGuard {
    pub(super) fn block() -> Option<Self> {
        // SAFETY: sigemptyset/sigaddset initialise the set they are given;
        // pthread_sigmask reads `set` and writes the old mask into `old`.
        unsafe {
            let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            libc::sigemptyset(set.as_mut_ptr());
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
                libc::sigaddset(set.as_mut_ptr(), signal);
            }
            let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
            if libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), old.as_mut_ptr()) != 0 {
                return None;
            }
            Some(Self {
                old: old.assume_init(),
            })
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `block`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}
