//! The plan: what a restore of a mode would replace, read from metadata
//! only, for the confirmation prompt and `--dry-run`.

use super::*;

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
pub(super) fn live_data_dir(mode: Mode, data_dir: &Path) -> Result<PathBuf, RestoreError> {
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
pub(super) fn live_paths(mode: Mode, data_dir: &Path) -> Vec<PathBuf> {
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
pub(super) fn measure(path: &Path, meta: &fs::Metadata) -> io::Result<(u64, u64)> {
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
