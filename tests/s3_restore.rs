//! Restores and drills from S3 against the real Ceph RADOS Gateway: a
//! restore from the bucket after the local archive is lost, `copy s3`, an
//! offsite drill, and the day the VM is gone (a new VM finds its machine
//! in the bucket and restores it, also from an encrypted bucket).

use std::fs;
use std::path::Path;

use crate::support::rgw::*;
use crate::support::tree::data_tree;
use crate::support::*;

#[test]
fn s3_restore_from_the_bucket_after_the_local_archive_is_lost() {
    let rgw = rgw();
    let prefix = unique_prefix("restore");
    let env = s3_env(&rgw, &prefix);
    env.backup_ok();
    let first = env.status()["archive"].as_str().unwrap().to_string();
    let trackpacks = |db: &Path| table_rows(db, "trackpacks");
    let at_first = trackpacks(&env.db_path());
    // A row between the backups, so the two differ in what they hold.
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute(
            "INSERT INTO trackpacks(name) VALUES ('between the backups')",
            [],
        )
        .unwrap();
    let original = trackpacks(&env.db_path());
    assert_ne!(original, at_first);
    env.backup_ok();
    let second = env.status()["archive"].as_str().unwrap().to_string();

    // The VM's backups are gone and the database is broken.
    fs::remove_dir_all(env.archive_dir()).unwrap();
    fs::write(env.db_path(), b"not a database").unwrap();

    let out = env.expect(
        &["restore", "db", "--from", "s3:latest", "--yes", "--no-stop"],
        0,
    );
    assert!(
        stderr(&out).contains(&format!("Downloading {second}")),
        "{}",
        stderr(&out)
    );
    assert_eq!(integrity(&env.db_path()), "ok");
    assert_eq!(
        trackpacks(&env.db_path()),
        original,
        "the database came back from S3"
    );
    // The download went through a partial into the archive dir, with its sidecar.
    assert!(env.archive_dir().join(&second).is_file());
    let check = tool(
        "sha256sum",
        &["-c", &format!("{second}.sha256")],
        &env.archive_dir(),
    );
    assert!(check.contains(": OK"), "{check}");
    assert!(!fs::read_dir(env.archive_dir()).unwrap().any(|e| {
        e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".partial")
    }));

    // A named backup works too; an unknown one is refused with nothing touched.
    env.expect(
        &[
            "restore",
            "db",
            "--from",
            &format!("s3:{first}"),
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert!(env.archive_dir().join(&first).is_file());
    assert_eq!(
        trackpacks(&env.db_path()),
        at_first,
        "s3:{first} brought back the first backup, not the latest"
    );
    let before = fs::read(env.db_path()).unwrap();
    let out = env.expect(
        &[
            "restore",
            "db",
            "--from",
            "s3:mss-backup-1999-01-01_000000.tar.gz",
            "--yes",
            "--no-stop",
        ],
        1,
    );
    assert!(stderr(&out).contains("no backup named"), "{}", stderr(&out));
    assert!(
        fs::read(env.db_path()).unwrap() == before,
        "nothing was touched"
    );
}

/// `copy s3` sends an existing local backup through the same delivery as
/// the nightly run (it used to be "invalid value": copy knew USB and rsync
/// only).
#[test]
fn copy_s3_sends_an_existing_backup() {
    let rgw = rgw();
    let prefix = unique_prefix("copy");
    let mut env = s3_env(&rgw, &prefix);
    let s3_vars: Vec<(String, String)> = env
        .vars
        .iter()
        .filter(|(k, _)| k.starts_with("MSS_BACKUP_S3_"))
        .cloned()
        .collect();
    for (key, _) in &s3_vars {
        env.unset(key);
    }
    env.backup_ok();
    assert!(
        rgw.keys(&prefix).is_empty(),
        "the backup itself stayed local"
    );
    let (name, sha, size) = newest_local(&env);

    for (key, value) in &s3_vars {
        env.set(key, value);
    }
    let out = env.expect(&["copy", "s3"], 0);
    assert!(
        stdout(&out).contains(&format!("Copied {name} to s3://{}/{prefix}", rgw.bucket)),
        "{}",
        stdout(&out)
    );
    let archive_key = format!("{prefix}{name}");
    assert_eq!(
        rgw.keys(&prefix),
        vec![archive_key.clone(), format!("{archive_key}.sha256")]
    );
    assert_eq!(rgw.header(&archive_key, "content-length"), size.to_string());
    assert_eq!(rgw.header(&archive_key, "x-amz-meta-sha256"), sha);
    let listed = stdout(&env.expect(&["list", "--target", "s3"], 0));
    assert!(listed.contains(&name), "{listed}");
}

/// An offsite drill: `verify --from s3:latest` reads the bucket's copy back
/// whole (sha256 against the sidecar, every member, the database) without
/// adding anything to archive/; the same object damaged in place is exit 1
/// naming the target and the backup, and the temp copy is gone either way.
#[test]
fn verify_from_s3_drills_the_offsite_copy_and_refuses_a_damaged_one() {
    let rgw = rgw();
    let prefix = unique_prefix("drill");
    let env = s3_env(&rgw, &prefix);
    env.backup_ok();
    let (name, _, _) = newest_local(&env);
    let archive_before = entries(&env.archive_dir());
    let backup_dir_before = entries(&env.backup_dir);

    let out = env.expect(&["verify", "--from", "s3:latest"], 0);
    assert!(
        stdout(&out).contains(&format!(
            "Drill OK: {name} on s3://{}/{prefix} reads back whole",
            rgw.bucket
        )),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("files match MANIFEST.sha256, database integrity_check ok"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        entries(&env.archive_dir()),
        archive_before,
        "nothing added to archive/"
    );

    // Damaged in place on the server.
    rgw.put(&format!("{prefix}{name}"), "not the backup any more");
    let out = env.expect(&["verify", "--from", &format!("s3:{name}")], 1);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("s3://{}/{prefix}", rgw.bucket))
            && err.contains(&format!("{name} does not match its checksum")),
        "{err}"
    );
    assert_eq!(
        entries(&env.archive_dir()),
        archive_before,
        "nothing added to archive/"
    );
    let mut after = entries(&env.backup_dir);
    // The drill's record is the one file a drill adds (see tests/drills.rs).
    after.retain(|n| {
        n != "backup.log" && n != "drills.json" && n != ".lock" && !n.ends_with(".lock")
    });
    let mut before = backup_dir_before;
    before.retain(|n| n != "backup.log" && n != ".lock" && !n.ends_with(".lock"));
    assert_eq!(after, before, "no temp copy left");
}

/// The day the VM is gone, run as the docs' runbook says, against the real
/// gateway in a bucket of its own: a fresh HOME with no cloud-data/ and only
/// the S3 settings lists the machine found in the bucket, restores its
/// newest backup (database content and every file equal), and the next
/// backup lands under the same prefix. With a second machine in the bucket
/// a new VM's restore is refused, naming both, and writes nothing; and
/// `status --fleet` shows every machine, marking a stale one and one with
/// no complete backup, exit 1.
#[test]
fn a_new_vm_restores_from_s3_and_the_fleet_shows_every_machine() {
    let rgw = own_bucket("fleet");
    let s3_vars = |env: &mut TestEnv| s3_settings_without_prefix(&rgw, env);

    // The machine that will be lost: backs up under mss/<its server id>/.
    let mut old = TestEnv::new();
    s3_vars(&mut old);
    let id = server_id(&old);
    old.backup_ok();
    let tree = data_tree(&old.data_dir);
    let trackpacks = table_rows(&old.db_path(), "trackpacks");

    // The new VM: the project, no cloud-data/, no backups, the S3 settings.
    let mut vm = TestEnv::empty();
    s3_vars(&mut vm);
    let listed = stdout(&vm.expect(&["list", "--target", "s3"], 0));
    assert!(
        listed.contains(&id) && listed.contains("1 backups"),
        "{listed}"
    );
    vm.expect(&["restore", "all", "--from", "s3:latest", "--dry-run"], 0);
    assert!(!vm.data_dir.exists(), "a dry run writes nothing");
    let out = vm.expect(
        &[
            "restore",
            "all",
            "--from",
            "s3:latest",
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert!(
        stderr(&out).contains(&format!("one machine's backups, {id}: restoring those")),
        "{}",
        stderr(&out)
    );
    assert_eq!(data_tree(&vm.data_dir), tree);
    assert_eq!(table_rows(&vm.db_path(), "trackpacks"), trackpacks);
    // server_id.txt came back: the next backup continues under the same prefix.
    vm.backup_ok();
    let prefix = format!("mss/{id}/");
    let archives: Vec<String> = rgw
        .keys(&prefix)
        .into_iter()
        .filter(|k| k.ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 2, "{archives:?}");

    // A second machine in the bucket: a new VM must choose.
    let mut other = TestEnv::new();
    s3_vars(&mut other);
    fs::write(other.data_dir.join("data/server_id.txt"), "venue-b\n").unwrap();
    other.backup_ok();
    let mut vm2 = TestEnv::empty();
    s3_vars(&mut vm2);
    let err = stderr(&vm2.expect(
        &[
            "restore",
            "all",
            "--from",
            "s3:latest",
            "--yes",
            "--no-stop",
        ],
        78,
    ));
    assert!(
        err.contains("holds the backups of 2 machines")
            && err.contains(&id)
            && err.contains("venue-b")
            && err.contains("MSS_BACKUP_S3_PREFIX=mss/<id>/"),
        "{err}"
    );
    assert!(
        !vm2.data_dir.exists() && !vm2.archive_dir().exists(),
        "nothing written"
    );

    // A venue whose last backup is old, and one with no complete backup.
    rgw.put("mss/venue-old/mss-backup-2020-01-01_031500.tar.gz", "old");
    rgw.put(
        "mss/venue-old/mss-backup-2020-01-01_031500.tar.gz.sha256",
        "old",
    );
    rgw.put(
        "mss/venue-none/mss-backup-2020-01-02_031500.tar.gz",
        "no sidecar",
    );
    let prom = vm2.root.path().join("mss_backup.prom");
    vm2.set("MSS_BACKUP_METRICS_FILE", prom.to_str().unwrap());
    let out = vm2.run(&["status", "--fleet", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // One series per machine, in a file beside (never over) the backup's.
    assert!(
        !prom.exists(),
        "the backup's own metrics file is not touched"
    );
    let fleet = fs::read_to_string(vm2.root.path().join("mss_backup_fleet.prom")).unwrap();
    for (machine, stale) in [
        (id.as_str(), 0),
        ("venue-b", 0),
        ("venue-old", 1),
        ("venue-none", 1),
    ] {
        assert!(
            fleet.contains(&format!(
                "mss_backup_fleet_stale{{target=\"s3://{}\",machine=\"{machine}\"}} {stale}",
                rgw.bucket
            )),
            "{machine}: {fleet}"
        );
    }
    assert!(
        fleet.contains(&format!(
            "mss_backup_fleet_backups{{target=\"s3://{}\",machine=\"{id}\"}} 2",
            rgw.bucket
        )),
        "{fleet}"
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stale = |machine: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == machine)
            .unwrap_or_else(|| panic!("{machine} in {rows}"))["stale"]
            .clone()
    };
    assert_eq!(stale(&id), false);
    assert_eq!(stale("venue-b"), false);
    assert_eq!(stale("venue-old"), true);
    assert_eq!(stale("venue-none"), true);
    let text = stdout(&vm2.run(&["status", "--fleet"]));
    assert!(
        text.lines().any(|l| l.contains("venue-none")
            && l.contains("no complete backup")
            && l.contains("STALE")),
        "{text}"
    );
}

/// The same day on an encrypted bucket: the copies in S3 are age
/// ciphertext, and a new VM with the S3 settings and the identity file
/// finds the machine, decrypts and restores it whole.
#[test]
fn a_new_vm_restores_an_encrypted_bucket_with_the_identity() {
    let rgw = own_bucket("fleet-age");
    let s3_vars = |env: &mut TestEnv| s3_settings_without_prefix(&rgw, env);
    let mut old = TestEnv::new();
    s3_vars(&mut old);
    let (identity, public) = keygen(&old);
    old.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    old.backup_ok();
    let id = server_id(&old);
    let keys = rgw.keys(&format!("mss/{id}/"));
    assert!(keys.iter().any(|k| k.ends_with(".tar.gz.age")), "{keys:?}");
    let tree = data_tree(&old.data_dir);

    let mut vm = TestEnv::empty();
    s3_vars(&mut vm);
    vm.set("MSS_BACKUP_IDENTITY_FILE", identity.to_str().unwrap());
    let listed = stdout(&vm.expect(&["list", "--target", "s3"], 0));
    assert!(
        listed.contains(&id) && listed.contains(".tar.gz.age"),
        "{listed}"
    );
    vm.expect(
        &[
            "restore",
            "all",
            "--from",
            "s3:latest",
            "--yes",
            "--no-stop",
        ],
        0,
    );
    assert_eq!(data_tree(&vm.data_dir), tree);
}
