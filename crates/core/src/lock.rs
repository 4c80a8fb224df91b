//! One mss-backup at a time: a kernel file lock (`flock`) on
//! `<backup dir>/.lock`. The kernel releases it when the process dies, so a
//! crashed run never leaves a stale lock behind. The holder writes its pid
//! and start time into the file so a second run can say who holds it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The lock file's name inside the backup dir.
pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Worded as the operator documentation says.
    #[error("Another mss-backup is already running ({holder})")]
    Held { holder: String },
    #[error("cannot use lock file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Held while a backup or restore runs; released on drop (or process death).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Takes the lock on `backup_dir` without waiting.
pub fn acquire(backup_dir: &Path) -> Result<RunLock, LockError> {
    let path = backup_dir.join(LOCK_FILE);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(LockError::Held {
                holder: describe_holder(&text),
            });
        }
        Err(TryLockError::Error(e)) => return Err(io_err(e)),
    }
    let started = chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    file.set_len(0).map_err(io_err)?;
    file.rewind().map_err(io_err)?;
    writeln!(file, "{} {started}", std::process::id()).map_err(io_err)?;
    Ok(RunLock { _file: file })
}

fn describe_holder(text: &str) -> String {
    match text.trim().split_once(' ') {
        Some((pid, started)) => format!("pid {pid}, started {started}"),
        None => "pid unknown: it is just starting".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = acquire(dir.path()).unwrap();
        let err = acquire(dir.path()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with("Another mss-backup is already running (pid "),
            "{msg}"
        );
        assert!(msg.contains(&std::process::id().to_string()));
        drop(first);
        acquire(dir.path()).unwrap();
    }
}
