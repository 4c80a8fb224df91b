//! Installs and upgrades: the nightly unit names one binary by path, so a
//! move from `cargo install` (~/.cargo/bin) to the Debian package
//! (/usr/bin) leaves a unit that runs the old binary, or nothing at all
//! once the old one is removed. `doctor` must say so, with the fix.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use crate::support::*;

#[test]
fn doctor_names_a_timer_that_runs_another_or_a_missing_binary() {
    let env = TestEnv::new();
    env.backup_ok();
    env.expect(&["schedule", "install"], 0);
    let this = fs::canonicalize(BIN).unwrap();
    let service = env.home.join(".config/systemd/user/mss-backup.service");

    let text = stdout(&env.expect(&["doctor"], 0));
    let line = doctor_line(&text, "timer binary");
    assert!(
        line.starts_with('✓') && line.contains(&this.display().to_string()),
        "{text}"
    );

    // A unit written by an earlier `cargo install` binary that is still
    // there: the nightly run works, but runs the old version.
    let old = env.home.join(".cargo/bin/mss-backup");
    fs::create_dir_all(old.parent().unwrap()).unwrap();
    fs::write(&old, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
    let unit = fs::read_to_string(&service).unwrap();
    let stale = unit.replace(
        &format!("ExecStart={} backup", this.display()),
        &format!("ExecStart={} backup", old.display()),
    );
    assert_ne!(unit, stale, "{unit}");
    fs::write(&service, &stale).unwrap();
    let text = stdout(&env.expect(&["doctor"], 0));
    let line = doctor_line(&text, "timer binary");
    assert!(
        line.starts_with('!')
            && line.contains(&format!("runs {}", old.display()))
            && line.contains(&format!("this is {}", this.display()))
            && line.contains("mss-backup schedule install"),
        "{text}"
    );

    // The old binary removed (`cargo uninstall`): tonight's run would fail.
    fs::remove_file(&old).unwrap();
    let text = stdout(&env.expect(&["doctor"], 1));
    let line = doctor_line(&text, "timer binary");
    assert!(
        line.starts_with('✗')
            && line.contains(&format!("runs {}, which does not exist", old.display()))
            && line.contains("mss-backup schedule install"),
        "{text}"
    );
    assert!(text.contains("1 check failed"), "{text}");

    // The fix it names works.
    env.expect(&["schedule", "install"], 0);
    let text = stdout(&env.expect(&["doctor"], 0));
    assert!(
        doctor_line(&text, "timer binary").starts_with('✓'),
        "{text}"
    );
}
