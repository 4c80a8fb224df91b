//! The member rules: what each tar member may be and where it may go
//! (no absolute paths, `..`, devices, FIFOs, links out of the tree, paths
//! through a symlink), and how a file, dir or link is written by hand with
//! its mode (less setuid/setgid), mtime and, as root, owner.

use super::*;

/// Mode, mtime and owner to give a restored path.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) mtime: Option<SystemTime>,
    pub(super) owner: Option<(u32, u32)>,
}

impl Meta {
    pub(super) fn of(header: &tar::Header, keep_owner: bool) -> io::Result<Self> {
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
    pub(super) fn apply_to_dir(&self, path: &Path) -> io::Result<()> {
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
pub(super) fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The checked, relative form of an archive path: only normal components.
pub(super) fn safe_rel(path: &Path) -> Result<PathBuf, String> {
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
pub(super) fn link_target_stays_inside(link: &Path, target: &Path) -> Result<(), String> {
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
pub(super) fn resolve_inside(root: &Path, link: &Path) -> Result<(), String> {
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

pub(super) const RESOLVES_OUTSIDE: &str = "it is a symlink that resolves outside cloud-data";

/// Puts a symlink target's components on the walk stack.
pub(super) fn push_target(pending: &mut Vec<OsString>, target: &Path) -> Result<(), String> {
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
pub(super) struct Extractor<'a> {
    pub(super) archive: &'a Path,
    pub(super) root: &'a Path,
    /// Where a full disk is reported.
    pub(super) space_dir: &'a Path,
    pub(super) mode: Mode,
    pub(super) keep_owner: bool,
    /// Regular files written, the only valid hard-link targets.
    pub(super) files: HashSet<PathBuf>,
    pub(super) symlinks: Vec<PathBuf>,
    /// Dir metadata, applied once their content is written.
    pub(super) dirs: Vec<(PathBuf, Meta)>,
    pub(super) count: u64,
    pub(super) bytes: u64,
    pub(super) db_done: bool,
    pub(super) selected_any: bool,
    pub(super) warnings: Vec<String>,
}

impl Extractor<'_> {
    pub(super) fn hostile(&self, entry: &str, reason: impl Into<String>) -> RestoreError {
        RestoreError::Hostile {
            archive: self.archive.to_path_buf(),
            entry: entry.to_string(),
            reason: verify::shown(&reason.into()).into_owned(),
        }
    }

    pub(super) fn stage_err(&self, path: &Path, source: io::Error) -> RestoreError {
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
    pub(super) fn wanted(&mut self, rel: &Path, name: &str) -> bool {
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
    pub(super) fn make_parents(&self, rel: &Path, name: &str) -> Result<(), RestoreError> {
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

    pub(super) fn write_file(
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

    pub(super) fn make_dir(
        &mut self,
        rel: &Path,
        name: &str,
        meta: Meta,
    ) -> Result<(), RestoreError> {
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

    pub(super) fn make_symlink(
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

    pub(super) fn make_hard_link(
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
    pub(super) fn finish(&mut self) -> Result<Option<Meta>, RestoreError> {
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

pub(super) fn set_symlink_mtime(path: &Path, mtime: SystemTime) -> io::Result<()> {
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

pub(super) fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}
