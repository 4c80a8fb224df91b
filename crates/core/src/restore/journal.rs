//! The swap journal: written before the first rename, so a restore killed
//! half-way is finished (or undone) by the next command that touches
//! `cloud-data/`, never left with data moved aside and nothing in place.

use super::*;

/// Journals are `<cloud-data's parent>/.mss-restore-swap-<pid>.json`.
pub(super) const JOURNAL_PREFIX: &str = ".mss-restore-swap-";

/// A swap in progress, written down before its first rename.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct SwapJournal {
    pub(super) pid: u32,
    /// The live path being replaced.
    pub(super) live: PathBuf,
    /// Where the restored copy was staged; after the exchange, where the
    /// data from before the restore is until it moves to `net`.
    pub(super) staged: PathBuf,
    /// Device and inode of the staged copy: the live path has them once
    /// the exchange happened, and not before.
    pub(super) staged_id: (u64, u64),
    /// The safety net the data from before the restore goes to.
    pub(super) net: PathBuf,
    /// The database's side files: (live, safety net).
    pub(super) sides: Vec<(PathBuf, PathBuf)>,
    pub(super) staging_root: PathBuf,
}

impl SwapJournal {
    pub(super) fn write(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        durable::write_atomic(path, &json)
    }
}

pub(super) fn journal_path(staging_root: &Path) -> PathBuf {
    durable::parent_dir(staging_root).join(format!("{JOURNAL_PREFIX}{}.json", std::process::id()))
}

/// The swap journals in `dir` whose restore is no longer running.
pub(super) fn journals(dir: &Path) -> Vec<(PathBuf, SwapJournal)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(JOURNAL_PREFIX))
        .filter_map(|e| {
            let journal: SwapJournal = serde_json::from_slice(&fs::read(e.path()).ok()?).ok()?;
            let alive = journal.pid != std::process::id()
                && Path::new(&format!("/proc/{}", journal.pid)).exists();
            (!alive).then(|| (e.path(), journal))
        })
        .collect()
}

/// Finishes the swap of a restore that was killed half-way, next to
/// `data_dir`: if the restored data was already swapped in, the data from
/// before goes to the safety net the log named; if not, the database's
/// side files go back. Either way the live data is whole again, the old
/// state or the new one. Returns one line per restore it finished, for the
/// log and the status; runs at the start of every restore and backup.
pub fn recover_interrupted(data_dir: &Path) -> Vec<String> {
    let data_dir = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let parent = durable::parent_dir(&data_dir).to_path_buf();
    let mut lines = Vec::new();
    for (path, journal) in journals(&parent) {
        let swapped = fs::symlink_metadata(&journal.live)
            .is_ok_and(|m| (m.dev(), m.ino()) == journal.staged_id);
        let line = if swapped {
            let old_here = fs::symlink_metadata(&journal.staged).is_ok();
            if old_here && let Err(e) = rename_noreplace(&journal.staged, &journal.net) {
                let line = format!(
                    "a restore (pid {}) was killed after swapping the restored data into {}; the data from before it is still at {} and could not be moved to {} ({e}): move it there with mv {} {}",
                    journal.pid,
                    journal.live.display(),
                    journal.staged.display(),
                    journal.net.display(),
                    journal.staged.display(),
                    journal.net.display()
                );
                tracing::error!("{line}");
                lines.push(line);
                continue;
            }
            format!(
                "a restore (pid {}) was killed after swapping the restored data into {}; finished it: the data from before it is in the safety net {}",
                journal.pid,
                journal.live.display(),
                journal.net.display()
            )
        } else {
            // Without RENAME_EXCHANGE the live path moves aside first.
            let mut moved = journal.sides.clone();
            moved.push((journal.live.clone(), journal.net.clone()));
            for (live, net) in &moved {
                if fs::symlink_metadata(live).is_err() && fs::symlink_metadata(net).is_ok() {
                    let _ = rename_noreplace(net, live);
                }
            }
            format!(
                "a restore (pid {}) was killed before swapping anything into {}; the data there was never replaced",
                journal.pid,
                journal.live.display()
            )
        };
        let _ = durable::fsync_dir(durable::parent_dir(&journal.net));
        let _ = durable::fsync_dir(durable::parent_dir(&journal.live));
        if fs::symlink_metadata(&journal.staging_root).is_ok() {
            remove_staging(&journal.staging_root);
        }
        let _ = fs::remove_file(&path);
        let _ = durable::fsync_dir(&parent);
        tracing::warn!("{line}");
        lines.push(line);
    }
    lines
}
