//! Odd clocks (Debian's `faketime`): two backups in one second, a clock
//! set back.

use std::fs;
use std::path::Path;
use std::process::Output;

use crate::support::*;

/// `mss-backup ARGS` with the clock frozen at `time` (local time).
fn at_time(env: &TestEnv, time: &str, args: &[&str]) -> Output {
    let mut cmd = wrapped(env, &["faketime", "-f", time], args);
    // Only the wall clock is faked: timeouts keep working.
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    cmd.output()
        .expect("faketime must be installed (cargo xtask test installs it)")
}

#[test]
fn two_backups_in_the_same_second_never_overwrite_one_another() {
    let env = TestEnv::new();
    let second = "2026-03-01 03:15:00";
    let first = at_time(&env, second, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first_name = "mss-backup-2026-03-01_031500.tar.gz";
    assert_eq!(env.archives(), [first_name]);
    let bytes = fs::read(env.archive_dir().join(first_name)).unwrap();
    for _ in 0..2 {
        let out = at_time(&env, second, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(
        env.archives(),
        [
            first_name,
            "mss-backup-2026-03-01_031501.tar.gz",
            "mss-backup-2026-03-01_031502.tar.gz"
        ]
    );
    assert_eq!(
        fs::read(env.archive_dir().join(first_name)).unwrap(),
        bytes,
        "the first archive is untouched"
    );
    for name in env.archives() {
        env.expect(&["verify", &name], 0);
    }
}

/// The same with local encryption, where a backup leaves only its `.age`
/// file and sidecar: a second encrypted run in that second must not take
/// its name (it would replace it, here and offsite), nor a plain run.
#[test]
fn an_encrypted_backup_in_the_same_second_is_never_overwritten() {
    let mut env = TestEnv::new();
    let (_identity, public) = keygen(&env);
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.set("MSS_BACKUP_ENCRYPT_LOCAL", "true");
    let second = "2026-03-01 03:15:00";
    let backups = |env: &TestEnv| -> Vec<String> {
        let mut names: Vec<String> = entries(&env.archive_dir())
            .into_iter()
            .filter(|n| n.starts_with("mss-backup-2") && !n.ends_with(".sha256"))
            .collect();
        names.sort();
        names
    };
    let first = at_time(&env, second, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first_name = "mss-backup-2026-03-01_031500.tar.gz.age";
    assert_eq!(backups(&env), [first_name]);
    let bytes = fs::read(env.archive_dir().join(first_name)).unwrap();
    let out = at_time(&env, second, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.unset("MSS_BACKUP_ENCRYPT_LOCAL");
    let out = at_time(&env, second, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        backups(&env),
        [
            first_name,
            "mss-backup-2026-03-01_031501.tar.gz.age",
            "mss-backup-2026-03-01_031502.tar.gz"
        ]
    );
    assert_eq!(
        fs::read(env.archive_dir().join(first_name)).unwrap(),
        bytes,
        "the first archive is untouched"
    );
}

#[test]
fn a_clock_set_back_never_lets_retention_delete_the_newest_backup() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTION", "2");
    for day in ["10", "11", "12"] {
        let out = at_time(&env, &format!("2026-03-{day} 03:15:00"), &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // The clock jumps back nine days (a dead RTC battery, a bad NTP step).
    let out = at_time(&env, "2026-03-01 03:15:00", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let just_made = "mss-backup-2026-03-01_031500.tar.gz";
    assert_eq!(
        env.archives(),
        [just_made, "mss-backup-2026-03-12_031500.tar.gz"],
        "the backup just made survives although its name sorts oldest"
    );
    assert_eq!(fs::read_link(env.latest()).unwrap(), Path::new(just_made));
    env.expect(&["verify"], 0);
    let out = at_time(&env, "2026-03-01 03:15:00", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        env.archives()
            .contains(&"mss-backup-2026-03-01_031501.tar.gz".to_string())
    );
    env.expect(&["verify"], 0);
}
