//! Offsite copies a compromised VM cannot destroy, against the real Ceph
//! RGW that `cargo xtask test` starts: a bucket whose policy denies deletes
//! (the append-only key of docs/s3-append-only.md), and an Object-Locked
//! bucket in which an "intruder" deletes every object the VM's key can
//! list, after which a new VM still restores the newest backup from the
//! versions the bucket kept. Each test makes a bucket of its own, and checks
//! what is stored with curl's own SigV4 signing, not the code under test.

use crate::support::rgw::{Rgw, rgw, s3_settings_without_prefix, xml_values};
use crate::support::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// A bucket of its own on the gateway, and the VM's key: the gateway's
/// own helpers (curl SigV4, settings) pointed at another bucket.
struct Bucket(Rgw);

impl Bucket {
    /// A new empty bucket; `lock_days`: created with Object Lock and a
    /// default COMPLIANCE retention of that many days.
    fn new(tag: &str, lock_days: Option<u32>) -> Bucket {
        let mut rgw = rgw();
        rgw.bucket = unique(tag);
        let bucket = Bucket(rgw);
        let mut create = vec!["-X", "PUT"];
        if lock_days.is_some() {
            create.extend(["-H", "x-amz-bucket-object-lock-enabled: true"]);
        }
        let (code, body) = bucket.curl(&create, "");
        assert_eq!(code, 200, "creating bucket {}: {body}", bucket.0.bucket);
        if let Some(days) = lock_days {
            let config = format!(
                "<ObjectLockConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Days>{days}</Days></DefaultRetention></Rule></ObjectLockConfiguration>"
            );
            let (code, body) =
                bucket.curl(&["-X", "PUT", "--data-binary", &config], "?object-lock=");
            assert_eq!(code, 200, "object lock on {}: {body}", bucket.0.bucket);
        }
        bucket
    }

    fn curl(&self, args: &[&str], url_path: &str) -> (u16, String) {
        self.0.curl(args, url_path)
    }

    /// A policy denying every principal, the owner included, any delete.
    fn deny_deletes(&self) {
        let policy = format!(
            r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Deny","Principal":{{"AWS":["*"]}},"Action":["s3:DeleteObject","s3:DeleteObjectVersion"],"Resource":["arn:aws:s3:::{}/*"]}}]}}"#,
            self.0.bucket
        );
        let (code, body) = self.curl(&["-X", "PUT", "--data-binary", &policy], "?policy=");
        assert!(code == 200 || code == 204, "bucket policy: {code} {body}");
    }

    /// Every current key in the bucket, sorted.
    fn keys(&self) -> Vec<String> {
        let (code, body) = self.curl(&[], "?list-type=2");
        assert_eq!(code, 200, "listing: {body}");
        let mut keys = xml_values(&body, "Key");
        keys.sort();
        keys
    }

    /// `(key, version id)` of every object version (not delete markers).
    fn versions(&self) -> Vec<(String, String)> {
        let (code, body) = self.curl(&[], "?versions=");
        assert_eq!(code, 200, "listing versions: {body}");
        body.split("<Version>")
            .skip(1)
            .map(|v| {
                let v = v.split("</Version>").next().unwrap();
                (
                    xml_values(v, "Key")[0].clone(),
                    xml_values(v, "VersionId")[0].clone(),
                )
            })
            .collect()
    }

    fn delete(&self, key: &str, version: Option<&str>) -> (u16, String) {
        let query = version
            .map(|v| format!("?versionId={v}"))
            .unwrap_or_default();
        self.curl(&["-X", "DELETE"], &format!("/{key}{query}"))
    }

    /// The S3 settings with this bucket and the VM's key, no prefix (the
    /// default `mss/<server id>/`).
    fn settings(&self, env: &mut TestEnv) {
        s3_settings_without_prefix(&self.0, env);
    }
}

/// `list --target s3` on a new VM (no cloud-data/) with `bucket`'s settings.
fn vm_list(bucket: &Bucket) -> std::process::Output {
    let mut vm = TestEnv::empty();
    bucket.settings(&mut vm);
    vm.expect(&["list", "--target", "s3"], 0)
}

/// The status entry of the S3 target.
fn s3_entry(status: &serde_json::Value) -> serde_json::Value {
    target(status, "s3://").clone()
}

fn warnings(status: &serde_json::Value) -> Vec<String> {
    status["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

/// Every file under `dir` with its bytes, by relative path; the database
/// (compared by content, see [`rows`]) and restore's safety nets left out.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(dir).unwrap().display().to_string();
            if rel.starts_with("data/sound_machine.db") || rel.contains(".pre-restore-") {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(rel, fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// Every row of every table of the database at `db`, as text.
fn rows(db: &Path) -> Vec<String> {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))
            .unwrap();
        let columns = stmt.column_count();
        let table_rows = stmt
            .query_map([], |row| {
                Ok((0..columns)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .map(|r| format!("{table}: {r}"));
        out.extend(table_rows);
    }
    out
}

/// An append-only key (the bucket's policy denies every delete): each
/// nightly run still succeeds, every backup stays in the bucket, and the
/// refused retention is one warning per run saying that retention is left
/// to the bucket and naming the setting; with
/// `MSS_BACKUP_S3_RETENTION=bucket` no delete is tried and there is no
/// warning, only the target's line saying so. `doctor` says the key
/// cannot delete, and that without versions it could still overwrite.
#[test]
fn an_append_only_key_leaves_retention_to_the_bucket() {
    let bucket = Bucket::new("appendonly", None);
    bucket.deny_deletes();
    let mut env = TestEnv::new();
    bucket.settings(&mut env);
    env.set("MSS_BACKUP_S3_RETENTION", "1");

    for night in 1..=3 {
        let out = env.backup_ok();
        let status = env.status();
        assert_eq!(status["status"], "success", "night {night}: {status}");
        let entry = s3_entry(&status);
        assert_eq!(entry["status"], "success", "night {night}: {entry}");
        let refused: Vec<String> = warnings(&status)
            .into_iter()
            .filter(|w| w.contains("retention is left to the bucket"))
            .collect();
        if night == 1 {
            assert!(refused.is_empty(), "nothing to delete yet: {refused:?}");
            continue;
        }
        // Night 3 has two backups to let go: still one line.
        assert_eq!(refused.len(), 1, "night {night}: {status}");
        assert!(
            refused[0].contains("cannot delete")
                && refused[0].contains("lifecycle rule")
                && refused[0].contains("MSS_BACKUP_S3_RETENTION=bucket"),
            "{}",
            refused[0]
        );
        assert!(
            entry["detail"]
                .as_str()
                .unwrap()
                .contains("deletes refused"),
            "{entry}"
        );
        let shown = stdout(&out) + &stderr(&out);
        assert_eq!(
            shown.matches("retention is left to the bucket").count(),
            1,
            "said once: {shown}"
        );
    }
    let archives: Vec<String> = bucket
        .keys()
        .into_iter()
        .filter(|k| k.ends_with(".tar.gz"))
        .collect();
    assert_eq!(archives.len(), 3, "every backup stays: {archives:?}");

    env.set("MSS_BACKUP_S3_RETENTION", "bucket");
    env.backup_ok();
    let status = env.status();
    assert_eq!(status["status"], "success", "{status}");
    assert!(
        warnings(&status).iter().all(|w| !w.contains("retention")),
        "{status}"
    );
    let entry = s3_entry(&status);
    assert!(
        entry["detail"]
            .as_str()
            .unwrap()
            .contains("retention left to the bucket (MSS_BACKUP_S3_RETENTION=bucket)"),
        "{entry}"
    );
    assert_eq!(bucket.keys().len(), 8, "4 backups, 4 sidecars");
    // Unversioned: deletes are refused, but a PUT could still overwrite.
    let doctor = stdout(&env.run(&["doctor"]));
    let line = doctor_line(&doctor, "exposure");
    assert!(
        line.starts_with('!')
            && line.contains("cannot delete")
            && line.contains("overwrite a backup with junk"),
        "{doctor}"
    );
    let shown = stdout(&env.expect(&["config"], 0));
    assert!(shown.contains("retention left to the bucket"), "{shown}");
}

/// An Object-Locked bucket (default COMPLIANCE retention, so versioned):
/// the backups go up (multipart, the second with a CRC32C checksum); then an intruder on the VM
/// deletes every object its key can list, and cannot delete a version.
/// `list --target s3` shows the backups as hidden; a new VM with a fresh
/// HOME and no cloud-data/ restores the newest one from its versions,
/// saying so, passing over the junk the intruder wrote over it first, and
/// the database and files equal what was backed up.
#[test]
fn after_an_intruder_deletes_everything_a_new_vm_restores_the_hidden_backup() {
    let bucket = Bucket::new("locked", Some(1));
    let mut old = TestEnv::with_audio(12);
    bucket.settings(&mut old);
    old.backup_ok();
    let first = tree(&old.data_dir);
    fs::write(old.data_dir.join("Sounds/added-tonight.txt"), "new").unwrap();
    // The checksum AWS requires on a locked bucket, on a multipart upload.
    old.set("MSS_BACKUP_S3_CHECKSUM", "crc32c");
    old.backup_ok();
    let newest_tree = tree(&old.data_dir);
    let newest_rows = rows(&old.db_path());
    assert_ne!(first, newest_tree);
    assert!(!newest_rows.is_empty());
    let status = old.status();
    assert_eq!(s3_entry(&status)["status"], "success", "{status}");
    let newest = status["archive"].as_str().unwrap().to_string();

    let doctor = stdout(&old.run(&["doctor"]));
    let line = doctor_line(&doctor, "exposure");
    assert!(
        line.starts_with('✓') && line.contains("hide the offsite copies, not destroy them"),
        "{doctor}"
    );

    // The intruder, with the VM's key: the newest backup overwritten with
    // junk and a sidecar that does not match it (newer versions of both),
    // every listed object deleted (delete markers), and a version delete
    // refused by the lock.
    let keys = bucket.keys();
    assert_eq!(keys.len(), 4, "{keys:?}");
    let newest_key = keys.iter().find(|k| k.ends_with(&newest)).unwrap();
    let junk_line = format!("{}  {newest}\n", "0".repeat(64));
    for (key, body) in [
        (newest_key.clone(), "encrypted by ransomware".to_string()),
        (format!("{newest_key}.sha256"), junk_line),
    ] {
        let (code, answer) =
            bucket.curl(&["-X", "PUT", "--data-binary", &body], &format!("/{key}"));
        assert_eq!(code, 200, "PUT {key}: {answer}");
    }
    for key in &keys {
        let (code, body) = bucket.delete(key, None);
        assert_eq!(code, 204, "DELETE {key}: {body}");
    }
    assert!(bucket.keys().is_empty());
    let (key, version) = bucket.versions()[0].clone();
    let (code, _) = bucket.delete(&key, Some(&version));
    assert_eq!(
        code, 403,
        "the lock refuses deleting version {version} of {key}"
    );

    let listed = stdout(&old.expect(&["list", "--target", "s3"], 0));
    let machines = stdout(&vm_list(&bucket));
    assert!(
        machines.contains(&format!(
            "2 hidden backups (deleted, kept as versions), newest {newest}"
        )),
        "{machines}"
    );
    assert!(
        listed.contains(&newest) && listed.contains("hidden"),
        "{listed}"
    );

    let mut vm = TestEnv::empty();
    bucket.settings(&mut vm);
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
    let said = stderr(&out);
    assert!(said.contains(&newest) && said.contains("hidden"), "{said}");
    assert_eq!(tree(&vm.data_dir), newest_tree);
    assert_eq!(rows(&vm.db_path()), newest_rows);
}

/// A key that may delete on a bucket that keeps no versions: `doctor` says
/// an intruder could destroy every offsite copy, and the probe it wrote is
/// gone again.
#[test]
fn doctor_says_when_the_key_can_destroy_the_offsite_copies() {
    let bucket = Bucket::new("exposed", None);
    let mut env = TestEnv::new();
    bucket.settings(&mut env);
    let doctor = stdout(&env.run(&["doctor"]));
    let line = doctor_line(&doctor, "exposure");
    assert!(
        line.starts_with('!') && line.contains("can destroy every offsite copy"),
        "{doctor}"
    );
    assert!(bucket.keys().is_empty(), "{:?}", bucket.keys());
}

/// A mistyped `bucket`, or a checksum mss-backup cannot send, is one line
/// naming the variable and what it may be, exit 78, before any request.
#[test]
fn s3_lock_settings_are_checked_naming_the_variable() {
    let mut env = TestEnv::new();
    for (key, value) in [
        ("MSS_BACKUP_S3_BUCKET", "b"),
        ("MSS_BACKUP_S3_ENDPOINT", "http://127.0.0.1:9"),
        ("MSS_BACKUP_S3_PREFIX", "x/"),
        ("MSS_BACKUP_S3_ACCESS_KEY_ID", "id"),
        ("MSS_BACKUP_S3_SECRET_ACCESS_KEY", "secret"),
    ] {
        env.set(key, value);
    }
    env.set("MSS_BACKUP_S3_RETENTION", "bucke");
    let err = stderr(&env.expect(&["config"], 78));
    assert!(
        err.contains("MSS_BACKUP_S3_RETENTION=bucke is not valid") && err.contains("`bucket`"),
        "{err}"
    );
    env.set("MSS_BACKUP_S3_RETENTION", "bucket");
    env.set("MSS_BACKUP_S3_CHECKSUM", "md5");
    let err = stderr(&env.expect(&["config"], 78));
    assert!(
        err.contains("MSS_BACKUP_S3_CHECKSUM=md5 is not valid") && err.contains("crc32c"),
        "{err}"
    );
    env.set("MSS_BACKUP_S3_CHECKSUM", "crc32c");
    env.expect(&["config"], 0);
}
