//! Files unchanged since the previous backup are not compressed again:
//! their gzip members are copied from the previous archive, byte for byte.
//!
//! A file of [`OWN_MEMBER_MIN`] or more has gzip members of its own (see
//! [`crate::archive`]), and the same header and bytes always make the same
//! members, so tonight's members of an unchanged file are last night's.
//! Each archive has a member index beside it, hidden and 0600:
//! `archive/.NAME.tar.gz.index`, deleted with its archive. For every such
//! file it holds what identifies the file on disk ([`Identity`]: size,
//! mtime and ctime in ns, inode, mode, owner), its sha256 for the manifest,
//! and where its members are in the archive, with each member's trailer.
//!
//! Reused bytes come only from an archive whose sha256 matched its sidecar
//! in this run, and from an index whose own checksum matched and that names
//! that archive and sha256. Each copied member is checked again where it
//! lies (gzip header, trailer, and the tar header it starts with). The
//! members were decoded and checked when they were first compressed.
//!
//! A run is full, and says why, when asked (`--full`), when the last full
//! backup is older than the period set, or when the previous backup is
//! missing, damaged, encrypted only, or has no index.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use crate::archive::OWN_MEMBER_MIN;
use crate::durable;
use crate::manifest;
use crate::name::{ArtifactName, SIDECAR_SUFFIX};

/// Bumped when the index format changes: an index of another version is
/// not read (the run is full, and writes a new one).
pub const VERSION: u32 = 1;

/// When a run reads and compresses everything again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FullPolicy {
    /// `--full`.
    pub now: bool,
    /// A backup is full when the last full one is this old; zero: always.
    pub every: Duration,
}

impl Default for FullPolicy {
    fn default() -> Self {
        Self {
            now: false,
            every: DEFAULT_FULL_EVERY,
        }
    }
}

/// A week: with nightly runs and the default retention of 7, one of the
/// backups kept is always a full one, and a change the identity check could
/// miss (a clock set back, a file system with coarse timestamps) lives in
/// the backups for a week at most. A full night costs about what every night
/// cost before reuse.
pub const DEFAULT_FULL_EVERY: Duration = Duration::from_secs(7 * 86_400);

/// What identifies a file on disk between two runs: any write changes its
/// ctime, and a replaced file has another inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub size: u64,
    pub mtime: i64,
    pub mtime_ns: i64,
    pub ctime: i64,
    pub ctime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Identity {
    pub fn of(meta: &Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime: meta.mtime(),
            mtime_ns: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_ns: meta.ctime_nsec(),
            ino: meta.ino(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }

    /// Changed so shortly before `now` (when it was read) that a second
    /// write could come within the same timestamp tick and leave the
    /// identity as it is: such a file is compressed again next time (git's
    /// "racily clean" entries). File timestamps come from a coarse clock,
    /// a tick of 1 to 10 ms on Linux; a file system that keeps whole
    /// seconds only (no nanoseconds on either time) gets whole seconds.
    pub fn is_recent(&self, now: SystemTime) -> bool {
        let ns = |secs: i64, nanos: i64| i128::from(secs) * 1_000_000_000 + i128::from(nanos);
        let newest = ns(self.mtime, self.mtime_ns).max(ns(self.ctime, self.ctime_ns));
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let settle = if self.mtime_ns == 0 && self.ctime_ns == 0 {
            SETTLE_WHOLE_SECONDS
        } else {
            SETTLE
        };
        now - newest < settle.as_nanos() as i128
    }
}

/// Ten ticks of the coarsest clock file times come from.
const SETTLE: Duration = Duration::from_millis(100);
const SETTLE_WHOLE_SECONDS: Duration = Duration::from_secs(2);

/// One gzip member of a file in an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub offset: u64,
    pub len: u64,
    pub crc32: u32,
    /// What the member decodes to, in bytes (mod 2^32, as gzip keeps it).
    pub isize: u32,
}

/// One file's entry in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedFile {
    pub path: String,
    pub identity: Identity,
    pub sha256: String,
    pub members: Vec<Member>,
}

/// The member index of one archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub version: u32,
    pub archive: String,
    pub archive_sha256: String,
    pub archive_size: u64,
    /// When the full backup this one's reused members go back to was made
    /// (seconds since 1970).
    pub full_at: i64,
    pub files: Vec<IndexedFile>,
}

/// `archive/.NAME.tar.gz.index`.
pub fn index_path(archive_dir: &Path, name: &ArtifactName) -> PathBuf {
    archive_dir.join(index_name(name))
}

/// The index's file name for an archive.
pub fn index_name(name: &ArtifactName) -> String {
    format!(".{}{INDEX_SUFFIX}", name.plain().file_name())
}

/// The archive file name a member index's `file_name` belongs to, the
/// inverse of [`index_name`]; `None` for any other name.
pub fn indexed_archive(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(INDEX_SUFFIX))
        .filter(|archive| ArtifactName::parse(archive).is_some())
}

/// Seconds since 1970 (0 for a clock before it), as the index keeps times.
pub fn unix_secs(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

pub const INDEX_SUFFIX: &str = ".index";

/// Writes `index` atomically (0600): its sha256, a newline, the JSON.
pub fn write_index(path: &Path, index: &Index) -> io::Result<()> {
    let json = serde_json::to_vec(index).map_err(io::Error::other)?;
    let mut bytes = manifest::hex(&Sha256::digest(&json)).into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(&json);
    durable::write_atomic(path, &bytes)
}

fn read_index(path: &Path) -> Result<Index, Full> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Full::NoIndex),
        Err(e) => return Err(Full::IndexDamaged(e.to_string())),
    };
    let damaged = |why: &str| Full::IndexDamaged(why.to_string());
    let split = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| damaged("no checksum line"))?;
    let (sum, json) = (&bytes[..split], &bytes[split + 1..]);
    if sum != manifest::hex(&Sha256::digest(json)).as_bytes() {
        return Err(damaged("its checksum does not match"));
    }
    let index: Index = serde_json::from_slice(json).map_err(|e| damaged(&e.to_string()))?;
    if index.version != VERSION {
        return Err(damaged("written by another version of mss-backup"));
    }
    Ok(index)
}

/// Why a run reads and compresses every file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Full {
    Asked,
    Always,
    Due { days: u64 },
    NoPrevious,
    EncryptedOnly(String),
    NoIndex,
    IndexDamaged(String),
    Damaged(String),
}

impl Full {
    /// One line for the log and the status file, naming the previous
    /// backup where it matters.
    pub fn describe(&self, previous: Option<&str>) -> String {
        let prev = previous.unwrap_or("the previous backup");
        match self {
            Full::Asked => "full backup, as asked (--full)".into(),
            Full::Always => "full backup: every backup is a full one (full_every is 0)".into(),
            Full::Due { days } => {
                format!("full backup: the last full one is {days} days old (see full_every)")
            }
            Full::NoPrevious => "full backup: there is no previous backup here".into(),
            Full::EncryptedOnly(_) => format!(
                "full backup: {prev} is kept encrypted only, so its members cannot be reused"
            ),
            Full::NoIndex => format!(
                "full backup: {prev} has no member index (made by an older mss-backup, or its run was cut short)"
            ),
            Full::IndexDamaged(why) => {
                format!("full backup: the member index of {prev} is damaged ({why})")
            }
            Full::Damaged(why) => format!(
                "full backup: {prev} does not match its sidecar ({why}); check it with `mss-backup verify`"
            ),
        }
    }
}

/// What the next archive is made from: everything read and compressed
/// again, or the previous archive's members where files are unchanged.
pub enum Mode {
    Full(String),
    Reuse(Basis),
}

/// The previous archive and its index. Its bytes are only as good as
/// [`Basis::check`] finds them: the archive made from it gets a backup's
/// name only after that passed.
pub struct Basis {
    pub name: String,
    file: Arc<File>,
    size: u64,
    files: HashMap<String, IndexedFile>,
    pub full_at: i64,
    /// The sha256 in its sidecar, which its index also gives.
    sidecar_sha256: String,
}

/// Decides how this run makes its archive: reads the newest backup in
/// `archive_dir` and its index, and hashes it against its sidecar.
pub fn open(archive_dir: &Path, policy: FullPolicy, now: SystemTime) -> Mode {
    match open_unchecked(archive_dir, policy, now) {
        Mode::Reuse(basis) => match basis.check().run() {
            Ok(()) => Mode::Reuse(basis),
            Err(why) => Mode::Full(why),
        },
        full => full,
    }
}

/// [`open`] without hashing the archive: the caller runs [`Basis::check`]
/// (on another core, while it writes) before it keeps what it made.
pub fn open_unchecked(archive_dir: &Path, policy: FullPolicy, now: SystemTime) -> Mode {
    let newest = newest_backup(archive_dir);
    let previous = newest.as_ref().map(ArtifactName::file_name);
    match open_basis(archive_dir, newest, policy, now) {
        Ok(basis) => Mode::Reuse(basis),
        Err(full) => Mode::Full(full.describe(previous.as_deref())),
    }
}

/// The hash of the previous archive against its sidecar, to run anywhere.
pub struct Check {
    name: String,
    file: Arc<File>,
    expected: String,
}

impl Check {
    /// `Err`: why the run must be a full one instead, in one line.
    pub fn run(self) -> Result<(), String> {
        let damaged = |why: String| Full::Damaged(why).describe(Some(&self.name));
        let reader = ReadAt {
            file: &self.file,
            at: 0,
        };
        let (actual, _) = manifest::sha256_of(reader).map_err(|e| damaged(e.to_string()))?;
        if actual == self.expected {
            Ok(())
        } else {
            Err(damaged(format!(
                "sha256 {actual}, sidecar {}",
                self.expected
            )))
        }
    }
}

fn open_basis(
    archive_dir: &Path,
    newest: Option<ArtifactName>,
    policy: FullPolicy,
    now: SystemTime,
) -> Result<Basis, Full> {
    if policy.now {
        return Err(Full::Asked);
    }
    if policy.every.is_zero() {
        return Err(Full::Always);
    }
    let name = newest.ok_or(Full::NoPrevious)?;
    if name.is_encrypted() {
        return Err(Full::EncryptedOnly(name.file_name()));
    }
    let index = read_index(&index_path(archive_dir, &name))?;
    if index.archive != name.file_name() {
        return Err(Full::IndexDamaged(format!("it names {}", index.archive)));
    }
    let age = unix_secs(now) - index.full_at;
    // A full backup "from the future" (a clock set back) is due too.
    if age < 0 || age as u64 >= policy.every.as_secs() {
        return Err(Full::Due {
            days: age.max(0) as u64 / 86_400,
        });
    }
    let path = archive_dir.join(name.file_name());
    let damaged = |why: String| Full::Damaged(why);
    let file = File::open(&path).map_err(|e| damaged(e.to_string()))?;
    let size = file.metadata().map_err(|e| damaged(e.to_string()))?.len();
    let sidecar = fs::read_to_string(archive_dir.join(format!("{}{SIDECAR_SUFFIX}", name)))
        .map_err(|e| damaged(format!("sidecar: {e}")))?;
    let expected = sidecar.split_whitespace().next().unwrap_or_default();
    if index.archive_sha256 != expected || index.archive_size != size {
        return Err(Full::IndexDamaged(
            "it describes other bytes than the archive and its sidecar".into(),
        ));
    }
    Ok(Basis {
        sidecar_sha256: expected.to_string(),
        name: name.file_name(),
        file: Arc::new(file),
        size,
        files: index
            .files
            .into_iter()
            .map(|f| (f.path.clone(), f))
            .collect(),
        full_at: index.full_at,
    })
}

/// The newest backup in `dir`, plain or encrypted.
fn newest_backup(dir: &Path) -> Option<ArtifactName> {
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(ArtifactName::parse))
        .max()
}

/// Members of the previous archive to copy for one file.
pub struct Reusable {
    pub file: Arc<File>,
    pub offset: u64,
    pub len: u64,
    pub members: Vec<Member>,
    pub sha256: String,
}

impl Basis {
    /// The hash of the archive against its sidecar, for another thread.
    pub fn check(&self) -> Check {
        Check {
            name: self.name.clone(),
            file: Arc::clone(&self.file),
            expected: self.sidecar_sha256.clone(),
        }
    }

    /// The members of `rel` in the previous archive, if the file is the
    /// same on disk (`now`: `meta` is what the header is written from) and
    /// its members check out where they lie: each a gzip member with the
    /// trailer indexed, the first starting with a tar header for `rel`.
    pub fn take(&self, rel: &str, now: &Identity) -> Option<Reusable> {
        let indexed = self.files.get(rel)?;
        if indexed.identity != *now {
            return None;
        }
        match self.check_members(indexed) {
            Ok(()) => {}
            Err(why) => {
                tracing::warn!(
                    file = rel,
                    "not reusing the members of {rel} from {}: {why}; compressing it again",
                    self.name
                );
                return None;
            }
        }
        let first = indexed.members.first()?;
        let last = indexed.members.last()?;
        Some(Reusable {
            file: Arc::clone(&self.file),
            offset: first.offset,
            len: last.offset + last.len - first.offset,
            members: indexed.members.clone(),
            sha256: indexed.sha256.clone(),
        })
    }

    fn check_members(&self, indexed: &IndexedFile) -> Result<(), String> {
        let first = indexed.members.first().ok_or("no members indexed")?;
        let mut at = first.offset;
        for member in &indexed.members {
            if member.offset != at || member.len < 18 || member.offset + member.len > self.size {
                return Err(format!("member at {} is out of place", member.offset));
            }
            let mut head = [0u8; 3];
            let mut tail = [0u8; 8];
            self.file
                .read_exact_at(&mut head, member.offset)
                .and_then(|()| {
                    self.file
                        .read_exact_at(&mut tail, member.offset + member.len - 8)
                })
                .map_err(|e| e.to_string())?;
            if head != [0x1f, 0x8b, 0x08]
                || crate::gz::trailer(&tail) != Some((member.crc32, member.isize))
            {
                return Err(format!(
                    "member at {} differs from the index",
                    member.offset
                ));
            }
            at += member.len;
        }
        self.check_header(first, indexed)
    }

    /// Decodes the start of the first member: the tar entry it begins is
    /// `rel` with the indexed size.
    fn check_header(&self, first: &Member, indexed: &IndexedFile) -> Result<(), String> {
        let reader = io::Read::take(
            ReadAt {
                file: &self.file,
                at: first.offset,
            },
            first.len,
        );
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(reader));
        let entry = tar
            .entries()
            .and_then(|mut entries| entries.next().transpose())
            .map_err(|e| e.to_string())?
            .ok_or("no tar entry")?;
        let path = entry.path().map_err(|e| e.to_string())?;
        let header = entry.header();
        let same = path.to_str() == Some(indexed.path.as_str())
            && header.size().ok() == Some(indexed.identity.size)
            && header.mtime().ok() == u64::try_from(indexed.identity.mtime).ok()
            && header.mode().ok().map(|m| m & 0o7777) == Some(indexed.identity.mode & 0o7777);
        if same {
            Ok(())
        } else {
            Err(format!("its first member holds {}", path.display()))
        }
    }
}

/// A reader over `file` from an offset, with positioned reads (the file
/// is shared).
struct ReadAt<'a> {
    file: &'a File,
    at: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// What a run made of its archive, for the log and the status file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    /// Why the run was full; `None` when it reused members.
    pub full: Option<String>,
    /// The backup members were copied from.
    pub reused_from: Option<String>,
    pub reused_files: u64,
    /// The files' own bytes (not compressed).
    pub reused_bytes: u64,
}

impl Made {
    /// A full run, and why.
    pub fn full(why: String) -> Self {
        Self {
            full: Some(why),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    /// An archive dir with one backup (any bytes will do here), its
    /// sidecar, and an index describing it, made `full_at`.
    fn one_backup(full_at: SystemTime) -> (tempfile::TempDir, ArtifactName) {
        let dir = tempfile::tempdir().unwrap();
        let name = ArtifactName::parse("mss-backup-2026-12-01_031500.tar.gz").unwrap();
        let bytes = b"last night's archive";
        fs::write(dir.path().join(name.file_name()), bytes).unwrap();
        let (sha, _) = manifest::sha256_of(&bytes[..]).unwrap();
        fs::write(
            dir.path().join(name.sidecar_name()),
            manifest::sha256sum_line(&sha, &name.file_name()),
        )
        .unwrap();
        let index = Index {
            version: VERSION,
            archive: name.file_name(),
            archive_sha256: sha,
            archive_size: bytes.len() as u64,
            full_at: full_at.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64,
            files: Vec::new(),
        };
        write_index(&index_path(dir.path(), &name), &index).unwrap();
        (dir, name)
    }

    fn why(mode: Mode) -> String {
        match mode {
            Mode::Full(why) => why,
            Mode::Reuse(basis) => format!("reuse from {}", basis.name),
        }
    }

    #[test]
    fn a_run_reuses_only_a_checked_previous_backup_and_says_why_not() {
        let now = SystemTime::now();
        let (dir, name) = one_backup(now - DAY);
        let policy = FullPolicy::default();
        let prev = name.file_name();
        assert_eq!(
            why(open(dir.path(), policy, now)),
            format!("reuse from {prev}")
        );
        // The last full backup a week old, or "in the future" (a clock set back).
        assert_eq!(
            why(open(dir.path(), policy, now + 6 * DAY)),
            "full backup: the last full one is 7 days old (see full_every)"
        );
        assert!(
            why(open(dir.path(), policy, now - 2 * DAY))
                .starts_with("full backup: the last full one is")
        );
        let asked = FullPolicy {
            now: true,
            ..policy
        };
        assert_eq!(
            why(open(dir.path(), asked, now)),
            "full backup, as asked (--full)"
        );
        let always = FullPolicy {
            every: Duration::ZERO,
            ..policy
        };
        assert!(why(open(dir.path(), always, now)).contains("every backup is a full one"));
        // Damaged: the archive no longer matches its sidecar.
        fs::write(dir.path().join(&prev), b"last night's archivE").unwrap();
        assert!(
            why(open(dir.path(), policy, now))
                .starts_with(&format!("full backup: {prev} does not match its sidecar")),
        );
        // No index.
        fs::remove_file(index_path(dir.path(), &name)).unwrap();
        assert!(
            why(open(dir.path(), policy, now)).contains(&format!("{prev} has no member index"))
        );
        // The newest backup is kept encrypted only.
        let newer = name.next_second().encrypted();
        fs::write(dir.path().join(newer.file_name()), b"age").unwrap();
        assert_eq!(
            why(open(dir.path(), policy, now)),
            format!(
                "full backup: {} is kept encrypted only, so its members cannot be reused",
                newer.file_name()
            )
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            why(open(empty.path(), policy, now)),
            "full backup: there is no previous backup here"
        );
    }

    #[test]
    fn an_index_that_does_not_match_its_checksum_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".x.index");
        let index = Index {
            version: VERSION,
            archive: "a".into(),
            archive_sha256: "b".into(),
            archive_size: 1,
            full_at: 2,
            files: Vec::new(),
        };
        write_index(&path, &index).unwrap();
        assert_eq!(read_index(&path).unwrap(), index);
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 2;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(matches!(read_index(&path), Err(Full::IndexDamaged(_))));
        assert_eq!(
            read_index(&dir.path().join("none")).unwrap_err(),
            Full::NoIndex
        );
    }
}
