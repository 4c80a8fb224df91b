//! Integrity at the edges of a backup's life: a plain-tar restore leaves
//! the archive's own files in `cloud-data/`, a copy rots on a stick or a
//! remote, a local archive rots before `copy` sends it, and an encrypted
//! run needs room for two archives. Each case ends in a backup that looks
//! fine but is not, unless the tool notices; these tests stage each one
//! with real files, real mounts and the real binary.

use std::fs;
use std::path::Path;

use crate::support::remote::Remote;
use crate::support::stick::Stick;
use crate::support::*;

/// Changes one byte in the middle of `path`, as bit rot would.
fn rot(path: &Path) {
    let mut bytes = fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

/// How many members of the archive at `path` are named `member` (GNU tar
/// as the judge).
fn members_named(path: &Path, member: &str) -> usize {
    tool("tar", &["-tzf", path.to_str().unwrap()], Path::new("/"))
        .lines()
        .filter(|l| *l == member)
        .count()
}

/// A stick of its own: a small tmpfs, which is a mount point.
fn stick_env(env: &mut TestEnv) -> Stick {
    let stick = Stick::tmpfs("64m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    stick
}

// ------------------------------------------------- plain-tar restores

/// The operator restores the whole backup with plain tar, straight into
/// `cloud-data/`, and keeps running nightly backups. The archive's own
/// `inventory.txt` and `MANIFEST.sha256` now sit at the top of
/// `cloud-data/`; archived, each would be a second member of its name,
/// and every later backup unusable by `verify` and `restore`.
#[test]
fn a_plain_tar_restore_into_cloud_data_does_not_poison_later_backups() {
    let env = TestEnv::new();
    env.backup_ok();
    let latest = env.latest();
    tool(
        "tar",
        &[
            "-xzf",
            latest.to_str().unwrap(),
            "-C",
            env.data_dir.to_str().unwrap(),
        ],
        &env.home,
    );
    for reserved in ["inventory.txt", "MANIFEST.sha256"] {
        assert!(env.data_dir.join(reserved).is_file(), "{reserved}");
    }

    let out = env.backup_ok();
    let shown = format!("{}{}", stdout(&out), stderr(&out));
    let status = env.status();
    assert_eq!(status["status"], "success", "{status}");
    let warnings: Vec<&str> = status["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    for reserved in ["inventory.txt", "MANIFEST.sha256"] {
        let path = env.data_dir.join(reserved);
        let warning = warnings
            .iter()
            .find(|w| w.contains(&format!("skipped {}", path.display())))
            .unwrap_or_else(|| panic!("no warning for {reserved}: {warnings:?}"));
        assert!(
            warning.contains("delete it") && shown.contains(*warning),
            "{warning}\n{shown}"
        );
        assert_eq!(members_named(&latest, reserved), 1, "{reserved}");
    }
    env.expect(&["verify"], 0);
    env.expect(&["restore", "sounds", "--yes", "--no-stop"], 0);
    env.expect(&["restore", "all", "--dry-run"], 0);
    // The next run is as good: the skip is not a one-off.
    env.backup_ok();
    env.expect(&["verify"], 0);
}

// ------------------------------------------------- fetched copies

/// `restore WHAT --from FROM`, which must fail (exit 1) with exactly one
/// line saying a copy does not match its checksum; that line.
fn refused_restore(env: &TestEnv, what: &str, from: &str) -> String {
    let out = env.expect(&["restore", what, "--from", from, "--yes", "--no-stop"], 1);
    let err = stderr(&out);
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("does not match its checksum"))
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    failed[0].to_string()
}

/// A copy that rotted on the stick is never brought in under a backup's
/// name: the restore fails in one line naming the stick and the backup,
/// and the archive dir holds neither the copy nor a hidden leftover.
#[test]
fn restore_from_a_rotted_usb_copy_is_refused_and_nothing_gets_its_name() {
    let mut env = TestEnv::new();
    let stick = stick_env(&mut env);
    env.backup_ok();
    let name = env.archives().remove(0);
    rot(&stick.path.join("mss-backup").join(&name));
    fs::remove_dir_all(env.archive_dir()).unwrap();

    let failed = refused_restore(&env, "sounds", "usb:latest");
    assert!(
        failed.starts_with(&format!(
            "Restore FAILED: usb:{}: {name} does not match its checksum",
            stick.path.display()
        )) && failed.contains("removed"),
        "{failed}"
    );
    assert_eq!(
        entries(&env.archive_dir()),
        Vec::<String>::new(),
        "nothing named, nothing hidden left"
    );
    // The next try is refused the same way: nothing was left to prefer.
    let again = env.expect(
        &[
            "restore",
            "sounds",
            "--from",
            "usb:latest",
            "--yes",
            "--no-stop",
        ],
        1,
    );
    assert!(!stderr(&again).contains("already in"), "{}", stderr(&again));
}

/// A local copy that fails its sidecar is not "already here": the
/// target's good copy is fetched over it and the restore succeeds.
#[test]
fn a_rotted_local_copy_is_never_preferred_to_the_targets() {
    let mut env = TestEnv::new();
    let stick = stick_env(&mut env);
    env.backup_ok();
    let name = env.archives().remove(0);
    let local = env.archive_dir().join(&name);
    rot(&local);
    let wav = fs::read_dir(env.data_dir.join("Sounds/uploads"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let original = fs::read(&wav).unwrap();
    fs::remove_file(&wav).unwrap();

    let out = env.expect(
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
    assert!(
        !stderr(&out).contains("restoring from that copy")
            && stderr(&out).contains("is not used")
            && stderr(&out).contains("does not match its checksum file"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(&wav).unwrap(), original);
    assert!(
        fs::read(&local).unwrap() == fs::read(stick.path.join("mss-backup").join(&name)).unwrap(),
        "the good copy replaced the rotted one"
    );
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(&format!("{name}: OK")), "{check}");
}

/// The same over rsync, whose downloads once came archive first, straight
/// to the backup's name.
#[test]
fn restore_from_a_rotted_rsync_copy_is_refused_and_nothing_gets_its_name() {
    let mut env = TestEnv::new();
    let remote = Remote::new(&mut env);
    env.backup_ok();
    let name = env.archives().remove(0);
    rot(&remote.dir.join(&name));
    fs::remove_dir_all(env.archive_dir()).unwrap();

    let failed = refused_restore(&env, "db", "rsync:latest");
    assert!(
        failed.starts_with("Restore FAILED: rsync:") && failed.contains(&name),
        "{failed}"
    );
    assert_eq!(entries(&env.archive_dir()), Vec::<String>::new());
}

/// A connection to the rsync remote that drops while the archive comes
/// down: the sidecar that came first is not left behind (hidden or not),
/// and nothing is named; over a whole line the next try restores.
#[test]
fn an_rsync_download_cut_off_midway_leaves_nothing_and_the_retry_works() {
    use std::os::unix::fs::PermissionsExt;
    let mut env = TestEnv::new();
    let _remote = Remote::new(&mut env);
    env.backup_ok();
    let name = env.archives().remove(0);
    let size = fs::metadata(env.archive_dir().join(&name)).unwrap().len();
    assert!(size > 1_500_000, "the archive must outlast the cut: {size}");
    fs::remove_dir_all(env.archive_dir()).unwrap();
    // The real ssh, with what comes back cut after 1 MB (each rsync call
    // has its own connection: the listing and the sidecar get through).
    let rsh = env
        .vars
        .iter()
        .find(|(k, _)| k == "MSS_BACKUP_RSYNC_RSH")
        .map(|(_, v)| v.clone())
        .unwrap();
    let cutter = env.root.path().join("ssh-cut-down");
    fs::write(
        &cutter,
        "#!/bin/sh\nssh \"$@\" | dd bs=65536 count=1000000 iflag=count_bytes 2>/dev/null\n",
    )
    .unwrap();
    fs::set_permissions(&cutter, fs::Permissions::from_mode(0o755)).unwrap();
    let cut = rsh.replacen("ssh", cutter.to_str().unwrap(), 1);
    env.set("MSS_BACKUP_RSYNC_RSH", &cut);

    let out = env.expect(
        &[
            "restore",
            "db",
            "--from",
            "rsync:latest",
            "--yes",
            "--no-stop",
        ],
        1,
    );
    assert!(
        stderr(&out).contains(&format!("downloading {name} failed")),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        entries(&env.archive_dir()),
        Vec::<String>::new(),
        "no archive, no sidecar, no hidden file"
    );

    env.set("MSS_BACKUP_RSYNC_RSH", &rsh);
    env.expect(
        &[
            "restore",
            "db",
            "--from",
            "rsync:latest",
            "--yes",
            "--no-stop",
        ],
        0,
    );
    let check = tool(
        "sha256sum",
        &["-c", &format!("{name}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(&format!("{name}: OK")), "{check}");
}

// ------------------------------------------------- copy

/// `copy` of a local archive that rotted since it was written: nothing is
/// sent, and the stick's older good backup, which retention 1 would have
/// deleted for it, stays. Encryption is on, so the target cannot catch it
/// either (the encrypted copy would have a sidecar of its own, and match).
#[test]
fn copy_checks_the_local_archive_first_and_sends_nothing_when_it_rotted() {
    let mut env = TestEnv::new();
    let (_, public) = keygen(&env);
    env.backup_ok();
    env.backup_ok();
    let names = env.archives();
    let stick = stick_env(&mut env);
    env.set("MSS_BACKUP_USB_RETENTION", "1");
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.expect(&["copy", "usb", &names[0]], 0);
    let on_stick = stick.path.join("mss-backup");
    let before: Vec<(String, Vec<u8>)> = entries(&on_stick)
        .into_iter()
        .map(|n| {
            let bytes = fs::read(on_stick.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    assert!(
        before
            .iter()
            .any(|(n, _)| *n == format!("{}.age", names[0])),
        "{:?}",
        entries(&on_stick)
    );

    rot(&env.archive_dir().join(&names[1]));
    let out = env.expect(&["copy", "usb"], 1);
    assert!(
        stderr(&out).contains(&format!("{} does not match its checksum file", names[1]))
            && stderr(&out).contains("nothing was sent to usb:"),
        "{}",
        stderr(&out)
    );
    let after: Vec<(String, Vec<u8>)> = entries(&on_stick)
        .into_iter()
        .map(|n| {
            let bytes = fs::read(on_stick.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    assert!(after == before, "the stick is unchanged");
}

// ------------------------------------------------- free space

/// A backup dir on a disk with room for one archive but not two. With
/// encryption the run makes a second, encrypted file beside the archive,
/// so it is refused before anything is written; without, it fits.
#[test]
fn the_free_space_check_counts_the_encrypted_copy() {
    let mut env = TestEnv::with_audio(6);
    let data = bytes_under(&env.data_dir);
    // Room for the data once with 3 MiB to spare, far from twice.
    let disk = Stick::tmpfs(&(data + (3 << 20)).next_multiple_of(4096).to_string());
    env.backup_dir = disk.path.join("mss");
    let backup_dir = env.backup_dir.display().to_string();
    env.set("MSS_BACKUP_DIR", &backup_dir);
    let (_, public) = keygen(&env);
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.set("MSS_BACKUP_ENCRYPT_LOCAL", "true");

    // doctor makes the same estimate, before anything is tried.
    let doctor = stdout(&env.run(&["doctor"]));
    assert!(
        doctor
            .lines()
            .any(|l| l.starts_with("✗ free space") && l.contains("Not enough free space")),
        "{doctor}"
    );

    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains(&format!(
            "Not enough free space in {}",
            env.archive_dir().display()
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        entries(&env.archive_dir()),
        Vec::<String>::new(),
        "nothing written, nothing partial left"
    );
    assert_eq!(env.status()["status"], "failure");

    env.unset("MSS_BACKUP_ENCRYPT_LOCAL");
    env.unset("MSS_BACKUP_ENCRYPT_RECIPIENTS");
    let doctor = stdout(&env.run(&["doctor"]));
    assert!(
        doctor.lines().any(|l| l.starts_with("✓ free space")),
        "{doctor}"
    );
    env.backup_ok();
    env.expect(&["verify"], 0);
}
