//! A property test: tar streams built byte by byte (so every field can
//! lie), with traversal names, links, device nodes, huge, negative and
//! garbage sizes, bad checksums, truncation anywhere, and garbage or
//! damaged gzip, fed to `verify` and to the staging step of every
//! restore mode. Nothing may panic, nothing may be written outside the
//! staging dir (the whole sandbox is compared before and after, and an
//! absolute-path canary must not appear), and every refusal is one line
//! that names a path.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use mss_backup_core::gz::{GzOptions, ParallelGz};
use mss_backup_core::manifest;
use mss_backup_core::restore::{self, Mode};
use mss_backup_core::verify;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::support::kill;
use crate::support::tar::{self, Header, Size};
use crate::support::tree::{Node, tree};

static PANICS: AtomicUsize = AtomicUsize::new(0);
/// Restores that staged (a safe archive), whose staging dir was checked.
static STAGED: AtomicUsize = AtomicUsize::new(0);

/// Where an absolute-path member would land if extraction followed it.
fn canary() -> PathBuf {
    std::env::temp_dir().join(format!("mss-hostile-canary-{}", std::process::id()))
}

#[derive(Debug, Clone)]
struct Member {
    name: String,
    kind: u8,
    size: SizeField,
    data: Vec<u8>,
    link: String,
    good_checksum: bool,
}

#[derive(Debug, Clone)]
enum SizeField {
    True,
    Huge,
    Base256Negative,
    Base256Huge,
    Garbage,
    Short(u8),
}

#[derive(Debug, Clone)]
enum Wrapping {
    Gzip,
    Garbage(Vec<u8>),
    HeaderThenGarbage(Vec<u8>),
    Truncated(usize),
    FlippedByte(usize),
}

#[derive(Debug, Clone)]
struct Case {
    members: Vec<Member>,
    manifest: bool,
    end_blocks: bool,
    cut_tar_at: Option<usize>,
    wrapping: Wrapping,
    good_sidecar: bool,
}

fn names() -> impl Strategy<Value = String> {
    let canary = canary().join("pwned").display().to_string();
    prop_oneof![
        Just("data/sound_machine.db".to_string()),
        Just("Sounds/uploads/a.wav".to_string()),
        Just("Sounds".to_string()),
        Just("Sounds/uploads".to_string()),
        Just("config/wifi.conf".to_string()),
        Just("../../outside".to_string()),
        Just("Sounds/../../outside".to_string()),
        Just("./Sounds/./uploads/b.wav".to_string()),
        Just("..".to_string()),
        Just("".to_string()),
        Just("/".to_string()),
        Just(canary),
        Just("Sounds/uploads/link/evil.wav".to_string()),
        Just("Sounds/uploads/".to_string() + &"x".repeat(150)),
        "[a-zA-Z0-9/._-]{1,40}",
    ]
}

fn links() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("../../../etc/passwd".to_string()),
        Just("/etc/passwd".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("Sounds/uploads/a.wav".to_string()),
        Just("a.wav".to_string()),
        Just("../..".to_string()),
        Just(String::new()),
        "[a-z./]{1,20}",
    ]
}

fn members() -> impl Strategy<Value = Member> {
    (
        names(),
        prop_oneof![
            Just(b'0'),
            Just(b'5'),
            Just(b'2'),
            Just(b'1'),
            Just(b'3'),
            Just(b'4'),
            Just(b'6'),
            Just(b'L'),
            Just(b'x'),
            Just(b'g'),
            Just(b'S'),
            any::<u8>(),
        ],
        prop_oneof![
            6 => Just(SizeField::True),
            1 => Just(SizeField::Huge),
            1 => Just(SizeField::Base256Negative),
            1 => Just(SizeField::Base256Huge),
            1 => Just(SizeField::Garbage),
            1 => any::<u8>().prop_map(SizeField::Short),
        ],
        proptest::collection::vec(any::<u8>(), 0..1500),
        links(),
        proptest::bool::weighted(0.85),
    )
        .prop_map(|(name, kind, size, data, link, good_checksum)| Member {
            name,
            kind,
            size,
            data,
            link,
            good_checksum,
        })
}

fn cases() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(members(), 0..8),
        any::<bool>(),
        proptest::bool::weighted(0.8),
        proptest::option::weighted(0.2, 0usize..20_000),
        prop_oneof![
            6 => Just(Wrapping::Gzip),
            1 => proptest::collection::vec(any::<u8>(), 0..600).prop_map(Wrapping::Garbage),
            1 => proptest::collection::vec(any::<u8>(), 0..600)
                .prop_map(Wrapping::HeaderThenGarbage),
            1 => (0usize..5000).prop_map(Wrapping::Truncated),
            1 => (0usize..5000).prop_map(Wrapping::FlippedByte),
        ],
        proptest::bool::weighted(0.85),
    )
        .prop_map(
            |(members, manifest, end_blocks, cut_tar_at, wrapping, good_sidecar)| Case {
                members,
                manifest,
                end_blocks,
                cut_tar_at,
                wrapping,
                good_sidecar,
            },
        )
}

/// One 512-byte ustar header, every field as the case says.
fn header(m: &Member) -> [u8; 512] {
    tar::header(&Header {
        name: &m.name,
        kind: m.kind,
        mode: 0o644,
        size: match m.size {
            SizeField::True => Size::Octal(m.data.len() as u64),
            SizeField::Huge => Size::Octal(0o77_777_777_777),
            SizeField::Base256Negative => Size::Raw([0xff; 12]),
            SizeField::Base256Huge => {
                let mut raw = [0x7f; 12];
                raw[0] = 0x80;
                Size::Raw(raw)
            }
            SizeField::Garbage => Size::Raw(*b"12x4-\x01zzzzz\0"),
            SizeField::Short(b) => Size::Raw([b; 12]),
        },
        link: &m.link,
        good_checksum: m.good_checksum,
    })
}

fn tar_bytes(case: &Case) -> Vec<u8> {
    let mut out = Vec::new();
    let push = |m: &Member, out: &mut Vec<u8>| {
        out.extend_from_slice(&header(m));
        out.extend_from_slice(&m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    };
    let mut lines = String::new();
    for m in &case.members {
        push(m, &mut out);
        if m.kind == b'0' {
            let (hash, _) = manifest::sha256_of(&m.data[..]).unwrap();
            lines.push_str(&manifest::sha256sum_line(&hash, &m.name));
        }
    }
    if case.manifest {
        let m = Member {
            name: "MANIFEST.sha256".to_string(),
            kind: b'0',
            size: SizeField::True,
            data: lines.into_bytes(),
            link: String::new(),
            good_checksum: true,
        };
        push(&m, &mut out);
    }
    if case.end_blocks {
        out.extend_from_slice(&[0u8; 1024]);
    }
    if let Some(cut) = case.cut_tar_at {
        out.truncate(cut.min(out.len()));
    }
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = ParallelGz::new(
        Vec::new(),
        GzOptions {
            chunk_size: 4096,
            threads: 1,
            dense_level: 1,
            media_level: 1,
        },
    );
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn archive_bytes(case: &Case) -> Vec<u8> {
    let tar = tar_bytes(case);
    match &case.wrapping {
        Wrapping::Gzip => gzip(&tar),
        Wrapping::Garbage(g) => g.clone(),
        Wrapping::HeaderThenGarbage(g) => {
            let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
            out.extend_from_slice(g);
            out
        }
        Wrapping::Truncated(at) => {
            let mut gz = gzip(&tar);
            gz.truncate(*at % (gz.len() + 1));
            gz
        }
        Wrapping::FlippedByte(at) => {
            let mut gz = gzip(&tar);
            if !gz.is_empty() {
                let i = at % gz.len();
                gz[i] ^= 0x40;
            }
            gz
        }
    }
}

/// Every path under `dir` with its kind, mode, content hash and mtime (a
/// dir's mtime aside: staging dirs come and go beside cloud-data).
fn snapshot(dir: &Path) -> BTreeMap<String, Node> {
    tree(dir, true)
        .into_iter()
        .map(|(rel, node)| match node {
            Node::Dir { mode, .. } => (rel, Node::Dir { mode, mtime: 0 }),
            other => (rel, other),
        })
        .collect()
}

/// What a restore staged is safe to swap in: no device, FIFO or socket,
/// no symlink that leads out of the staging dir, and every regular file
/// holds the bytes of a member of the archive.
fn check_staged(staging: &Path, case: &Case) -> Result<usize, TestCaseError> {
    let mut checked = 0;
    let payloads: Vec<Vec<u8>> = case.members.iter().map(|m| m.data.clone()).collect();
    let mut stack = vec![staging.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            checked += 1;
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                prop_assert!(target.is_relative(), "{}: absolute link", path.display());
                let mut depth: i64 = path
                    .parent()
                    .unwrap()
                    .strip_prefix(staging)
                    .unwrap()
                    .components()
                    .count() as i64;
                for part in target.components() {
                    match part {
                        std::path::Component::ParentDir => depth -= 1,
                        std::path::Component::Normal(_) => depth += 1,
                        _ => {}
                    }
                    prop_assert!(depth >= 0, "{} links out", path.display());
                }
            } else {
                prop_assert!(
                    kind.is_file(),
                    "{}: a device, FIFO or socket was staged",
                    path.display()
                );
                let bytes = fs::read(&path).unwrap();
                prop_assert!(
                    payloads.contains(&bytes) || path.ends_with("MANIFEST.sha256"),
                    "{}: staged bytes that no member holds",
                    path.display()
                );
            }
        }
    }
    Ok(checked)
}

fn one_line_naming_a_path(msg: &str, sandbox: &Path) -> Result<(), TestCaseError> {
    prop_assert!(!msg.trim().is_empty(), "an empty error");
    prop_assert!(!msg.contains('\n'), "more than one line: {msg}");
    prop_assert!(
        msg.contains(&sandbox.display().to_string()),
        "the error names no path: {msg}"
    );
    Ok(())
}

/// A sandbox with live data in `project/cloud-data` and `case`'s archive
/// with its sidecar beside it: (sandbox, project, data dir, archive).
fn sandbox(case: &Case) -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let sandbox = tempfile::tempdir().unwrap();
    let root = sandbox.path();
    let project = root.join("project");
    let data = project.join("cloud-data");
    fs::create_dir_all(data.join("Sounds/uploads")).unwrap();
    fs::write(data.join("Sounds/uploads/live.wav"), b"live audio").unwrap();
    fs::create_dir_all(data.join("data")).unwrap();
    fs::write(data.join("data/sound_machine.db"), b"live database").unwrap();
    let archive = root.join("mss-backup-2026-01-01_000000.tar.gz");
    let bytes = archive_bytes(case);
    fs::write(&archive, &bytes).unwrap();
    let (hash, _) = manifest::sha256_of(&bytes[..]).unwrap();
    let hash = if case.good_sidecar {
        hash
    } else {
        "0".repeat(64)
    };
    fs::write(
        verify::sidecar_path(&archive),
        manifest::sha256sum_line(&hash, "mss-backup-2026-01-01_000000.tar.gz"),
    )
    .unwrap();
    (sandbox, project, data, archive)
}

fn check(case: &Case) -> Result<(), TestCaseError> {
    let (sandbox, project, data, archive) = sandbox(case);
    let root = sandbox.path();
    let scratch = root.join("scratch");
    fs::create_dir(&scratch).unwrap();
    let before = snapshot(root);

    let panics = PANICS.load(Ordering::SeqCst);
    match verify::verify(&archive, &scratch) {
        Ok(v) => prop_assert!(false, "verify accepted a hostile archive: {v:?}"),
        Err(e) => one_line_naming_a_path(&e.to_string(), root)?,
    }
    for mode in [Mode::Db, Mode::Sounds, Mode::All] {
        match restore::stage(&archive, mode, &data) {
            // A well-formed, safe archive may stage: whatever it wrote
            // is inside the staging dir, which goes with it.
            Ok(staged) => {
                let dir = staged.staging_dir().map(Path::to_path_buf);
                prop_assert!(dir.as_ref().is_some_and(|d| d.starts_with(&project)));
                if let Some(dir) = dir {
                    check_staged(&dir, case)?;
                    STAGED.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(e) => one_line_naming_a_path(&e.to_string(), root)?,
        }
        prop_assert_eq!(
            &snapshot(root),
            &before,
            "{:?}: something outside staging changed or was left",
            mode
        );
    }
    prop_assert!(!canary().exists(), "an absolute member escaped");
    prop_assert_eq!(PANICS.load(Ordering::SeqCst), panics, "a thread panicked");
    Ok(())
}

/// The random cases almost never make an archive safe enough to stage,
/// so the staging check gets a safe one of its own: a real database, a
/// WAV, a link inside `Sounds/` and a `./`-prefixed name stage in every
/// mode, and what was staged passes [`check_staged`].
#[test]
fn a_safe_archive_stages_only_its_own_members() {
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("sound_machine.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE trackpacks(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO trackpacks(name) VALUES ('a');")
        .unwrap();
    let member = |name: &str, kind: u8, data: &[u8], link: &str| Member {
        name: name.to_string(),
        kind,
        size: SizeField::True,
        data: data.to_vec(),
        link: link.to_string(),
        good_checksum: true,
    };
    let case = Case {
        members: vec![
            member("data/sound_machine.db", b'0', &fs::read(&db).unwrap(), ""),
            member("Sounds/", b'5', b"", ""),
            member("Sounds/uploads/", b'5', b"", ""),
            member("Sounds/uploads/a.wav", b'0', b"RIFF audio", ""),
            member("./Sounds/uploads/b.wav", b'0', b"RIFF other", ""),
            member("Sounds/uploads/favourite.wav", b'2', b"", "a.wav"),
        ],
        manifest: true,
        end_blocks: true,
        cut_tar_at: None,
        wrapping: Wrapping::Gzip,
        good_sidecar: true,
    };
    let (_sandbox, project, data, archive) = sandbox(&case);
    for mode in [Mode::Db, Mode::Sounds, Mode::All] {
        let staged = restore::stage(&archive, mode, &data)
            .unwrap_or_else(|e| panic!("{mode:?}: a safe archive is refused: {e}"));
        let dir = staged.staging_dir().expect("a staging dir").to_path_buf();
        assert!(dir.starts_with(&project), "{}", dir.display());
        let checked = check_staged(&dir, &case).unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(checked >= 1, "{mode:?}: nothing staged");
    }
}

#[test]
fn hostile_and_damaged_archives_end_in_a_clear_error_and_write_nothing_outside_staging() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // Only threads the code under test spawned count: under plain
        // `cargo test` other tests run in this process, in threads named
        // after them (`module::test`), and their panics are theirs.
        if !std::thread::current()
            .name()
            .is_some_and(|name| name.contains("::"))
        {
            PANICS.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    let count = if kill::long() { 1024 } else { 64 };
    let mut runner = TestRunner::new(Config {
        cases: count,
        failure_persistence: None,
        rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
        ..Config::default()
    });
    let seed = kill::seed();
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    runner = TestRunner::new_with_rng(
        runner.config().clone(),
        proptest::test_runner::TestRng::from_seed(
            proptest::test_runner::RngAlgorithm::ChaCha,
            &seed_bytes,
        ),
    );
    eprintln!("hostile archives: {count} cases, seed {seed}");
    let result = runner.run(&cases(), |case| check(&case));
    let _ = fs::remove_dir_all(canary());
    eprintln!(
        "hostile archives: {} restores staged and their staging dirs checked",
        STAGED.load(Ordering::SeqCst)
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
