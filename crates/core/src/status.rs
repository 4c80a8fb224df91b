//! What the last run did, for people and monitors: `last_backup.json`,
//! replaced atomically after every run, and `backup.log`, the appended
//! history (written through tracing by the binary).

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::durable;

/// The status file's name in the backup dir.
pub const STATUS_FILE: &str = "last_backup.json";
/// The history log's name in the backup dir.
pub const LOG_FILE: &str = "backup.log";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Failure,
    /// A target that was not there, as expected (a USB stick not plugged
    /// in): it got nothing, and the run is not failed for it.
    Skipped,
}

/// One target's part of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    pub name: String,
    pub status: Outcome,
    pub detail: String,
    pub duration_seconds: f64,
}

/// What retention did in the local archive dir.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionStatus {
    pub kept: Vec<String>,
    pub deleted: Vec<String>,
}

/// The content of `last_backup.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub status: Outcome,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    pub archive: Option<String>,
    pub size_bytes: Option<u64>,
    pub sha256: Option<String>,
    pub files: u64,
    pub warnings: Vec<String>,
    pub error: Option<String>,
    pub targets: Vec<TargetStatus>,
    pub retention: RetentionStatus,
    /// What the shrink guard compares the next backup with, and what it
    /// holds back from retention. Carried from run to run.
    #[serde(default)]
    pub shrink_guard: ShrinkGuard,
    /// How many age recipients this run's encrypted copies can be opened
    /// by; `None` when nothing was encrypted.
    #[serde(default)]
    pub encrypted_for: Option<usize>,
    /// Whether the archive was made in full (and why) or with unchanged
    /// files' members copied from the previous backup.
    #[serde(default)]
    pub reuse: Option<crate::reuse::Made>,
    pub version: String,
    pub host: String,
}

/// How much one backup holds: what the shrink guard compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    pub archive: String,
    pub files: u64,
    pub size_bytes: u64,
}

/// The shrink guard's memory, in `last_backup.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShrinkGuard {
    /// The newest backup made: the next one is compared with it.
    pub last: Option<Holding>,
    /// Backups kept beyond retention because a later backup held far
    /// less, until a backup holds as much again (or they are removed by
    /// hand).
    pub kept: Vec<Holding>,
}

/// Replaces `last_backup.json` in `backup_dir` atomically.
pub fn write(backup_dir: &Path, status: &RunStatus) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    json.push(b'\n');
    durable::write_atomic(&backup_dir.join(STATUS_FILE), &json)
}

/// Reads `last_backup.json`; `Ok(None)` when no run has written it yet.
pub fn read(backup_dir: &Path) -> io::Result<Option<RunStatus>> {
    let path = backup_dir.join(STATUS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// This machine's host name, for the status file and inventory.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string())
}
