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
/// An archive encrypted with age ends with this after [`ARCHIVE_SUFFIX`].
pub const AGE_SUFFIX: &str = ".age";
/// The checksum file beside an archive: `NAME.tar.gz.sha256`.
pub const SIDECAR_SUFFIX: &str = ".sha256";
/// The symlink in the archive dir that points to the newest backup.
pub const LATEST: &str = "mss-backup-latest.tar.gz";
/// The same link when the local backups are encrypted: a `.tar.gz` name
/// must never lead `tar -xzf` to an age file.
pub const LATEST_AGE: &str = "mss-backup-latest.tar.gz.age";
const STAMP_FORMAT: &str = "%Y-%m-%d_%H%M%S";
const STAMP_LEN: usize = "YYYY-MM-DD_HHMMSS".len();

/// The name of one backup, `mss-backup-YYYY-MM-DD_HHMMSS.tar.gz` (local time),
/// or `....tar.gz.age` for the same backup encrypted with age. The two
/// spellings of one timestamp are one backup: retention keeps or deletes
/// them together ([`ArtifactName::same_backup`]). Names order by timestamp.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactName {
    stamp: NaiveDateTime,
    encrypted: bool,
}

/// The backup `name` asks for among `names` (what a target lists):
/// `latest` is the newest; otherwise NAME.tar.gz and NAME.tar.gz.age are the
/// same backup, the exact spelling preferred when both are there.
pub fn find(names: &[ArtifactName], name: &str) -> Option<ArtifactName> {
    if name == "latest" {
        return names.iter().max().cloned();
    }
    let asked = ArtifactName::parse(name)?;
    names
        .iter()
        .filter(|n| n.same_backup(&asked))
        .max_by_key(|n| **n == asked)
        .cloned()
}

impl ArtifactName {
    /// The name for a backup started at `time` (sub-second part dropped).
    pub fn at(time: NaiveDateTime) -> Self {
        let stamp = time.with_nanosecond_zero();
        Self {
            stamp,
            encrypted: false,
        }
    }

    /// This backup's name once encrypted: `NAME.tar.gz.age`.
    pub fn encrypted(&self) -> Self {
        Self {
            stamp: self.stamp,
            encrypted: true,
        }
    }

    /// This backup's plain `NAME.tar.gz` name.
    pub fn plain(&self) -> Self {
        Self {
            stamp: self.stamp,
            encrypted: false,
        }
    }

    /// Whether this names an age-encrypted archive.
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// Whether both name the same backup (the same timestamp), encrypted or not.
    pub fn same_backup(&self, other: &Self) -> bool {
        self.stamp == other.stamp
    }

    /// Parses an archive file name; `None` for anything that is not exactly
    /// one of ours (sidecars, `latest`, partials, foreign files).
    pub fn parse(file_name: &str) -> Option<Self> {
        let (rest, encrypted) = match file_name.strip_suffix(AGE_SUFFIX) {
            Some(rest) => (rest, true),
            None => (file_name, false),
        };
        let stamp = rest.strip_prefix(PREFIX)?.strip_suffix(ARCHIVE_SUFFIX)?;
        if stamp.len() != STAMP_LEN {
            return None;
        }
        let parsed = NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT).ok()?;
        // chrono accepts some variants (e.g. unpadded fields); only the exact
        // canonical spelling is ours.
        (parsed.format(STAMP_FORMAT).to_string() == stamp).then_some(Self {
            stamp: parsed,
            encrypted,
        })
    }

    /// The archive's file name.
    pub fn file_name(&self) -> String {
        let age = if self.encrypted { AGE_SUFFIX } else { "" };
        format!(
            "{PREFIX}{}{ARCHIVE_SUFFIX}{age}",
            self.stamp.format(STAMP_FORMAT)
        )
    }

    /// The `latest` link that points at this kind of archive.
    pub fn latest_link(&self) -> &'static str {
        if self.encrypted { LATEST_AGE } else { LATEST }
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
            encrypted: self.encrypted,
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
    fn find_takes_latest_and_either_spelling_of_a_backup() {
        let names: Vec<ArtifactName> = [
            "mss-backup-2026-01-01_031500.tar.gz",
            "mss-backup-2026-01-02_031500.tar.gz.age",
            "mss-backup-2026-01-03_031500.tar.gz",
        ]
        .iter()
        .map(|n| ArtifactName::parse(n).unwrap())
        .collect();
        let found = |name: &str| find(&names, name).map(|n| n.file_name());
        assert_eq!(
            found("latest").as_deref(),
            Some("mss-backup-2026-01-03_031500.tar.gz")
        );
        assert_eq!(
            found("mss-backup-2026-01-02_031500.tar.gz").as_deref(),
            Some("mss-backup-2026-01-02_031500.tar.gz.age")
        );
        assert_eq!(found("mss-backup-2025-01-01_000000.tar.gz"), None);
        assert_eq!(found("not-a-backup"), None);
    }

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
    fn an_encrypted_name_is_the_same_backup() {
        let plain = ArtifactName::parse("mss-backup-2026-02-10_203350.tar.gz").unwrap();
        let sealed = ArtifactName::parse("mss-backup-2026-02-10_203350.tar.gz.age").unwrap();
        assert!(sealed.is_encrypted() && !plain.is_encrypted());
        assert_eq!(plain.encrypted(), sealed);
        assert_eq!(sealed.plain(), plain);
        assert!(plain.same_backup(&sealed));
        assert_ne!(plain, sealed);
        assert_eq!(
            sealed.sidecar_name(),
            "mss-backup-2026-02-10_203350.tar.gz.age.sha256"
        );
        assert_eq!(sealed.latest_link(), LATEST_AGE);
        let later = ArtifactName::parse("mss-backup-2026-02-10_203351.tar.gz").unwrap();
        assert!(sealed < later, "timestamps order first");
    }

    #[test]
    fn rejects_everything_not_ours() {
        for name in [
            LATEST,
            LATEST_AGE,
            "mss-backup-2026-02-10_203350.tar.gz.sha256",
            "mss-backup-2026-02-10_203350.tar.gz.age.sha256",
            "mss-backup-2026-02-10_203350.age",
            "mss-backup-2026-02-10_203350.tar.gz.age.age",
            ".mss-backup-2026-02-10_203350.tar.gz.age.partial",
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
