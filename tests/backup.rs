//! The local backup path, end to end.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::support::watch::wait_while_running;
use crate::support::writer::Writer;
use crate::support::*;

#[test]
fn one_backup_has_the_documented_layout_names_and_modes() {
    let env = TestEnv::new();
    let out = env.backup_ok();
    let archives = env.archives();
    assert_eq!(archives.len(), 1, "{archives:?}");
    let name = &archives[0];
    assert!(stderr(&out).contains(&format!(
        "Backup OK: {}",
        env.archive_dir().join(name).display()
    )));

    let link = fs::read_link(env.latest()).expect("latest is a symlink");
    assert_eq!(
        link,
        Path::new(name),
        "latest is a relative link to the newest"
    );
    assert!(env.archive_dir().join(format!("{name}.sha256")).is_file());

    let status = env.status();
    assert_eq!(status["status"], "success");
    assert_eq!(status["archive"], name.as_str());
    assert_eq!(
        status["size_bytes"].as_u64().unwrap(),
        fs::metadata(env.archive_dir().join(name)).unwrap().len()
    );
    assert_eq!(status["targets"][0]["name"], "local");
    assert_eq!(status["targets"][0]["status"], "success");
    assert_eq!(status["retention"]["kept"][0], name.as_str());
    for key in [
        "started_at",
        "finished_at",
        "duration_seconds",
        "sha256",
        "files",
        "warnings",
        "version",
        "host",
    ] {
        assert!(!status[key].is_null(), "{key} missing in {status}");
    }
    assert!(status["error"].is_null());
    tool(
        "python3",
        &["-m", "json.tool", "last_backup.json"],
        &env.backup_dir,
    );
    assert!(
        fs::read_to_string(env.backup_dir.join("backup.log"))
            .unwrap()
            .contains("backup finished")
    );

    assert_eq!(mode(&env.backup_dir), 0o700);
    assert_eq!(mode(&env.archive_dir()), 0o700);
    for file in [
        env.archive_dir().join(name),
        env.archive_dir().join(format!("{name}.sha256")),
        env.backup_dir.join("last_backup.json"),
        env.backup_dir.join("backup.log"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}

#[test]
fn standard_tools_read_the_archive_in_the_documented_order() {
    let env = TestEnv::new();
    env.backup_ok();
    let archive_dir = env.archive_dir();
    let latest = env.latest();
    tool("gzip", &["-t", latest.to_str().unwrap()], &archive_dir);
    let name = &env.archives()[0];
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &archive_dir,
    );
    assert_eq!(check.trim(), format!("{name}: OK"));

    let members: Vec<String> = tool("tar", &["-tzf", latest.to_str().unwrap()], &archive_dir)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(members[0], "data/sound_machine.db");
    assert_eq!(members[1], "data/server_id.txt");
    assert_eq!(members.last().unwrap(), "MANIFEST.sha256");
    assert_eq!(members[members.len() - 2], "inventory.txt");
    let first = |prefix: &str| members.iter().position(|m| m.starts_with(prefix)).unwrap();
    assert!(first("config/") < first("data/exports/"));
    assert!(first("data/exports/") < first("Sounds/uploads/"));
    assert!(first("Sounds/uploads/") < first("log/"));
    assert!(
        !members
            .iter()
            .any(|m| m.contains("-wal") || m.contains("-shm") || m.starts_with('/'))
    );

    // The seed's database-only restore command, to the letter.
    let restore = env.root.path().join("restore/cloud-data");
    fs::create_dir_all(&restore).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            latest.to_str().unwrap(),
            "-C",
            restore.to_str().unwrap(),
            "data/sound_machine.db",
        ],
        &archive_dir,
    );
    let db = restore.join("data/sound_machine.db");
    assert_eq!(integrity(&db), "ok");
    assert_eq!(
        count_rows(&db, "trackpacks"),
        count_rows(&env.db_path(), "trackpacks")
    );
    assert!(
        !restore.join("Sounds").exists(),
        "only the database was extracted"
    );

    // Everything, then the manifest checks out in the extracted copy.
    let full = env.root.path().join("full");
    fs::create_dir_all(&full).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            latest.to_str().unwrap(),
            "-C",
            full.to_str().unwrap(),
        ],
        &archive_dir,
    );
    let checked = tool("sha256sum", &["-c", "MANIFEST.sha256"], &full);
    assert!(checked.lines().all(|l| l.ends_with(": OK")), "{checked}");
    assert!(checked.contains("Sounds/uploads/"));
    for rel in ["Sounds/uploads", "data/exports", "config", "log"] {
        for entry in fs::read_dir(env.data_dir.join(rel)).unwrap() {
            let entry = entry.unwrap();
            let copy = full.join(rel).join(entry.file_name());
            assert_eq!(
                fs::read(entry.path()).unwrap(),
                fs::read(&copy).unwrap(),
                "{}",
                copy.display()
            );
            let (a, b) = (
                fs::metadata(entry.path()).unwrap(),
                fs::metadata(&copy).unwrap(),
            );
            assert_eq!(mode(&entry.path()), mode(&copy));
            assert_eq!(a.mtime(), b.mtime(), "mtime of {}", copy.display());
        }
    }
    let inventory = fs::read_to_string(full.join("inventory.txt")).unwrap();
    for part in [
        "== docker compose ps ==",
        "== git ==",
        "== disk usage ==",
        "Sounds/uploads/",
        "user_version: 3",
    ] {
        assert!(
            inventory.contains(part),
            "inventory lacks {part}:\n{inventory}"
        );
    }
    let secret = fs::read_to_string(env.data_dir.join("config/wifi.conf")).unwrap();
    let psk = secret
        .lines()
        .find_map(|l| l.strip_prefix("psk="))
        .expect("fixture has a psk");
    assert!(
        !inventory.contains(psk),
        "inventory must not contain secrets"
    );
}

#[test]
fn archived_database_holds_every_commit_made_before_the_backup_while_a_writer_keeps_going() {
    let env = TestEnv::with_audio(8);
    let db = env.db_path();
    let writer = Writer::start(&db, 0, None);
    writer.wait_for(500);
    let before = writer.committed();
    env.backup_ok();
    let during = writer.committed();
    let total = writer.stop();
    assert!(
        during > before,
        "the writer kept committing during the backup"
    );

    let out = env.root.path().join("x");
    fs::create_dir_all(&out).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            env.latest().to_str().unwrap(),
            "-C",
            out.to_str().unwrap(),
            "data/sound_machine.db",
        ],
        &out,
    );
    let copy = out.join("data/sound_machine.db");
    assert_eq!(integrity(&copy), "ok");
    let rows = count_rows(&copy, "ticks");
    assert!(
        rows >= before && rows <= total,
        "archived {rows} rows; {before} committed before, {total} in all"
    );
    // The live database is still in WAL mode and intact.
    let live = rusqlite::Connection::open(&db).unwrap();
    let mode: String = live
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_eq!(count_rows(&db, "ticks"), total);
}

#[test]
fn retention_keeps_the_newest_seven_by_default_and_leaves_foreign_files_alone() {
    let env = TestEnv::new();
    fs::create_dir_all(env.archive_dir()).unwrap();
    let foreign = [
        "notes.txt",
        "mss-backup-manual-copy.tar.gz",
        "mss-backup-2020-01-01_000000.tar.gz.bak",
    ];
    for f in foreign {
        fs::write(env.archive_dir().join(f), "keep me").unwrap();
    }
    let mut made = Vec::new();
    for _ in 0..9 {
        env.backup_ok();
        made.push(env.status()["archive"].as_str().unwrap().to_string());
    }
    let kept = env.archives();
    assert_eq!(kept, made[2..].to_vec(), "the seven newest remain");
    for old in &made[..2] {
        assert!(!env.archive_dir().join(format!("{old}.sha256")).exists());
    }
    for f in foreign {
        assert_eq!(
            fs::read_to_string(env.archive_dir().join(f)).unwrap(),
            "keep me"
        );
    }
    assert_eq!(
        fs::read_link(env.latest()).unwrap(),
        Path::new(made.last().unwrap())
    );
    let status = env.status();
    assert_eq!(status["retention"]["kept"].as_array().unwrap().len(), 7);

    let mut env3 = env;
    env3.set("MSS_BACKUP_RETENTION", "3");
    env3.backup_ok();
    assert_eq!(env3.archives().len(), 3);
    assert_eq!(
        env3.status()["retention"]["deleted"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
}

#[test]
fn a_second_run_exits_75_at_once_while_the_first_waits_for_a_busy_database() {
    let env = TestEnv::new();
    // A rollback-journal database with an exclusive lock: the backup must
    // wait (bounded) rather than fail, and it holds the run lock meanwhile.
    let db = env.db_path();
    let holder = rusqlite::Connection::open(&db).unwrap();
    holder.execute_batch("PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE; INSERT INTO trackpacks(name) VALUES ('late');").unwrap();

    let mut first = env
        .cmd(&[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lock_file = env.backup_dir.join(".lock");
    wait_while_running(&mut first, "it took the lock", || {
        fs::read_to_string(&lock_file).is_ok_and(|s| s.contains(' '))
    });
    let second = env.expect(&[], 75);
    // An event, not a clock: the first run is still waiting for the
    // database when the second has already answered.
    assert!(
        first.try_wait().unwrap().is_none(),
        "the second run must not wait for the first"
    );
    let msg = stderr(&second);
    assert!(
        msg.starts_with(&format!(
            "Another mss-backup is already running (pid {}, started ",
            first.id()
        )),
        "{msg}"
    );
    assert!(
        !env.backup_dir.join("last_backup.json").exists(),
        "the second run must not touch the status"
    );

    holder.execute_batch("COMMIT").unwrap();
    let status = first.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(env.status()["status"], "success");
}

#[test]
fn missing_cloud_data_fails_with_the_documented_message() {
    let env = TestEnv::empty();
    let out = env.expect(&[], 1);
    let expected = format!("Cloud data directory not found: {}", env.data_dir.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "{expected} (check MSS_BACKUP_DATA_DIR or MSS_BACKUP_PROJECT_DIR)"
        )),
        "the settings to check, as doctor names them: {}",
        stderr(&out)
    );
    let status = env.status();
    assert_eq!(status["status"], "failure");
    assert!(status["error"].as_str().unwrap().contains(&expected));
    assert!(status["archive"].is_null());
    assert!(env.archives().is_empty());
}

#[test]
fn missing_database_is_a_failure_never_an_empty_success() {
    let env = TestEnv::new();
    fs::remove_file(env.db_path()).unwrap();
    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains("Database not found: "),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.status()["status"], "failure");
    assert!(env.archives().is_empty());
}

#[test]
fn missing_optional_sections_are_warnings_and_the_rest_is_backed_up() {
    let env = TestEnv::new();
    for dir in ["data/exports", "config", "log"] {
        fs::remove_dir_all(env.data_dir.join(dir)).unwrap();
    }
    let out = env.backup_ok();
    let status = env.status();
    assert_eq!(status["status"], "success");
    let warnings = status["warnings"].to_string();
    for dir in ["data/exports/", "config/", "log/"] {
        assert!(warnings.contains(dir), "{warnings}");
        assert!(stderr(&out).contains(dir));
    }
    let members = tool(
        "tar",
        &["-tzf", env.latest().to_str().unwrap()],
        &env.backup_dir,
    );
    assert!(members.contains("Sounds/uploads/"));
}

#[test]
fn bad_configuration_is_one_line_naming_the_variable_exit_78_and_nothing_written() {
    for (var, value, needle) in [
        ("MSS_BACKUP_RETENTION", "0", "MSS_BACKUP_RETENTION=0"),
        ("MSS_BACKUP_RETENTION", "abc", "MSS_BACKUP_RETENTION=abc"),
        ("MSS_BACKUP_RETENTION", "-3", "MSS_BACKUP_RETENTION=-3"),
        (
            "MSS_BACKUP_DIR",
            "relative/backups",
            "MSS_BACKUP_DIR=relative/backups",
        ),
        (
            "MSS_BACKUP_DATA_DIR",
            "cloud-data",
            "MSS_BACKUP_DATA_DIR=cloud-data",
        ),
        (
            "MSS_BACKUP_CONFIG",
            "/nonexistent/config.toml",
            "MSS_BACKUP_CONFIG",
        ),
    ] {
        let mut env = TestEnv::new();
        env.set(var, value);
        let out = env.expect(&[], 78);
        let msg = stderr(&out);
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(
            !env.backup_dir.exists(),
            "nothing may be written on a config error"
        );
    }
}

#[test]
fn kill_9_mid_backup_leaves_latest_valid_and_the_next_run_cleans_up() {
    let env = TestEnv::with_audio(48);
    env.backup_ok();
    let good = env.archives();
    assert_eq!(good.len(), 1);

    let mut child = env.cmd(&[]).spawn().unwrap();
    let mut partial = None;
    wait_while_running(&mut child, "a partial archive appeared", || {
        partial = fs::read_dir(env.archive_dir())
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| {
                e.file_name().to_string_lossy().ends_with(".partial")
                    && e.metadata().map(|m| m.len() > 0).unwrap_or(false)
            })
            .map(|e| e.path());
        partial.is_some()
    });
    let partial = partial.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        partial
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with('.'),
        "partials are hidden"
    );
    assert_eq!(
        env.archives(),
        good,
        "no file under a backup's name appeared"
    );
    env.expect(&["verify"], 0);

    env.backup_ok();
    assert!(
        !partial.exists(),
        "the next run removed the leftover partial"
    );
    let leftovers = hidden_leftovers(&env.archive_dir());
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(env.archives().len(), 2);
    env.expect(&["verify"], 0);
}

/// The live database is never written: with committed rows only in its WAL
/// (autocheckpoint off, MSS's connection closed without a checkpoint, as
/// after a crash), the backup leaves the `.db` and `-wal` bytes and mtimes
/// as they were, archives no `-wal` or `-shm` member, and the
/// archived database holds the rows that were only in the WAL.
#[test]
fn a_backup_never_checkpoints_or_writes_the_live_database() {
    let env = TestEnv::new();
    let db = env.db_path();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )
    .unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
         INSERT INTO trackpacks(name) VALUES ('only in the WAL 1'), ('only in the WAL 2');",
    )
    .unwrap();
    drop(conn);
    let side = |suffix: &str| {
        let mut p = db.clone().into_os_string();
        p.push(suffix);
        std::path::PathBuf::from(p)
    };
    let wal = side("-wal");
    assert!(
        fs::metadata(&wal).unwrap().len() > 0,
        "the new rows are in the WAL"
    );
    let state = |path: &Path| {
        let meta = fs::metadata(path).unwrap();
        (fs::read(path).unwrap(), meta.mtime(), meta.mtime_nsec())
    };
    // (-shm is SQLite's shared memory, which every reader writes to.)
    let files = [db.clone(), wal.clone()];
    let before: Vec<_> = files.iter().map(|f| state(f)).collect();

    env.backup_ok();

    for (file, was) in files.iter().zip(&before) {
        assert!(
            state(file) == *was,
            "{} was written by the backup",
            file.display()
        );
    }
    let members = tool(
        "tar",
        &["-tzf", env.latest().to_str().unwrap()],
        &env.backup_dir,
    );
    assert!(
        !members
            .lines()
            .any(|m| m.ends_with("-wal") || m.ends_with("-shm")),
        "{members}"
    );
    let x = env.root.path().join("x");
    fs::create_dir_all(&x).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            env.latest().to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
            "data/sound_machine.db",
        ],
        &x,
    );
    let archived = rusqlite::Connection::open(x.join("data/sound_machine.db")).unwrap();
    let wal_rows: i64 = archived
        .query_row(
            "SELECT count(*) FROM trackpacks WHERE name LIKE 'only in the WAL %'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(wal_rows, 2, "the rows only in the WAL are archived");
}
