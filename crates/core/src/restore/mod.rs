//! Restore: the backup road backwards, built so that it cannot make things
//! worse than they are. The seed runbooks restored with `cp` and `tar -xzf`
//! straight into the live `cloud-data/`, where one slip (a damaged archive,
//! a wrong path, a half-finished extraction) destroys the only good copy.
//! Here nothing live is touched until the archive has been checked and its
//! content sits complete in a staging dir beside `cloud-data/` (same file
//! system, so the swap is a rename); the swap moves what it replaces aside
//! as a safety net (renamed, never copied and deleted) and puts it back if
//! any step fails.
//!
//! How much is checked depends on what is restored:
//! - `sounds` and `all` read the whole archive once, extracting while they
//!   check: the file's sha256 against its sidecar, the gzip stream to its
//!   end, every member against `MANIFEST.sha256` (the last member, so the
//!   staged copy is only trusted once the pass is over).
//! - `db` hashes the whole file first (no decompression, about as fast as
//!   the disk reads) and refuses it unless it matches the sidecar, then
//!   decodes only the database, the first member, and stops. The manifest
//!   comes last, so checking the database against it would mean decoding
//!   every byte of audio; it adds nothing here: a backup is verified member
//!   by member against its manifest before its sidecar is written, so a
//!   whole file that matches its sidecar is exactly the file that passed.
//!   The database then passes `PRAGMA integrity_check` before it is used.
//!
//! Every member is checked before anything is written for it: absolute
//! paths, `..`, device nodes, FIFOs, symlinks whose target leaves the tree,
//! hard links to anything but a file restored before them, and paths that
//! go through a symlink are refused with the whole archive. Files are
//! written by hand (never `unpack_in`), with their mode (less setuid and
//! setgid) and mtime, and their owner when running as root.
//!
//! One module per phase: `plan` (what would be replaced), `stage` (check
//! and extract beside the live data), `members` (the rules each member
//! must pass and how it is written), `swap` (the renames and their
//! rollback) and `journal` (finishing a swap a kill interrupted).

use std::collections::HashSet;
use std::ffi::{CString, OsString};
use std::fs::{self, DirBuilder, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::NaiveDateTime;

use crate::archive::{DB_PATH, INVENTORY_PATH};
use crate::durable;
use crate::name::ArtifactName;
use crate::progress::{NoProgress, Phase, PhaseGuard, Progress};
use crate::snapshot::{self, DbFacts};
use crate::verify::{self, Flow, Member, MemberVisitor, ScanError, VerifyError};

mod journal;
mod members;
mod plan;
mod stage;
mod swap;

pub use journal::*;
use members::*;
pub use plan::*;
pub use stage::*;
pub use swap::*;

/// The audio tree's path in `cloud-data/` (and in the archive).
pub const SOUNDS_DIR: &str = "Sounds";
/// Marks a safety net: `Sounds.pre-restore-2026-02-11_031500`.
pub const NET_MARK: &str = ".pre-restore-";
/// Files SQLite keeps beside the database. A stale one next to a restored
/// database would be replayed into it, so they move with the old database.
pub const DB_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];
/// Staging dirs are `<cloud-data's parent>/.mss-restore-staging-<pid>`.
const STAGING_PREFIX: &str = ".mss-restore-staging-";
const STAMP_FORMAT: &str = "%Y-%m-%d_%H%M%S";

/// What to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `data/sound_machine.db` only.
    Db,
    /// `Sounds/` only.
    Sounds,
    /// All of `cloud-data/`.
    All,
}

impl Mode {
    /// The word on the command line.
    pub fn word(self) -> &'static str {
        match self {
            Mode::Db => "db",
            Mode::Sounds => "sounds",
            Mode::All => "all",
        }
    }

    /// What the operator gets back, in words.
    pub fn what(self) -> &'static str {
        match self {
            Mode::Db => DB_PATH,
            Mode::Sounds => "Sounds/",
            Mode::All => "everything in cloud-data/",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "Cloud data directory not found: {0} (`mss-backup restore all` restores everything into it)"
    )]
    DataDirMissing(PathBuf),
    #[error("cannot use {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Verify(#[from] VerifyError),
    #[error(
        "{archive} holds an unsafe entry {entry:?}: {reason}; nothing was restored (this archive was not written by mss-backup; use another backup)"
    )]
    Hostile {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{archive} has no {what} to restore (use another backup)")]
    Missing {
        archive: PathBuf,
        what: &'static str,
    },
    #[error(
        "{archive}: the database inside fails integrity_check: {detail}; nothing was changed (use another backup)"
    )]
    Database { archive: PathBuf, detail: String },
    #[error("cannot write {path} while staging the restore: {source}; nothing was changed")]
    Stage { path: PathBuf, source: io::Error },
    #[error(
        "Not enough free space in {0} to stage the restore; nothing was changed (free some space and run it again)"
    )]
    NoSpace(PathBuf),
    #[error(
        "the staging dir {staging} and {target} are on different file systems, so the restore cannot be swapped in by rename; nothing was changed"
    )]
    CrossDevice { staging: PathBuf, target: PathBuf },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError {
    let path = path.to_path_buf();
    move |source| RestoreError::Io { path, source }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_paths_must_be_relative_and_stay_inside() {
        assert_eq!(
            safe_rel(Path::new("./Sounds/uploads/a.wav")).unwrap(),
            Path::new("Sounds/uploads/a.wav")
        );
        assert!(safe_rel(Path::new("/etc/passwd")).is_err());
        assert!(safe_rel(Path::new("Sounds/../../x")).is_err());
        assert!(safe_rel(Path::new("..")).is_err());
        assert!(safe_rel(Path::new("./")).is_err());
    }

    /// A base-256 mtime can say 2^64 - 1 s; restoring such a member must
    /// not overflow the time (a panic, exit 101), only leave it unset.
    #[test]
    fn an_mtime_past_what_a_time_holds_is_left_unset() {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        let meta = Meta::of(&header, false).unwrap();
        assert_eq!(
            meta.mtime,
            UNIX_EPOCH.checked_add(Duration::from_secs(1_700_000_000))
        );
        header.set_mtime(u64::MAX);
        assert_eq!(header.mtime().unwrap(), u64::MAX, "stored in base 256");
        assert_eq!(Meta::of(&header, false).unwrap().mtime, None);
    }

    #[test]
    fn symlink_targets_are_checked_lexically_from_the_link() {
        let link = Path::new("Sounds/uploads/a.wav");
        assert!(link_target_stays_inside(link, Path::new("b.wav")).is_ok());
        assert!(link_target_stays_inside(link, Path::new("../../data/x")).is_ok());
        assert!(link_target_stays_inside(link, Path::new("../../../x")).is_err());
        assert!(link_target_stays_inside(link, Path::new("/etc/passwd")).is_err());
        assert!(link_target_stays_inside(Path::new("top"), Path::new("..")).is_err());
    }

    #[test]
    fn symlink_chains_that_climb_out_are_caught_for_real() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        std::os::unix::fs::symlink(".", root.join("self")).unwrap();
        // Lexically `self/..` is the root; really it is the root's parent.
        std::os::unix::fs::symlink("self/..", root.join("evil")).unwrap();
        std::os::unix::fs::symlink("d/../self/d", root.join("fine")).unwrap();
        std::os::unix::fs::symlink("missing/x", root.join("dangling")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(link_target_stays_inside(Path::new("evil"), Path::new("self/..")).is_ok());
        assert!(resolve_inside(root, Path::new("evil")).is_err());
        assert!(resolve_inside(root, Path::new("fine")).is_ok());
        assert!(resolve_inside(root, Path::new("dangling")).is_ok());
        assert!(resolve_inside(root, Path::new("loop")).is_err());
    }

    #[test]
    fn rename_noreplace_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        let err = rename_noreplace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
        fs::remove_file(&b).unwrap();
        rename_noreplace(&a, &b).unwrap();
        assert_eq!(fs::read_to_string(&b).unwrap(), "a");
    }
}
