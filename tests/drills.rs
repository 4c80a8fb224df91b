//! Offsite drills on the record: `verify --from` leaves each target's last
//! drill in drills.json, `status` shows it, a backup does not forget it,
//! and `schedule install --drill` adds the monthly timer. A tmpfs of its
//! own is the stick, so no service is needed.

use std::fs;

use crate::support::stick::Stick;
use crate::support::*;

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

#[test]
fn schedule_install_drill_adds_a_monthly_drill_systemd_accepts() {
    let mut env = TestEnv::new();
    let units = env.home.join(".config/systemd/user");
    // A target that is not configured: refused before anything is written.
    let out = env.expect(&["schedule", "install", "--drill", "s3"], 78);
    assert!(
        stderr(&out).contains(
            "schedule install --drill s3 needs the s3 target: MSS_BACKUP_S3_BUCKET is not set"
        ),
        "{}",
        stderr(&out)
    );
    assert!(!units.exists(), "nothing written");
    let out = env.expect(&["schedule", "install", "--drill", "nfs"], 2);
    assert!(stderr(&out).contains("nfs"), "{}", stderr(&out));

    let stick = env.root.path().join("stick");
    env.set("MSS_BACKUP_USB_PATH", stick.to_str().unwrap());
    let out = env.expect(&["schedule", "install", "--drill", "usb"], 0);
    let service = units.join("mss-backup-drill.service");
    let timer = units.join("mss-backup-drill.timer");
    assert!(
        stdout(&out)
            .contains("systemctl --user enable --now mss-backup.timer mss-backup-drill.timer")
            || stdout(&out).contains("Enabled mss-backup-drill.timer"),
        "{}",
        stdout(&out)
    );
    let service_text = fs::read_to_string(&service).unwrap();
    let timer_text = fs::read_to_string(&timer).unwrap();
    let exe = fs::canonicalize(BIN).unwrap();
    let env_file = env.home.join(".config/mss-backup/env");
    for line in [
        format!("ExecStart={} verify --from usb:latest\n", exe.display()),
        format!("EnvironmentFile=-{}\n", env_file.display()),
        "After=mss-backup.service\n".to_string(),
        "Type=oneshot\n".to_string(),
    ] {
        assert!(service_text.contains(&line), "{line} in {service_text}");
    }
    for line in [
        // Twelve hours from the nightly 03:15: a drill holding the lock
        // never makes a night's backup exit 75.
        "OnCalendar=*-*-01 15:15:00\n",
        "Persistent=true\n",
        "RandomizedDelaySec=1h\n",
        "WantedBy=timers.target\n",
    ] {
        assert!(timer_text.contains(line), "{line} in {timer_text}");
    }
    let all: Vec<String> = [
        "mss-backup.service",
        "mss-backup.timer",
        "mss-backup-drill.service",
        "mss-backup-drill.timer",
    ]
    .iter()
    .map(|n| units.join(n).to_str().unwrap().to_string())
    .collect();
    let mut args = vec!["verify", "--man=no"];
    args.extend(all.iter().map(String::as_str));
    let verify = systemd_analyze(&args);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&verify.stderr),
        "",
        "systemd-analyze verify warned"
    );
    assert!(
        systemd_analyze(&["calendar", "*-*-01 15:15:00"])
            .status
            .success()
    );
    // The drill's service reads the env file, so it sees the stick.
    assert!(
        fs::read_to_string(&env_file)
            .unwrap()
            .contains(&format!("MSS_BACKUP_USB_PATH='{}'", stick.display()))
    );

    let status = stdout(&env.run(&["schedule", "status"]));
    assert!(
        status.contains(&format!(
            "mss-backup-drill.timer: {} (monthly: verify --from usb:latest)",
            timer.display()
        )),
        "{status}"
    );
    env.expect(&["schedule", "remove"], 0);
    for unit in &all {
        assert!(!std::path::Path::new(unit).exists(), "{unit} removed");
    }
    let status = stdout(&env.run(&["schedule", "status"]));
    assert!(
        status.contains("mss-backup-drill.timer: not installed"),
        "{status}"
    );
}
