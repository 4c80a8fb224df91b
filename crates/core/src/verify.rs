//! Proof that an archive is whole and right before anyone relies on it:
//! the file matches its sidecar's sha256, the gzip stream decodes to the
//! end, every member matches `MANIFEST.sha256` (and nothing is missing or
//! extra), and the database inside passes `PRAGMA integrity_check`. All in
//! one streaming pass.
//!
//! The pass is shared with restore: a [`MemberVisitor`] sees every member
//! as it is decoded and may read a regular file's content (which is hashed
//! as it is read), so restore extracts into its staging dir in the same
//! pass that checks the archive, and never decompresses twice.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::archive::DB_PATH;
use crate::inflate::GzReader;
use crate::manifest::{self, HashingReader, MANIFEST_PATH};
use crate::name::SIDECAR_SUFFIX;
use crate::progress::{NoProgress, OffsetWatch, Phase, Progress};
use crate::snapshot::{self, DbFacts};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("checksum file {path} is unusable: {reason}")]
    Sidecar { path: PathBuf, reason: String },
    #[error(
        "{path} does not match its checksum file: expected sha256 {expected}, got {actual} (the file is damaged; use another backup)"
    )]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("{path} is damaged: {detail} (use another backup)")]
    Damaged { path: PathBuf, detail: String },
    #[error("{path}: the database inside fails integrity_check: {detail}")]
    Database { path: PathBuf, detail: String },
}

/// What a successful verification saw.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The archive file checked (symlinks resolved).
    pub archive: PathBuf,
    pub sha256: String,
    pub size: u64,
    /// Files checked against the manifest.
    pub files: u64,
    pub db: DbFacts,
}

/// An archive member's name as a message shows it: control characters
/// escaped (a newline in a hostile name must not forge a line of the log
/// or split an error in two), anything else as it is.
pub fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    if name.chars().any(char::is_control) {
        std::borrow::Cow::Owned(name.escape_debug().to_string())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The sidecar path of an archive path.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// Reads the expected sha256 from the sidecar next to `archive`.
pub fn read_sidecar(archive: &Path) -> Result<String, VerifyError> {
    let file_name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    sidecar_line(&sidecar_path(archive), &file_name)
}

/// The sha256 that the sidecar at `path` gives for `file_name` (a sidecar
/// names the archive it belongs to, so a fetched pair can be checked while
/// both still have hidden names).
pub fn sidecar_line(path: &Path, file_name: &str) -> Result<String, VerifyError> {
    let path = path.to_path_buf();
    let text = fs::read_to_string(&path).map_err(|e| VerifyError::Sidecar {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let parsed = manifest::parse(&text).ok_or_else(|| VerifyError::Sidecar {
        path: path.clone(),
        reason: "not in sha256sum format".to_string(),
    })?;
    parsed
        .get(file_name)
        .cloned()
        .ok_or_else(|| VerifyError::Sidecar {
            path,
            reason: format!("it has no line for {file_name}"),
        })
}

/// Hashes the whole file without decompressing it and compares with
/// `expected`; returns its size. The cheap half of a verification, for
/// callers that will not read the archive to its end.
pub fn check_whole_file(archive: &Path, expected: &str) -> Result<u64, VerifyError> {
    let file = File::open(archive).map_err(|source| VerifyError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let (actual, size) = manifest::sha256_of(file).map_err(|source| VerifyError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    if actual != expected {
        return Err(VerifyError::Checksum {
            path: archive.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(size)
}

/// The cheap half of a verification on its own: resolves `archive` (the
/// `latest` link to the archive it names, whose sidecar is beside it),
/// hashes the whole file and compares with its sidecar. Returns the
/// resolved path and the size.
pub fn check_sidecar(archive: &Path) -> Result<(PathBuf, u64), VerifyError> {
    let archive = fs::canonicalize(archive).map_err(|source| VerifyError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let expected = read_sidecar(&archive)?;
    let size = check_whole_file(&archive, &expected)?;
    Ok((archive, size))
}

/// Verifies `archive` fully; `scratch` is a private directory for the
/// database copy that `integrity_check` needs.
pub fn verify(archive: &Path, scratch: &Path) -> Result<Verified, VerifyError> {
    verify_with(archive, scratch, &NoProgress)
}

/// [`verify`], reporting the compressed bytes read to `progress`.
pub fn verify_with(
    archive: &Path,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Verified, VerifyError> {
    let archive = fs::canonicalize(archive).map_err(|source| VerifyError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let expected = read_sidecar(&archive)?;
    let size = fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    progress.start(Phase::Verify, size);
    let result = verify_against_with(&archive, &expected, scratch, progress);
    progress.finish();
    result
}

/// Verifies `archive` against an expected sha256 (the sidecar's, or the
/// one computed while writing it).
pub fn verify_against(
    archive: &Path,
    expected: &str,
    scratch: &Path,
) -> Result<Verified, VerifyError> {
    verify_against_with(archive, expected, scratch, &NoProgress)
}

fn verify_against_with(
    archive: &Path,
    expected: &str,
    scratch: &Path,
    progress: &dyn Progress,
) -> Result<Verified, VerifyError> {
    let mut db_copy = DbCopy {
        dest: scratch.join(format!("verify-{}.db", std::process::id())),
        copied: false,
    };
    let checked = scan_checked_with(archive, expected, &mut db_copy, progress);
    let copied = db_copy.copied;
    let result = (|| {
        let checked = checked.map_err(ScanError::flatten)?;
        if !copied {
            return Err(VerifyError::Damaged {
                path: archive.to_path_buf(),
                detail: format!("it has no {DB_PATH}"),
            });
        }
        let db = snapshot::check_file(&db_copy.dest).map_err(|detail| VerifyError::Database {
            path: archive.to_path_buf(),
            detail,
        })?;
        Ok(Verified {
            archive: archive.to_path_buf(),
            sha256: checked.sha256,
            size: checked.size,
            files: checked.files,
            db,
        })
    })();
    if copied {
        let _ = fs::remove_file(&db_copy.dest);
    }
    result
}

/// Copies the database member aside so `integrity_check` can open it.
struct DbCopy {
    dest: PathBuf,
    copied: bool,
}

impl MemberVisitor for DbCopy {
    type Error = VerifyError;

    fn member(&mut self, member: Member<'_>) -> Result<Flow, VerifyError> {
        if member.header.entry_type().is_file() && member.name == DB_PATH && !self.copied {
            let _ = fs::remove_file(&self.dest);
            let mut out = crate::durable::create_new_private(&self.dest).map_err(|source| {
                VerifyError::Io {
                    path: self.dest.clone(),
                    source,
                }
            })?;
            self.copied = true;
            io::copy(member.data, &mut out)
                .and_then(|_| out.flush())
                .map_err(|source| VerifyError::Io {
                    path: self.dest.clone(),
                    source,
                })?;
        }
        Ok(Flow::Continue)
    }
}

/// Whether a scan goes on after a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop reading: the rest of the archive is neither decoded nor hashed.
    Stop,
}

/// One archive member as the scan decodes it. Nothing here has been
/// checked for safety: the path may be absolute or climb out with `..`.
pub struct Member<'a> {
    /// The path as stored.
    pub path: &'a Path,
    /// The path as the manifest spells it.
    pub name: &'a str,
    pub header: &'a tar::Header,
    /// The target of a symlink or hard link.
    pub link_name: Option<&'a Path>,
    /// A regular file's content, hashed as it is read (what the visitor
    /// leaves unread is read and hashed after it returns). Empty for every
    /// other kind of member.
    pub data: &'a mut dyn Read,
}

/// Sees every member of an archive, in order, as [`scan`] decodes it.
pub trait MemberVisitor {
    type Error;
    fn member(&mut self, member: Member<'_>) -> Result<Flow, Self::Error>;
}

/// Why a scan failed: the archive itself, or what the visitor did with it.
#[derive(Debug)]
pub enum ScanError<E> {
    Archive(VerifyError),
    Visitor(E),
}

impl ScanError<VerifyError> {
    pub fn flatten(self) -> VerifyError {
        match self {
            ScanError::Archive(e) | ScanError::Visitor(e) => e,
        }
    }
}

/// What a scan read.
#[derive(Debug)]
pub struct Scan {
    /// sha256 and size of the whole file; `None` if the visitor stopped
    /// the scan before the end.
    pub whole: Option<(String, u64)>,
    /// Manifest name -> sha256 of every regular member read.
    pub members: BTreeMap<String, String>,
    /// The parsed `MANIFEST.sha256`, if the scan reached it.
    pub manifest: Option<BTreeMap<String, String>>,
}

/// What a complete, checked scan proved.
#[derive(Debug, Clone)]
pub struct Checked {
    pub sha256: String,
    pub size: u64,
    /// Regular members matched against the manifest.
    pub files: u64,
}

/// Scans all of `archive` with `visitor`, then checks that the file's
/// sha256 is `expected` and that every regular member matches the
/// manifest, with none missing or extra.
pub fn scan_checked<V: MemberVisitor>(
    archive: &Path,
    expected: &str,
    visitor: &mut V,
) -> Result<Checked, ScanError<V::Error>> {
    scan_checked_with(archive, expected, visitor, &NoProgress)
}

/// [`scan_checked`], reporting the compressed bytes read to `progress`
/// (whose phase the caller starts and finishes).
pub fn scan_checked_with<V: MemberVisitor>(
    archive: &Path,
    expected: &str,
    visitor: &mut V,
    progress: &dyn Progress,
) -> Result<Checked, ScanError<V::Error>> {
    let archive = archive.to_path_buf();
    let scan = match scan_with(&archive, visitor, progress) {
        Ok(scan) => scan,
        // A stream that does not decode is most often a file damaged since
        // it was written: say so if its checksum shows it.
        Err(ScanError::Archive(e)) => {
            return Err(ScanError::Archive(
                match check_whole_file(&archive, expected) {
                    Err(checksum @ VerifyError::Checksum { .. }) => checksum,
                    _ => e,
                },
            ));
        }
        Err(e) => return Err(e),
    };
    let damaged = |detail: String| {
        ScanError::Archive(VerifyError::Damaged {
            path: archive.clone(),
            detail: shown(&detail).into_owned(),
        })
    };
    let Some((sha256, size)) = scan.whole else {
        return Err(damaged("it was not read to its end".to_string()));
    };
    if sha256 != expected {
        return Err(ScanError::Archive(VerifyError::Checksum {
            path: archive,
            expected: expected.to_string(),
            actual: sha256,
        }));
    }
    let manifest = scan
        .manifest
        .ok_or_else(|| damaged(format!("it has no {MANIFEST_PATH}")))?;
    for (path, hash) in &scan.members {
        match manifest.get(path) {
            Some(listed) if listed == hash => {}
            Some(_) => {
                return Err(damaged(format!(
                    "{} does not match {MANIFEST_PATH}",
                    shown(path)
                )));
            }
            None => {
                return Err(damaged(format!(
                    "{} is not listed in {MANIFEST_PATH}",
                    shown(path)
                )));
            }
        }
    }
    if let Some(missing) = manifest.keys().find(|p| !scan.members.contains_key(*p)) {
        return Err(damaged(format!(
            "{} is listed in {MANIFEST_PATH} but missing",
            shown(missing)
        )));
    }
    Ok(Checked {
        sha256,
        size,
        files: scan.members.len() as u64,
    })
}

/// Decodes `archive` once, hashing the whole file and every regular
/// member, and hands each member to `visitor`. Checks nothing against the
/// manifest: see [`scan_checked`].
pub fn scan<V: MemberVisitor>(
    archive: &Path,
    visitor: &mut V,
) -> Result<Scan, ScanError<V::Error>> {
    scan_with(archive, visitor, &NoProgress)
}

/// [`scan`], reporting the compressed bytes read to `progress` (whose
/// phase the caller starts and finishes).
pub fn scan_with<V: MemberVisitor>(
    archive: &Path,
    visitor: &mut V,
    progress: &dyn Progress,
) -> Result<Scan, ScanError<V::Error>> {
    // Details quote the archive's own bytes (a tar error shows the field it
    // could not parse): shown escaped, so one error stays one line.
    let damaged = |detail: String| {
        ScanError::Archive(VerifyError::Damaged {
            path: archive.to_path_buf(),
            detail: shown(&detail).into_owned(),
        })
    };
    let file = File::open(archive).map_err(|source| {
        ScanError::Archive(VerifyError::Io {
            path: archive.to_path_buf(),
            source,
        })
    })?;
    // Progress is best-effort: without a second handle there is none.
    let mut watch = OffsetWatch::new(&file, progress).ok();
    // Decoded on a background thread that also hashes the file, so tar
    // parsing and member hashing here run beside decompression.
    let mut tar = tar::Archive::new(GzReader::new(file));
    let mut members = BTreeMap::new();
    let mut manifest = None;
    let entries = tar.entries().map_err(|e| damaged(e.to_string()))?;
    for entry in entries {
        if let Some(watch) = watch.as_mut() {
            watch.update();
        }
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        let header = entry.header().clone();
        let path = entry
            .path()
            .map_err(|e| damaged(e.to_string()))?
            .into_owned();
        let link_name = entry
            .link_name()
            .map_err(|e| damaged(e.to_string()))?
            .map(|l| l.into_owned());
        let name = path.to_string_lossy().into_owned();
        if !header.entry_type().is_file() {
            let flow = visitor
                .member(Member {
                    path: &path,
                    name: &name,
                    header: &header,
                    link_name: link_name.as_deref(),
                    data: &mut io::empty(),
                })
                .map_err(ScanError::Visitor)?;
            if flow == Flow::Stop {
                return Ok(Scan {
                    whole: None,
                    members,
                    manifest,
                });
            }
            continue;
        }
        if name == MANIFEST_PATH {
            if manifest.is_some() {
                return Err(damaged(format!("{MANIFEST_PATH} appears twice")));
            }
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| damaged(format!("{MANIFEST_PATH}: {e}")))?;
            let parsed = manifest::parse(&text)
                .ok_or_else(|| damaged(format!("{MANIFEST_PATH} is malformed")))?;
            manifest = Some(parsed);
            continue;
        }
        let mut data = TrackedReader::new(HashingReader::new(&mut entry));
        let visited = visitor.member(Member {
            path: &path,
            name: &name,
            header: &header,
            link_name: None,
            data: &mut data,
        });
        // A read failure inside the visitor is the archive's fault (a
        // damaged or truncated stream), not the visitor's.
        if let Some(detail) = data.failure.take() {
            return Err(damaged(format!("{}: {detail}", shown(&name))));
        }
        let flow = visited.map_err(ScanError::Visitor)?;
        io::copy(&mut data, &mut io::sink())
            .map_err(|e| damaged(format!("{}: {e}", shown(&name))))?;
        let (hash, _) = data.inner.finish();
        if members.insert(name.clone(), hash).is_some() {
            return Err(damaged(format!("{} appears twice", shown(&name))));
        }
        if flow == Flow::Stop {
            return Ok(Scan {
                whole: None,
                members,
                manifest,
            });
        }
    }
    // Read the gzip stream to its very end: trailing members must decode
    // and every byte must be hashed.
    let digest = tar
        .into_inner()
        .finish()
        .map_err(|e| damaged(format!("gzip stream: {e}")))?;
    if let Some(watch) = watch.as_mut() {
        watch.update();
    }
    let whole = (digest.sha256, digest.size);
    Ok(Scan {
        whole: Some(whole),
        members,
        manifest,
    })
}

/// Keeps the first read error aside so the scan can tell a damaged
/// archive from a visitor's own failure (such as a full disk).
struct TrackedReader<R> {
    inner: R,
    failure: Option<String>,
}

impl<R> TrackedReader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            failure: None,
        }
    }
}

impl<R: Read> Read for TrackedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted && self.failure.is_none() {
                self.failure = Some(e.to_string());
            }
        })
    }
}
