//! Proof that an archive is whole and right before anyone relies on it:
//! the file matches its sidecar's sha256, the gzip stream decodes to the
//! end, every member matches `MANIFEST.sha256` (and nothing is missing or
//! extra), and the database inside passes `PRAGMA integrity_check`. All in
//! one streaming pass.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::archive::DB_PATH;
use crate::manifest::{self, HashingReader, MANIFEST_PATH};
use crate::name::SIDECAR_SUFFIX;
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

/// The sidecar path of an archive path.
pub fn sidecar_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(SIDECAR_SUFFIX);
    PathBuf::from(name)
}

/// Reads the expected sha256 from the sidecar next to `archive`.
pub fn read_sidecar(archive: &Path) -> Result<String, VerifyError> {
    let path = sidecar_path(archive);
    let text = fs::read_to_string(&path).map_err(|e| VerifyError::Sidecar {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let file_name = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parsed = manifest::parse(&text).ok_or_else(|| VerifyError::Sidecar {
        path: path.clone(),
        reason: "not in sha256sum format".to_string(),
    })?;
    parsed
        .get(&file_name)
        .cloned()
        .ok_or_else(|| VerifyError::Sidecar {
            path,
            reason: format!("it has no line for {file_name}"),
        })
}

/// Verifies `archive` fully; `scratch` is a private directory for the
/// database copy that `integrity_check` needs.
pub fn verify(archive: &Path, scratch: &Path) -> Result<Verified, VerifyError> {
    let archive = fs::canonicalize(archive).map_err(|source| VerifyError::Io {
        path: archive.to_path_buf(),
        source,
    })?;
    let expected = read_sidecar(&archive)?;
    verify_against(&archive, &expected, scratch)
}

/// Verifies `archive` against an expected sha256 (the sidecar's, or the
/// one computed while writing it).
pub fn verify_against(
    archive: &Path,
    expected: &str,
    scratch: &Path,
) -> Result<Verified, VerifyError> {
    let archive = archive.to_path_buf();
    let expected = expected.to_string();
    let scan = match scan(&archive, scratch) {
        Ok(scan) => scan,
        // A stream that does not decode is most often a file damaged since
        // it was written: say so if its checksum shows it.
        Err(e) => {
            let actual = File::open(&archive).and_then(manifest::sha256_of);
            return Err(match actual {
                Ok((actual, _)) if actual != expected => VerifyError::Checksum {
                    path: archive,
                    expected,
                    actual,
                },
                _ => e,
            });
        }
    };
    if scan.sha256 != expected {
        return Err(VerifyError::Checksum {
            path: archive,
            expected,
            actual: scan.sha256,
        });
    }
    let damaged = |detail: String| VerifyError::Damaged {
        path: archive.clone(),
        detail,
    };
    let manifest = scan
        .manifest
        .ok_or_else(|| damaged(format!("it has no {MANIFEST_PATH}")))?;
    for (path, hash) in &scan.members {
        match manifest.get(path) {
            Some(listed) if listed == hash => {}
            Some(_) => return Err(damaged(format!("{path} does not match {MANIFEST_PATH}"))),
            None => return Err(damaged(format!("{path} is not listed in {MANIFEST_PATH}"))),
        }
    }
    if let Some(missing) = manifest.keys().find(|p| !scan.members.contains_key(*p)) {
        return Err(damaged(format!(
            "{missing} is listed in {MANIFEST_PATH} but missing"
        )));
    }
    let db_copy = scan
        .db_copy
        .ok_or_else(|| damaged(format!("it has no {DB_PATH}")))?;
    let db = snapshot::check_file(&db_copy);
    let _ = fs::remove_file(&db_copy);
    let db = db.map_err(|detail| VerifyError::Database {
        path: archive.clone(),
        detail,
    })?;
    Ok(Verified {
        archive,
        sha256: scan.sha256,
        size: scan.size,
        files: scan.members.len() as u64,
        db,
    })
}

struct Scan {
    sha256: String,
    size: u64,
    members: BTreeMap<String, String>,
    manifest: Option<BTreeMap<String, String>>,
    db_copy: Option<PathBuf>,
}

fn scan(archive: &Path, scratch: &Path) -> Result<Scan, VerifyError> {
    let io_err = |source| VerifyError::Io {
        path: archive.to_path_buf(),
        source,
    };
    let damaged = |detail: String| VerifyError::Damaged {
        path: archive.to_path_buf(),
        detail,
    };
    let file = File::open(archive).map_err(io_err)?;
    let hashing = HashingReader::new(file);
    let gz = MultiGzDecoder::new(BufReader::with_capacity(1 << 20, hashing));
    let mut tar = tar::Archive::new(gz);
    let mut members = BTreeMap::new();
    let mut manifest = None;
    let mut db_copy = None;
    let entries = tar.entries().map_err(|e| damaged(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| damaged(e.to_string()))?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| damaged(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        if path == MANIFEST_PATH {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| damaged(format!("{MANIFEST_PATH}: {e}")))?;
            let parsed = manifest::parse(&text)
                .ok_or_else(|| damaged(format!("{MANIFEST_PATH} is malformed")))?;
            manifest = Some(parsed);
            continue;
        }
        let hash = if path == DB_PATH && db_copy.is_none() {
            let dest = scratch.join(format!("verify-{}.db", std::process::id()));
            let hash =
                copy_hashing(&mut entry, &dest).map_err(|e| damaged(format!("{path}: {e}")))?;
            db_copy = Some(dest);
            hash
        } else {
            manifest::sha256_of(&mut entry)
                .map_err(|e| damaged(format!("{path}: {e}")))?
                .0
        };
        if members.insert(path.clone(), hash).is_some() {
            return Err(damaged(format!("{path} appears twice")));
        }
    }
    // Read the gzip stream to its very end: trailing members must decode
    // and every byte must be hashed.
    let mut gz = tar.into_inner();
    io::copy(&mut gz, &mut io::sink()).map_err(|e| damaged(format!("gzip stream: {e}")))?;
    let (sha256, size) = gz.into_inner().into_inner().finish();
    Ok(Scan {
        sha256,
        size,
        members,
        manifest,
        db_copy,
    })
}

fn copy_hashing(reader: &mut impl Read, dest: &Path) -> io::Result<String> {
    let _ = fs::remove_file(dest);
    let mut out = crate::durable::create_new_private(dest)?;
    let mut hashing = HashingReader::new(reader);
    io::copy(&mut hashing, &mut out)?;
    out.flush()?;
    Ok(hashing.finish().0)
}
