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

/// One live path a restore moves aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    pub path: PathBuf,
    pub is_dir: bool,
    /// Regular files under it (1 for a file).
    pub files: u64,
    pub bytes: u64,
}

/// What a restore will do, for the confirmation prompt and `--dry-run`.
#[derive(Debug, Clone)]
pub struct RestorePlan {
    pub mode: Mode,
    /// The archive (symlinks such as `latest` resolved).
    pub archive: PathBuf,
    pub archive_size: u64,
    /// When the backup was made, from its name (`None` for a foreign name).
    pub backup_time: Option<NaiveDateTime>,
    pub data_dir: PathBuf,
    /// What exists now and will move to the safety net.
    pub replaced: Vec<Replaced>,
}

/// Resolves `data_dir` (a symlinked `cloud-data` is restored where it
/// really lives) and checks that the modes that restore into it have it.
fn live_data_dir(mode: Mode, data_dir: &Path) -> Result<PathBuf, RestoreError> {
    match fs::canonicalize(data_dir) {
        Ok(dir) if dir.is_dir() => Ok(dir),
        Ok(_) | Err(_) if mode != Mode::All => Err(RestoreError::DataDirMissing(data_dir.into())),
        Ok(dir) => Err(RestoreError::Io {
            path: dir,
            source: io::Error::from(io::ErrorKind::NotADirectory),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(data_dir.to_path_buf()),
        Err(e) => Err(io_err(data_dir)(e)),
    }
}

/// The live paths `mode` replaces, whether they exist or not.
fn live_paths(mode: Mode, data_dir: &Path) -> Vec<PathBuf> {
    match mode {
        Mode::Db => {
            let db = data_dir.join(DB_PATH);
            let mut paths = vec![db.clone()];
            paths.extend(DB_SIDE_SUFFIXES.iter().map(|s| with_suffix(&db, s)));
            paths
        }
        Mode::Sounds => vec![data_dir.join(SOUNDS_DIR)],
        Mode::All => vec![data_dir.to_path_buf()],
    }
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// What restoring `mode` from `archive` into `data_dir` would replace.
/// Reads only metadata.
pub fn plan(archive: &Path, mode: Mode, data_dir: &Path) -> Result<RestorePlan, RestoreError> {
    let archive = fs::canonicalize(archive).map_err(io_err(archive))?;
    let archive_size = fs::metadata(&archive).map_err(io_err(&archive))?.len();
    let backup_time = archive
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(ArtifactName::parse)
        .map(|n| n.timestamp());
    let data_dir = live_data_dir(mode, data_dir)?;
    let mut replaced = Vec::new();
    for path in live_paths(mode, &data_dir) {
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                let (files, bytes) = measure(&path, &meta).map_err(io_err(&path))?;
                replaced.push(Replaced {
                    is_dir: meta.is_dir(),
                    path,
                    files,
                    bytes,
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path)(e)),
        }
    }
    Ok(RestorePlan {
        mode,
        archive,
        archive_size,
        backup_time,
        data_dir,
        replaced,
    })
}

/// Regular files and their bytes under `path` (symlinks not followed).
fn measure(path: &Path, meta: &fs::Metadata) -> io::Result<(u64, u64)> {
    if meta.is_file() {
        return Ok((1, meta.len()));
    }
    if !meta.is_dir() {
        return Ok((0, 0));
    }
    let mut total = (0, 0);
    for entry in fs::read_dir(path)? {
        let entry = entry?;
        let (files, bytes) = measure(&entry.path(), &entry.metadata()?)?;
        total.0 += files;
        total.1 += bytes;
    }
    Ok(total)
}

/// Mode, mtime and owner to give a restored path.
#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: Option<SystemTime>,
    owner: Option<(u32, u32)>,
}

impl Meta {
    fn of(header: &tar::Header, keep_owner: bool) -> io::Result<Self> {
        let owner = if keep_owner {
            match (u32::try_from(header.uid()?), u32::try_from(header.gid()?)) {
                (Ok(uid), Ok(gid)) => Some((uid, gid)),
                _ => None,
            }
        } else {
            None
        };
        Ok(Self {
            mode: header.mode()?,
            // A time past what SystemTime holds (a base-256 field can say
            // 2^64 s) is left unset rather than overflowing.
            mtime: UNIX_EPOCH.checked_add(Duration::from_secs(header.mtime()?)),
            owner,
        })
    }

    /// Applies owner, then mode (a chown may clear mode bits), then mtime.
    fn apply_to_dir(&self, path: &Path) -> io::Result<()> {
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
        }
        // setgid and sticky are ordinary on shared dirs; setuid means nothing
        // on a dir and is not restored.
        fs::set_permissions(path, Permissions::from_mode(self.mode & 0o3777))?;
        if let Some(mtime) = self.mtime {
            File::open(path)?.set_times(FileTimes::new().set_modified(mtime))?;
        }
        Ok(())
    }
}

/// Whether this process may give files away (root restoring for MSS).
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A complete, checked copy of what a restore puts back, in a staging dir
/// beside `cloud-data/`. Dropping it removes the staging dir.
#[derive(Debug)]
pub struct Staged {
    pub mode: Mode,
    pub archive: PathBuf,
    pub data_dir: PathBuf,
    /// Regular files and bytes staged.
    pub files: u64,
    pub bytes: u64,
    /// The restored database's facts (`db` and `all`).
    pub db: Option<DbFacts>,
    /// Members checked against `MANIFEST.sha256` (`sounds` and `all`; a
    /// `db` restore checks the whole file's sha256 and the database).
    pub manifest_files: Option<u64>,
    pub warnings: Vec<String>,
    /// `None` once the staged tree has become the live one.
    staging: Option<PathBuf>,
    /// Applied to the restored top-level path after it is renamed into
    /// place: a read-only dir could not be moved to a new parent otherwise.
    top: Option<Meta>,
}

impl Staged {
    /// The staging dir (removed when this is dropped).
    pub fn staging_dir(&self) -> Option<&Path> {
        self.staging.as_deref()
    }

    /// The staged path that replaces the live one.
    fn staged_item(&self, root: &Path) -> PathBuf {
        match self.mode {
            Mode::Db => root.join(DB_PATH),
            Mode::Sounds => root.join(SOUNDS_DIR),
            Mode::All => root.to_path_buf(),
        }
    }

    /// The live path the staged one becomes.
    fn live_item(&self) -> PathBuf {
        match self.mode {
            Mode::Db => self.data_dir.join(DB_PATH),
            Mode::Sounds => self.data_dir.join(SOUNDS_DIR),
            Mode::All => self.data_dir.clone(),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(staging) = self.staging.take() {
            remove_staging(&staging);
        }
    }
}

fn remove_staging(staging: &Path) {
    // A staged read-only dir cannot be emptied by a non-root owner: open
    // every dir up first.
    let _ = make_writable(staging);
    if let Err(e) = fs::remove_dir_all(staging) {
        tracing::warn!("cannot remove the staging dir {}: {e}", staging.display());
    }
}

fn make_writable(dir: &Path) -> io::Result<()> {
    fs::set_permissions(dir, Permissions::from_mode(0o700))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            make_writable(&entry.path())?;
        }
    }
    Ok(())
}

/// Verifies `archive` and extracts what `mode` restores into a staging dir
/// on the same file system as `data_dir`. Touches nothing live: any error
/// leaves only the staging dir, which is removed.
pub fn stage(archive: &Path, mode: Mode, data_dir: &Path) -> Result<Staged, RestoreError> {
    stage_with(archive, mode, data_dir, &NoProgress)
}

/// [`stage`], reporting the compressed bytes read to `progress`.
pub fn stage_with(
    archive: &Path,
    mode: Mode,
    data_dir: &Path,
    progress: &dyn Progress,
) -> Result<Staged, RestoreError> {
    let archive = fs::canonicalize(archive).map_err(io_err(archive))?;
    let expected = verify::read_sidecar(&archive)?;
    let data_dir = live_data_dir(mode, data_dir)?;
    let parent = durable::parent_dir(&data_dir).to_path_buf();
    // First finish what a killed restore left half-done: its staging dir
    // may hold the data from before it.
    let recovered = recover_interrupted(&data_dir);
    remove_leftover_staging(&parent);
    let root = parent.join(format!("{STAGING_PREFIX}{}", std::process::id()));
    DirBuilder::new()
        .mode(durable::DIR_MODE)
        .create(&root)
        .map_err(io_err(&root))?;
    tracing::info!(archive = %archive.display(), mode = mode.word(), staging = %root.display(), "restore: verifying and staging");
    let mut staged = Staged {
        mode,
        archive: archive.clone(),
        data_dir: data_dir.clone(),
        files: 0,
        bytes: 0,
        db: None,
        manifest_files: None,
        warnings: Vec::new(),
        staging: Some(root.clone()),
        top: None,
    };
    let mut extractor = Extractor {
        archive: &archive,
        root: &root,
        space_dir: &parent,
        mode,
        keep_owner: running_as_root(),
        files: HashSet::new(),
        symlinks: Vec::new(),
        dirs: Vec::new(),
        count: 0,
        bytes: 0,
        db_done: false,
        selected_any: false,
        warnings: Vec::new(),
    };
    let unwrap_scan = |e: ScanError<RestoreError>| match e {
        ScanError::Archive(e) => RestoreError::Verify(e),
        ScanError::Visitor(e) => e,
    };
    let size = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    let phase = PhaseGuard::start(progress, Phase::Restore, size);
    if mode == Mode::Db {
        // Refuse a damaged file before writing a byte of it.
        verify::check_whole_file(&archive, &expected)?;
        verify::scan_with(&archive, &mut extractor, progress).map_err(unwrap_scan)?;
        if !extractor.db_done {
            return Err(RestoreError::Missing {
                archive: archive.clone(),
                what: DB_PATH,
            });
        }
    } else {
        let checked = verify::scan_checked_with(&archive, &expected, &mut extractor, progress)
            .map_err(unwrap_scan)?;
        staged.manifest_files = Some(checked.files);
        if !extractor.selected_any {
            return Err(RestoreError::Missing {
                archive: archive.clone(),
                what: if mode == Mode::Sounds {
                    "Sounds/"
                } else {
                    "cloud-data content"
                },
            });
        }
    }
    drop(phase);
    let top = extractor.finish()?;
    staged.files = extractor.count;
    staged.bytes = extractor.bytes;
    staged.warnings = recovered;
    staged.warnings.extend(extractor.warnings);
    staged.top = match mode {
        Mode::Db => None,
        Mode::Sounds => {
            if !root.join(SOUNDS_DIR).is_dir() {
                return Err(RestoreError::Missing {
                    archive: archive.clone(),
                    what: "Sounds/",
                });
            }
            top
        }
        // The archive has no entry for cloud-data itself: keep the live
        // dir's mode and owner.
        Mode::All => fs::metadata(&data_dir).ok().map(|meta| Meta {
            mode: meta.mode(),
            mtime: None,
            owner: running_as_root().then(|| (meta.uid(), meta.gid())),
        }),
    };
    if mode != Mode::Sounds {
        let db_path = root.join(DB_PATH);
        if !db_path.is_file() {
            return Err(RestoreError::Missing {
                archive: archive.clone(),
                what: DB_PATH,
            });
        }
        let facts = snapshot::check_file(&db_path).map_err(|detail| RestoreError::Database {
            archive: archive.clone(),
            detail,
        })?;
        tracing::info!(
            pages = facts.page_count,
            "restore: staged database passed integrity_check"
        );
        staged.db = Some(facts);
    }
    let target_parent = match mode {
        Mode::Db if data_dir.join("data").is_dir() => data_dir.join("data"),
        Mode::Db | Mode::Sounds => data_dir.clone(),
        Mode::All => parent.clone(),
    };
    let dev = |p: &Path| fs::metadata(p).map(|m| m.dev()).map_err(io_err(p));
    if dev(&root)? != dev(&target_parent)? {
        return Err(RestoreError::CrossDevice {
            staging: root,
            target: target_parent,
        });
    }
    sync_fs(&root).map_err(|source| RestoreError::Stage {
        path: root.clone(),
        source,
    })?;
    tracing::info!(
        files = staged.files,
        bytes = staged.bytes,
        "restore: archive verified and staged"
    );
    Ok(staged)
}

/// Removes staging dirs left by restores that died (their pid is gone).
fn remove_leftover_staging(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    // A journal still there (a swap that could not be finished) may point
    // into a staging dir that holds the live data from before a restore.
    let journaled: Vec<PathBuf> = journals(parent)
        .into_iter()
        .flat_map(|(_, j)| [j.staging_root, j.staged])
        .collect();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(STAGING_PREFIX)) else {
            continue;
        };
        if journaled.iter().any(|j| j.starts_with(entry.path())) {
            continue;
        }
        let alive = pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
        });
        if !alive {
            tracing::info!(path = %entry.path().display(), "removing the staging dir of an interrupted restore");
            remove_staging(&entry.path());
        }
    }
}

/// Flushes everything staged to disk with one call, so that the renames
/// that follow can never expose files whose data is still in memory.
fn sync_fs(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = File::open(dir)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The checked, relative form of an archive path: only normal components.
fn safe_rel(path: &Path) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path climbs out with `..`".to_string()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("its path is absolute".to_string());
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err("its path is empty".to_string());
    }
    Ok(rel)
}

/// Whether symlink `link` (a safe relative path) pointing at `target`
/// stays inside the tree, read lexically. [`resolve_inside`] checks the
/// finished tree for real.
fn link_target_stays_inside(link: &Path, target: &Path) -> Result<(), String> {
    if target.as_os_str().is_empty() {
        return Err("it is a symlink with an empty target".to_string());
    }
    let mut depth = link.components().count().saturating_sub(1);
    for component in target.components() {
        match component {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth == 0 => {
                return Err(format!(
                    "it is a symlink to {} which points outside cloud-data",
                    verify::shown(&target.to_string_lossy())
                ));
            }
            Component::ParentDir => depth -= 1,
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!(
                    "it is a symlink to the absolute path {}",
                    verify::shown(&target.to_string_lossy())
                ));
            }
        }
    }
    Ok(())
}

/// Follows symlink `link` inside the staged tree at `root` the way the
/// kernel would, link by link, and fails if it ever leaves `root`. A
/// lexical check cannot see `a -> .` followed by `b -> a/..`.
fn resolve_inside(root: &Path, link: &Path) -> Result<(), String> {
    let mut at: Vec<OsString> = link
        .parent()
        .map(|p| p.iter().map(|c| c.to_owned()).collect())
        .unwrap_or_default();
    // Components still to walk, as a stack (the next one last).
    let mut pending: Vec<OsString> = Vec::new();
    let first = fs::read_link(root.join(link)).map_err(|e| e.to_string())?;
    push_target(&mut pending, &first)?;
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if at.pop().is_none() {
                return Err(RESOLVES_OUTSIDE.to_string());
            }
            continue;
        }
        let mut here = root.to_path_buf();
        here.extend(&at);
        here.push(&part);
        match fs::symlink_metadata(&here) {
            Ok(meta) if meta.file_type().is_symlink() => {
                hops += 1;
                if hops > 40 {
                    return Err("it is a symlink loop".to_string());
                }
                let target = fs::read_link(&here).map_err(|e| e.to_string())?;
                push_target(&mut pending, &target)?;
            }
            _ => at.push(part),
        }
    }
    Ok(())
}

const RESOLVES_OUTSIDE: &str = "it is a symlink that resolves outside cloud-data";

/// Puts a symlink target's components on the walk stack.
fn push_target(pending: &mut Vec<OsString>, target: &Path) -> Result<(), String> {
    for component in target.components().rev() {
        match component {
            Component::Normal(p) => pending.push(p.to_owned()),
            Component::ParentDir => pending.push("..".into()),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(RESOLVES_OUTSIDE.to_string());
            }
        }
    }
    Ok(())
}

/// Writes the members a restore wants into the staging dir as the scan
/// decodes them, refusing unsafe ones before writing anything for them.
struct Extractor<'a> {
    archive: &'a Path,
    root: &'a Path,
    /// Where a full disk is reported.
    space_dir: &'a Path,
    mode: Mode,
    keep_owner: bool,
    /// Regular files written, the only valid hard-link targets.
    files: HashSet<PathBuf>,
    symlinks: Vec<PathBuf>,
    /// Dir metadata, applied once their content is written.
    dirs: Vec<(PathBuf, Meta)>,
    count: u64,
    bytes: u64,
    db_done: bool,
    selected_any: bool,
    warnings: Vec<String>,
}

impl Extractor<'_> {
    fn hostile(&self, entry: &str, reason: impl Into<String>) -> RestoreError {
        RestoreError::Hostile {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string(),
            reason: verify::shown(&reason.into()).into_owned(),
        }
    }

    fn stage_err(&self, path: &Path, source: io::Error) -> RestoreError {
        if durable::is_disk_full(&source) {
            RestoreError::NoSpace(self.space_dir.to_path_buf())
        } else {
            RestoreError::Stage {
                // The path holds a name from the archive: shown escaped.
                path: PathBuf::from(verify::shown(&path.to_string_lossy()).into_owned()),
                source,
            }
        }
    }

    /// Whether `mode` restores this member.
    fn wanted(&mut self, rel: &Path, name: &str) -> bool {
        match self.mode {
            Mode::Db => rel == Path::new(DB_PATH),
            Mode::Sounds => rel.starts_with(SOUNDS_DIR),
            Mode::All => {
                if rel == Path::new(INVENTORY_PATH) {
                    return false;
                }
                let side = DB_SIDE_SUFFIXES
                    .iter()
                    .any(|s| name == format!("{DB_PATH}{s}"));
                if side {
                    let warning = format!(
                        "skipped {name} from the archive: a raw SQLite side file must not sit next to a restored database"
                    );
                    tracing::warn!("{warning}");
                    self.warnings.push(warning);
                }
                !side
            }
        }
    }

    /// Creates the missing parents of `rel`, refusing to go through
    /// anything but a real dir.
    fn make_parents(&self, rel: &Path, name: &str) -> Result<(), RestoreError> {
        let mut here = self.root.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for part in parent.iter() {
            here.push(part);
            match fs::symlink_metadata(&here) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) if meta.file_type().is_symlink() => {
                    return Err(self.hostile(
                        name,
                        format!(
                            "its path goes through the symlink {}",
                            verify::shown(
                                &here
                                    .strip_prefix(self.root)
                                    .unwrap_or(&here)
                                    .to_string_lossy()
                            )
                        ),
                    ));
                }
                Ok(_) => {
                    return Err(self.hostile(
                        name,
                        format!(
                            "its parent {} is not a directory",
                            verify::shown(
                                &here
                                    .strip_prefix(self.root)
                                    .unwrap_or(&here)
                                    .to_string_lossy()
                            )
                        ),
                    ));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                    .mode(durable::DIR_MODE)
                    .create(&here)
                    .map_err(|e| self.stage_err(&here, e))?,
                Err(e) => return Err(self.stage_err(&here, e)),
            }
        }
        Ok(())
    }

    fn write_file(
        &mut self,
        rel: &Path,
        name: &str,
        data: &mut dyn Read,
        meta: Meta,
    ) -> Result<(), RestoreError> {
        let dest = self.root.join(rel);
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(durable::FILE_MODE)
            .open(&dest)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    self.hostile(name, "it appears twice")
                } else {
                    self.stage_err(&dest, e)
                }
            })?;
        let written = io::copy(data, &mut out).map_err(|e| self.stage_err(&dest, e))?;
        let finish = || -> io::Result<()> {
            if let Some((uid, gid)) = meta.owner {
                std::os::unix::fs::fchown(&out, Some(uid), Some(gid))?;
            }
            // setuid/setgid never belong on MSS data and are not restored.
            out.set_permissions(Permissions::from_mode(meta.mode & 0o777))?;
            if let Some(mtime) = meta.mtime {
                out.set_times(FileTimes::new().set_modified(mtime))?;
            }
            Ok(())
        };
        finish().map_err(|e| self.stage_err(&dest, e))?;
        self.files.insert(rel.to_path_buf());
        self.count += 1;
        self.bytes += written;
        Ok(())
    }

    fn make_dir(&mut self, rel: &Path, name: &str, meta: Meta) -> Result<(), RestoreError> {
        let dest = self.root.join(rel);
        match fs::symlink_metadata(&dest) {
            // Made earlier as the parent of a member that came first.
            Ok(existing) if existing.is_dir() => {}
            Ok(_) => return Err(self.hostile(name, "it appears twice")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
                .mode(durable::DIR_MODE)
                .create(&dest)
                .map_err(|e| self.stage_err(&dest, e))?,
            Err(e) => return Err(self.stage_err(&dest, e)),
        }
        self.dirs.push((rel.to_path_buf(), meta));
        Ok(())
    }

    fn make_symlink(
        &mut self,
        rel: &Path,
        name: &str,
        target: &Path,
        meta: Meta,
    ) -> Result<(), RestoreError> {
        let dest = self.root.join(rel);
        std::os::unix::fs::symlink(target, &dest).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                self.hostile(name, "it appears twice")
            } else {
                self.stage_err(&dest, e)
            }
        })?;
        if let Some((uid, gid)) = meta.owner {
            std::os::unix::fs::lchown(&dest, Some(uid), Some(gid))
                .map_err(|e| self.stage_err(&dest, e))?;
        }
        if let Some(mtime) = meta.mtime {
            set_symlink_mtime(&dest, mtime).map_err(|e| self.stage_err(&dest, e))?;
        }
        self.symlinks.push(rel.to_path_buf());
        Ok(())
    }

    fn make_hard_link(
        &mut self,
        rel: &Path,
        name: &str,
        target: &Path,
    ) -> Result<(), RestoreError> {
        if !self.files.contains(target) {
            return Err(self.hostile(
                name,
                format!(
                    "it is a hard link to {}, which is not a file restored before it",
                    verify::shown(&target.to_string_lossy())
                ),
            ));
        }
        let dest = self.root.join(rel);
        fs::hard_link(self.root.join(target), &dest).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                self.hostile(name, "it appears twice")
            } else {
                self.stage_err(&dest, e)
            }
        })?;
        self.files.insert(rel.to_path_buf());
        self.count += 1;
        Ok(())
    }

    /// Once every member is written: checks where each symlink really
    /// leads, then gives dirs their mode and mtime, deepest first (writing
    /// into a dir changes its mtime). Returns the metadata of `Sounds/`,
    /// which is applied after the swap.
    fn finish(&mut self) -> Result<Option<Meta>, RestoreError> {
        for link in &self.symlinks {
            resolve_inside(self.root, link)
                .map_err(|reason| self.hostile(&link.to_string_lossy(), reason))?;
        }
        self.dirs
            .sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
        let mut top = None;
        for (rel, meta) in &self.dirs {
            if self.mode == Mode::Sounds && rel == Path::new(SOUNDS_DIR) {
                top = Some(*meta);
                continue;
            }
            let path = self.root.join(rel);
            meta.apply_to_dir(&path)
                .map_err(|e| self.stage_err(&path, e))?;
        }
        Ok(top)
    }
}

impl MemberVisitor for Extractor<'_> {
    type Error = RestoreError;

    fn member(&mut self, member: Member<'_>) -> Result<Flow, RestoreError> {
        let kind = member.header.entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(Flow::Continue);
        }
        let name = member.name;
        // No file system takes a NUL in a name: only a forged archive has one.
        if name.contains('\0')
            || member
                .link_name
                .is_some_and(|l| l.as_os_str().as_bytes().contains(&0))
        {
            return Err(self.hostile(name, "its name or link target holds a NUL byte"));
        }
        let rel = safe_rel(member.path).map_err(|reason| self.hostile(name, reason))?;
        let link = match kind {
            tar::EntryType::Regular | tar::EntryType::Directory => None,
            tar::EntryType::Symlink => {
                let target = member
                    .link_name
                    .ok_or_else(|| self.hostile(name, "it is a symlink without a target"))?;
                link_target_stays_inside(&rel, target).map_err(|r| self.hostile(name, r))?;
                Some(target.to_path_buf())
            }
            tar::EntryType::Link => {
                let target = member
                    .link_name
                    .ok_or_else(|| self.hostile(name, "it is a hard link without a target"))?;
                let target = safe_rel(target).map_err(|r| {
                    self.hostile(
                        name,
                        format!(
                            "it is a hard link whose target {}",
                            r.trim_start_matches("its ")
                        ),
                    )
                })?;
                Some(target)
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(self.hostile(name, "it is a device node"));
            }
            tar::EntryType::Fifo => return Err(self.hostile(name, "it is a FIFO")),
            other => {
                return Err(self.hostile(
                    name,
                    format!("its entry type {other:?} is never written by mss-backup"),
                ));
            }
        };
        if self.mode == Mode::Db && rel == Path::new(DB_PATH) && kind != tar::EntryType::Regular {
            return Err(self.hostile(name, "the database is not a regular file"));
        }
        if !self.wanted(&rel, name) {
            return Ok(Flow::Continue);
        }
        self.selected_any = true;
        self.make_parents(&rel, name)?;
        let meta = Meta::of(member.header, self.keep_owner)
            .map_err(|e| self.hostile(name, format!("its header is malformed: {e}")))?;
        match (kind, link) {
            (tar::EntryType::Regular, _) => self.write_file(&rel, name, member.data, meta)?,
            (tar::EntryType::Directory, _) => self.make_dir(&rel, name, meta)?,
            (tar::EntryType::Symlink, Some(target)) => {
                self.make_symlink(&rel, name, &target, meta)?
            }
            (tar::EntryType::Link, Some(target)) => self.make_hard_link(&rel, name, &target)?,
            _ => return Err(self.hostile(name, "it is not a file, dir or link")),
        }
        if self.mode == Mode::Db {
            // The database is all a db restore needs: read no further.
            self.db_done = true;
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}

fn set_symlink_mtime(path: &Path, mtime: SystemTime) -> io::Result<()> {
    let since = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: since.as_secs() as libc::time_t,
            tv_nsec: since.subsec_nanos() as _,
        },
    ];
    let c_path = c_path(path)?;
    // SAFETY: c_path is a valid C string and times points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Renames `from` to `to` only if nothing is at `to`: a restore must never
/// overwrite anything, least of all a safety net.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
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
fn net_path(path: &Path, stamp: &str) -> PathBuf {
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
fn net_paths(mode: Mode, data_dir: &Path, stamp: &str) -> Vec<(PathBuf, PathBuf)> {
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
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
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

/// Journals are `<cloud-data's parent>/.mss-restore-swap-<pid>.json`.
const JOURNAL_PREFIX: &str = ".mss-restore-swap-";

/// A swap in progress, written down before its first rename.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SwapJournal {
    pid: u32,
    /// The live path being replaced.
    live: PathBuf,
    /// Where the restored copy was staged; after the exchange, where the
    /// data from before the restore is until it moves to `net`.
    staged: PathBuf,
    /// Device and inode of the staged copy: the live path has them once
    /// the exchange happened, and not before.
    staged_id: (u64, u64),
    /// The safety net the data from before the restore goes to.
    net: PathBuf,
    /// The database's side files: (live, safety net).
    sides: Vec<(PathBuf, PathBuf)>,
    staging_root: PathBuf,
}

impl SwapJournal {
    fn write(&self, path: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        durable::write_atomic(path, &json)
    }
}

fn journal_path(staging_root: &Path) -> PathBuf {
    durable::parent_dir(staging_root).join(format!("{JOURNAL_PREFIX}{}.json", std::process::id()))
}

/// The swap journals in `dir` whose restore is no longer running.
fn journals(dir: &Path) -> Vec<(PathBuf, SwapJournal)> {
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

/// Undoes the moves in `done`, newest first.
fn roll_back(done: &[NetEntry], step: String, source: io::Error) -> SwapError {
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
struct SignalGuard {
    old: libc::sigset_t,
}

impl SignalGuard {
    fn block() -> Option<Self> {
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
