//! Offsite targets against the real thing: a tmpfs and a FAT filesystem as
//! USB sticks, a plain directory as a stick that is not plugged in, and
//! OpenSSH's sshd on 127.0.0.1 for rsync. `cargo xtask test` starts them and
//! hands their places over in `MSS_TEST_*` variables; without those the
//! tests fail (they never skip). Each test works in a directory of its own
//! (USB tests bind-mount a fresh directory of the real filesystem, which is
//! also how a bind-mounted stick is covered), so they run in parallel.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::support::remote::*;
use crate::support::stick::*;
use crate::support::*;

/// The local backup of a run whose offsite copy failed is whole.
fn assert_local_intact(env: &TestEnv) {
    let archives = env.archives();
    assert_eq!(archives.len(), 1, "{archives:?}");
    env.expect(&["verify"], 0);
    let status = env.status();
    assert_eq!(target(&status, "local")["status"], "success");
    assert_eq!(status["archive"], archives[0].as_str());
}

// ---------------------------------------------------------------- USB

#[test]
fn usb_on_tmpfs_gets_each_backup_and_its_sidecar_but_no_link() {
    let stick = whole_fs_stick("MSS_TEST_USB_TMPFS");
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.to_str().unwrap());
    env.backup_ok();
    let names = env.archives();
    let on_stick = stick.join("mss-backup");
    assert_eq!(
        entries(&on_stick),
        vec![names[0].clone(), format!("{}.sha256", names[0])],
        "only the backup and its sidecar: no latest link, no partials"
    );
    assert_copied(&env, &on_stick, &names);

    let status = env.status();
    assert_eq!(status["status"], "success");
    let usb = target(&status, "usb:");
    assert_eq!(usb["name"], format!("usb:{}", stick.display()));
    assert_eq!(usb["status"], "success");
    assert!(usb["duration_seconds"].is_number());
    assert_eq!(status["targets"].as_array().unwrap().len(), 2);
}

#[test]
fn usb_on_fat_works_without_symlinks_modes_or_precise_mtimes() {
    let stick = whole_fs_stick("MSS_TEST_USB_VFAT");
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        info.lines().any(|l| l.split(' ').nth(4) == stick.to_str()
            && (l.contains(" - vfat ") || l.contains(" - fuse.fusefat "))),
        "{} must be a FAT mount ({}):\n{info}",
        stick.display(),
        service_var("MSS_TEST_USB_KIND_VFAT")
    );
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.to_str().unwrap());
    env.backup_ok();
    env.backup_ok();
    let names = env.archives();
    assert_eq!(names.len(), 2);
    let on_stick = stick.join("mss-backup");
    let mut expected: Vec<String> = names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}.sha256")])
        .collect();
    expected.sort();
    assert_eq!(entries(&on_stick), expected);
    for entry in fs::read_dir(&on_stick).unwrap() {
        let kind = entry.unwrap().file_type().unwrap();
        assert!(kind.is_file() && !kind.is_symlink());
    }
    assert_copied(&env, &on_stick, &names);
    // The copy on the stick is a whole backup by itself.
    let on_stick_archive = on_stick.join(&names[1]);
    env.expect(&["verify", on_stick_archive.to_str().unwrap()], 0);
    assert_eq!(target(&env.status(), "usb:")["status"], "success");
}

#[test]
fn usb_path_that_is_not_a_mount_point_is_refused_and_nothing_is_written() {
    let plain = PathBuf::from(service_var("MSS_TEST_USB_PLAIN_DIR")).join(unique("t"));
    fs::create_dir(&plain).unwrap();
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", plain.to_str().unwrap());
    // An operator who leaves a stick in says so; then a missing stick fails
    // the run (by default it is skipped: see the next test).
    env.set("MSS_BACKUP_USB_REQUIRED", "true");
    let out = env.expect(&[], 1);
    let line = format!(
        "USB target {} is not mounted (plug in the stick; then `mss-backup copy usb` copies the newest backup); MSS_BACKUP_USB_REQUIRED is set, so this fails the run",
        plain.display()
    );
    assert!(stderr(&out).contains(&line), "{}", stderr(&out));
    assert!(
        entries(&plain).is_empty(),
        "nothing written: {:?}",
        entries(&plain)
    );
    assert_local_intact(&env);
    let status = env.status();
    assert_eq!(status["status"], "failure");
    let usb = target(&status, "usb:");
    assert_eq!(usb["status"], "failure");
    assert!(usb["detail"].as_str().unwrap().ends_with(&line), "{usb}");
    assert!(
        status["error"]
            .as_str()
            .unwrap()
            .contains(&format!("usb:{}", plain.display()))
    );

    // A path that does not exist at all is "not mounted" too, and stays so.
    let missing = plain.join("stick");
    env.set("MSS_BACKUP_USB_PATH", missing.to_str().unwrap());
    let out = env.expect(&["copy", "usb"], 1);
    assert!(
        stderr(&out).contains(&format!("USB target {} is not mounted", missing.display())),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
    let _ = fs::remove_dir_all(&plain);
}

/// USB copies on demand: a configured stick that is not plugged in is
/// skipped (nothing written into the empty mount point, the run a success,
/// exit 0, the target `skipped` in the status, the metrics and the
/// summary); plugged in, `copy usb` copies the newest backup.
#[test]
fn a_stick_that_is_not_plugged_in_is_skipped_and_copied_on_demand() {
    let stick = Stick::tmpfs("64m");
    let path = stick.path.to_str().unwrap().to_string();
    run_ok("umount", &[&path]); // pulled out: an empty folder remains
    let mut env = TestEnv::new();
    let metrics = env.root.path().join("mss.prom");
    env.set("MSS_BACKUP_USB_PATH", &path);
    env.set("MSS_BACKUP_METRICS_FILE", metrics.to_str().unwrap());
    // Two nights without the stick.
    env.expect(&[], 0);
    let out = env.expect(&[], 0);
    let err = stderr(&out);
    assert!(err.starts_with("Backup OK: "), "{err}");
    assert!(
        err.contains(&format!(
            "usb:{path} skipped: USB target {path} is not mounted (plug in the stick; then `mss-backup copy usb` copies the newest backup)"
        )),
        "{err}"
    );
    assert!(!err.contains("unset MSS_BACKUP_USB_PATH"), "{err}");
    assert!(
        entries(&stick.path).is_empty(),
        "nothing written into the empty mount point"
    );
    let status = env.status();
    assert_eq!(status["status"], "success", "{status}");
    assert_eq!(target(&status, "usb:")["status"], "skipped", "{status}");
    let prom = fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains(&format!(
            "mss_backup_target_skipped{{target=\"usb:{path}\"}} 1"
        )),
        "{prom}"
    );
    assert!(prom.contains("mss_backup_last_run_success 1"), "{prom}");

    // Plugged in again: the newest backup, checked, with the stick's retention.
    run_ok("mount", &["-t", "tmpfs", "-o", "size=64m", "tmpfs", &path]);
    let newest = env.archives().pop().unwrap();
    let out = env.expect(&["copy", "usb"], 0);
    assert!(
        stdout(&out).contains(&format!("Copied {newest}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        fs::read(stick.backups().join(&newest)).unwrap(),
        fs::read(env.archive_dir().join(&newest)).unwrap()
    );
    // The newest only: the nights the stick missed are not filled in.
    let on_stick: Vec<String> = entries(&stick.backups())
        .into_iter()
        .filter(|n| n.ends_with(".tar.gz"))
        .collect();
    assert_eq!(on_stick, vec![newest]);
}

#[test]
fn a_bind_mount_counts_as_mounted() {
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    // What a copy interrupted by pulling the stick out leaves behind.
    fs::create_dir(stick.backups()).unwrap();
    let partial = ".mss-backup-2020-01-01_000000.tar.gz.partial";
    fs::write(stick.backups().join(partial), b"half").unwrap();
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.backup_ok();
    let names = env.archives();
    // Seen through the filesystem underneath: the bytes really are there.
    let underneath = stick.backing.join("mss-backup");
    assert_eq!(backups_in(&underneath), names);
    assert_copied(&env, &underneath, &names);
    assert!(!underneath.join(partial).exists(), "leftover removed");
}

#[test]
fn a_stick_without_room_is_refused_before_copying() {
    let stick = Stick::tmpfs("1m");
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains(&format!(
            "Not enough free space on USB target {}",
            stick.path.display()
        )) && stderr(&out).contains("lower MSS_BACKUP_USB_RETENTION"),
        "{}",
        stderr(&out)
    );
    assert!(entries(&stick.backups()).is_empty(), "no partial left");
    assert_local_intact(&env);
}

/// A stick that holds two backups but not three. With retention 3 the
/// third is refused and nothing on the stick is deleted (deleting the one
/// backup retention would let go is not enough). With retention 2, the
/// oldest goes first, to make room, and the copy lands.
#[test]
fn a_full_stick_makes_room_by_retention_and_only_when_that_is_enough() {
    let mut env = TestEnv::new();
    env.backup_ok();
    let archive = env.archive_dir().join(&env.archives()[0]);
    let size = fs::metadata(&archive).unwrap().len();
    // Two backups and their sidecars, the 1 MiB margin, and half a backup.
    let stick = Stick::tmpfs(&format!(
        "{}k",
        (2 * size + (1 << 20) + size / 2) / 1024 + 64
    ));
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.set("MSS_BACKUP_USB_RETENTION", "3");
    let on_stick = || -> Vec<String> {
        let mut names: Vec<String> = entries(&stick.backups())
            .into_iter()
            .filter(|n| n.ends_with(".tar.gz"))
            .collect();
        names.sort();
        names
    };
    for _ in 0..2 {
        env.backup_ok();
    }
    let two = on_stick();
    assert_eq!(two.len(), 2, "{two:?}");

    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains("would not free enough")
            && stderr(&out).contains("lower MSS_BACKUP_USB_RETENTION"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        on_stick(),
        two,
        "nothing deleted when it would not be enough"
    );

    env.set("MSS_BACKUP_USB_RETENTION", "2");
    env.backup_ok();
    let newest = env.status()["archive"].as_str().unwrap().to_string();
    assert_eq!(on_stick(), [two[1].clone(), newest], "the oldest made room");
    let status = env.status();
    let usb = target(&status, "usb:");
    assert_eq!(usb["status"], "success", "{usb}");
    assert!(
        usb["detail"]
            .as_str()
            .unwrap()
            .contains("1 deleted by retention"),
        "{usb}"
    );
}

/// `copy usb` delivers as the nightly run does: on a stick that holds two
/// backups but not three, with the stick's retention at 2, the oldest goes
/// first to make room and the copy lands (it used to fail for lack of
/// space: copy had its own delivery without the room-making step).
#[test]
fn copy_to_a_full_stick_makes_room_as_the_nightly_run_does() {
    let mut env = TestEnv::new();
    for _ in 0..3 {
        env.backup_ok();
    }
    let local = env.archives();
    let size = fs::metadata(env.archive_dir().join(&local[2]))
        .unwrap()
        .len();
    let stick = Stick::tmpfs(&format!(
        "{}k",
        (2 * size + (1 << 20) + size / 2) / 1024 + 64
    ));
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.set("MSS_BACKUP_USB_RETENTION", "2");
    for name in &local[..2] {
        env.expect(&["copy", "usb", name], 0);
    }
    let out = env.expect(&["copy", "usb"], 0);
    assert!(
        stdout(&out).contains(&format!("deleted by retention ({})", local[0])),
        "{}",
        stdout(&out)
    );
    let on_stick: Vec<String> = entries(&stick.backups())
        .into_iter()
        .filter(|n| n.ends_with(".tar.gz"))
        .collect();
    assert_eq!(on_stick, local[1..].to_vec(), "the oldest made room");
    let newest = stick.backups().join(&local[2]);
    assert_eq!(
        fs::read(&newest).unwrap(),
        fs::read(env.archive_dir().join(&local[2])).unwrap()
    );
}

#[test]
fn a_stick_with_another_label_is_neither_filled_nor_pruned() {
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    let path = stick.path.to_str().unwrap();
    let mut env = TestEnv::new();
    let out = env.expect(&["usb", "init", path, "OTHER"], 0);
    assert!(stdout(&out).contains("Labelled"), "{}", stdout(&out));
    assert_eq!(
        fs::read_to_string(stick.path.join(".mss-backup-target")).unwrap(),
        "OTHER\n"
    );
    // An old backup of the other stick's owner, which retention 1 would delete.
    fs::create_dir(stick.backups()).unwrap();
    let old = "mss-backup-2020-01-01_000000.tar.gz";
    fs::write(stick.backups().join(old), b"theirs").unwrap();
    fs::write(
        stick.backups().join(format!("{old}.sha256")),
        format!("{}  {old}\n", "0".repeat(64)),
    )
    .unwrap();
    let before = entries(&stick.backups());

    env.set("MSS_BACKUP_USB_PATH", path);
    env.set("MSS_BACKUP_USB_LABEL", "MSS1");
    env.set("MSS_BACKUP_USB_RETENTION", "1");
    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains(&format!(
            "USB target {path} is the stick labelled \"OTHER\", not \"MSS1\""
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(entries(&stick.backups()), before);

    fs::remove_file(stick.path.join(".mss-backup-target")).unwrap();
    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains("has no label file .mss-backup-target"),
        "{}",
        stderr(&out)
    );
    assert_eq!(entries(&stick.backups()), before);

    env.expect(&["usb", "init", path, "MSS1"], 0);
    let out = env.expect(&["usb", "init", path, "OTHER"], 1);
    assert!(
        stderr(&out).contains("is already labelled \"MSS1\""),
        "{}",
        stderr(&out)
    );
    env.backup_ok();
    let names = env.archives();
    assert_eq!(
        backups_in(&stick.backups()),
        vec![names.last().unwrap().clone()],
        "the right stick is filled and pruned to MSS_BACKUP_USB_RETENTION=1"
    );

    let plain = env.root.path().join("not-a-stick");
    fs::create_dir(&plain).unwrap();
    let out = env.expect(&["usb", "init", plain.to_str().unwrap(), "MSS1"], 1);
    assert!(
        stderr(&out).contains("is not a mount point"),
        "{}",
        stderr(&out)
    );
    assert!(entries(&plain).is_empty());
    let out = env.expect(&["usb", "init", path, " bad"], 78);
    assert!(stderr(&out).contains("is not valid"), "{}", stderr(&out));
}

#[test]
fn usb_keeps_its_own_retention() {
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.set("MSS_BACKUP_USB_RETENTION", "2");
    env.set("MSS_BACKUP_RETENTION", "5");
    for _ in 0..4 {
        env.backup_ok();
    }
    let local = env.archives();
    assert_eq!(local.len(), 4);
    assert_eq!(backups_in(&stick.backups()), local[2..].to_vec());
    assert_copied(&env, &stick.backups(), &local[2..]);
    let usb = target(&env.status(), "usb:").clone();
    assert!(
        usb["detail"]
            .as_str()
            .unwrap()
            .contains("2 kept, 1 deleted by retention"),
        "{usb}"
    );
}

#[test]
fn copy_usb_puts_an_existing_backup_on_the_stick() {
    let stick = Stick::bind("MSS_TEST_USB_VFAT");
    let mut env = TestEnv::new();
    env.backup_ok();
    env.backup_ok();
    let names = env.archives();

    let out = env.expect(&["copy", "usb"], 78);
    assert!(
        stderr(&out).contains("MSS_BACKUP_USB_PATH is not set"),
        "{}",
        stderr(&out)
    );

    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    let out = env.expect(&["copy", "usb"], 0);
    assert!(
        stdout(&out).contains(&format!("Copied {} to usb:", names[1])),
        "{}",
        stdout(&out)
    );
    assert_eq!(backups_in(&stick.backups()), names[1..].to_vec());
    env.expect(&["copy", "usb", &names[0]], 0);
    assert_eq!(backups_in(&stick.backups()), names);
    assert_copied(&env, &stick.backups(), &names);

    let out = env.expect(&["copy", "usb", "notes.txt"], 1);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn fat_refuses_a_backup_of_4_gib_before_writing_a_byte() {
    let stick = Stick::bind("MSS_TEST_USB_VFAT");
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    // A sparse stand-in: the limit is checked before anything is read.
    fs::create_dir_all(env.archive_dir()).unwrap();
    let name = "mss-backup-2026-01-01_000000.tar.gz";
    fs::File::create(env.archive_dir().join(name))
        .unwrap()
        .set_len(4 << 30)
        .unwrap();
    fs::write(
        env.archive_dir().join(format!("{name}.sha256")),
        format!("{}  {name}\n", "0".repeat(64)),
    )
    .unwrap();
    let out = env.expect(&["copy", "usb", name], 1);
    assert!(
        stderr(&out).contains("is a FAT filesystem")
            && stderr(&out).contains("cannot hold files of 4 GiB or more")
            && stderr(&out).contains("reformat the stick as exFAT or ext4"),
        "{}",
        stderr(&out)
    );
    assert!(entries(&stick.backups()).is_empty());
}

// ---------------------------------------------------------------- rsync

#[test]
fn rsync_uploads_the_archive_and_then_its_sidecar() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    let out = env.expect(&["config"], 0);
    assert!(
        stdout(&out).contains(&format!("rsync:{}", service_var("MSS_TEST_SSH_USER"))),
        "{}",
        stdout(&out)
    );
    env.backup_ok();
    let names = env.archives();
    assert_eq!(
        entries(&remote.dir),
        vec![names[0].clone(), format!("{}.sha256", names[0])],
        "the backup and its sidecar, no temp files"
    );
    assert_copied(&env, &remote.dir, &names);
    assert_eq!(mode(&remote.dir.join(&names[0])), 0o600);
    assert_eq!(mode(&remote.dir), 0o700);
    let status = env.status();
    assert_eq!(status["status"], "success");
    let rsync = target(&status, "rsync:");
    assert_eq!(rsync["status"], "success");

    // `copy rsync` puts a backup back after the remote lost it.
    fs::remove_file(remote.dir.join(&names[0])).unwrap();
    env.expect(&["copy", "rsync"], 0);
    assert_copied(&env, &remote.dir, &names);
}

#[test]
fn rsync_keeps_its_own_retention() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    env.set("MSS_BACKUP_RSYNC_RETENTION", "3");
    for _ in 0..9 {
        env.backup_ok();
    }
    let local = env.archives();
    assert_eq!(local.len(), 7, "local keeps its own 7");
    assert_eq!(backups_in(&remote.dir), local[4..].to_vec());
    assert_copied(&env, &remote.dir, &local[4..]);
    let rsync = target(&env.status(), "rsync:").clone();
    assert!(
        rsync["detail"]
            .as_str()
            .unwrap()
            .contains("3 kept, 1 deleted by retention"),
        "{rsync}"
    );
}

/// The stderr lines that mention `needle`.
fn lines_with(out: &std::process::Output, needle: &str) -> Vec<String> {
    stderr(out)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

#[test]
fn rsync_with_a_refused_key_fails_in_one_line_and_keeps_the_local_backup() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &rsh("ssh", &service_var("MSS_TEST_SSH_WRONG_KEY")),
    );
    let out = env.expect(&[], 1);
    let lines = lines_with(&out, "refused the SSH key");
    assert_eq!(lines.len(), 1, "{}", stderr(&out));
    assert!(
        lines[0].contains("Permission denied (publickey)")
            && lines[0].contains("check the key (-i) in MSS_BACKUP_RSYNC_RSH"),
        "{}",
        lines[0]
    );
    assert_local_intact(&env);
    let status = env.status();
    assert_eq!(status["status"], "failure");
    let rsync = target(&status, "rsync:");
    assert_eq!(rsync["status"], "failure");
    assert!(
        rsync["detail"]
            .as_str()
            .unwrap()
            .contains("refused the SSH key"),
        "{rsync}"
    );
    assert!(!remote.dir.exists(), "nothing reached the remote side");
}

#[test]
fn rsync_to_a_closed_port_fails_in_one_line_and_keeps_the_local_backup() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &rsh_to_port("ssh", &service_var("MSS_TEST_SSH_KEY"), &closed.to_string()),
    );
    let out = env.expect(&[], 1);
    let lines = lines_with(&out, "connection refused");
    assert_eq!(lines.len(), 1, "{}", stderr(&out));
    assert!(
        lines[0].contains("is sshd running there, and is the port right?"),
        "{}",
        lines[0]
    );
    assert_local_intact(&env);
    assert_eq!(target(&env.status(), "rsync:")["status"], "failure");
    assert!(!remote.dir.exists());
}

/// docs/targets.md: the host key must be known already. An sshd whose
/// key is not in known_hosts fails the target in one line that says how
/// to add it, never a prompt at 3 AM, and the local backup is whole.
#[test]
fn rsync_to_a_host_with_an_unknown_key_fails_in_one_line_and_keeps_the_local_backup() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    let known_hosts = env.root.path().join("empty_known_hosts");
    fs::write(&known_hosts, "").unwrap();
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &format!(
            "ssh -p {} -i {} -o IdentitiesOnly=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile={}",
            service_var("MSS_TEST_SSH_PORT"),
            service_var("MSS_TEST_SSH_KEY"),
            known_hosts.display()
        ),
    );
    let out = env.expect(&[], 1);
    let lines = lines_with(&out, "is not known here or has changed");
    assert_eq!(lines.len(), 1, "{}", stderr(&out));
    assert!(lines[0].contains("ssh-keyscan"), "{}", lines[0]);
    assert_local_intact(&env);
    assert_eq!(target(&env.status(), "rsync:")["status"], "failure");
    assert!(!remote.dir.exists());
}

#[test]
fn an_upload_cut_off_midway_leaves_nothing_under_a_backup_name() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    // A remote shell whose connection dies after 1 MB of the upload: the
    // real ssh and sshd, with the line cut mid-archive. (dd, not head -c,
    // which would hold rsync's handshake back until its buffer filled.)
    let cutter = env.root.path().join("ssh-cut");
    fs::write(
        &cutter,
        "#!/bin/sh\ndd bs=65536 count=1000000 iflag=count_bytes 2>/dev/null | ssh \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&cutter, fs::Permissions::from_mode(0o755)).unwrap();
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &rsh(cutter.to_str().unwrap(), &service_var("MSS_TEST_SSH_KEY")),
    );
    let out = env.expect(&[], 1);
    let local = env.archives();
    let size = fs::metadata(env.archive_dir().join(&local[0]))
        .unwrap()
        .len();
    assert!(size > 1_500_000, "the archive must outlast the cut: {size}");
    assert!(
        remote.dir.is_dir(),
        "the connection worked until the cut: {}",
        stderr(&out)
    );
    let left = entries(&remote.dir);
    assert!(
        left.iter().all(|n| n.starts_with('.')),
        "only hidden temp files may remain: {left:?}"
    );
    assert_local_intact(&env);
    let rsync = target(&env.status(), "rsync:").clone();
    assert_eq!(rsync["status"], "failure");
    assert!(
        rsync["detail"].as_str().unwrap().contains("uploading"),
        "{rsync}"
    );

    // The next run over a whole line lists and keeps only complete backups.
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &rsh("ssh", &service_var("MSS_TEST_SSH_KEY")),
    );
    env.backup_ok();
    let local = env.archives();
    assert_eq!(backups_in(&remote.dir), local[1..].to_vec());
    assert!(
        target(&env.status(), "rsync:")["detail"]
            .as_str()
            .unwrap()
            .contains("1 kept"),
        "the cut-off upload is not counted as a backup"
    );
}

#[test]
fn missing_rsync_or_ssh_programs_are_named() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    // A PATH holding only one of the two programs.
    for (present, missing_line) in [
        ("ssh", "rsync is not installed on this machine"),
        ("rsync", "ssh is not installed on this machine"),
    ] {
        let bin = env.root.path().join(format!("only-{present}"));
        fs::create_dir_all(&bin).unwrap();
        let real = which(present);
        std::os::unix::fs::symlink(&real, bin.join(present)).unwrap();
        env.set("PATH", bin.to_str().unwrap());
        let out = env.expect(&[], 1);
        assert_eq!(lines_with(&out, missing_line).len(), 1, "{}", stderr(&out));
        assert!(!remote.dir.exists());
    }
    env.unset("PATH");
    let status = env.status();
    assert_eq!(target(&status, "local")["status"], "success");
    assert_eq!(target(&status, "rsync:")["status"], "failure");
}

fn which(program: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{program} must be installed"))
}

#[test]
fn every_target_reports_on_its_own_and_one_failure_fails_the_run() {
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    let mut env = TestEnv::new();
    let _remote = Remote::new(&mut env);
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.set(
        "MSS_BACKUP_RSYNC_RSH",
        &rsh("ssh", &service_var("MSS_TEST_SSH_WRONG_KEY")),
    );
    env.expect(&[], 1);
    let status = env.status();
    let targets: Vec<(String, String)> = status["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"]
                    .as_str()
                    .unwrap()
                    .split(':')
                    .next()
                    .unwrap()
                    .to_string(),
                t["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("local", "success"),
        ("usb", "success"),
        ("rsync", "failure"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(targets, expected);
    assert_eq!(status["status"], "failure");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains("rsync:") && !error.contains("usb:"),
        "{error}"
    );
    assert_copied(&env, &stick.backups(), &env.archives());
}

// ---------------------------------------------------------------- config

#[test]
fn offsite_settings_are_checked_before_anything_is_written() {
    for (vars, expected) in [
        (
            &[("MSS_BACKUP_USB_LABEL", "MSS1")][..],
            "MSS_BACKUP_USB_LABEL is set but MSS_BACKUP_USB_PATH is not",
        ),
        (
            &[("MSS_BACKUP_RSYNC_RETENTION", "3")][..],
            "MSS_BACKUP_RSYNC_RETENTION is set but MSS_BACKUP_RSYNC_DEST is not",
        ),
        (
            &[("MSS_BACKUP_USB_PATH", "media/stick")][..],
            "MSS_BACKUP_USB_PATH=media/stick is not valid",
        ),
        (
            &[
                ("MSS_BACKUP_USB_PATH", "/media/stick"),
                ("MSS_BACKUP_USB_RETENTION", "0"),
            ][..],
            "MSS_BACKUP_USB_RETENTION=0 is not valid",
        ),
        (
            &[("MSS_BACKUP_RSYNC_DEST", "nas")][..],
            "MSS_BACKUP_RSYNC_DEST=nas is not valid: it has no `:` between the host and the path (use [user@]host:/path, like backup@nas:/srv/mss)",
        ),
        (
            &[
                ("MSS_BACKUP_RSYNC_DEST", "nas:/srv"),
                ("MSS_BACKUP_RSYNC_RSH", "ssh -i 'key"),
            ][..],
            "MSS_BACKUP_RSYNC_RSH=ssh -i 'key is not valid: it has an unclosed ' quote",
        ),
    ] {
        let mut env = TestEnv::empty();
        for (k, v) in vars {
            env.set(k, v);
        }
        let out = env.expect(&[], 78);
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(!env.backup_dir.exists(), "nothing written for {vars:?}");
    }
}

#[test]
fn restore_from_the_usb_stick_works_when_the_local_archive_is_gone() {
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.backup_ok();
    let name = env.status()["archive"].as_str().unwrap().to_string();
    let wav = fs::read_dir(env.data_dir.join("Sounds/uploads"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = fs::read(&wav).unwrap();
    fs::remove_dir_all(env.archive_dir()).unwrap();
    fs::remove_file(&wav).unwrap();
    env.expect(
        &[
            "restore",
            "sounds",
            "--from",
            "usb:latest",
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert_eq!(fs::read(&wav).unwrap(), original);
    assert!(
        env.archive_dir().join(&name).is_file(),
        "the copy came into the archive dir"
    );
    let out = env.expect(
        &[
            "restore",
            "db",
            "--from",
            "rsync:latest",
            "--yes",
            "--no-stop",
        ],
        78,
    );
    assert!(
        stderr(&out).contains("MSS_BACKUP_RSYNC_DEST is not set"),
        "{}",
        stderr(&out)
    );
}
