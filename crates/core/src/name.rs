//! Backup file names are the only index mss-backup keeps: the timestamp in
//! the name orders backups (never mtimes, which FAT, rsync and S3 each treat
//! differently), and a file whose name does not parse is not ours, so
//! retention can never delete a stranger's file.

use chrono::NaiveDateTime;
use std::fmt;

/// Every backup file name starts with this.
pub const PREFIX: &str = "mss-backup-";
/// A backup archive ends with this.
pub const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// The checksum file beside an archive: `NAME.tar.gz.sha256`.
pub const SIDECAR_SUFFIX: &str = ".sha256";
/// The symlink in the archive dir that points to the newest backup.
pub const LATEST: &str = "mss-backup-latest.tar.gz";
const STAMP_FORMAT: &str = "%Y-%m-%d_%H%M%S";
const STAMP_LEN: usize = "YYYY-MM-DD_HHMMSS".len();

/// The name of one backup, `mss-backup-YYYY-MM-DD_HHMMSS.tar.gz` (local time).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactName {
    stamp: NaiveDateTime,
}

impl ArtifactName {
    /// The name for a backup started at `time` (sub-second part dropped).
    pub fn at(time: NaiveDateTime) -> Self {
        let stamp = time.with_nanosecond_zero();
        Self { stamp }
    }

    /// Parses an archive file name; `None` for anything that is not exactly
    /// one of ours (sidecars, `latest`, partials, foreign files).
    pub fn parse(file_name: &str) -> Option<Self> {
        let stamp = file_name
            .strip_prefix(PREFIX)?
            .strip_suffix(ARCHIVE_SUFFIX)?;
        if stamp.len() != STAMP_LEN {
            return None;
        }
        let parsed = NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT).ok()?;
        // chrono accepts some variants (e.g. unpadded fields); only the exact
        // canonical spelling is ours.
        (parsed.format(STAMP_FORMAT).to_string() == stamp).then_some(Self { stamp: parsed })
    }

    /// The archive's file name.
    pub fn file_name(&self) -> String {
        format!(
            "{PREFIX}{}{ARCHIVE_SUFFIX}",
            self.stamp.format(STAMP_FORMAT)
        )
    }

    /// The checksum sidecar's file name.
    pub fn sidecar_name(&self) -> String {
        format!("{}{SIDECAR_SUFFIX}", self.file_name())
    }

    /// When the backup was started (local time).
    pub fn timestamp(&self) -> NaiveDateTime {
        self.stamp
    }

    /// The name one second later: used when a name is already taken, so an
    /// existing archive is never overwritten.
    pub fn next_second(&self) -> Self {
        Self {
            stamp: self.stamp + chrono::TimeDelta::seconds(1),
        }
    }
}

impl fmt::Display for ArtifactName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file_name())
    }
}

trait NanosecondZero {
    fn with_nanosecond_zero(self) -> Self;
}

impl NanosecondZero for NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike;
        self.with_nanosecond(0).unwrap_or(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_by_timestamp() {
        let a = ArtifactName::parse("mss-backup-2026-02-10_203350.tar.gz").unwrap();
        let b = ArtifactName::parse("mss-backup-2026-02-11_031500.tar.gz").unwrap();
        assert_eq!(a.file_name(), "mss-backup-2026-02-10_203350.tar.gz");
        assert_eq!(
            a.sidecar_name(),
            "mss-backup-2026-02-10_203350.tar.gz.sha256"
        );
        assert!(a < b);
        assert_eq!(
            a.next_second().file_name(),
            "mss-backup-2026-02-10_203351.tar.gz"
        );
    }

    #[test]
    fn rejects_everything_not_ours() {
        for name in [
            LATEST,
            "mss-backup-2026-02-10_203350.tar.gz.sha256",
            ".mss-backup-2026-02-10_203350.tar.gz.partial",
            "mss-backup-2026-2-10_203350.tar.gz",
            "mss-backup-2026-02-30_203350.tar.gz",
            "mss-backup-2026-02-10_203350.tar.gz.bak",
            "other-2026-02-10_203350.tar.gz",
            "mss-backup-2026-02-10_20335.tar.gz",
            "notes.txt",
        ] {
            assert_eq!(ArtifactName::parse(name), None, "{name}");
        }
    }
}
