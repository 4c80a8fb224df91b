//! The conformance suite every [`Target`] must pass, whatever it stores
//! backups on: the promises the run, retention and restore rely on,
//! written once instead of once per target (they had drifted: each target
//! crate's tests checked a different subset). A target's own tests keep
//! what only that target has (FAT's file size limit, stick labels, a
//! server that goes away mid-upload).
//!
//! Each behaviour is a function taking the target and a [`Place`]: the
//! same storage seen from outside the target (the directory, the remote
//! directory through the local filesystem, the bucket through signed
//! requests), so that the suite can plant files a target did not write,
//! damage a stored copy, and see what a target really left, without
//! trusting the target's own `list`. Each function expects a target whose
//! place is empty and its own. Built only with the `testkit` feature, for
//! the tests of the binary, which has every real target.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempDir;

use crate::backup::deliver_to;
use crate::durable;
use crate::manifest;
use crate::name::ArtifactName;
use crate::retention::RetentionPolicy;
use crate::target::{Artifact, Target, TargetError};

/// A target's storage seen from outside the target.
pub trait Place {
    /// Stores `bytes` as `path` (relative, `/`-separated, maybe in a
    /// subdirectory), replacing what is there, without the target.
    fn write(&self, path: &str, bytes: &[u8]);
    /// Every file (object) stored under the place, in subdirectories too,
    /// by relative path, with its bytes.
    fn files(&self) -> BTreeMap<String, Vec<u8>>;
}

/// Backups made on local disk for the suite to put: real names and
/// sidecars, bytes that are not a tar.gz (targets never look inside).
pub struct Backups {
    dir: TempDir,
}

impl Default for Backups {
    fn default() -> Self {
        Self::new()
    }
}

impl Backups {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("a temp dir for the suite's backups"),
        }
    }

    /// A backup named `name` of `len` bytes (every byte value, in an order
    /// that depends on the name, so two backups never share their bytes).
    pub fn make(&self, name: &ArtifactName, len: usize) -> Artifact {
        let file_name = name.file_name();
        let seed = file_name.bytes().fold(7u8, |s, b| s.wrapping_mul(31) ^ b);
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(167).wrapping_add(seed) ^ (i >> 8) as u8)
            .collect();
        let archive = self.dir.path().join(&file_name);
        let sidecar = self.dir.path().join(name.sidecar_name());
        // Private, as the run makes them (some targets carry the mode over).
        let write = |path: &Path, bytes: &[u8]| {
            durable::create_new_private(path)
                .and_then(|mut f| f.write_all(bytes))
                .expect("writing a suite backup")
        };
        write(&archive, &bytes);
        let (sha256, size) = manifest::sha256_of(bytes.as_slice()).expect("hashing");
        write(
            &sidecar,
            manifest::sha256sum_line(&sha256, &file_name).as_bytes(),
        );
        Artifact {
            name: name.clone(),
            archive,
            sidecar,
            sha256,
            size,
        }
    }

    /// `n` backups a day apart from 2026-01-01 (the n-th encrypted when
    /// `last_encrypted`), oldest first.
    pub fn series(&self, n: usize, last_encrypted: bool) -> Vec<Artifact> {
        (0..n)
            .map(|i| {
                let name = stamp(&format!("2026-01-{:02}_031500", i + 1));
                let name = if last_encrypted && i + 1 == n {
                    name.encrypted()
                } else {
                    name
                };
                self.make(&name, 70_000 + 1_000 * i)
            })
            .collect()
    }
}

/// The backup name of timestamp `ts` (`YYYY-MM-DD_HHMMSS`).
pub fn stamp(ts: &str) -> ArtifactName {
    ArtifactName::parse(&format!("mss-backup-{ts}.tar.gz")).expect("a valid backup timestamp")
}

fn names(artifacts: &[Artifact]) -> Vec<ArtifactName> {
    let mut names: Vec<ArtifactName> = artifacts.iter().map(|a| a.name.clone()).collect();
    names.sort();
    names
}

/// The files a complete backup is stored as.
fn stored(artifact: &Artifact) -> [(String, Vec<u8>); 2] {
    let read = |p: &Path| fs::read(p).expect("reading a suite backup");
    [
        (artifact.name.file_name(), read(&artifact.archive)),
        (artifact.name.sidecar_name(), read(&artifact.sidecar)),
    ]
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("reading a destination dir")
        .map(|e| {
            e.expect("a dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn put(target: &dyn Target, artifact: &Artifact) {
    target
        .put(artifact)
        .unwrap_or_else(|e| panic!("{}: putting {}: {e}", target.name(), artifact.name));
}

fn list(target: &dyn Target) -> Vec<ArtifactName> {
    target
        .list()
        .unwrap_or_else(|e| panic!("{}: listing: {e}", target.name()))
}

/// Asserts a `get` of `artifact` into a fresh dir brings exactly its
/// archive and sidecar, byte for byte, private to the owner.
fn assert_gets(target: &dyn Target, artifact: &Artifact) {
    let dest = tempfile::tempdir().expect("a temp dir");
    let got = target
        .get(&artifact.name, dest.path())
        .unwrap_or_else(|e| panic!("{}: getting {}: {e}", target.name(), artifact.name));
    let file_name = artifact.name.file_name();
    assert_eq!(got, dest.path().join(&file_name), "{}", target.name());
    let mut expected = vec![file_name, artifact.name.sidecar_name()];
    expected.sort();
    assert_eq!(
        dir_entries(dest.path()),
        expected,
        "{}: nothing else",
        target.name()
    );
    for (file, bytes) in stored(artifact) {
        let path = dest.path().join(&file);
        assert!(
            fs::read(&path).expect("reading a fetched file") == bytes,
            "{}: {file} differs from what was put",
            target.name()
        );
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}: {file} is private", target.name());
    }
}

/// Asserts `get` of `name` fails as `expected` says and leaves `dest`
/// (a dir of its own) empty.
fn assert_get_refused(
    target: &dyn Target,
    name: &ArtifactName,
    expected: fn(&TargetError) -> bool,
    what: &str,
) -> TargetError {
    let dest = tempfile::tempdir().expect("a temp dir");
    let err = match target.get(name, dest.path()) {
        Ok(path) => panic!("{}: {what}: get brought {}", target.name(), path.display()),
        Err(e) => e,
    };
    assert!(
        expected(&err),
        "{}: {what}: wrong error: {err:?}",
        target.name()
    );
    assert!(
        dir_entries(dest.path()).is_empty(),
        "{}: {what}: get left {:?}",
        target.name(),
        dir_entries(dest.path())
    );
    err
}

fn is_not_found(e: &TargetError) -> bool {
    matches!(e, TargetError::NotFound { .. })
}

fn is_integrity(e: &TargetError) -> bool {
    matches!(e, TargetError::Integrity { .. })
}

/// Put, list, get and delete: what goes in comes back byte for byte
/// (plain and encrypted names alike), `list` shows exactly the complete
/// backups, a second put of one is harmless, and `delete` leaves nothing
/// of a backup behind, not even a temp file.
pub fn round_trip(target: &dyn Target, place: &dyn Place) {
    assert!(
        place.files().is_empty(),
        "{}: the place is not empty",
        target.name()
    );
    target
        .preflight()
        .unwrap_or_else(|e| panic!("{}: preflight: {e}", target.name()));
    assert!(list(target).is_empty(), "{}", target.name());
    let backups = Backups::new();
    let series = backups.series(2, true);
    for artifact in &series {
        put(target, artifact);
    }
    assert_eq!(list(target), names(&series), "{}", target.name());
    let expected: BTreeMap<String, Vec<u8>> = series.iter().flat_map(stored).collect();
    assert!(
        place.files() == expected,
        "{}: stored {:?}, expected exactly the archives and sidecars",
        target.name(),
        place.files().keys().collect::<Vec<_>>()
    );
    for artifact in &series {
        assert_gets(target, artifact);
    }
    // Putting a backup that is there already (`copy` run twice) changes
    // nothing and leaves no temp file.
    put(target, &series[0]);
    assert_eq!(list(target), names(&series), "{}", target.name());
    assert!(
        place.files() == expected,
        "{}: a second put changed the place",
        target.name()
    );
    for (i, artifact) in series.iter().enumerate() {
        target
            .delete(&artifact.name)
            .unwrap_or_else(|e| panic!("{}: deleting {}: {e}", target.name(), artifact.name));
        assert_eq!(list(target), names(&series[i + 1..]), "{}", target.name());
    }
    assert!(
        place.files().is_empty(),
        "{}: delete left {:?}",
        target.name(),
        place.files().keys().collect::<Vec<_>>()
    );
}

/// A name that is not there: `get` is [`TargetError::NotFound`] and leaves
/// nothing; `delete` succeeds or is `NotFound` (deleting is idempotent on
/// every target so far: S3 and `rm -f` are), and touches nothing else.
pub fn unknown_names(target: &dyn Target, place: &dyn Place) {
    let backups = Backups::new();
    let kept = backups.make(&stamp("2026-02-01_031500"), 5_000);
    target
        .preflight()
        .unwrap_or_else(|e| panic!("{}: preflight: {e}", target.name()));
    put(target, &kept);
    let before = place.files();
    for unknown in [
        stamp("2020-01-01_000000"),
        kept.name.next_second(),
        kept.name.encrypted(),
    ] {
        assert_get_refused(target, &unknown, is_not_found, "get of an unknown name");
        match target.delete(&unknown) {
            Ok(()) | Err(TargetError::NotFound { .. }) => {}
            Err(e) => panic!("{}: deleting unknown {unknown}: {e}", target.name()),
        }
        assert!(
            place.files() == before,
            "{}: deleting {unknown} changed the place",
            target.name()
        );
    }
    assert_eq!(list(target), vec![kept.name.clone()], "{}", target.name());
}

/// Half a backup is not a backup: an archive without its sidecar, a lone
/// sidecar and a hidden leftover are never listed, and `get` of them is
/// `NotFound` with nothing left in the destination.
pub fn incomplete_backups_are_not_listed(target: &dyn Target, place: &dyn Place) {
    let backups = Backups::new();
    let sidecarless = backups.make(&stamp("2026-03-01_031500"), 4_000);
    let lone_sidecar = backups.make(&stamp("2026-03-02_031500"), 4_000);
    let [(archive, archive_bytes), _] = stored(&sidecarless);
    place.write(&archive, &archive_bytes);
    let [_, (sidecar, sidecar_bytes)] = stored(&lone_sidecar);
    place.write(&sidecar, &sidecar_bytes);
    place.write(&format!(".{archive}.partial"), &archive_bytes);
    place.write(&format!(".{archive}.Xy12Ab"), &archive_bytes);
    target
        .preflight()
        .unwrap_or_else(|e| panic!("{}: preflight: {e}", target.name()));
    assert!(
        list(target).is_empty(),
        "{}: listed {:?}",
        target.name(),
        list(target)
    );
    for half in [&sidecarless.name, &lone_sidecar.name] {
        assert_get_refused(target, half, is_not_found, "get of half a backup");
    }
}

/// What is not ours by name, and what belongs to another machine (the
/// `neighbour` place: a sibling directory or prefix), is never listed,
/// and retention, through the one delivery path, never deletes or
/// changes it; it deletes only our oldest complete backups.
pub fn foreign_files_survive_retention(
    target: &dyn Target,
    place: &dyn Place,
    neighbour: &dyn Place,
) {
    let backups = Backups::new();
    let complete = |name: &str| {
        let artifact = backups.make(&stamp(name), 3_000);
        stored(&artifact)
    };
    let mut foreign: BTreeMap<String, Vec<u8>> = [
        "notes.txt",
        "mss-backup-foreign.tar.gz",
        "mss-backup-manual-copy.tar.gz",
        "mss-backup-2000-01-01_000000.tar.gz.bak",
        "mss-backup-latest.tar.gz",
        "MSS-BACKUP-2000-01-01_000000.TAR.GZ",
        // Named like ours, without a sidecar: not a complete backup.
        "mss-backup-2000-01-02_000000.tar.gz",
        // An rsync temp name.
        ".mss-backup-2000-01-03_000000.tar.gz.Xy12Ab",
    ]
    .into_iter()
    .map(|n| (n.to_string(), format!("not ours: {n}\n").into_bytes()))
    .collect();
    // A complete backup in a subdirectory is not one of this place's.
    for (file, bytes) in complete("2000-01-04_000000") {
        foreign.insert(format!("sub/{file}"), bytes);
    }
    let theirs: BTreeMap<String, Vec<u8>> = complete("2000-01-05_000000").into_iter().collect();
    for (path, bytes) in &foreign {
        place.write(path, bytes);
    }
    for (path, bytes) in &theirs {
        neighbour.write(path, bytes);
    }
    let neighbour_before = neighbour.files();
    // One complete old backup of ours: the first retention deletes.
    let old = backups.make(&stamp("2000-01-06_000000"), 3_000);
    for (path, bytes) in stored(&old) {
        place.write(&path, &bytes);
    }
    assert_eq!(list(target), vec![old.name.clone()], "{}", target.name());

    let series = backups.series(3, true);
    let policy = RetentionPolicy { keep: 2 };
    let mut deleted = Vec::new();
    for artifact in &series {
        let delivered = deliver_to(target, policy, artifact, &[], None)
            .unwrap_or_else(|e| panic!("{}: delivering {}: {e}", target.name(), artifact.name));
        deleted.extend(delivered.deleted);
    }
    assert_eq!(
        deleted,
        vec![old.name.clone(), series[0].name.clone()],
        "{}: retention deleted only our oldest",
        target.name()
    );
    assert_eq!(list(target), names(&series[1..]), "{}", target.name());
    let mut expected = foreign;
    expected.extend(series[1..].iter().flat_map(stored));
    let files = place.files();
    assert!(
        files == expected,
        "{}: the place holds {:?}, expected {:?}",
        target.name(),
        files.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert!(
        neighbour.files() == neighbour_before,
        "{}: another machine's backups were touched",
        target.name()
    );
}

/// A put that fails part-way, because the archive or the sidecar cannot
/// be read (gone from the local disk when its turn came), leaves nothing
/// under the backup's name, nor any temp file, and no earlier backup is
/// touched.
pub fn failed_put_leaves_nothing(target: &dyn Target, place: &dyn Place) {
    let backups = Backups::new();
    let earlier = backups.make(&stamp("2026-04-01_031500"), 6_000);
    target
        .preflight()
        .unwrap_or_else(|e| panic!("{}: preflight: {e}", target.name()));
    put(target, &earlier);
    let before = place.files();
    for (i, archive_gone) in [true, false].into_iter().enumerate() {
        let artifact = backups.make(&stamp(&format!("2026-04-0{}_031500", i + 2)), 90_000);
        let (what, path) = if archive_gone {
            ("the archive", &artifact.archive)
        } else {
            ("the sidecar", &artifact.sidecar)
        };
        fs::remove_file(path).expect("removing a suite file");
        match target.put(&artifact) {
            Ok(()) => panic!("{}: a put without {what} succeeded", target.name()),
            Err(TargetError::Failed { .. } | TargetError::Integrity { .. }) => {}
            Err(e) => panic!(
                "{}: a put without {what}: unexpected error {e:?}",
                target.name()
            ),
        }
        let files = place.files();
        assert!(
            files == before,
            "{}: a put without {what} left {:?}",
            target.name(),
            files
                .keys()
                .filter(|k| !before.contains_key(*k))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            list(target),
            vec![earlier.name.clone()],
            "{}",
            target.name()
        );
    }
}

/// A put after a stop signal (Ctrl-C, `systemctl stop`) came stops and
/// leaves nothing under the backup's name. The signal is recorded for
/// good in this process: run this alone in a test process of its own
/// (nextest runs each test in one), and nothing after it.
pub fn interrupted_put_leaves_nothing(target: &dyn Target, place: &dyn Place) {
    let backups = Backups::new();
    let artifact = backups.make(&stamp("2026-05-01_031500"), 90_000);
    target
        .preflight()
        .unwrap_or_else(|e| panic!("{}: preflight: {e}", target.name()));
    let before = place.files();
    crate::interrupt::install().expect("installing the signal handler");
    // SAFETY: raise only sends SIGINT to this process, whose handler,
    // installed above, only records it.
    assert_eq!(unsafe { libc::raise(libc::SIGINT) }, 0);
    assert!(crate::interrupt::received().is_some());
    if target.put(&artifact).is_ok() {
        panic!("{}: a put after a stop signal succeeded", target.name());
    }
    let files = place.files();
    assert!(
        files == before,
        "{}: an interrupted put left {:?}",
        target.name(),
        files.keys().collect::<Vec<_>>()
    );
}

/// A stored copy that no longer matches its sidecar (the archive rotted
/// or was cut short, or the sidecar changed) is refused by `get` as
/// [`TargetError::Integrity`], and nothing is left in the destination.
pub fn damaged_copies_are_refused(target: &dyn Target, place: &dyn Place) {
    let backups = Backups::new();
    let artifact = backups.make(&stamp("2026-06-01_031500"), 50_000);
    target
        .preflight()
        .unwrap_or_else(|e| panic!("{}: preflight: {e}", target.name()));
    put(target, &artifact);
    let [(archive, good), (sidecar, good_sidecar)] = stored(&artifact);
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x01;
    let zeros = manifest::sha256sum_line(&"0".repeat(64), &archive).into_bytes();
    for (what, path, bytes) in [
        ("one bit flipped", &archive, flipped),
        ("cut short", &archive, good[..good.len() - 1].to_vec()),
        ("empty", &archive, Vec::new()),
        ("a sidecar for other bytes", &sidecar, zeros),
        ("a sidecar that is not one", &sidecar, b"garbage\n".to_vec()),
    ] {
        place.write(path, &bytes);
        let err = assert_get_refused(target, &artifact.name, is_integrity, what);
        assert!(
            err.to_string().contains(&archive),
            "{}: {what}: the error names the backup: {err}",
            target.name()
        );
        // Put right again for the next damage, by the place, with its
        // own modes: what `get` brings is private all the same.
        place.write(&archive, &good);
        place.write(&sidecar, &good_sidecar);
    }
    assert_gets(target, &artifact);
}
