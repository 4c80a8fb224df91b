//! Files unchanged since the previous backup are not compressed again:
//! their gzip members are copied from it. What an operator can see: the
//! status file says which backup members came from and how many files,
//! or why the run was a full one; a backup made so has exactly the file
//! members a full backup of the same data has; a file rewritten in place
//! (same size, mtime put back) is read again; and the index that makes it
//! possible comes and goes with its archive.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::Path;

use crate::support::*;

/// What a file needs to have gzip members of its own, and so be reused.
const OWN_MEMBER_MIN: u64 = 256 << 10;

/// Files under cloud-data/ with members of their own (the database goes in
/// as a snapshot and is never reused), and their bytes.
fn own_member_files(data_dir: &Path) -> (u64, u64) {
    let mut found = (0, 0);
    let mut dirs = vec![data_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                dirs.push(entry.path());
            } else if meta.is_file()
                && meta.len() >= OWN_MEMBER_MIN
                && !entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("sound_machine.db")
            {
                found.0 += 1;
                found.1 += meta.len();
            }
        }
    }
    found
}

/// For each tar entry, the stored bytes of the gzip members that hold any
/// of it (header or data), found by decoding the archive member by member.
fn members_by_entry(archive: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let bytes = fs::read(archive).unwrap();
    // Each member: its stored bytes and the span of the tar stream it holds.
    let mut members: Vec<(Vec<u8>, u64, u64)> = Vec::new();
    let mut stream = Vec::new();
    let mut rest: &[u8] = &bytes;
    while !rest.is_empty() {
        let before = rest.len();
        let mut decoder = flate2::bufread::GzDecoder::new(&mut rest);
        let start = stream.len() as u64;
        decoder.read_to_end(&mut stream).unwrap();
        drop(decoder);
        let at = bytes.len() - before;
        let used = before - rest.len();
        members.push((bytes[at..at + used].to_vec(), start, stream.len() as u64));
    }
    let mut tar = ::tar::Archive::new(&stream[..]);
    let mut by_entry = BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let start = entry.raw_header_position();
        let end = entry.raw_file_position() + entry.size().max(1);
        let covering: Vec<Vec<u8>> = members
            .iter()
            .filter(|(_, from, to)| *from < end && start < *to)
            .map(|(stored, _, _)| stored.clone())
            .collect();
        by_entry.insert(path, covering);
    }
    by_entry
}

fn reuse(env: &TestEnv) -> serde_json::Value {
    env.status()["reuse"].clone()
}

#[test]
fn unchanged_files_are_copied_and_make_the_members_a_full_backup_makes() {
    let env = TestEnv::with_audio(24);
    env.backup_ok();
    assert_eq!(
        reuse(&env)["full"],
        "full backup: there is no previous backup here",
        "{}",
        reuse(&env)
    );
    // A file changed just before a backup read it (the fixture's last one,
    // in the first backup) is compressed again the next time: a write in
    // the same timestamp tick would not show. By the third night, every
    // file has been read long after its last change.
    env.backup_ok();
    env.backup_ok();
    let (files, bytes) = own_member_files(&env.data_dir);
    assert!(
        files >= 4,
        "the fixture has {files} files of 256 KiB or more"
    );
    let night = reuse(&env);
    assert_eq!(night["full"], serde_json::Value::Null, "{night}");
    assert_eq!(night["reused_files"], files, "{night}");
    assert_eq!(night["reused_bytes"], bytes, "{night}");

    // A new upload, a database row, and a WAV rewritten in place with
    // other bytes of the same size and its old mtime put back: only its
    // ctime tells, and it is read again.
    let wav = wavs(&env)
        .into_iter()
        .find(|w| fs::metadata(w).unwrap().len() >= OWN_MEMBER_MIN)
        .unwrap();
    let mtime = fs::metadata(&wav).unwrap().modified().unwrap();
    let mut rewritten = fs::read(&wav).unwrap();
    for byte in rewritten.iter_mut().skip(4096).step_by(7) {
        *byte = byte.wrapping_add(1);
    }
    fs::write(&wav, &rewritten).unwrap();
    fs::File::options()
        .write(true)
        .open(&wav)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let upload = env.data_dir.join("Sounds/uploads/zz_night.wav");
    write_noise(&upload, 1 << 20);
    let db = rusqlite::Connection::open(env.db_path()).unwrap();
    db.execute_batch("CREATE TABLE night (n INTEGER); INSERT INTO night VALUES (3);")
        .unwrap();
    drop(db);
    let out = env.backup_ok();
    let archives = env.archives();
    let tonight = reuse(&env);
    assert!(
        stderr(&out).contains(&format!("  {} unchanged files (", files - 1))
            && stderr(&out).contains(&format!("copied compressed from {}", archives[2])),
        "{}",
        stderr(&out)
    );
    assert_eq!(tonight["reused_from"], archives[2].as_str(), "{tonight}");
    assert_eq!(tonight["reused_files"], files - 1, "{tonight}");

    let status = stdout(&env.expect(&["status"], 0));
    assert!(
        status.contains(&format!("\n  made: {} unchanged files (", files - 1)),
        "{status}"
    );

    // What was copied reads back as the files on disk: verify decodes
    // every member against the manifest, and tar gives the rewritten WAV.
    env.expect(&["verify", &archives[3]], 0);
    let out = env.root.path().join("out");
    fs::create_dir_all(&out).unwrap();
    let rel = wav.strip_prefix(&env.data_dir).unwrap().to_str().unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            &env.archive_dir().join(&archives[3]).display().to_string(),
            rel,
        ],
        &out,
    );
    assert!(
        fs::read(out.join(rel)).unwrap() == rewritten,
        "{rel} is the rewritten bytes"
    );

    // The same data, read and compressed in full: every file's members are
    // the same bytes, apart from what holds the database and the inventory
    // (the snapshot and the time differ).
    let full = env.expect(&["backup", "--full", "--json"], 0);
    let status: serde_json::Value = serde_json::from_slice(&full.stdout).unwrap();
    assert_eq!(status["reuse"]["full"], "full backup, as asked (--full)");
    assert!(
        stderr(&full).contains("\n  full backup, as asked (--full)\n"),
        "{}",
        stderr(&full)
    );
    assert_eq!(status["reuse"]["reused_files"], 0);
    let archives = env.archives();
    let reused = members_by_entry(&env.archive_dir().join(&archives[3]));
    let fresh = members_by_entry(&env.archive_dir().join(&archives[4]));
    assert_eq!(
        reused.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>()
    );
    let differs = |path: &str| reused[path] != fresh[path];
    let changing = ["data/sound_machine.db", "inventory.txt", "MANIFEST.sha256"];
    let shared_with_changing = |path: &str| {
        changing
            .iter()
            .any(|c| reused[*c].iter().any(|m| reused[path].contains(m)))
    };
    let mut compared = 0;
    for path in reused.keys() {
        if changing.contains(&path.as_str()) || shared_with_changing(path) {
            continue;
        }
        assert!(
            !differs(path),
            "{path} has other members in the reusing backup"
        );
        compared += 1;
    }
    assert!(compared as u64 > files, "compared {compared} entries");
}

#[test]
fn a_damaged_previous_backup_makes_a_full_one_and_says_so() {
    let env = TestEnv::with_audio(8);
    env.backup_ok();
    let archives = env.archives();
    // One byte inside the archive changes: its sidecar no longer matches.
    let path = env.archive_dir().join(&archives[0]);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    env.backup_ok();
    let why = reuse(&env)["full"].as_str().unwrap_or_default().to_string();
    assert!(
        why.starts_with(&format!(
            "full backup: {} does not match its sidecar",
            archives[0]
        )),
        "{why}"
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    assert!(log.contains(&why), "backup.log says why: {log}");
    // Nothing of the damaged archive went into the new one.
    env.expect(&["verify"], 0);
}

#[test]
fn the_member_index_goes_with_its_archive() {
    let mut env = TestEnv::with_audio(2);
    env.set("MSS_BACKUP_RETENTION", "2");
    let archive_dir = env.archive_dir();
    env.backup_ok();
    // An index whose archive is gone (deleted by hand) is tidied away.
    let orphan = archive_dir.join(".mss-backup-2020-01-01_000000.tar.gz.index");
    fs::write(&orphan, "x").unwrap();
    env.backup_ok();
    env.backup_ok();
    let archives = env.archives();
    assert_eq!(archives.len(), 2, "{archives:?}");
    let indexes: Vec<String> = entries(&archive_dir)
        .into_iter()
        .filter(|n| n.ends_with(".index"))
        .collect();
    let expected: Vec<String> = archives.iter().map(|a| format!(".{a}.index")).collect();
    assert_eq!(indexes, expected);
    for index in &indexes {
        assert_eq!(mode(&archive_dir.join(index)), 0o600, "{index}");
    }
    // `list` shows backups only.
    let listed = stdout(&env.expect(&["list"], 0));
    assert!(!listed.contains(".index"), "{listed}");
}

#[test]
fn full_every_zero_makes_every_backup_full_and_a_bad_value_is_refused() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_FULL_EVERY", "0");
    env.backup_ok();
    env.backup_ok();
    assert_eq!(
        reuse(&env)["full"],
        "full backup: every backup is a full one (full_every is 0)"
    );
    env.set("MSS_BACKUP_FULL_EVERY", "weekly");
    let out = env.expect(&[], 78);
    let err = stderr(&out);
    assert!(
        err.contains("MSS_BACKUP_FULL_EVERY=weekly is not valid: use a duration like 7d"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    // `--full` belongs to a backup: with another command it is refused.
    env.unset("MSS_BACKUP_FULL_EVERY");
    let out = env.expect(&["--full", "list"], 2);
    assert!(stderr(&out).contains("--full"), "{}", stderr(&out));
}

#[test]
fn ctrl_c_while_members_are_copied_leaves_nothing_and_the_next_night_reuses_again() {
    use crate::support::kill::{assert_next_run_cleans_up, assert_nothing_lost, strace_signal_at};
    let env = TestEnv::with_audio(8);
    env.backup_ok();
    env.backup_ok();
    let before = env.archives();
    let wavs = wavs(&env);
    let middle = wavs[wavs.len() / 2].clone();
    // SIGINT as the writer opens a WAV half-way through: in this run the
    // WAVs are copied from the previous archive, not compressed.
    let out = strace_signal_at(&env, None, "SIGINT", "openat", Some(&middle), 1, &[]);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let status = env.status();
    assert!(
        status["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("interrupted by SIGINT")),
        "{status}"
    );
    assert_eq!(
        status["reuse"]["reused_from"],
        before[1].as_str(),
        "the interrupted run was copying members: {status}"
    );
    assert_eq!(env.archives(), before, "nothing new under a backup's name");
    assert_eq!(hidden_leftovers(&env.archive_dir()), Vec::<String>::new());
    assert_nothing_lost(&env, "SIGINT while members are copied");
    assert_next_run_cleans_up(&env, "SIGINT while members are copied");
    let night = reuse(&env);
    assert_eq!(night["reused_from"], before[1].as_str(), "{night}");
    assert!(night["reused_files"].as_u64().unwrap_or(0) > 0, "{night}");
}
