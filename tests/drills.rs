//! Offsite drills on the record: `verify --from` leaves each target's last
//! drill in drills.json, `status` shows it, a backup does not forget it,
//! and `schedule install --drill` adds the monthly timer. A tmpfs of its
//! own is the stick, so no service is needed.

use std::fs;

use crate::support::*;
use crate::targets::Stick;

#[test]
fn status_shows_each_targets_last_drill_and_a_backup_keeps_it() {
    let stick = Stick::tmpfs("64m");
    let path = stick.path.to_str().unwrap().to_string();
    let target = format!("usb:{path}");
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_USB_PATH", &path);
    env.backup_ok();
    let name = env.archives().pop().unwrap();
    let out = env.expect(&["status"], 0);
    assert!(
        stdout(&out).contains("  drills: none yet"),
        "{}",
        stdout(&out)
    );

    env.expect(&["verify", "--from", "usb:latest"], 0);
    let out = stdout(&env.expect(&["status"], 0));
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("  drill {target}: ")))
        .unwrap_or_else(|| panic!("no drill line in {out}"));
    assert!(
        line.starts_with(&format!("  drill {target}: ok, finished "))
            && line.contains(&format!(", {name} — sha256 matches its checksum file, "))
            && line.contains("files match MANIFEST.sha256, database integrity_check ok"),
        "{line}"
    );
    let drills = env.backup_dir.join("drills.json");
    assert_eq!(mode(&drills), 0o600);

    // The next night's backup rewrites last_backup.json; the drill stays.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    env.backup_ok();
    let status = status_json(&env);
    let drill = &status["drills"][&target];
    assert_eq!(drill["result"], "success", "{status}");
    assert_eq!(drill["backup"], name.as_str(), "{status}");
    assert!(
        drill["finished_at"].as_str().unwrap().contains('T'),
        "{status}"
    );

    // Damaged on the stick: the drill fails, and says so in status and
    // backup.log, without the temp dir's path.
    fs::write(stick.backups().join(&name), b"not the backup any more").unwrap();
    let out = env.expect(&["verify", "--from", &format!("usb:{name}")], 1);
    assert!(
        stderr(&out).contains(&format!("{name} does not match its checksum")),
        "{}",
        stderr(&out)
    );
    let status = status_json(&env);
    let drill = &status["drills"][&target];
    assert_eq!(drill["result"], "failure", "{status}");
    assert_eq!(drill["backup"], name.as_str(), "{status}");
    let detail = drill["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("{name} does not match its checksum"))
            && !detail.contains(".mss-backup-drill-"),
        "{detail}"
    );
    let out = stdout(&env.expect(&["status"], 0));
    assert!(
        out.contains(&format!("  drill {target}: FAILED, finished ")),
        "{out}"
    );
    let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR")
                && l.contains(&format!("drill of {target} FAILED ({name})"))),
        "{log}"
    );
}

/// What `status --json` prints (not the file alone: the drills are beside it).
fn status_json(env: &TestEnv) -> serde_json::Value {
    serde_json::from_str(&stdout(&env.expect(&["status", "--json"], 0))).unwrap()
}
