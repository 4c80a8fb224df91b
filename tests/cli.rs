//! The read-only commands: verify, status, list, config, demo.

use std::fs;

use crate::support::*;

#[test]
fn verify_passes_a_good_archive_and_refuses_a_flipped_byte_or_truncation() {
    let env = TestEnv::new();
    env.backup_ok();
    let out = env.expect(&["verify"], 0);
    assert!(
        stdout(&out).contains("database integrity_check ok"),
        "{}",
        stdout(&out)
    );
    let name = env.archives()[0].clone();
    env.expect(&["verify", &name], 0);

    let path = env.archive_dir().join(&name);
    let original = fs::read(&path).unwrap();
    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    fs::write(&path, &flipped).unwrap();
    let out = env.expect(&["verify"], 1);
    assert!(
        stderr(&out).contains("does not match its checksum file"),
        "{}",
        stderr(&out)
    );

    fs::write(&path, &original[..original.len() - 1000]).unwrap();
    let out = env.expect(&["verify", path.to_str().unwrap()], 1);
    assert!(
        stderr(&out).contains(&name) && stderr(&out).contains("does not match its checksum file"),
        "{}",
        stderr(&out)
    );

    fs::write(&path, &original).unwrap();
    env.expect(&["verify"], 0);
    let out = env.expect(&["verify", "mss-backup-1999-01-01_000000.tar.gz"], 1);
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
}

#[test]
fn status_reports_success_failure_and_staleness_by_exit_code() {
    let env = TestEnv::new();
    let out = env.expect(&["status"], 1);
    assert!(stderr(&out).contains("No backup has run yet"));

    env.backup_ok();
    let out = env.expect(&["status"], 0);
    assert!(
        stdout(&out).contains("Last backup: success"),
        "{}",
        stdout(&out)
    );
    env.expect(&["status", "--max-age", "26h"], 0);
    let mut json: serde_json::Value =
        serde_json::from_slice(&env.expect(&["status", "--json"], 0).stdout).unwrap();
    // last_backup.json, plus each target's last drill (none yet).
    let drills = json.as_object_mut().unwrap().remove("drills");
    assert_eq!(drills, Some(serde_json::json!({})));
    assert_eq!(json, env.status());

    // A backup that finished three days ago is stale for a 26h monitor.
    let path = env.backup_dir.join("last_backup.json");
    let mut doc = env.status();
    let old = chrono::Local::now() - chrono::TimeDelta::days(3);
    doc["finished_at"] = serde_json::Value::String(old.to_rfc3339());
    fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = env.expect(&["status", "--max-age", "26h"], 1);
    assert!(
        stderr(&out).contains("more than the allowed"),
        "{}",
        stderr(&out)
    );
    let out = env.expect(&["status", "--max-age", "soon"], 78);
    assert!(stderr(&out).contains("--max-age soon"));

    fs::remove_dir_all(&env.data_dir).unwrap();
    let out = env.expect(&[], 1);
    assert!(
        stderr(&out).contains(&env.data_dir.display().to_string()),
        "the failure names the missing data dir: {}",
        stderr(&out)
    );
    let out = env.expect(&["status"], 1);
    assert!(
        stdout(&out).contains("Last backup: failure") || stderr(&out).contains("failure"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

#[test]
fn list_shows_backups_newest_first() {
    let env = TestEnv::new();
    env.backup_ok();
    env.backup_ok();
    let json: serde_json::Value =
        serde_json::from_slice(&env.expect(&["list", "--json"], 0).stdout).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let names = env.archives();
    assert_eq!(rows[0]["name"], names[1].as_str());
    assert_eq!(rows[1]["name"], names[0].as_str());
    assert!(rows[0]["size_bytes"].as_u64().unwrap() > 0);
    let table = stdout(&env.expect(&["list"], 0));
    assert!(
        table.lines().next().unwrap().starts_with(&names[1]),
        "{table}"
    );
}

#[test]
fn config_shows_each_value_and_where_it_came_from_with_the_right_precedence() {
    let mut env = TestEnv::new();
    let file = env.root.path().join("config.toml");
    fs::write(&file, "retention = 3\nproject_dir = \"~/elsewhere\"\n").unwrap();
    env.set("MSS_BACKUP_CONFIG", file.to_str().unwrap());
    env.unset("MSS_BACKUP_PROJECT_DIR");
    let out = stdout(&env.expect(&["config"], 0));
    let line = |key: &str| {
        out.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {out}"))
            .to_string()
    };
    assert!(
        line("retention").contains(" 3 ")
            && line("retention").contains(&format!("retention in {}", file.display())),
        "{out}"
    );
    assert!(
        line("project_dir").contains(&format!("{}/elsewhere", env.home.display())),
        "{out}"
    );
    assert!(line("dir ").contains("(MSS_BACKUP_DIR)"), "{out}");

    env.set("MSS_BACKUP_RETENTION", "5");
    let out = stdout(&env.expect(&["config"], 0));
    assert!(
        out.lines().any(|l| l.starts_with("retention")
            && l.contains(" 5 ")
            && l.contains("(MSS_BACKUP_RETENTION)")),
        "{out}"
    );
    let out = stdout(&env.expect(&["config", "--retention", "2"], 0));
    assert!(
        out.lines().any(|l| l.starts_with("retention")
            && l.contains(" 2 ")
            && l.contains("(--retention)")),
        "{out}"
    );

    fs::write(&file, "retention = 0\n").unwrap();
    env.unset("MSS_BACKUP_RETENTION");
    let out = env.expect(&["config"], 78);
    assert!(
        stderr(&out).contains("retention = \"0\" in"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn demo_runs_on_a_machine_without_mss() {
    let env = TestEnv::empty();
    let out = env.expect(&["demo", "--audio-mib", "2"], 0);
    let text = stdout(&out);
    // What the demo says it made and verified, checked with outside tools.
    let after = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in {text}"))
            .trim()
            .to_string()
    };
    let archive = std::path::PathBuf::from(after("Backup:"));
    let verified = after("Verified: sha256");
    let (sha, files) = verified
        .split_once(", ")
        .unwrap_or_else(|| panic!("{verified}"));
    let dir = archive.parent().unwrap();
    let sum = tool("sha256sum", &[archive.to_str().unwrap()], dir);
    assert_eq!(sum.split_whitespace().next(), Some(sha), "{text}");
    let manifest = tool(
        "tar",
        &["-xzOf", archive.to_str().unwrap(), "MANIFEST.sha256"],
        dir,
    );
    assert_eq!(
        files.split_whitespace().next(),
        Some(manifest.lines().count().to_string().as_str()),
        "{text}"
    );
    let data = after("Demo MSS data:");
    let trackpacks: i64 = data
        .split(" with ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{data}"));
    let db =
        std::path::PathBuf::from(data.split(" (").next().unwrap()).join("data/sound_machine.db");
    assert_eq!(count_rows(&db, "trackpacks"), trackpacks, "{text}");
    // It made its own data and backups in the temp dir, not under HOME.
    assert!(!env.home.join("backups").exists());
    let root = fs::read_dir(env.root.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("mss-backup-demo-")
        })
        .expect("demo dir in TMPDIR")
        .path();
    let latest = root.join("backups/mss/archive/mss-backup-latest.tar.gz");
    let members = tool("tar", &["-tzf", latest.to_str().unwrap()], &root);
    assert!(members.starts_with("data/sound_machine.db\n"));
}
