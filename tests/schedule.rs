//! The nightly timer: real systemd tools check the generated units.

use std::fs;
use std::path::Path;

use crate::support::user_manager::UserManager;
use crate::support::*;

#[test]
fn install_writes_units_systemd_accepts_and_an_env_file_the_nightly_run_reads() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTION", "3");
    env.set("MSS_BACKUP_RANDOM_DELAY", "15m");
    let secret = "0123-it's a \"secret\" $HOME";
    let out = env
        .cmd(&["schedule", "install", "--at", "04:30"])
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let units = env.home.join(".config/systemd/user");
    let service = units.join("mss-backup.service");
    let timer = units.join("mss-backup.timer");
    let service_text = fs::read_to_string(&service).unwrap();
    let timer_text = fs::read_to_string(&timer).unwrap();
    let exe = fs::canonicalize(BIN).unwrap();
    assert!(
        service_text.contains(&format!("ExecStart={} backup\n", exe.display())),
        "{service_text}"
    );
    for line in ["Type=oneshot", "Nice=10", "IOSchedulingClass=idle"] {
        assert!(service_text.contains(line), "{service_text}");
    }
    assert!(!service_text.contains("Restart="), "no restart loop");
    for line in [
        "OnCalendar=*-*-* 04:30:00",
        "Persistent=true",
        "RandomizedDelaySec=15m",
        "WantedBy=timers.target",
    ] {
        assert!(timer_text.contains(line), "{timer_text}");
    }

    let verify = systemd_analyze(&[
        "verify",
        "--man=no",
        service.to_str().unwrap(),
        timer.to_str().unwrap(),
    ]);
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
    // systemd reads the generated timer's own OnCalendar= as 04:30 daily.
    let on_calendar = timer_text
        .lines()
        .find_map(|l| l.strip_prefix("OnCalendar="))
        .unwrap_or_else(|| panic!("no OnCalendar= in {timer_text}"));
    let calendar = systemd_analyze(&["calendar", on_calendar]);
    assert!(calendar.status.success(), "{}", stderr(&calendar));
    assert!(
        stdout(&calendar).contains("Normalized form: *-*-* 04:30:00"),
        "{}",
        stdout(&calendar)
    );

    // The env file holds exactly what the shell had, privately.
    let env_file = env.home.join(".config/mss-backup/env");
    assert_eq!(mode(&env_file), 0o600);
    assert!(service_text.contains(&format!("EnvironmentFile=-{}\n", env_file.display())));
    let text = fs::read_to_string(&env_file).unwrap();
    assert!(text.contains("MSS_BACKUP_RETENTION='3'"), "{text}");
    assert!(
        !text.contains("PATH="),
        "only our variables and credentials: {text}"
    );
    // The secret, quoted by the rules systemd documents for
    // EnvironmentFile= (in double quotes, backslash escapes \ " $ `),
    // written out by hand here, not by the code under test.
    let line = text
        .lines()
        .find(|l| l.starts_with("AWS_SECRET_ACCESS_KEY="))
        .unwrap_or_else(|| panic!("the secret is not in the env file: {text}"));
    assert_eq!(
        line,
        r#"AWS_SECRET_ACCESS_KEY="0123-it's a \"secret\" \$HOME""#
    );
    // A POSIX shell, whose double-quote rules are the same for these
    // escapes, reads it back exactly (systemd's own reading: the next test).
    let read_back = std::process::Command::new("sh")
        .args([
            "-c",
            r#"set -a; . "$0"; printf %s "$AWS_SECRET_ACCESS_KEY""#,
            env_file.to_str().unwrap(),
        ])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(stdout(&read_back), secret, "{}", stderr(&read_back));
    // No user manager is reachable (the environment is cleared): the
    // install says how to enable the timer instead of claiming it did.
    assert!(
        stdout(&out).contains("systemctl --user enable --now mss-backup.timer")
            && !stdout(&out).contains("Enabled"),
        "{}",
        stdout(&out)
    );

    // A manual run without the variables still sees them, from the env file.
    env.unset("MSS_BACKUP_RETENTION");
    let config = stdout(&env.expect(&["config"], 0));
    let line = config.lines().find(|l| l.starts_with("retention")).unwrap();
    assert!(
        line.contains(" 3 ")
            && line.contains(&format!("MSS_BACKUP_RETENTION in {}", env_file.display())),
        "{config}"
    );
    assert!(
        config.contains(&format!("env file     {}", env_file.display())),
        "{config}"
    );
    assert!(
        !config.contains("secret\""),
        "secrets never shown: {config}"
    );

    let status = env.run(&["schedule", "status"]);
    assert!(
        stdout(&status).contains("*-*-* 04:30:00"),
        "{}",
        stdout(&status)
    );
    env.expect(&["schedule", "remove"], 0);
    assert!(!service.exists() && !timer.exists());
    assert!(env_file.exists(), "the env file stays for manual runs");
    env.expect(&["schedule", "status"], 1);
}

#[test]
fn install_refuses_a_bad_time() {
    let env = TestEnv::new();
    let out = env.expect(&["schedule", "install", "--at", "25:00"], 78);
    assert!(stderr(&out).contains("--at 25:00"), "{}", stderr(&out));
    assert!(!Path::new(&env.home.join(".config/systemd")).exists());
}

/// systemd itself reads what `schedule install` wrote: a user manager of
/// the test's own (see `support::user_manager`) reads the env file into a
/// transient service exactly as the shell had the values, the awkward
/// characters of a secret included, and starts the installed service,
/// which makes tonight's backup with the env file's settings.
#[test]
fn systemd_itself_reads_the_env_file_and_runs_the_installed_service() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTION", "3");
    let secret = "0123-it's a \"secret\" $HOME `id` \\n end";
    let out = env
        .cmd(&["schedule", "install", "--at", "04:30"])
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let env_file = env.home.join(".config/mss-backup/env");
    let manager = UserManager::start(&env.home, &env.root.path().join("xdg"));

    let read = manager.run(
        &[&format!("EnvironmentFile={}", env_file.display())],
        &["printenv", "AWS_SECRET_ACCESS_KEY", "MSS_BACKUP_RETENTION"],
    );
    assert!(read.status.success(), "{}", stderr(&read));
    assert_eq!(stdout(&read), format!("{secret}\n3\n"));

    // The installed service, started as the timer would start it.
    assert!(env.archives().is_empty());
    let started = manager.systemctl(&["start", "mss-backup.service"]);
    assert!(started.status.success(), "{}", stderr(&started));
    assert_eq!(env.archives().len(), 1, "the service made a backup");
    let status = env.status();
    assert_eq!(status["status"], "success", "{status}");
    assert!(status["retention"]["kept"].as_array().is_some(), "{status}");
}
