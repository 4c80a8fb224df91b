//! The security rules: modes under a permissive umask, no secret in any
//! output, another user's backup dir, a symlinked `archive/`.

use std::fs;
use std::process::Command;

use crate::support::*;

#[test]
fn everything_is_created_private_even_under_a_permissive_umask() {
    let env = TestEnv::new();
    let out = wrapped(&env, &["sh", "-c", "umask 000; exec \"$0\" \"$@\""], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A restore under the same umask: staging, safety net, restored files.
    let out = wrapped(
        &env,
        &["sh", "-c", "umask 000; exec \"$0\" \"$@\""],
        &["restore", "sounds", "--yes", "--no-stop"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = &env.archives()[0];
    for dir in [env.backup_dir.clone(), env.archive_dir()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        env.archive_dir().join(name),
        env.archive_dir().join(format!("{name}.sha256")),
        env.backup_dir.join("last_backup.json"),
        env.backup_dir.join("backup.log"),
        env.backup_dir.join(".lock"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let wav = wavs(&env)[0].clone();
    assert_eq!(mode(&wav) & 0o022, 0, "restored files keep their mode");
}

#[test]
fn a_planted_secret_appears_in_no_output() {
    let mut env = TestEnv::new();
    let s3_secret = "Pl4nted-S3-S3cret-0bf5e2";
    let wifi_secret = "Pl4nted-WiFi-Passphrase-77a1";
    env.set("MSS_BACKUP_S3_BUCKET", "mss-backups");
    // Nothing listens there (loopback): the S3 copy fails and says so.
    env.set("MSS_BACKUP_S3_ENDPOINT", "http://127.0.0.1:9");
    env.set("MSS_BACKUP_S3_REGION", "us-east-1");
    env.set("MSS_BACKUP_S3_ACCESS_KEY_ID", "AKIAPLANTEDKEYID");
    env.set("MSS_BACKUP_S3_SECRET_ACCESS_KEY", s3_secret);
    env.set("AWS_SECRET_ACCESS_KEY", s3_secret);
    let wifi = env.data_dir.join("config/wifi.conf");
    let mut conf = fs::read_to_string(&wifi).unwrap();
    conf.push_str(&format!("psk={wifi_secret}\n"));
    fs::write(&wifi, conf).unwrap();

    // Each command ran to its end (one that died at start-up would leak
    // nothing and prove nothing): its exit code and one line it must show.
    let runs: [(&[&str], i32, &str); 8] = [
        (&[], 1, "127.0.0.1:9"),
        (&["status"], 1, "Last backup: failure"),
        (&["status", "--json"], 1, "\"failure\""),
        (&["config"], 0, "(MSS_BACKUP_S3_SECRET_ACCESS_KEY)"),
        (&["list"], 0, "mss-backup-"),
        (&["verify"], 0, "database integrity_check ok"),
        (&["restore", "db", "--dry-run"], 0, "data/sound_machine.db"),
        (&["doctor"], 1, "s3"),
    ];
    let mut texts: Vec<(String, String)> = Vec::new();
    for (args, code, line) in runs {
        let out = env.run(args);
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(code), "{args:?}: {text}");
        assert!(
            text.contains(line),
            "{args:?} does not show {line:?}: {text}"
        );
        texts.push((format!("{args:?} output"), text));
    }
    for file in ["backup.log", "last_backup.json"] {
        texts.push((
            file.to_string(),
            fs::read_to_string(env.backup_dir.join(file)).unwrap(),
        ));
    }
    let x = env.root.path().join("x");
    fs::create_dir_all(&x).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            env.latest().to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
            "inventory.txt",
        ],
        &x,
    );
    texts.push((
        "inventory.txt".to_string(),
        fs::read_to_string(x.join("inventory.txt")).unwrap(),
    ));
    for (what, text) in &texts {
        for secret in [s3_secret, wifi_secret] {
            assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
        }
    }
}

#[test]
fn another_users_backup_dir_is_refused_unless_allowed() {
    let mut env = TestEnv::new();
    env.backup_ok();
    let backup_dir = env.backup_dir.clone();
    let chown = |spec: &str| {
        let ok = Command::new("chown")
            .arg(spec)
            .arg(&backup_dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    chown("65534:65534");
    let log = fs::read(env.backup_dir.join("backup.log")).unwrap();
    let status = fs::read(env.backup_dir.join("last_backup.json")).unwrap();
    for args in [&[][..], &["restore", "db", "--yes", "--no-stop"]] {
        let out = env.expect(args, 78);
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "the backup dir {} belongs to nobody, but mss-backup runs as root",
                env.backup_dir.display()
            )) && msg.contains("MSS_BACKUP_ALLOW_OTHER_OWNER=true"),
            "{msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    }
    assert_eq!(
        fs::read(env.backup_dir.join("backup.log")).unwrap(),
        log,
        "nothing written"
    );
    assert_eq!(
        fs::read(env.backup_dir.join("last_backup.json")).unwrap(),
        status
    );
    assert_eq!(env.archives().len(), 1);
    env.set("MSS_BACKUP_ALLOW_OTHER_OWNER", "true");
    env.backup_ok();
    assert_eq!(env.archives().len(), 2);
    chown("0:0");
}

/// A symlinked `archive/` is a configuration mistake found before
/// anything is written: exit 78, one line naming it and the fix, and
/// neither the other directory nor the log or status file is touched; the
/// same for a restore and a copy, which also write in there.
#[test]
fn a_symlinked_archive_dir_is_never_followed_out_of_the_backup_dir() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTION", "1");
    env.backup_ok();
    // Someone's other directory, holding complete backups of its own.
    let elsewhere = env.root.path().join("elsewhere");
    fs::rename(env.archive_dir(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.archive_dir()).unwrap();
    let before = entries(&elsewhere);
    let log = fs::read(env.backup_dir.join("backup.log")).unwrap();
    let status = fs::read(env.backup_dir.join("last_backup.json")).unwrap();
    let stick = env.root.path().join("not-a-stick");
    fs::create_dir(&stick).unwrap();
    env.set("MSS_BACKUP_USB_PATH", stick.to_str().unwrap());
    for args in [
        &[][..],
        &["restore", "db", "--yes", "--no-stop"],
        &["copy", "usb"],
    ] {
        let out = env.expect(args, 78);
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "{} is a symlink: mss-backup never follows archive/ out of the backup dir",
                env.archive_dir().display()
            )),
            "{args:?}: {msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "{args:?}: {msg}");
        assert_eq!(
            entries(&elsewhere),
            before,
            "{args:?}: nothing written or deleted there"
        );
        assert_eq!(
            fs::read(env.backup_dir.join("backup.log")).unwrap(),
            log,
            "{args:?}: nothing written to the log"
        );
        assert_eq!(
            fs::read(env.backup_dir.join("last_backup.json")).unwrap(),
            status,
            "{args:?}: the status file is the last real run's"
        );
    }
}
