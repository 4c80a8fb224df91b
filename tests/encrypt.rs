//! Offsite copies encrypted with age. The outside reader is Debian's `age`
//! command (installed by `cargo xtask test`): it must open what this tool
//! encrypted, and this tool must open what it encrypted. End to end through
//! the real targets: a tmpfs "stick", sshd on 127.0.0.1, the Ceph gateway.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::remote::Remote;
use crate::support::rgw::{rgw, s3_env, unique_prefix};
use crate::support::stick::Stick;
use crate::support::*;

/// An ssh-ed25519 key pair made by ssh-keygen: the private key's path and
/// the public key line.
fn ssh_key(dir: &Path) -> (PathBuf, String) {
    let key = dir.join(unique("id_ed25519"));
    tool(
        "ssh-keygen",
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "test",
            "-f",
            key.to_str().unwrap(),
        ],
        dir,
    );
    let public = fs::read_to_string(key.with_extension("pub")).unwrap();
    (key, public.trim().to_string())
}

fn age(args: &[&str]) -> Output {
    Command::new("age")
        .args(args)
        .output()
        .expect("the age command must be installed (cargo xtask test installs Debian's age)")
}

/// What a target received is ciphertext: age's header, and none of the
/// archive's telltales (gzip magic, tar headers, member names).
fn assert_opaque(bytes: &[u8]) {
    assert!(
        bytes.starts_with(b"age-encryption.org/v1\n"),
        "not an age file"
    );
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    for telltale in [
        &b"ustar"[..],
        b"sound_machine.db",
        b"Sounds/",
        b"inventory.txt",
        b"MANIFEST.sha256",
        b"wifi",
    ] {
        assert!(
            !has(telltale),
            "{} readable in the ciphertext",
            String::from_utf8_lossy(telltale)
        );
    }
    assert!(
        !bytes[..200].windows(2).any(|w| w == [0x1f, 0x8b]),
        "gzip magic near the start"
    );
}

/// `age -d -i IDENTITY FILE` and the plaintext it gave.
fn age_decrypt(identity: &Path, file: &Path) -> Vec<u8> {
    let out = age(&[
        "-d",
        "-i",
        identity.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "age -d: {}", stderr(&out));
    out.stdout
}

fn db_restore(env: &TestEnv, from: &str, code: i32) -> Output {
    env.expect(
        &["restore", "db", "--from", from, "--yes", "--no-stop"],
        code,
    )
}

#[test]
fn keygen_writes_a_private_identity_once_and_prints_its_public_key() {
    let env = TestEnv::empty();
    let (path, public) = keygen(&env);
    assert_eq!(mode(&path), 0o600);
    // The standard tool reads it and derives the same public key.
    let out = Command::new("age-keygen")
        .args(["-y", path.to_str().unwrap()])
        .output()
        .expect("age-keygen");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), public);

    let before = fs::read(&path).unwrap();
    let out = env.expect(&["keygen", path.to_str().unwrap()], 78);
    assert!(
        stderr(&out).contains("already exists") && stderr(&out).contains("never overwrites"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "the identity is untouched"
    );

    // The default place, with the warning to keep a copy elsewhere.
    let out = env.expect(&["keygen"], 0);
    let default = env.home.join(".config/mss-backup/age-identity.txt");
    assert_eq!(mode(&default), 0o600);
    assert!(
        stderr(&out).contains("somewhere other than this VM")
            && stderr(&out).contains("cannot be opened by anyone"),
        "{}",
        stderr(&out)
    );
    let secret = fs::read_to_string(&default).unwrap();
    let secret = secret.lines().last().unwrap();
    assert!(secret.starts_with("AGE-SECRET-KEY-1"));
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
}

#[test]
fn usb_gets_ciphertext_that_the_age_command_opens_with_an_age_or_ssh_key() {
    let mut env = TestEnv::new();
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    let (identity, public) = keygen(&env);
    let (ssh_private, ssh_public) = ssh_key(&env.home);
    env.set(
        "MSS_BACKUP_ENCRYPT_RECIPIENTS",
        &format!("{public}, {ssh_public}"),
    );
    let out = env.backup_ok();

    // The local backup stays a plain .tar.gz; nothing encrypted is left here.
    let names = env.archives();
    assert_eq!(names.len(), 1, "{names:?}");
    let plain = fs::read(env.archive_dir().join(&names[0])).unwrap();
    assert!(
        entries(&env.archive_dir())
            .iter()
            .all(|n| !n.contains(".age")),
        "{:?}",
        entries(&env.archive_dir())
    );

    // The stick has NAME.tar.gz.age and its sidecar, and nothing else.
    let sealed_name = format!("{}.age", names[0]);
    assert_eq!(
        entries(&stick.backups()),
        vec![sealed_name.clone(), format!("{sealed_name}.sha256")]
    );
    let check = tool(
        "sha256sum",
        &["-c", &format!("{sealed_name}.sha256")],
        &stick.backups(),
    );
    assert!(check.contains(&format!("{sealed_name}: OK")), "{check}");
    let sealed = stick.backups().join(&sealed_name);
    assert_opaque(&fs::read(&sealed).unwrap());
    assert_eq!(mode(&sealed), 0o600);

    // Debian's age opens it, with the age identity and with the ssh key,
    // to the very bytes of the local archive.
    assert!(age_decrypt(&identity, &sealed) == plain, "age identity");
    assert!(age_decrypt(&ssh_private, &sealed) == plain, "ssh key");

    // What the operator sees: encrypted, to how many, never the keys.
    let status = env.status();
    assert_eq!(status["encrypted_for"], 2, "{status}");
    assert_eq!(target(&status, "usb:")["status"], "success");
    let shown = env.expect(&["status"], 0);
    assert!(
        stdout(&shown).contains("encrypted with age to 2 recipients"),
        "{}",
        stdout(&shown)
    );
    let config = env.expect(&["config"], 0);
    assert!(
        stdout(&config).contains("(2 keys set, hidden)")
            && stdout(&config).contains("offsite copies are encrypted with age to 2 recipients"),
        "{}",
        stdout(&config)
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    let ssh_blob = ssh_public.split_whitespace().nth(1).unwrap();
    for text in [
        stdout(&out),
        stderr(&out),
        stdout(&config),
        stdout(&shown),
        log,
    ] {
        assert!(
            !text.contains(&public) && !text.contains(ssh_blob),
            "{text}"
        );
    }

    // doctor checks the keys parse and the identity opens and is private.
    env.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    let doctor = stdout(&env.run(&["doctor"]));
    assert!(
        doctor
            .lines()
            .any(|l| l.starts_with("✓ encryption")
                && l.contains("encrypted with age to 2 recipients"))
            && doctor.lines().any(|l| l.starts_with("✓ identity")),
        "{doctor}"
    );
    fs::set_permissions(&identity, fs::Permissions::from_mode(0o644)).unwrap();
    let doctor = stdout(&env.run(&["doctor"]));
    assert!(
        doctor
            .lines()
            .any(|l| l.starts_with("✗ identity") && l.contains("chmod 600")),
        "{doctor}"
    );
    env.unset("MSS_BACKUP_IDENTITY_FILE");

    // A restore from the stick after the VM lost its backups: refused
    // without the identity, then decrypted with it.
    fs::remove_dir_all(env.archive_dir()).unwrap();
    let db_before = fs::read(env.db_path()).unwrap();
    fs::write(env.db_path(), b"not a database").unwrap();
    let out = db_restore(&env, "usb:latest", 78);
    assert!(
        stderr(&out).contains("is encrypted: set MSS_BACKUP_IDENTITY_FILE"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read(env.db_path()).unwrap(), b"not a database");
    env.set("MSS_BACKUP_IDENTITY_FILE", ssh_private.to_str().unwrap());
    db_restore(&env, "usb:latest", 0);
    assert_eq!(integrity(&env.db_path()), "ok");
    assert_eq!(
        count_rows(&env.db_path(), "trackpacks"),
        count_rows_in(&db_before, &env),
        "the database came back"
    );
    assert_no_decrypted_copy(&env, "after the restore");
}

/// No decrypted copy (nor any staging dir) is left in the backup dir.
fn assert_no_decrypted_copy(env: &TestEnv, what: &str) {
    let left = entries(&env.backup_dir);
    assert!(
        !left
            .iter()
            .any(|n| n.starts_with(".staging") || n.starts_with(".open-")),
        "{what}: the decrypted copy is left: {left:?}"
    );
}

/// `verify` of an encrypted archive decrypts it into `.open-PID` without
/// taking the lock, so a backup starting meanwhile must leave that copy
/// alone; one whose process has ended is a leftover, and goes.
#[test]
fn a_backup_keeps_a_running_verifys_decrypted_copy_and_removes_a_dead_ones() {
    let env = TestEnv::new();
    env.backup_ok();
    // PID 1 runs as long as the machine (or container) does.
    let running = env.backup_dir.join(".open-1");
    let ended_pid = {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    let ended = env.backup_dir.join(format!(".open-{ended_pid}"));
    for dir in [&running, &ended] {
        fs::create_dir(dir).unwrap();
        fs::write(dir.join("mss-backup.tar.gz"), b"decrypted").unwrap();
    }
    env.backup_ok();
    assert_eq!(
        fs::read(running.join("mss-backup.tar.gz")).unwrap(),
        b"decrypted",
        "the running verify's copy was touched"
    );
    assert!(!ended.exists(), "the ended verify's copy is left");
}

/// Rows of `trackpacks` in a database held as bytes.
fn count_rows_in(db: &[u8], env: &TestEnv) -> i64 {
    let path = env.root.path().join(unique("db"));
    fs::write(&path, db).unwrap();
    count_rows(&path, "trackpacks")
}

/// A backup encrypted by the age command (to a key from `mss-backup
/// keygen`) beside its sidecar, in a directory of its own: its path.
fn sealed_by_the_age_command(env: &TestEnv, public: &str) -> PathBuf {
    env.backup_ok();
    let name = env.archives().pop().unwrap();
    let dir = env.root.path().join(unique("sealed"));
    fs::create_dir(&dir).unwrap();
    let sealed = dir.join(format!("{name}.age"));
    let out = age(&[
        "-r",
        public,
        "-o",
        sealed.to_str().unwrap(),
        env.archive_dir().join(&name).to_str().unwrap(),
    ]);
    assert!(out.status.success(), "age -r: {}", stderr(&out));
    reseal_sidecar(&sealed);
    sealed
}

/// Writes the sidecar of `file` as it is now (so that a damaged file gets
/// past its checksum and the age layer is what has to catch it).
fn reseal_sidecar(file: &Path) {
    let dir = file.parent().unwrap();
    let name = file.file_name().unwrap().to_str().unwrap();
    let line = tool("sha256sum", &[name], dir);
    fs::write(dir.join(format!("{name}.sha256")), line).unwrap();
}

#[test]
fn what_the_age_command_encrypted_verifies_and_restores() {
    let mut env = TestEnv::new();
    let (identity, public) = keygen(&env);
    let sealed = sealed_by_the_age_command(&env, &public);
    let path = sealed.to_str().unwrap();

    // Without the identity, verify checks what it can: the sidecar.
    let out = env.expect(&["verify", path], 0);
    assert!(
        stdout(&out).contains("sha256 matches its checksum file")
            && stdout(&out).contains("contents are encrypted and were not checked"),
        "{}",
        stdout(&out)
    );
    env.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    let out = env.expect(&["verify", path], 0);
    assert!(
        stdout(&out).contains("files match MANIFEST.sha256")
            && stdout(&out).contains("integrity_check ok"),
        "{}",
        stdout(&out)
    );

    fs::write(env.db_path(), b"not a database").unwrap();
    db_restore(&env, path, 0);
    assert_eq!(integrity(&env.db_path()), "ok");
}

#[test]
fn damage_truncation_or_a_wrong_identity_restores_nothing() {
    let mut env = TestEnv::new();
    let (identity, public) = keygen(&env);
    let sealed = sealed_by_the_age_command(&env, &public);
    let path = sealed.to_str().unwrap();
    let good = fs::read(&sealed).unwrap();
    let sidecar = PathBuf::from(format!("{path}.sha256"));
    let good_sidecar = fs::read(&sidecar).unwrap();
    let other = env.root.path().join("other-identity.txt");
    env.expect(&["keygen", other.to_str().unwrap()], 0);
    fs::write(env.db_path(), b"the live database, whatever it holds").unwrap();
    let live = fs::read(env.db_path()).unwrap();
    let sounds_before = entries(&env.data_dir.join("Sounds/uploads"));

    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x40;
    let truncated = good[..good.len() - 100_000].to_vec();
    let cases: [(&str, Vec<u8>, bool, &Path, &str); 4] = [
        // The sidecar catches a flipped byte before age is even asked...
        (
            "flipped, sidecar",
            flipped.clone(),
            false,
            &identity,
            "does not match",
        ),
        // ...and age's authentication catches it when the sidecar was
        // damaged to match.
        ("flipped, age", flipped, true, &identity, "does not decrypt"),
        ("truncated", truncated, true, &identity, "does not decrypt"),
        (
            "wrong identity",
            good.clone(),
            true,
            &other,
            "not to the identity",
        ),
    ];
    for (case, bytes, reseal, key, message) in cases {
        fs::write(&sealed, &bytes).unwrap();
        if reseal {
            reseal_sidecar(&sealed);
        } else {
            fs::write(&sidecar, &good_sidecar).unwrap();
        }
        env.set("MSS_BACKUP_IDENTITY_FILE", key.to_str().unwrap());
        for mode in ["db", "all"] {
            let out = env.expect(&["restore", mode, "--from", path, "--yes", "--no-stop"], 1);
            assert!(
                stderr(&out).contains(message) && stderr(&out).contains("Restore FAILED"),
                "{case}/{mode}: {}",
                stderr(&out)
            );
            assert_eq!(fs::read(env.db_path()).unwrap(), live, "{case}/{mode}");
            assert_eq!(
                entries(&env.data_dir.join("Sounds/uploads")),
                sounds_before,
                "{case}/{mode}"
            );
            assert_no_decrypted_copy(&env, &format!("{case}/{mode}"));
        }
        let out = env.expect(&["verify", path], 1);
        assert!(stderr(&out).contains("Verify FAILED"), "{case}");
    }
}

#[test]
fn encrypt_local_keeps_only_encrypted_backups_with_their_own_latest_link() {
    let mut env = TestEnv::new();
    let (identity, public) = keygen(&env);
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.set("MSS_BACKUP_ENCRYPT_LOCAL", "true");
    env.set("MSS_BACKUP_RETENTION", "2");
    // A plain backup from before encryption was switched on.
    env.unset("MSS_BACKUP_ENCRYPT_LOCAL");
    env.unset("MSS_BACKUP_ENCRYPT_RECIPIENTS");
    env.backup_ok();
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.set("MSS_BACKUP_ENCRYPT_LOCAL", "true");
    // A new row before each backup, so the latest holds the most.
    let mut rows = Vec::new();
    for i in 0..3 {
        rusqlite::Connection::open(env.db_path())
            .unwrap()
            .execute(
                "INSERT INTO trackpacks(name) VALUES (?1)",
                [format!("before backup {i}")],
            )
            .unwrap();
        env.backup_ok();
        rows = table_rows(&env.db_path(), "trackpacks");
    }
    let files = entries(&env.archive_dir());
    let sealed: Vec<&String> = files
        .iter()
        .filter(|n| n.ends_with(".tar.gz.age"))
        .collect();
    assert_eq!(sealed.len(), 3, "two kept, plus the link: {files:?}");
    assert!(files.contains(&"mss-backup-latest.tar.gz.age".to_string()));
    assert!(
        !files
            .iter()
            .any(|n| n.ends_with(".tar.gz") || n.starts_with('.')),
        "no plain archive, no plain link, no leftovers: {files:?}"
    );
    let link = fs::read_link(env.archive_dir().join("mss-backup-latest.tar.gz.age")).unwrap();
    assert_eq!(
        link.to_str().unwrap(),
        env.status()["archive"].as_str().unwrap()
    );
    assert_opaque(&fs::read(env.archive_dir().join(&link)).unwrap());
    assert_eq!(mode(&env.archive_dir().join(&link)), 0o600);
    let list = env.expect(&["list"], 0);
    assert!(stdout(&list).contains(".tar.gz.age"), "{}", stdout(&list));

    // `verify` with no argument finds the encrypted latest.
    let out = env.expect(&["verify"], 0);
    assert!(stdout(&out).contains("not checked"), "{}", stdout(&out));
    env.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    let out = env.expect(&["verify"], 0);
    assert!(
        stdout(&out).contains("integrity_check ok"),
        "{}",
        stdout(&out)
    );
    fs::write(env.db_path(), b"broken").unwrap();
    let out = db_restore(&env, "latest", 0);
    assert_eq!(integrity(&env.db_path()), "ok");
    assert_eq!(
        table_rows(&env.db_path(), "trackpacks"),
        rows,
        "the newest backup's rows came back"
    );
    // The plan names the encrypted archive the operator chose, never the
    // private decrypted copy (which is gone by now).
    let from = format!("  from      {}", env.archive_dir().join(&link).display());
    assert!(
        stdout(&out).contains(&from) && !stdout(&out).contains(".open-"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_bad_recipient_fails_the_offsite_copy_but_never_the_local_backup() {
    let mut env = TestEnv::new();
    let stick = Stick::bind("MSS_TEST_USB_TMPFS");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    let (_, public) = keygen(&env);
    let missing = env.root.path().join("no-such-recipients.txt");
    let bogus = "age1thisisnotakeyatall";
    for (var, value, says) in [
        (
            "MSS_BACKUP_ENCRYPT_RECIPIENTS",
            format!("{public},{bogus}"),
            "MSS_BACKUP_ENCRYPT_RECIPIENTS: entry 2 is not an age public key".to_string(),
        ),
        (
            "MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE",
            missing.display().to_string(),
            format!("cannot read the recipients file {}", missing.display()),
        ),
    ] {
        env.unset("MSS_BACKUP_ENCRYPT_RECIPIENTS");
        env.unset("MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE");
        env.set(var, &value);
        let before = env.archives().len();
        let out = env.expect(&[], 1);
        assert_eq!(
            env.archives().len(),
            before + 1,
            "the local backup was made"
        );
        env.expect(&["verify"], 0);
        let status = env.status();
        assert_eq!(target(&status, "local")["status"], "success");
        let usb = target(&status, "usb:");
        assert_eq!(usb["status"], "failure");
        let detail = usb["detail"].as_str().unwrap();
        assert!(
            detail.contains("encryption failed, so nothing was sent") && detail.contains(&says),
            "{detail}"
        );
        assert!(!detail.contains('\n'));
        // (doctor's reachability check may have made the empty backup dir.)
        assert!(
            entries(&stick.path).iter().all(|n| n == "mss-backup")
                && entries(&stick.backups()).is_empty(),
            "nothing reached the stick: {:?} {:?}",
            entries(&stick.path),
            entries(&stick.backups())
        );
        let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
        let doctor = stdout(&env.run(&["doctor"]));
        assert!(
            doctor
                .lines()
                .any(|l| l.starts_with("✗ encryption") && l.contains(&says)),
            "{doctor}"
        );
        for text in [stdout(&out), stderr(&out), log, status.to_string(), doctor] {
            assert!(!text.contains(bogus) && !text.contains(&public), "{text}");
        }
    }
    // Both ways at once is a configuration error, before anything runs.
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    let out = env.expect(&[], 78);
    assert!(stderr(&out).contains("are both set"), "{}", stderr(&out));
}

#[test]
fn rsync_and_s3_receive_only_ciphertext_and_restores_come_back_from_it() {
    let rgw = rgw();
    let prefix = unique_prefix("age");
    let mut env = s3_env(&rgw, &prefix);
    let remote = Remote::new(&mut env);
    let (identity, public) = keygen(&env);
    let recipients = env.home.join("recipients.txt");
    fs::write(&recipients, format!("# the operator's laptop\n{public}\n")).unwrap();
    env.set(
        "MSS_BACKUP_ENCRYPT_RECIPIENTS_FILE",
        recipients.to_str().unwrap(),
    );
    env.backup_ok();
    let rows = table_rows(&env.db_path(), "trackpacks");
    let name = env.archives().pop().unwrap();
    let sealed_name = format!("{name}.age");

    assert_eq!(
        entries(&remote.dir),
        vec![sealed_name.clone(), format!("{sealed_name}.sha256")]
    );
    let on_remote = fs::read(remote.dir.join(&sealed_name)).unwrap();
    assert_opaque(&on_remote);
    let keys = rgw.keys(&prefix);
    assert_eq!(
        keys,
        vec![
            format!("{prefix}{sealed_name}"),
            format!("{prefix}{sealed_name}.sha256")
        ]
    );
    let object = rgw.get(&format!("{prefix}{sealed_name}"));
    assert!(object.starts_with("age-encryption.org/v1\n"));
    assert!(!object.contains("sound_machine.db") && !object.contains("Sounds/"));
    // Both got the same encrypted file (encrypted once per run).
    let sidecar = fs::read_to_string(remote.dir.join(format!("{sealed_name}.sha256"))).unwrap();
    assert_eq!(
        rgw.get(&format!("{prefix}{sealed_name}.sha256")).trim(),
        sidecar.trim()
    );
    assert!(
        age_decrypt(&identity, &remote.dir.join(&sealed_name))
            == fs::read(env.archive_dir().join(&name)).unwrap()
    );

    // The VM lost everything but the keys: restore from each.
    env.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    for from in ["s3:latest", &format!("rsync:{name}")] {
        fs::remove_dir_all(env.archive_dir()).unwrap();
        fs::write(env.db_path(), b"not a database").unwrap();
        let out = db_restore(&env, from, 0);
        assert!(
            stderr(&out).contains(&format!("Downloading {sealed_name}")),
            "{from}: {}",
            stderr(&out)
        );
        assert_eq!(integrity(&env.db_path()), "ok", "{from}");
        assert_eq!(
            table_rows(&env.db_path(), "trackpacks"),
            rows,
            "{from}: the backup's rows came back"
        );
    }
    let list = env.expect(&["list", "--target", "s3"], 0);
    assert!(stdout(&list).contains(&sealed_name), "{}", stdout(&list));
}
