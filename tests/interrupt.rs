//! Interrupted runs (issue 15, item 6): Ctrl-C (SIGINT) and `systemctl
//! stop` (SIGTERM) during a backup, a copy, a verify or a restore. Each
//! run must remove what it was making (the hidden partial, the staging
//! dir, the decrypted copy), say so in one line on stderr and in
//! `backup.log`, exit 130 or 143, and leave every earlier backup, its
//! sidecar and `latest` byte for byte as they were.
//!
//! The signal arrives at a known point: `strace` injects it at the entry
//! of a named system call on a named path (the process then sees a real
//! signal, sent to the thread making that call), or the test waits for a
//! visible state (the staging dir while the database is locked) and sends
//! it with kill(2), as systemd does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use crate::support::kill::{assert_next_run_cleans_up, assert_nothing_lost, strace_signal_at};
use crate::support::stick::Stick;
use crate::support::tree::data_tree;
use crate::support::*;

/// Every file in `dir` with its bytes (a symlink: where it points).
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    entries(dir)
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let bytes = match fs::read_link(&path) {
                Ok(target) => format!("-> {}", target.display()).into_bytes(),
                Err(_) => fs::read(&path).unwrap_or_default(),
            };
            (name, bytes)
        })
        .collect()
}

/// The run ended as an interrupted run must: exit `code`, one line on
/// stderr saying which signal and `outcome`, the same line in
/// `backup.log`.
fn assert_interrupted(env: &TestEnv, out: &Output, signal: &str, code: i32, outcome: &str) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code after {signal}; stderr: {err}"
    );
    let line = format!("interrupted by {signal}; {outcome}");
    let said: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("interrupted by"))
        .collect();
    assert_eq!(
        said,
        [format!("mss-backup: {line}")],
        "one line on stderr; all of it: {err}"
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    assert!(log.contains(&line), "backup.log has the line:\n{log}");
}

/// Hidden files and staging dirs a run may leave: none must be there.
fn leftovers(env: &TestEnv) -> Vec<String> {
    let mut left: Vec<String> = hidden_leftovers(&env.archive_dir());
    left.extend(
        entries(&env.backup_dir)
            .into_iter()
            .filter(|n| n.starts_with(".staging-") || n.starts_with(".open-")),
    );
    left.extend(
        entries(env.data_dir.parent().unwrap())
            .into_iter()
            .filter(|n| n.starts_with(".mss-restore-staging-")),
    );
    left
}

fn canonical(path: &Path) -> PathBuf {
    fs::canonicalize(path).unwrap()
}

#[test]
fn ctrl_c_mid_archive_removes_the_partial_and_keeps_every_older_backup() {
    let env = TestEnv::with_audio(4);
    env.backup_ok();
    let before = contents(&env.archive_dir());
    let status_before = env.status();
    let middle = wavs(&env)[wavs(&env).len() / 2].clone();

    // SIGINT as the archive writer opens a WAV half-way through: the
    // partial is there, half written.
    let out = strace_signal_at(&env, None, "SIGINT", "openat", Some(&middle), 1, &[]);

    assert_interrupted(
        &env,
        &out,
        "SIGINT",
        130,
        "the partial backup was removed, previous backups untouched",
    );
    assert_eq!(leftovers(&env), Vec::<String>::new(), "nothing left behind");
    assert_eq!(
        contents(&env.archive_dir()),
        before,
        "the older backup, its sidecar and latest are untouched"
    );
    let status = env.status();
    assert_eq!(status["status"], "failure", "{status}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .starts_with("interrupted by SIGINT"),
        "{status}"
    );
    assert_eq!(
        status["shrink_guard"], status_before["shrink_guard"],
        "an interrupted run changes nothing the shrink guard knows"
    );
    assert_nothing_lost(&env, "SIGINT mid-archive");
    assert_next_run_cleans_up(&env, "SIGINT mid-archive");
}

#[test]
fn systemctl_stop_while_the_database_is_busy_removes_the_staging_copy() {
    let env = TestEnv::new();
    env.backup_ok();
    let before = contents(&env.archive_dir());
    let held = lock_database(&env);
    let mut child = env
        .cmd(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The run made its staging dir and now waits for the database.
    wait_for_staging(&env, &mut child);
    // SAFETY: kill sends SIGTERM to the child started above, not yet
    // waited for.
    let pid = i32::try_from(child.id()).unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let out = child.wait_with_output().unwrap();
    drop(held);

    assert_interrupted(
        &env,
        &out,
        "SIGTERM",
        143,
        "the partial backup was removed, previous backups untouched",
    );
    assert_eq!(leftovers(&env), Vec::<String>::new(), "staging dir removed");
    assert_eq!(contents(&env.archive_dir()), before);
    assert_nothing_lost(&env, "SIGTERM while the database is busy");
}

#[test]
fn systemctl_stop_during_a_backups_copy_to_a_usb_stick_keeps_the_local_backup() {
    let mut env = TestEnv::with_audio(4);
    let stick = Stick::tmpfs("64m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.backup_ok();
    let on_stick = stick.path.join("mss-backup");
    let stick_before = contents(&on_stick);
    let older: Vec<String> = entries(&env.archive_dir())
        .into_iter()
        .filter(|n| is_backup_name(n) || n.ends_with(".sha256"))
        .collect();
    let older_bytes = contents(&env.archive_dir());
    let name = "mss-backup-2030-01-01_030000.tar.gz";
    let partial = on_stick.join(format!(".{name}.partial"));

    // SIGTERM as the new archive's partial is created on the stick: the
    // local backup is complete and named by then.
    let out = strace_signal_at(
        &env,
        Some("2030-01-01 03:00:00"),
        "SIGTERM",
        "openat",
        Some(&partial),
        1,
        &[],
    );

    assert_interrupted(
        &env,
        &out,
        "SIGTERM",
        143,
        &format!(
            "the backup {name} was made, but not copied to every target; partial copies were removed"
        ),
    );
    assert_eq!(
        contents(&on_stick),
        stick_before,
        "the stick holds what it held"
    );
    assert_eq!(leftovers(&env), Vec::<String>::new());
    for file in &older {
        assert_eq!(
            fs::read(env.archive_dir().join(file)).unwrap(),
            older_bytes[file],
            "{file} untouched"
        );
    }
    env.expect(&["verify", name], 0);
    let status = env.status();
    assert_eq!(status["status"], "failure", "{status}");
    assert_eq!(status["archive"], name, "{status}");
    assert_nothing_lost(&env, "SIGTERM during the copy to the stick");
}

#[test]
fn ctrl_c_during_a_copy_to_a_usb_stick_leaves_nothing_on_it() {
    let mut env = TestEnv::with_audio(4);
    env.backup_ok();
    let stick = Stick::tmpfs("64m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    let name = env.archives().pop().unwrap();
    let on_stick = stick.path.join("mss-backup");
    fs::create_dir_all(&on_stick).unwrap();
    let before = contents(&env.archive_dir());
    // SIGINT as the archive's hidden partial is created on the stick (its
    // sidecar is there already, under its name).
    let partial = on_stick.join(format!(".{name}.partial"));

    let out = strace_signal_at(
        &env,
        None,
        "SIGINT",
        "openat",
        Some(&partial),
        1,
        &["copy", "usb"],
    );

    assert_interrupted(
        &env,
        &out,
        "SIGINT",
        130,
        &format!(
            "the copy to usb:{} was stopped and its partial copy removed; the backups there are untouched",
            stick.path.display()
        ),
    );
    assert_eq!(
        entries(&on_stick),
        Vec::<String>::new(),
        "neither the partial nor the sidecar stays on the stick"
    );
    assert_eq!(contents(&env.archive_dir()), before);
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn ctrl_c_while_a_restore_stages_removes_the_staging_copy_and_changes_nothing() {
    let env = TestEnv::with_audio(4);
    env.backup_ok();
    fs::write(env.data_dir.join("Sounds/uploads/after.wav"), b"RIFF new").unwrap();
    let live = data_tree(&env.data_dir);
    let before = contents(&env.archive_dir());
    let archive = canonical(&env.latest());

    // SIGINT on the second read of the archive (the first took all of
    // it): the staging dir exists, and is filled as the archive decodes.
    let out = strace_signal_at(
        &env,
        None,
        "SIGINT",
        "read",
        Some(&archive),
        2,
        &["restore", "all", "--yes", "--no-stop"],
    );

    assert_interrupted(
        &env,
        &out,
        "SIGINT",
        130,
        "the restore was stopped before anything live was touched; its staging copy was removed, nothing was changed",
    );
    assert_eq!(leftovers(&env), Vec::<String>::new(), "staging dir removed");
    assert_eq!(data_tree(&env.data_dir), live, "the live data is untouched");
    assert_eq!(contents(&env.archive_dir()), before);
}

#[test]
fn ctrl_c_during_a_restores_swap_waits_for_it_and_says_the_restore_is_complete() {
    let env = TestEnv::with_audio(2);
    env.backup_ok();
    let backed_up = data_tree(&env.data_dir);
    fs::write(env.data_dir.join("Sounds/uploads/after.wav"), b"RIFF new").unwrap();
    let data_dir = canonical(&env.data_dir);

    // SIGINT at the exchange of the staged tree with the live one: the
    // swap's thread holds it back until the swap is over.
    let out = strace_signal_at(
        &env,
        None,
        "SIGINT",
        "renameat2",
        Some(&data_dir),
        1,
        &["restore", "all", "--yes", "--no-stop"],
    );

    assert_interrupted(
        &env,
        &out,
        "SIGINT",
        130,
        "the swap was finished first, so the restore is complete",
    );
    assert!(stdout(&out).contains("Restored"), "{}", stdout(&out));
    assert_eq!(
        data_tree(&env.data_dir),
        backed_up,
        "the live data is the backup's, whole"
    );
    let parent = env.data_dir.parent().unwrap();
    assert_eq!(
        entries(parent)
            .iter()
            .filter(|n| n.starts_with("cloud-data.pre-restore-"))
            .count(),
        1,
        "the data from before is in its safety net: {:?}",
        entries(parent)
    );
    assert_eq!(leftovers(&env), Vec::<String>::new());
}

#[test]
fn systemctl_stop_during_verify_of_an_encrypted_backup_removes_the_decrypted_copy() {
    let mut env = TestEnv::with_audio(4);
    let (identity, public) = keygen(&env);
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.set("MSS_BACKUP_ENCRYPT_LOCAL", "true");
    env.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    env.backup_ok();
    let before = contents(&env.archive_dir());
    let name = entries(&env.archive_dir())
        .into_iter()
        .find(|n| n.ends_with(".tar.gz.age"))
        .expect("an encrypted backup");
    let archive = canonical(&env.archive_dir().join(&name));

    // SIGTERM while the archive is read for decryption: the first few
    // reads (1 MiB each) hash it against its sidecar, the next ones (64
    // KiB chunks) decrypt it into a private copy in the backup dir.
    let out = strace_signal_at(
        &env,
        None,
        "SIGTERM",
        "read",
        Some(&archive),
        20,
        &["verify", &name],
    );

    assert_interrupted(
        &env,
        &out,
        "SIGTERM",
        143,
        "verify stopped while decrypting; the decrypted copy was removed, the archive is untouched",
    );
    assert_eq!(
        leftovers(&env),
        Vec::<String>::new(),
        "decrypted copy removed"
    );
    assert_eq!(contents(&env.archive_dir()), before);
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_still_leaves_nothing_under_a_backups_name() {
    let env = TestEnv::with_audio(4);
    env.backup_ok();
    let before: BTreeMap<_, _> = contents(&env.archive_dir())
        .into_iter()
        .filter(|(n, _)| !n.starts_with('.'))
        .collect();
    let name = "mss-backup-2030-01-01_030000.tar.gz";
    let partial = canonical(&env.archive_dir()).join(format!(".{name}.partial"));
    let partial = partial.to_str().unwrap();
    // The first SIGINT as the partial is created, the second as the
    // cleanup that follows removes it.
    let wrapper = [
        "strace",
        "-f",
        "-qq",
        "-o",
        "/dev/null",
        "-P",
        partial,
        "-e",
        "trace=openat,unlink",
        "-e",
        "inject=openat:signal=SIGINT:when=1",
        "-e",
        "inject=unlink:signal=SIGINT:when=1",
        "--",
        "faketime",
        "-f",
        "2030-01-01 03:00:00",
    ];
    let mut cmd = wrapped(&env, &wrapper, &[]);
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let out = cmd.output().expect("strace and faketime");

    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "mss-backup: second signal, stopping at once; hidden leftovers are removed by the next run"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        contents(&env.archive_dir())
            .into_iter()
            .filter(|(n, _)| !n.starts_with('.'))
            .collect::<BTreeMap<_, _>>(),
        before,
        "nothing new under a backup's name, nothing older changed"
    );
    assert_nothing_lost(&env, "a second SIGINT");
    assert_next_run_cleans_up(&env, "a second SIGINT");
}
