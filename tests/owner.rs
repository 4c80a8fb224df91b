//! The wrong user: one `sudo mss-backup` for data that belongs to someone
//! else, and what the owner's runs say afterwards. Every command names the
//! backup dir, its owner and the fix (exit 78); none claims "no backups"
//! or "not found" for what it could not read. Tests run as root and play
//! the owner as `nobody` through `setpriv`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::support::*;

/// Every command that reads or writes the backup dir, as the owner runs it.
const COMMANDS: [&[&str]; 6] = [
    &[],
    &["status"],
    &["list"],
    &["verify"],
    &["restore", "db", "--yes", "--no-stop"],
    &["copy", "usb"],
];

fn chown(spec: &str, path: &std::path::Path) {
    let ok = Command::new("chown")
        .arg(spec)
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown {spec} {}", path.display());
}

/// An environment whose data belongs to nobody.
fn nobodys_data() -> TestEnv {
    let env = TestEnv::new();
    fs::create_dir(env.root.path().join("stick")).unwrap();
    chown_to_nobody(&env);
    env
}

/// `copy usb` needs a stick configured (a backup with one that is not
/// mounted would fail for that reason instead).
fn with_stick(env: &mut TestEnv) {
    let stick = env.root.path().join("stick");
    env.set("MSS_BACKUP_USB_PATH", stick.to_str().unwrap());
}

#[test]
fn root_refuses_to_create_a_backup_dir_for_another_users_data() {
    let mut env = nobodys_data();
    let backups = env.home.join("backups");
    for args in [&[][..], &["restore", "db", "--yes", "--no-stop"]] {
        let out = env.expect(args, 78);
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "the backup dir {} does not exist yet and {} belongs to nobody, but mss-backup runs as root",
                env.backup_dir.display(),
                env.data_dir.display()
            )) && msg.contains("`sudo -u nobody mss-backup ...`")
                && msg.contains("MSS_BACKUP_ALLOW_OTHER_OWNER=true"),
            "{args:?}: {msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
        assert!(!backups.exists(), "{args:?}: nothing created");
    }
    // The owner's own run is what the message asks for, and works.
    let out = as_nobody(&env, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        fs::metadata(&env.backup_dir).unwrap().uid_gid(),
        (65534, 65534)
    );
    // Root meaning it may still do it.
    fs::remove_dir_all(&backups).unwrap();
    env.set("MSS_BACKUP_ALLOW_OTHER_OWNER", "true");
    env.backup_ok();
    assert_eq!(env.archives().len(), 1);
}

#[test]
fn after_a_root_run_every_command_of_the_owner_names_the_dir_and_the_fix() {
    let mut env = nobodys_data();
    env.set("MSS_BACKUP_ALLOW_OTHER_OWNER", "true");
    env.backup_ok();
    env.unset("MSS_BACKUP_ALLOW_OTHER_OWNER");
    let backups = env.home.join("backups");
    // As root made it: ~/backups and ~/backups/mss root's, 0700, so the
    // owner cannot even look inside ~/backups.
    assert_eq!(fs::metadata(&backups).unwrap().uid_gid(), (0, 0));
    assert_eq!(mode(&backups), 0o700);
    let log = fs::read(env.backup_dir.join("backup.log")).unwrap();
    with_stick(&mut env);
    for args in COMMANDS {
        let out = as_nobody(&env, args);
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {msg}");
        assert!(
            msg.contains(&format!(
                "the backup dir {} is inside {}, which belongs to root (mode 700), but mss-backup runs as nobody, who cannot open it",
                env.backup_dir.display(),
                backups.display()
            )) && msg.contains(&format!("`sudo chown -R nobody: {}`", backups.display())),
            "{args:?}: {msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "{args:?}: {msg}");
        assert!(!stdout(&out).contains("No backups"), "{args:?}");
    }
    // ~/backups given back, ~/backups/mss still root's.
    chown("65534:65534", &backups);
    for args in COMMANDS {
        let out = as_nobody(&env, args);
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {msg}");
        assert!(
            msg.contains(&format!(
                "the backup dir {} belongs to root, but mss-backup runs as nobody",
                env.backup_dir.display()
            )) && msg.contains(&format!(
                "`sudo chown -R nobody: {}`",
                env.backup_dir.display()
            )),
            "{args:?}: {msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "{args:?}: {msg}");
        assert!(!stdout(&out).contains("No backups"), "{args:?}");
    }
    assert_eq!(
        fs::read(env.backup_dir.join("backup.log")).unwrap(),
        log,
        "nothing written"
    );
    // The fix the message gives works.
    env.unset("MSS_BACKUP_USB_PATH");
    chown_to_nobody(&env);
    let out = as_nobody(&env, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = as_nobody(&env, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
}

#[test]
fn list_and_status_name_what_they_cannot_read_instead_of_claiming_nothing() {
    let env = TestEnv::new();
    env.backup_ok();
    chown_to_nobody(&env);
    // The owner's own dir, but not searchable: nothing inside can be read.
    fs::set_permissions(&env.backup_dir, fs::Permissions::from_mode(0o600)).unwrap();
    let out = as_nobody(&env, &["list"]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}{}", stdout(&out));
    assert!(!stdout(&out).contains("No backups"), "{}", stdout(&out));
    assert!(
        msg.contains(&format!(
            "cannot read {}: Permission denied",
            env.archive_dir().display()
        )),
        "{msg}"
    );
    let out = as_nobody(&env, &["status"]);
    let msg = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains(&format!(
            "cannot read {}: Permission denied",
            env.backup_dir.join("last_backup.json").display()
        )),
        "{msg}"
    );
    fs::set_permissions(&env.backup_dir, fs::Permissions::from_mode(0o700)).unwrap();
}

trait UidGid {
    fn uid_gid(&self) -> (u32, u32);
}

impl UidGid for fs::Metadata {
    fn uid_gid(&self) -> (u32, u32) {
        use std::os::unix::fs::MetadataExt;
        (self.uid(), self.gid())
    }
}
