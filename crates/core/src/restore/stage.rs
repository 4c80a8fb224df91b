//! Staging: the archive checked and extracted, complete, into a private
//! dir beside `cloud-data/` (same file system, so the swap is a rename).
//! Nothing live is touched here; dropping a `Staged` removes it.

use super::*;

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
    pub(super) staging: Option<PathBuf>,
    /// Applied to the restored top-level path after it is renamed into
    /// place: a read-only dir could not be moved to a new parent otherwise.
    pub(super) top: Option<Meta>,
}

impl Staged {
    /// The staging dir (removed when this is dropped).
    pub fn staging_dir(&self) -> Option<&Path> {
        self.staging.as_deref()
    }

    /// The staged path that replaces the live one.
    pub(super) fn staged_item(&self, root: &Path) -> PathBuf {
        match self.mode {
            Mode::Db => root.join(DB_PATH),
            Mode::Sounds => root.join(SOUNDS_DIR),
            Mode::All => root.to_path_buf(),
        }
    }

    /// The live path the staged one becomes.
    pub(super) fn live_item(&self) -> PathBuf {
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

pub(super) fn remove_staging(staging: &Path) {
    // A staged read-only dir cannot be emptied by a non-root owner: open
    // every dir up first.
    let _ = make_writable(staging);
    if let Err(e) = fs::remove_dir_all(staging) {
        tracing::warn!("cannot remove the staging dir {}: {e}", staging.display());
    }
}

pub(super) fn make_writable(dir: &Path) -> io::Result<()> {
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
pub(super) fn remove_leftover_staging(parent: &Path) {
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
pub(super) fn sync_fs(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = File::open(dir)?;
    // SAFETY: the descriptor is open for the duration of the call.
    if unsafe { libc::syncfs(file.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
