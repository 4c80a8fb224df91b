//! The archive layout and the writer that produces it: a standard tar.gz
//! whose member paths are relative to `cloud-data/`, ordered so that the
//! database comes first (a database-only restore stops reading early),
//! `inventory.txt` follows the data, and `MANIFEST.sha256` comes last.
//! No two members ever share a name: a tar with two copies of a name
//! restores whichever comes last, so `verify` and `restore` refuse one, and
//! the writer refuses to make one.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::gz::{Content, GzOptions, ParallelGz};
use crate::manifest::{self, CrcWriter, HashingReader, HashingWriter, MANIFEST_PATH};
use crate::reuse::{Basis, Identity, IndexedFile, Member};

/// The database's path inside the archive (and inside `cloud-data/`).
pub const DB_PATH: &str = "data/sound_machine.db";
/// The server identity file's path.
pub const SERVER_ID_PATH: &str = "data/server_id.txt";
/// The system snapshot's path inside the archive.
pub const INVENTORY_PATH: &str = "inventory.txt";
/// Names at the top of `cloud-data/` that every archive writes itself. A
/// file there by that name (what a plain `tar -xzf` of a whole backup into
/// `cloud-data/` leaves) is skipped with a warning: archived, it would be a
/// second member of the same name, and the archive unusable.
pub const RESERVED_TOP: [&str; 2] = [INVENTORY_PATH, MANIFEST_PATH];
/// Files next to the live database that must never be archived raw.
const DB_SIDE_FILES: [&str; 4] = [
    "data/sound_machine.db",
    "data/sound_machine.db-wal",
    "data/sound_machine.db-shm",
    "data/sound_machine.db-journal",
];

/// The parts of `cloud-data/`, in archive order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Section {
    Database,
    ServerId,
    Config,
    Exports,
    Sounds,
    Log,
    Other,
    Inventory,
}

impl Section {
    /// How operators know the section: its path in `cloud-data/`.
    pub fn label(self) -> &'static str {
        match self {
            Section::Database => DB_PATH,
            Section::ServerId => SERVER_ID_PATH,
            Section::Config => "config/",
            Section::Exports => "data/exports/",
            Section::Sounds => "Sounds/uploads/",
            Section::Log => "log/",
            Section::Other => "other",
            Section::Inventory => INVENTORY_PATH,
        }
    }

    /// The section a path relative to `cloud-data/` belongs to.
    pub fn of(rel: &str) -> Section {
        let under = |dir: &str| rel == dir || rel.starts_with(&format!("{dir}/"));
        if rel == DB_PATH {
            Section::Database
        } else if rel == SERVER_ID_PATH {
            Section::ServerId
        } else if under("config") {
            Section::Config
        } else if under("data/exports") {
            Section::Exports
        } else if under("Sounds/uploads") {
            Section::Sounds
        } else if under("log") {
            Section::Log
        } else {
            Section::Other
        }
    }

    fn content(self) -> Content {
        match self {
            Section::Exports | Section::Sounds => Content::Media,
            _ => Content::Dense,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

/// One thing under `cloud-data/` to archive.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to `cloud-data/`, `/`-separated.
    pub rel: String,
    pub path: PathBuf,
    pub kind: EntryKind,
    pub section: Section,
    pub size: u64,
}

/// What a walk of `cloud-data/` found.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    pub warnings: Vec<String>,
}

impl Listing {
    /// Bytes of regular files listed.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

/// Lists everything under `data_dir` except the live database files (the
/// database goes in as a snapshot), sorted into archive order. A file or
/// dir that cannot be read is an error naming it; one deleted while the
/// walk passes is a warning naming it (never a silent omission).
pub fn list(data_dir: &Path) -> Result<Listing, ArchiveError> {
    let mut listing = Listing::default();
    walk(data_dir, "", &mut listing)?;
    listing
        .entries
        .sort_by(|a, b| (a.section, &a.rel).cmp(&(b.section, &b.rel)));
    Ok(listing)
}

fn walk(dir: &Path, prefix: &str, listing: &mut Listing) -> Result<(), ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !prefix.is_empty() => {
            listing.warnings.push(format!(
                "{} vanished during the backup",
                prefix.trim_end_matches('/')
            ));
            return Ok(());
        }
        Err(e) => return Err(read_err(e)),
    };
    let mut names: Vec<_> = entries
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(read_err)?;
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str() else {
            listing.warnings.push(format!(
                "skipped {}: its name is not UTF-8 (rename it to include it)",
                path.display()
            ));
            continue;
        };
        let rel = format!("{prefix}{name}");
        if DB_SIDE_FILES.contains(&rel.as_str()) {
            continue;
        }
        if prefix.is_empty() && RESERVED_TOP.contains(&name) {
            listing.warnings.push(format!(
                "skipped {}: every archive writes its own {name}, so this one is not backed up (a plain `tar -xzf` of a whole backup into cloud-data leaves it; delete it)",
                path.display()
            ));
            continue;
        }
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                listing
                    .warnings
                    .push(format!("{rel} vanished during the backup"));
                continue;
            }
            Err(source) => return Err(ArchiveError::Read { path, source }),
        };
        let file_type = meta.file_type();
        let kind = if file_type.is_file() {
            EntryKind::File
        } else if file_type.is_dir() {
            EntryKind::Dir
        } else if file_type.is_symlink() {
            EntryKind::Symlink
        } else {
            listing.warnings.push(format!(
                "skipped {}: not a regular file, directory or symlink",
                path.display()
            ));
            continue;
        };
        let size = if kind == EntryKind::File {
            meta.len()
        } else {
            0
        };
        listing.entries.push(Entry {
            section: Section::of(&rel),
            rel: rel.clone(),
            path: path.clone(),
            kind,
            size,
        });
        if kind == EntryKind::Dir {
            walk(&path, &format!("{rel}/"), listing)?;
        }
    }
    Ok(())
}

/// Files and bytes archived per section, for the inventory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SectionStats {
    pub files: u64,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write the archive: {0}")]
    Write(#[source] io::Error),
    /// A second member of a name already in the archive: `tar -x` would
    /// keep the last, `verify` and `restore` refuse the whole archive.
    #[error("the archive would hold {0} twice")]
    Duplicate(String),
}

/// The finished archive stream.
#[derive(Debug, Clone)]
pub struct Written {
    pub sha256: String,
    pub size: u64,
    /// CRC-32 of the stream, for the read-back after writing.
    pub crc32: u32,
    /// Regular files in the archive, not counting the manifest itself.
    pub files: u64,
    pub warnings: Vec<String>,
    pub sections: BTreeMap<Section, SectionStats>,
    /// Where each file with members of its own lies, for the next run's
    /// reuse (see [`crate::reuse`]).
    pub indexed: Vec<IndexedFile>,
    /// Files whose members were copied from the previous archive, and
    /// their bytes.
    pub reused_files: u64,
    pub reused_bytes: u64,
}

/// A file with members of its own, until the archive is finished and its
/// members' places are known.
struct Pending {
    path: String,
    identity: Identity,
    sha256: String,
    /// Its units in the gzip writer (members, or one copied run).
    first: u64,
    end: u64,
    /// The members it was copied as, in the previous archive.
    copied: Option<Vec<Member>>,
}

/// Streams tar members through the parallel gzip writer into `W`, hashing
/// each file for the manifest and the whole output for the sidecar.
pub struct ArchiveWriter<W: Write> {
    tar: tar::Builder<ParallelGz<HashingWriter<CrcWriter<W>>>>,
    manifest: String,
    sections: BTreeMap<Section, SectionStats>,
    files: u64,
    warnings: Vec<String>,
    /// Every member name so far, to refuse a second of any.
    names: HashSet<String>,
    /// The last entry had gzip members of its own, so the next one starts
    /// a new member.
    after_own_member: bool,
    /// The previous archive, where unchanged files' members come from.
    basis: Option<Basis>,
    pending: Vec<Pending>,
    /// The pending file whose last unit is not known yet.
    open_own: Option<usize>,
    reused_files: u64,
    reused_bytes: u64,
}

/// A file at least this big starts a gzip member of its own and ends it
/// (cut at fixed offsets from its header when it is bigger than a chunk),
/// so its members are the same bytes in every backup it is unchanged in.
pub const OWN_MEMBER_MIN: u64 = 256 << 10;
/// Smaller entries share members in groups: an entry starts a new group
/// when its path's hash says so (one in this many), never because of what
/// came before it, so an added or changed file changes its own group only.
const GROUP_ANCHOR_EVERY: u64 = 16;

/// FNV-1a of a member path: stable across runs, builds and machines (std's
/// hasher promises none of that).
fn path_hash(rel: &str) -> u64 {
    rel.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl<W: Write> ArchiveWriter<W> {
    pub fn new(out: W, gz: GzOptions) -> Self {
        let mut tar =
            tar::Builder::new(ParallelGz::new(HashingWriter::new(CrcWriter::new(out)), gz));
        tar.follow_symlinks(false);
        Self {
            tar,
            manifest: String::new(),
            sections: BTreeMap::new(),
            files: 0,
            warnings: Vec::new(),
            names: HashSet::new(),
            after_own_member: false,
            basis: None,
            pending: Vec::new(),
            open_own: None,
            reused_files: 0,
            reused_bytes: 0,
        }
    }

    /// Copies the members of files unchanged since `basis` was made from it
    /// instead of compressing them again.
    pub fn reuse_from(mut self, basis: Basis) -> Self {
        self.basis = Some(basis);
        self
    }

    /// Decides, before `rel`'s header is written, whether it starts a gzip
    /// member: files of [`OWN_MEMBER_MIN`] or more do, and so does what
    /// follows them; a smaller entry does when its path anchors a group.
    /// Members then follow files, whatever else the backup holds.
    fn member_boundary(&mut self, rel: &str, own: bool) -> Result<(), ArchiveError> {
        let anchor =
            own || self.after_own_member || path_hash(rel).is_multiple_of(GROUP_ANCHOR_EVERY);
        self.after_own_member = own;
        if anchor {
            let gz = self.tar.get_mut();
            gz.end_member().map_err(ArchiveError::Write)?;
            if let Some(open) = self.open_own.take() {
                self.pending[open].end = gz.units();
            }
        }
        Ok(())
    }

    /// Claims `rel` for one member; a name already taken is an error, so
    /// no archive ever holds two members of one name.
    fn claim(&mut self, rel: &str) -> Result<(), ArchiveError> {
        if self.names.insert(rel.to_string()) {
            Ok(())
        } else {
            Err(ArchiveError::Duplicate(rel.to_string()))
        }
    }

    /// Warnings so far (vanished or changing files).
    pub fn warn(&mut self, warning: String) {
        tracing::warn!("{warning}");
        self.warnings.push(warning);
    }

    pub fn sections(&self) -> &BTreeMap<Section, SectionStats> {
        &self.sections
    }

    /// Adds one listed entry. A file that vanished since the listing is a
    /// warning; one that cannot be read is an error.
    pub fn add_entry(&mut self, entry: &Entry) -> Result<(), ArchiveError> {
        let read_err = |source| ArchiveError::Read {
            path: entry.path.clone(),
            source,
        };
        let meta = match fs::symlink_metadata(&entry.path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{} vanished during the backup", entry.rel));
                return Ok(());
            }
            Err(e) => return Err(read_err(e)),
        };
        match entry.kind {
            EntryKind::File => self.add_file(entry.section, &entry.rel, &entry.path, &meta),
            EntryKind::Dir => {
                self.claim(&entry.rel)?;
                self.member_boundary(&entry.rel, false)?;
                let mut header = header_for(&meta);
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                self.tar
                    .append_data(&mut header, &entry.rel, io::empty())
                    .map_err(ArchiveError::Write)
            }
            EntryKind::Symlink => {
                let target = fs::read_link(&entry.path).map_err(read_err)?;
                self.claim(&entry.rel)?;
                self.member_boundary(&entry.rel, false)?;
                let mut header = header_for(&meta);
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                self.tar
                    .append_link(&mut header, &entry.rel, target)
                    .map_err(ArchiveError::Write)
            }
        }
    }

    /// Adds the file at `disk` as `rel`, with the mode, owner and mtime of
    /// `meta` (which may describe another file: the database snapshot goes
    /// in with the live database's metadata).
    pub fn add_file(
        &mut self,
        section: Section,
        rel: &str,
        disk: &Path,
        meta: &Metadata,
    ) -> Result<(), ArchiveError> {
        let read_err = |source| ArchiveError::Read {
            path: disk.to_path_buf(),
            source,
        };
        let file = match File::open(disk) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{rel} vanished during the backup"));
                return Ok(());
            }
            Err(e) => return Err(read_err(e)),
        };
        let before = file.metadata().map_err(read_err)?;
        self.claim(rel)?;
        let size = before.len();
        let mut header = header_for(meta);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(size);
        self.tar
            .get_mut()
            .set_content(section.content())
            .map_err(ArchiveError::Write)?;
        let own = size >= OWN_MEMBER_MIN;
        self.member_boundary(rel, own)?;
        let identity = Identity::of(&before);
        // The database goes in as a snapshot with the live file's metadata:
        // never the same bytes twice, never reused.
        let unchanged = own && section != Section::Database && Identity::of(meta) == identity;
        if let Some(reusable) = self
            .basis
            .as_ref()
            .filter(|_| unchanged)
            .and_then(|basis| basis.take(rel, &identity))
        {
            let gz = self.tar.get_mut();
            let first = gz.units();
            gz.copy_members(reusable.file, reusable.offset, reusable.len)
                .map_err(ArchiveError::Write)?;
            self.pending.push(Pending {
                path: rel.to_string(),
                identity,
                sha256: reusable.sha256.clone(),
                first,
                end: first + 1,
                copied: Some(reusable.members),
            });
            self.reused_files += 1;
            self.reused_bytes += size;
            self.record(section, rel, &reusable.sha256, size);
            return Ok(());
        }
        let read_at = std::time::SystemTime::now();
        let first_unit = self.tar.get_mut().units();
        let mut reader = HashingReader::new(ExactReader::new(file, size));
        let appended = self.tar.append_data(
            &mut header,
            rel,
            BufReader::with_capacity(1 << 20, &mut reader),
        );
        let exact = reader.inner_mut();
        if let Some(e) = exact.failure.take() {
            return Err(read_err(e));
        }
        appended.map_err(ArchiveError::Write)?;
        let mut steady = false;
        if exact.short {
            self.warn(format!(
                "{rel} shrank while being read; the missing tail was archived as zeros"
            ));
        } else if changed_since(disk, size, &before) {
            self.warn(format!("{rel} changed while being read"));
        } else {
            steady = true;
        }
        let (hash, _) = reader.finish();
        // Indexed for the next run only if what was archived is what the
        // identity describes: read whole and unchanged, and not so recently
        // changed that a write could hide in the same timestamp.
        if unchanged && steady && !identity.is_recent(read_at) {
            self.open_own = Some(self.pending.len());
            self.pending.push(Pending {
                path: rel.to_string(),
                identity,
                sha256: hash.clone(),
                first: first_unit,
                end: first_unit,
                copied: None,
            });
        }
        self.record(section, rel, &hash, size);
        Ok(())
    }

    /// Adds generated bytes (the inventory) as a regular file.
    pub fn add_bytes(
        &mut self,
        section: Section,
        rel: &str,
        bytes: &[u8],
    ) -> Result<(), ArchiveError> {
        self.claim(rel)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_mtime(now_unix());
        header.set_size(bytes.len() as u64);
        self.tar
            .get_mut()
            .set_content(Content::Dense)
            .map_err(ArchiveError::Write)?;
        self.member_boundary(rel, bytes.len() as u64 >= OWN_MEMBER_MIN)?;
        self.tar
            .append_data(&mut header, rel, bytes)
            .map_err(ArchiveError::Write)?;
        let (hash, _) = manifest::sha256_of(bytes).map_err(ArchiveError::Write)?;
        self.record(section, rel, &hash, bytes.len() as u64);
        Ok(())
    }

    fn record(&mut self, section: Section, rel: &str, hash: &str, size: u64) {
        self.manifest.push_str(&manifest::sha256sum_line(hash, rel));
        let stats = self.sections.entry(section).or_default();
        stats.files += 1;
        stats.bytes += size;
        self.files += 1;
    }

    /// Appends `MANIFEST.sha256`, ends the tar stream and the gzip stream,
    /// and returns the output writer with the archive's facts.
    pub fn finish(mut self) -> Result<(W, Written), ArchiveError> {
        self.claim(MANIFEST_PATH)?;
        // A file with members of its own ends its last one before the
        // manifest (a real run always has the inventory in between).
        if self.after_own_member {
            self.member_boundary(MANIFEST_PATH, false)?;
        }
        let manifest = std::mem::take(&mut self.manifest);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o600);
        header.set_mtime(now_unix());
        header.set_size(manifest.len() as u64);
        self.tar
            .append_data(&mut header, MANIFEST_PATH, manifest.as_bytes())
            .map_err(ArchiveError::Write)?;
        let gz = self.tar.into_inner().map_err(ArchiveError::Write)?;
        let (hashing, spans) = gz.finish_with_spans().map_err(ArchiveError::Write)?;
        let indexed = index_entries(std::mem::take(&mut self.pending), &spans);
        let (crc, sha256, size) = hashing.finish();
        let (out, crc32) = crc.finish();
        Ok((
            out,
            Written {
                sha256,
                size,
                crc32,
                files: self.files,
                warnings: self.warnings,
                sections: self.sections,
                indexed,
                reused_files: self.reused_files,
                reused_bytes: self.reused_bytes,
            },
        ))
    }
}

/// Each pending file with the places of its members in this archive: the
/// members compressed here, or the copied ones moved to where the copy
/// went. A file whose units are not all known is left out.
fn index_entries(pending: Vec<Pending>, spans: &[crate::gz::Span]) -> Vec<IndexedFile> {
    let unit = |seq: u64| usize::try_from(seq).ok().and_then(|i| spans.get(i));
    pending
        .into_iter()
        .filter_map(|p| {
            let members = match p.copied {
                Some(copied) => {
                    let to = unit(p.first)?.offset;
                    let from = copied.first()?.offset;
                    copied
                        .into_iter()
                        .map(|m| Member {
                            offset: m.offset - from + to,
                            ..m
                        })
                        .collect()
                }
                None => (p.first..p.end)
                    .map(|seq| {
                        let span = unit(seq)?;
                        let (crc32, isize) = span.trailer?;
                        Some(Member {
                            offset: span.offset,
                            len: span.len,
                            crc32,
                            isize,
                        })
                    })
                    .collect::<Option<Vec<_>>>()?,
            };
            (!members.is_empty()).then_some(IndexedFile {
                path: p.path,
                identity: p.identity,
                sha256: p.sha256,
                members,
            })
        })
        .collect()
}

fn header_for(meta: &Metadata) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    header
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn changed_since(path: &Path, size: u64, before: &Metadata) -> bool {
    match fs::metadata(path) {
        Ok(after) => {
            after.len() != size
                || after.mtime() != before.mtime()
                || after.mtime_nsec() != before.mtime_nsec()
        }
        Err(_) => true,
    }
}

/// Reads exactly `len` bytes, the size already written into the tar
/// header: a file that shrinks mid-read is padded with zeros (and flagged),
/// one that grows is cut, so the tar stream always stays well-formed. A read
/// error is kept aside so it can be reported as the file's fault, not the
/// archive's.
struct ExactReader {
    file: File,
    left: u64,
    short: bool,
    failure: Option<io::Error>,
}

impl ExactReader {
    fn new(file: File, len: u64) -> Self {
        Self {
            file,
            left: len,
            short: false,
            failure: None,
        }
    }
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        // Not kept as the file's failure: an interruption is nobody's fault.
        crate::interrupt::check()?;
        let n = if self.short {
            0
        } else {
            match self.file.read(&mut buf[..want]) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
                Err(e) => {
                    let msg = e.to_string();
                    self.failure = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_member_of_any_name_is_refused() {
        let mut writer = ArchiveWriter::new(Vec::new(), GzOptions::default());
        writer
            .add_bytes(Section::Inventory, INVENTORY_PATH, b"one")
            .unwrap();
        let err = writer
            .add_bytes(Section::Inventory, INVENTORY_PATH, b"two")
            .unwrap_err();
        assert!(
            matches!(&err, ArchiveError::Duplicate(name) if name == INVENTORY_PATH),
            "{err}"
        );
        // The manifest's own name is claimed like any other.
        let mut writer = ArchiveWriter::new(Vec::new(), GzOptions::default());
        writer
            .add_bytes(Section::Other, MANIFEST_PATH, b"forged")
            .unwrap();
        assert!(matches!(
            writer.finish(),
            Err(ArchiveError::Duplicate(name)) if name == MANIFEST_PATH
        ));
    }

    #[test]
    fn reserved_names_are_skipped_only_at_the_top_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        for rel in [
            INVENTORY_PATH,
            MANIFEST_PATH,
            "config/inventory.txt",
            "config/MANIFEST.sha256",
        ] {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, rel).unwrap();
        }
        let listing = list(dir.path()).unwrap();
        let rels: Vec<&str> = listing.entries.iter().map(|e| e.rel.as_str()).collect();
        assert_eq!(
            rels,
            ["config", "config/MANIFEST.sha256", "config/inventory.txt"]
        );
        assert_eq!(listing.warnings.len(), 2, "{:?}", listing.warnings);
        for (warning, name) in listing.warnings.iter().zip([MANIFEST_PATH, INVENTORY_PATH]) {
            assert!(
                warning.starts_with(&format!(
                    "skipped {}: every archive writes its own {name}",
                    dir.path().join(name).display()
                )),
                "{warning}"
            );
        }
    }
}
