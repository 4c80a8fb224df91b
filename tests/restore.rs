//! `mss-backup restore`, end to end: round trips for each mode compared
//! with the original tree and with what GNU tar extracts, damaged and
//! hostile archives refused with live data untouched, a failing stop
//! command, a swap that fails half-way and rolls back, the health check,
//! the prompt, the dry run and the lock. Stop and start are small scripts
//! that record their calls; the health URL is a real HTTP server on
//! 127.0.0.1.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::support::hooks::Service;
use crate::support::tar::HostileTar;
use crate::support::terminal::on_a_terminal;
use crate::support::tree::*;
use crate::support::*;

/// Names of entries in `dir` that contain `needle`.
fn names_with(dir: &Path, needle: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(needle))
        .collect();
    names.sort();
    names
}

/// Every path under `dir` whose name contains `needle` (symlinks not followed).
fn find_named(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().contains(needle) {
            found.push(entry.path());
        }
        if entry.file_type().unwrap().is_dir() {
            found.extend(find_named(&entry.path(), needle));
        }
    }
    found
}

/// Everything a refused restore must not have changed or left behind.
struct Untouched {
    data: BTreeMap<String, Node>,
    project: Vec<String>,
}

impl Untouched {
    fn record(env: &TestEnv) -> Self {
        Self {
            data: tree(&env.data_dir, true),
            project: names_with(&env.project_dir, ""),
        }
    }

    fn check(&self, env: &TestEnv) {
        assert_same_tree(&tree(&env.data_dir, true), &self.data);
        assert_eq!(
            names_with(&env.project_dir, ""),
            self.project,
            "no staging dir or safety net left beside cloud-data"
        );
    }
}

/// The archive extracted by GNU tar (as root it keeps modes and mtimes):
/// what a correct restore must match.
fn gnu_extract(env: &TestEnv, archive: &Path) -> PathBuf {
    let out = env.root.path().join("gnu-tar");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            archive.to_str().unwrap(),
            "-C",
            out.to_str().unwrap(),
        ],
        &out,
    );
    out
}

fn the_only(dir: &Path, needle: &str) -> PathBuf {
    let names = names_with(dir, needle);
    assert_eq!(names.len(), 1, "{needle} in {}: {names:?}", dir.display());
    dir.join(&names[0])
}

#[test]
fn db_restore_round_trip_moves_the_old_database_and_its_wal_aside() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let name = env.archives()[0].clone();
    let expected = gnu_extract(&env, &env.archive_dir().join(&name));
    let db = env.db_path();
    let rows_at_backup = count_rows(&db, "trackpacks");
    let others = tree(&env.data_dir, true);

    // MSS keeps writing after the backup, and its WAL is on disk.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; INSERT INTO trackpacks(name) VALUES ('after 1'), ('after 2');",
    )
    .unwrap();
    drop(conn);
    let wal = env.data_dir.join("data/sound_machine.db-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the WAL holds the new rows"
    );
    let rows_after = count_rows(&db, "trackpacks");
    assert_eq!(rows_after, rows_at_backup + 2);

    let out = env.expect(&["restore", "db", "--yes", "--from", &name], 0);
    let text = stdout(&out);
    assert!(
        text.contains("Restored data/sound_machine.db from"),
        "{text}"
    );
    assert!(text.contains("MSS is up:"), "{text}");

    let member = expected.join("data/sound_machine.db");
    assert_eq!(fs::read(&db).unwrap(), fs::read(&member).unwrap());
    let (got, want) = (fs::metadata(&db).unwrap(), fs::metadata(&member).unwrap());
    assert_eq!(mode(&db), mode(&member));
    assert_eq!(got.mtime(), want.mtime());
    for side in ["-wal", "-shm", "-journal"] {
        assert!(
            !env.data_dir
                .join(format!("data/sound_machine.db{side}"))
                .exists(),
            "no stale {side} next to the restored database"
        );
    }
    // (Opening it read-only makes SQLite create -wal and -shm: check last.)
    assert_eq!(integrity(&db), "ok");
    assert_eq!(count_rows(&db, "trackpacks"), rows_at_backup);

    // The safety net keeps SQLite's naming, so it opens with its WAL.
    let data = env.data_dir.join("data");
    let net = names_with(&data, ".pre-restore-");
    assert!(net.len() >= 2, "{net:?}");
    let net_db = data.join(&net[0]);
    assert!(net.contains(&format!("{}-wal", net[0])), "{net:?}");
    assert_eq!(count_rows(&net_db, "trackpacks"), rows_after);
    assert!(text.contains(&net_db.display().to_string()), "{text}");

    // Nothing else moved.
    let mut now = tree(&env.data_dir, true);
    now.retain(|p, _| !p.starts_with("data/sound_machine.db"));
    let mut before = others;
    before.retain(|p, _| !p.starts_with("data/sound_machine.db") && p != "data");
    now.remove("data");
    assert_same_tree(&now, &before);

    assert_eq!(service.calls(&env.project_dir), ["stop", "start"]);
    assert!(
        service.hits().iter().all(|h| h == "GET /api/trackpacks"),
        "{:?}",
        service.hits()
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    assert!(log.contains("restore swapped in"), "{log}");
    assert!(log.contains(&name), "{log}");
}

#[test]
fn sounds_restore_round_trip_brings_back_bytes_modes_and_mtimes_and_holds_the_lock() {
    let mut env = TestEnv::new();
    // While the restore runs, the nightly backup must be turned away.
    let nested_backup = format!(
        "'{BIN}' >/dev/null 2>&1; echo \"backup-during-restore $?\" >> '{}'",
        env.root.path().join("service/calls").display()
    );
    let service = Service::install_with(&mut env, 200, &nested_backup, "exit 0");
    let sounds = env.data_dir.join("Sounds");
    let uploads = sounds.join("uploads");
    let wavs = names_with(&uploads, ".wav");
    assert!(wavs.len() >= 3);
    fs::set_permissions(&sounds, fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(uploads.join(&wavs[2]), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink(&wavs[0], uploads.join("favourite.wav")).unwrap();
    fs::create_dir(sounds.join("empty")).unwrap();
    env.backup_ok();
    let original = tree(&sounds, false);
    let data_before = tree(&env.data_dir.join("data"), true);

    fs::remove_file(uploads.join(&wavs[0])).unwrap();
    fs::write(uploads.join(&wavs[1]), b"overwritten by mistake").unwrap();
    fs::set_permissions(uploads.join(&wavs[2]), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(uploads.join("new-since-the-backup.wav"), b"RIFF").unwrap();
    fs::remove_dir(sounds.join("empty")).unwrap();
    let mutated = tree(&sounds, false);

    let out = env.expect(&["restore", "sounds", "--yes"], 0);
    assert_same_tree(&tree(&sounds, false), &original);
    assert_eq!(mode(&sounds), 0o750);
    let net = the_only(&env.data_dir, "Sounds.pre-restore-");
    assert_same_tree(&tree(&net, false), &mutated);
    assert!(stdout(&out).contains(&net.display().to_string()));
    assert_same_tree(&tree(&env.data_dir.join("data"), true), &data_before);
    assert_eq!(
        service.calls(&env.project_dir),
        ["stop", "backup-during-restore 75", "start"]
    );
    assert!(names_with(&env.project_dir, ".mss-restore-staging").is_empty());
}

#[test]
fn all_restore_round_trip_matches_gnu_tar_and_keeps_the_old_tree_beside_it() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    fs::set_permissions(&env.data_dir, fs::Permissions::from_mode(0o750)).unwrap();
    fs::set_permissions(env.data_dir.join("log"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("../data/server_id.txt", env.data_dir.join("log/id")).unwrap();
    env.backup_ok();
    let name = env.archives()[0].clone();
    let archive = env.archive_dir().join(&name);
    let original = without_db(tree(&env.data_dir, false));

    fs::remove_dir_all(env.data_dir.join("config")).unwrap();
    fs::write(env.data_dir.join("log/app.log"), b"rotated away").unwrap();
    fs::remove_file(env.db_path()).unwrap();
    fs::write(env.data_dir.join("junk.txt"), b"made after the backup").unwrap();
    let mutated = tree(&env.data_dir, true);

    env.expect(
        &[
            "restore",
            "all",
            "--yes",
            "--from",
            archive.to_str().unwrap(),
        ],
        0,
    );
    let restored = tree(&env.data_dir, false);
    assert_same_tree(&without_db(restored.clone()), &original);
    let mut gnu = tree(&gnu_extract(&env, &archive), false);
    gnu.remove("MANIFEST.sha256");
    gnu.remove("inventory.txt");
    assert_same_tree(&restored, &gnu);
    assert!(names_with(&env.data_dir.join("data"), "sound_machine.db-").is_empty());
    // (Opening it read-only makes SQLite create -wal and -shm: check last.)
    assert_eq!(integrity(&env.db_path()), "ok");
    assert_eq!(mode(&env.data_dir), 0o750, "cloud-data keeps its own mode");

    let net = the_only(&env.project_dir, "cloud-data.pre-restore-");
    assert_same_tree(&tree(&net, true), &mutated);
    assert_eq!(
        names_with(&env.project_dir, ""),
        vec![
            "cloud-data".to_string(),
            net.file_name().unwrap().to_string_lossy().into_owned()
        ]
    );
    assert_eq!(service.calls(&env.project_dir), ["stop", "start"]);
}

#[test]
fn a_flipped_byte_or_a_truncated_archive_is_refused_and_live_data_stays_byte_identical() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let path = env.archive_dir().join(&env.archives()[0]);
    let original = fs::read(&path).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    let truncated = original[..original.len() - 1000].to_vec();
    let before = Untouched::record(&env);
    for (damage, bytes) in [("flipped", &flipped), ("truncated", &truncated)] {
        fs::write(&path, bytes).unwrap();
        for mode in ["db", "sounds", "all"] {
            for dry_run in [false, true] {
                let args: &[&str] = if dry_run {
                    &["restore", mode, "--dry-run"]
                } else {
                    &["restore", mode, "--yes"]
                };
                let out = env.expect(args, 1);
                let msg = stderr(&out);
                assert!(
                    msg.contains("Restore FAILED")
                        && msg.contains("does not match its checksum file"),
                    "{damage} {mode}: {msg}"
                );
                before.check(&env);
            }
        }
    }
    assert!(
        service.calls(&env.project_dir).is_empty(),
        "MSS was never stopped"
    );
    fs::write(&path, &original).unwrap();
    env.expect(&["restore", "db", "--dry-run"], 0);
}

/// A hostile archive: what it is, and the members that make it so.
type Case<'a> = (&'a str, Box<dyn Fn(&mut HostileTar) + 'a>);

#[test]
fn hostile_archives_are_refused_before_anything_is_written_outside_staging() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let real = gnu_extract(&env, &env.latest());
    let db = fs::read(real.join("data/sound_machine.db")).unwrap();
    let outside = env.root.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("target"), b"not yours").unwrap();
    let work = env.root.path().join("hostile");
    fs::create_dir_all(&work).unwrap();
    let abs = format!("{}/abs-pwned", outside.display());

    let cases: Vec<Case> = vec![
        (
            "absolute path",
            Box::new(|t| {
                t.file(&abs, b"pwned", &work);
            }),
        ),
        (
            "dot-dot path",
            Box::new(|t| {
                t.file("Sounds/../../../../outside/dotdot-pwned", b"pwned", &work);
            }),
        ),
        (
            "symlink out, then a file through it",
            Box::new(|t| {
                t.entry("Sounds/uploads/out", b'2', "../../../../outside")
                    .file("Sounds/uploads/out/link-pwned", b"pwned", &work);
            }),
        ),
        (
            "absolute symlink",
            Box::new(|t| {
                t.entry("Sounds/uploads/etc", b'2', "/etc");
            }),
        ),
        (
            "file through a symlink that stays inside",
            Box::new(|t| {
                t.entry("Sounds/inner", b'2', "uploads").file(
                    "Sounds/inner/through-pwned.wav",
                    b"pwned",
                    &work,
                );
            }),
        ),
        (
            "symlink chain that climbs out",
            Box::new(|t| {
                t.entry("Sounds/self", b'2', ".")
                    .entry("Sounds/evil", b'2', "self/../..");
            }),
        ),
        (
            "hard link to an absolute path",
            Box::new(|t| {
                t.entry("Sounds/uploads/hl", b'1', "/etc/passwd");
            }),
        ),
        (
            "hard link out with ..",
            Box::new(|t| {
                t.entry("Sounds/uploads/hl", b'1', "../../../outside/target");
            }),
        ),
        (
            "char device",
            Box::new(|t| {
                t.entry("Sounds/uploads/null", b'3', "");
            }),
        ),
        (
            "FIFO",
            Box::new(|t| {
                t.entry("Sounds/uploads/fifo", b'6', "");
            }),
        ),
    ];
    let before = Untouched::record(&env);
    for (i, (case, add)) in cases.iter().enumerate() {
        let archive = work.join(format!("hostile-{i}.tar.gz"));
        let mut tar = HostileTar::new();
        tar.file("data/sound_machine.db", &db, &work)
            .entry("Sounds", b'5', "")
            .entry("Sounds/uploads", b'5', "")
            .file("Sounds/uploads/fine.wav", b"RIFF....WAVE", &work);
        add(&mut tar);
        tar.file("inventory.txt", b"inventory", &work);
        tar.finish(&archive);
        for mode in ["sounds", "all"] {
            let out = env.expect(
                &[
                    "restore",
                    mode,
                    "--yes",
                    "--from",
                    archive.to_str().unwrap(),
                ],
                1,
            );
            let msg = stderr(&out);
            assert!(
                msg.contains("holds an unsafe entry"),
                "{case} ({mode}): {msg}"
            );
            before.check(&env);
            assert_eq!(names_with(&outside, ""), ["target"], "{case}");
            assert_eq!(fs::read(outside.join("target")).unwrap(), b"not yours");
            let stray = find_named(env.root.path(), "pwned");
            assert!(stray.is_empty(), "{case}: {stray:?}");
        }
    }
    assert!(service.calls(&env.project_dir).is_empty());
}

#[test]
fn a_failing_stop_command_leaves_everything_untouched() {
    let mut env = TestEnv::new();
    let service = Service::install_with(&mut env, 200, "exit 3", "exit 0");
    env.backup_ok();
    let before = Untouched::record(&env);
    let out = env.expect(&["restore", "db", "--yes"], 1);
    let msg = stderr(&out);
    assert!(
        msg.contains("the stop command") && msg.contains("exit status 3"),
        "{msg}"
    );
    assert!(msg.contains("nothing was changed"), "{msg}");
    before.check(&env);
    assert_eq!(
        service.calls(&env.project_dir),
        ["stop"],
        "MSS is not started"
    );
}

#[test]
fn a_failure_during_the_swap_puts_the_safety_net_back() {
    // The stop command runs after staging and before the swap. Here it
    // takes the staged copy away (as a tmp cleaner or a careless operator
    // might), so the move into place fails after the live data was already
    // moved aside: a real rename failure, handled by the real rollback.
    for (mode, staged) in [
        ("db", ".mss-restore-staging-*/data/sound_machine.db"),
        ("sounds", ".mss-restore-staging-*/Sounds"),
        ("all", ".mss-restore-staging-*"),
    ] {
        let mut env = TestEnv::new();
        let service = Service::install_with(&mut env, 200, &format!("rm -rf {staged}"), "exit 0");
        env.backup_ok();
        let before = tree(&env.data_dir, false);
        let ours = names_with(&env.project_dir, "");
        let out = env.expect(&["restore", mode, "--yes"], 1);
        let msg = stderr(&out);
        assert!(
            msg.contains("Restore FAILED while moving the restored")
                && msg.contains("Everything was put back as it was"),
            "{mode}: {msg}"
        );
        // Renames touch the parent dirs' mtimes, nothing else.
        let mut now = tree(&env.data_dir, false);
        let mut was = before.clone();
        for t in [&mut now, &mut was] {
            t.retain(|_, node| !matches!(node, Node::Dir { .. }));
        }
        assert_same_tree(&now, &was);
        assert!(names_with(&env.data_dir, ".pre-restore-").is_empty());
        assert!(names_with(&env.data_dir.join("data"), ".pre-restore-").is_empty());
        assert_eq!(names_with(&env.project_dir, ""), ours, "{mode}");
        assert_eq!(
            service.calls(&env.project_dir),
            ["stop", "start"],
            "MSS is started again on the old data"
        );
    }
}

#[test]
fn a_failed_health_check_is_loud_names_the_safety_net_and_does_not_roll_back() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 500);
    env.set("MSS_BACKUP_HEALTH_TIMEOUT", "2");
    env.backup_ok();
    fs::write(env.data_dir.join("Sounds/uploads/extra.wav"), b"RIFF").unwrap();
    let out = env.expect(&["restore", "sounds", "--yes"], 1);
    let msg = stderr(&out);
    let net = the_only(&env.data_dir, "Sounds.pre-restore-");
    assert!(msg.contains("did not pass its health check"), "{msg}");
    assert!(msg.contains("HTTP 500"), "{msg}");
    assert!(msg.contains("NOT rolled back"), "{msg}");
    assert!(msg.contains(&net.display().to_string()), "{msg}");
    assert!(net.join("uploads/extra.wav").exists());
    assert!(!env.data_dir.join("Sounds/uploads/extra.wav").exists());
    assert_eq!(service.calls(&env.project_dir), ["stop", "start"]);
    assert!(service.hits().len() >= 2, "polled until the timeout");
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    assert!(log.contains("NOT rolled back"), "{log}");
}

#[test]
fn dry_run_verifies_prints_the_plan_and_changes_nothing() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let before = Untouched::record(&env);
    for mode in ["db", "sounds", "all"] {
        let out = env.expect(&["restore", mode, "--dry-run"], 0);
        let text = stdout(&out);
        for part in [
            "verified  sha256 matches its checksum file",
            "replaces  ",
            "Dry run",
        ] {
            assert!(text.contains(part), "{mode}: {part} in {text}");
        }
        before.check(&env);
    }
    let all = stdout(&env.expect(&["restore", "all", "--dry-run"], 0));
    assert!(all.contains("files match MANIFEST.sha256"), "{all}");
    assert!(all.contains(&env.data_dir.display().to_string()), "{all}");
    assert!(service.calls(&env.project_dir).is_empty());
}

#[test]
fn without_a_terminal_and_without_yes_it_refuses() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let before = Untouched::record(&env);
    let out = env.expect(&["restore", "db"], 1);
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));
    before.check(&env);
    assert!(service.calls(&env.project_dir).is_empty());
}

#[test]
fn on_a_terminal_it_shows_the_plan_and_goes_on_only_after_yes() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let before = Untouched::record(&env);
    let (code, screen) = on_a_terminal(&env, "restore db", "no\n");
    assert_eq!(code, 1, "{screen}");
    assert!(screen.contains("Type yes to go on"), "{screen}");
    assert!(screen.contains("replaces  "), "{screen}");
    assert!(screen.contains("cancelled"), "{screen}");
    before.check(&env);
    assert!(service.calls(&env.project_dir).is_empty());

    let (code, screen) = on_a_terminal(&env, "restore db", "yes\n");
    assert_eq!(code, 0, "{screen}");
    assert!(
        screen.contains("Restored data/sound_machine.db"),
        "{screen}"
    );
    assert_eq!(service.calls(&env.project_dir), ["stop", "start"]);
}

#[test]
fn restore_while_another_run_holds_the_lock_exits_75_and_touches_nothing() {
    let mut env = TestEnv::new();
    let service = Service::install(&mut env, 200);
    env.backup_ok();
    let before = Untouched::record(&env);
    let mut lock = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(env.backup_dir.join(".lock"))
        .unwrap();
    lock.try_lock().unwrap();
    lock.set_len(0).unwrap();
    writeln!(lock, "4242 2026-02-11T03:15:00+00:00").unwrap();
    let out = env.expect(&["restore", "db", "--yes"], 75);
    assert_eq!(
        stderr(&out).trim(),
        "Another mss-backup is already running (pid 4242, started 2026-02-11T03:15:00+00:00)"
    );
    before.check(&env);
    assert!(service.calls(&env.project_dir).is_empty());
    drop(lock);
    env.expect(&["restore", "db", "--yes"], 0);
}

#[test]
fn bad_restore_settings_are_configuration_errors_naming_the_variable() {
    for (var, value, needle) in [
        (
            "MSS_BACKUP_HEALTH_URL",
            "https://localhost:8080/api/trackpacks",
            "MSS_BACKUP_HEALTH_URL=https://localhost:8080/api/trackpacks is not valid: https",
        ),
        (
            "MSS_BACKUP_HEALTH_URL",
            "localhost:8080",
            "MSS_BACKUP_HEALTH_URL=localhost:8080 is not valid",
        ),
        (
            "MSS_BACKUP_HEALTH_TIMEOUT",
            "soon",
            "MSS_BACKUP_HEALTH_TIMEOUT=soon is not valid",
        ),
        ("MSS_BACKUP_STOP_CMD", "", "MSS_BACKUP_STOP_CMD is empty"),
    ] {
        let mut env = TestEnv::new();
        env.set(var, value);
        let out = env.expect(&["restore", "db", "--yes"], 78);
        let msg = stderr(&out);
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(
            !env.backup_dir.exists(),
            "nothing written on a config error"
        );
    }
    let env = TestEnv::new();
    let out = env.expect(
        &[
            "restore",
            "db",
            "--yes",
            "--from",
            "mss-backup-1999-01-01_000000.tar.gz",
        ],
        1,
    );
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}
