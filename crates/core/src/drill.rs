//! The offsite drills' memory: `drills.json` in the backup dir, each
//! target's last `verify --from` (when, which backup, and whether it read
//! back whole). A file of its own rather than a part of `last_backup.json`,
//! because every backup run replaces that file whole and would forget a
//! drill made a month ago; and a map by target, so drilling one target
//! never forgets another's result. Replaced atomically (0600), by the
//! binary, under the run lock.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::durable;

/// The drill file's name in the backup dir.
pub const DRILLS_FILE: &str = "drills.json";

/// How a drill ended. There is no "skipped": a drill that was interrupted
/// is not recorded at all, and one that could not reach its target failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrillResult {
    Success,
    Failure,
}

/// One target's last drill.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drill {
    /// RFC 3339, local time with its offset (as `last_backup.json`).
    pub finished_at: String,
    /// The backup read back; `None` when the drill failed before one was
    /// found (the target unreachable, no such backup).
    pub backup: Option<String>,
    pub result: DrillResult,
    /// What was checked, or what was wrong.
    pub detail: String,
}

/// Every target's last drill, by the target's name (`s3://bucket/mss/`).
pub type Drills = BTreeMap<String, Drill>;

/// Reads `drills.json`; empty when no drill has been made yet.
pub fn read(backup_dir: &Path) -> io::Result<Drills> {
    let path = backup_dir.join(DRILLS_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Drills::new()),
        Err(e) => Err(e),
    }
}

/// Records `drill` as `target`'s last, keeping the other targets' drills.
/// A `drills.json` that cannot be parsed is replaced rather than blocking
/// every later drill's record (it holds only the last result per target,
/// which the drill being recorded supersedes for its own target).
pub fn record(backup_dir: &Path, target: &str, drill: Drill) -> io::Result<()> {
    let mut drills = match read(backup_dir) {
        Ok(drills) => drills,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => Drills::new(),
        Err(e) => return Err(e),
    };
    drills.insert(target.to_string(), drill);
    let mut json = serde_json::to_vec_pretty(&drills).map_err(io::Error::other)?;
    json.push(b'\n');
    durable::write_atomic(&backup_dir.join(DRILLS_FILE), &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn drill(result: DrillResult, detail: &str) -> Drill {
        Drill {
            finished_at: "2026-12-01T00:12:00+01:00".into(),
            backup: Some("mss-backup-2026-11-30_031500.tar.gz".into()),
            result,
            detail: detail.into(),
        }
    }

    #[test]
    fn each_target_keeps_its_own_last_drill() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(dir.path()).unwrap().is_empty());
        record(
            dir.path(),
            "usb:/media/stick",
            drill(DrillResult::Success, "ok"),
        )
        .unwrap();
        record(
            dir.path(),
            "s3://b/mss/",
            drill(DrillResult::Failure, "bad"),
        )
        .unwrap();
        record(
            dir.path(),
            "s3://b/mss/",
            drill(DrillResult::Success, "ok again"),
        )
        .unwrap();
        let drills = read(dir.path()).unwrap();
        assert_eq!(drills.len(), 2);
        assert_eq!(drills["usb:/media/stick"].detail, "ok");
        assert_eq!(drills["s3://b/mss/"].detail, "ok again");
        let text = std::fs::read_to_string(dir.path().join(DRILLS_FILE)).unwrap();
        assert!(text.contains("\"result\": \"success\""), "{text}");
        let mode = std::fs::metadata(dir.path().join(DRILLS_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_file_is_reported_and_then_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(DRILLS_FILE), b"{ half").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(err.to_string().contains(DRILLS_FILE), "{err}");
        record(dir.path(), "usb:/m", drill(DrillResult::Failure, "bad")).unwrap();
        assert_eq!(read(dir.path()).unwrap()["usb:/m"].detail, "bad");
    }
}
