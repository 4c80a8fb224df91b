//! A disk that fills mid-backup, unreadable files and dirs, a file that
//! vanishes between listing and reading.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::support::stick::Stick;
use crate::support::*;

#[test]
fn a_disk_that_fills_mid_backup_fails_clearly_and_keeps_the_older_backups() {
    let mut env = TestEnv::with_audio(8);
    let disk = Stick::tmpfs("40m");
    let backup_dir = disk.path.join("mss");
    env.set("MSS_BACKUP_DIR", backup_dir.to_str().unwrap());
    env.backup_dir = backup_dir.clone();
    env.backup_ok();
    let db_size = fs::metadata(env.db_path()).unwrap().len();
    for (when, leave) in [
        ("while the archive is written", db_size + (1 << 20)),
        ("while the database is copied", 16 << 10),
    ] {
        let good = env.archives();
        let good_latest = fs::read_link(env.latest()).unwrap();
        // The backup passes its free-space check, then waits for the
        // database; meanwhile another writer fills the disk.
        let db = lock_database(&env);
        let mut child = env.cmd(&[]).stderr(Stdio::piped()).spawn().unwrap();
        wait_for_staging(&env, &mut child);
        let filler = disk.path.join("filler");
        let free = mss_backup_core::durable::fs_space(&disk.path)
            .unwrap()
            .available;
        fs::write(&filler, vec![0x5a; (free - leave) as usize]).unwrap();
        db.execute_batch("COMMIT").unwrap();
        drop(db);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{when}: {}", stderr(&out));
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "The disk holding {} filled up during the backup; the partial archive was removed",
                env.archive_dir().display()
            )),
            "{when}: {msg}"
        );
        let names = hidden_leftovers(&env.archive_dir());
        assert!(names.is_empty(), "{when}: partial gone: {names:?}");
        assert!(
            entries(&env.backup_dir)
                .iter()
                .all(|n| !n.starts_with(".staging-")),
            "{when}: staging gone"
        );
        assert_eq!(env.archives(), good, "{when}: older backups intact");
        assert_eq!(fs::read_link(env.latest()).unwrap(), good_latest);
        env.expect(&["verify"], 0);
        let status = env.status();
        assert_eq!(status["status"], "failure", "{when}");
        assert!(
            status["error"].as_str().unwrap().contains("filled up"),
            "{when}: {status}"
        );
        fs::remove_file(&filler).unwrap();
        env.backup_ok();
        assert_eq!(env.archives().len(), good.len() + 1);
    }
}

// ------------------------------------------------------------ read errors

#[test]
fn an_unreadable_file_or_dir_fails_the_backup_naming_it() {
    let env = TestEnv::new();
    let wav = wavs(&env)[0].clone();
    let locked_dir = env.data_dir.join("Sounds/uploads/locked");
    fs::create_dir(&locked_dir).unwrap();
    fs::write(locked_dir.join("inside.wav"), b"RIFF").unwrap();
    for (path, what) in [(&wav, "file"), (&locked_dir, "dir")] {
        chown_to_nobody(&env);
        fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
        let out = as_nobody(&env, &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "cannot read {}: Permission denied",
                path.display()
            )),
            "{what}: {msg}"
        );
        let status = env.status();
        assert_eq!(status["status"], "failure");
        assert!(
            status["error"]
                .as_str()
                .unwrap()
                .contains(&path.display().to_string()),
            "{status}"
        );
        assert!(env.archives().is_empty(), "no backup without the {what}");
        assert_eq!(
            hidden_leftovers(&env.archive_dir()),
            Vec::<String>::new(),
            "no partial left"
        );
        let mode = if what == "dir" { 0o755 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    chown_to_nobody(&env);
    let out = as_nobody(&env, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_file_that_vanishes_between_listing_and_reading_is_a_warning_naming_it() {
    let env = TestEnv::new();
    let gone = wavs(&env)[1].clone();
    let rel = gone
        .strip_prefix(&env.data_dir)
        .unwrap()
        .display()
        .to_string();
    let db = lock_database(&env);
    let mut child = env.cmd(&[]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_staging(&env, &mut child);
    fs::remove_file(&gone).unwrap();
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = format!("{rel} vanished during the backup");
    assert!(stderr(&out).contains(&warning), "{}", stderr(&out));
    let warnings = env.status()["warnings"].to_string();
    assert!(warnings.contains(&warning), "{warnings}");
    let members = tool(
        "tar",
        &["-tzf", env.latest().to_str().unwrap()],
        &env.backup_dir,
    );
    assert!(!members.contains(&rel), "{members}");
    env.expect(&["verify"], 0);
}
