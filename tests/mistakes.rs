//! Operator mistakes in the configuration: each must stop the run loudly
//! (exit 78, one line naming the file or variable and the fix) before
//! anything is written or deleted, and `config` and `doctor` must say the
//! same. A backup that silently ignores what the operator wrote looks fine
//! until the day it is needed.

use std::fs;
use std::path::Path;

use crate::support::*;

/// Files under the backup dir (recursively), to show that nothing changed.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(tree(&path));
        }
    }
    out.sort();
    out
}

/// The one line of a configuration error on stderr.
fn config_error(env: &TestEnv, args: &[&str]) -> String {
    let out = env.expect(args, 78);
    let err = stderr(&out);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    err
}

fn write_config(env: &TestEnv, text: &str) -> std::path::PathBuf {
    let dir = env.home.join(".config/mss-backup");
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.toml");
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_toml_syntax_error_stops_every_command_before_anything_is_written() {
    let env = TestEnv::new();
    // Three backups under retention 10; a broken file must not fall back to
    // the default 7 and prune nothing, nor back up at all.
    for _ in 0..2 {
        env.backup_ok();
    }
    let before = tree(&env.backup_dir);
    let path = write_config(
        &env,
        "retention = 10\nstop_cmd = \"docker compose stop mss\n",
    );
    for args in [&[][..], &["backup"], &["config"], &["list"], &["status"]] {
        let err = config_error(&env, args);
        assert!(
            err.contains(&format!(
                "Config file {} is not valid TOML at line 2",
                path.display()
            )),
            "{args:?}: {err}"
        );
    }
    let doctor = env.expect(&["doctor"], 78);
    let text = format!("{}{}", stdout(&doctor), stderr(&doctor));
    assert!(text.contains("is not valid TOML at line 2"), "{text}");
    assert!(!text.contains("config loaded"), "{text}");
    assert_eq!(tree(&env.backup_dir), before, "nothing written or deleted");
}

#[test]
fn a_misspelled_variable_is_refused_with_the_setting_it_resembles() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTON", "3");
    for args in [&[][..], &["config"]] {
        let err = config_error(&env, args);
        assert!(
            err.contains(
                "MSS_BACKUP_RETENTON is not a setting: did you mean MSS_BACKUP_RETENTION?"
            ),
            "{err}"
        );
        assert!(err.contains("unset MSS_BACKUP_RETENTON"), "{err}");
    }
    assert!(!env.backup_dir.exists(), "nothing written");

    // Nothing close: the message says where the list of settings is.
    env.unset("MSS_BACKUP_RETENTON");
    env.set("MSS_BACKUP_COLOUR_SCHEME", "dark");
    let err = config_error(&env, &["config"]);
    assert!(
        err.contains("MSS_BACKUP_COLOUR_SCHEME is not a setting"),
        "{err}"
    );
    assert!(
        err.contains("`mss-backup man` lists every setting"),
        "{err}"
    );
}

#[test]
fn a_misspelled_key_in_the_toml_file_or_the_env_file_names_its_line() {
    let env = TestEnv::new();
    let path = write_config(
        &env,
        "# the stick\nretention = 5\nusb_pth = \"/media/stick\"\n",
    );
    let err = config_error(&env, &[]);
    assert!(
        err.contains(&format!(
            "usb_pth in {} line 3 is not a setting: did you mean usb_path?",
            path.display()
        )),
        "{err}"
    );
    assert!(!env.backup_dir.exists(), "nothing written");
    fs::remove_file(&path).unwrap();

    let env_file = env.home.join(".config/mss-backup/env");
    fs::write(
        &env_file,
        "MSS_BACKUP_RETENTION='4'\nMSS_BACKUP_S3_BUKET='mss'\n",
    )
    .unwrap();
    let err = config_error(&env, &["status"]);
    assert!(
        err.contains(&format!(
            "MSS_BACKUP_S3_BUKET in {} line 2 is not a setting: did you mean MSS_BACKUP_S3_BUCKET?",
            env_file.display()
        )),
        "{err}"
    );
}

#[test]
fn an_env_file_that_cannot_be_read_is_an_error_not_an_empty_one() {
    let env = TestEnv::new();
    let dir = env.home.join(".config/mss-backup");
    fs::create_dir_all(&dir).unwrap();
    // A directory where the file should be: unreadable as a file, even for
    // root (the tests run as root, so permissions would not stop them).
    fs::create_dir(dir.join("env")).unwrap();
    let err = config_error(&env, &["config"]);
    assert!(err.contains("cannot read"), "{err}");
    assert!(err.contains(".config/mss-backup/env"), "{err}");
}

/// `config` as the nightly run sees it (systemd exports every line of the
/// env file) and as a bare login shell sees it (nothing exported) must be
/// the same, `MSS_BACKUP_CONFIG` included.
#[test]
fn the_nightly_run_and_a_login_shell_see_the_same_configuration() {
    let mut env = TestEnv::new();
    let other = env.home.join("elsewhere.toml");
    let other_dir = env.home.join("other-backups");
    fs::write(
        &other,
        format!("dir = \"{}\"\nretention = 4\n", other_dir.display()),
    )
    .unwrap();
    // What `schedule install` captures: the shell's MSS_BACKUP_CONFIG.
    env.unset("MSS_BACKUP_DIR");
    env.set("MSS_BACKUP_CONFIG", other.to_str().unwrap());
    env.set("MSS_BACKUP_SHRINK_GUARD", "0.25");
    env.expect(&["schedule", "install"], 0);
    let env_file = env.home.join(".config/mss-backup/env");
    let vars = fs::read_to_string(&env_file).unwrap();
    assert!(vars.contains("MSS_BACKUP_CONFIG="), "{vars}");

    // The nightly run: the env file's lines in the process environment.
    let nightly = env.expect(&["config"], 0);
    // A new login shell: none of them exported.
    env.unset("MSS_BACKUP_CONFIG");
    env.unset("MSS_BACKUP_SHRINK_GUARD");
    let login = env.expect(&["config"], 0);
    assert_eq!(stdout(&login), stdout(&nightly));
    let text = stdout(&login);
    assert!(
        text.contains(&format!("config file  {}", other.display())),
        "{text}"
    );
    assert!(text.contains(&other_dir.display().to_string()), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("retention") && l.contains(" 4 ")),
        "{text}"
    );
}

#[test]
fn schedule_install_from_a_new_shell_keeps_the_env_file() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_S3_BUCKET", "mss-bucket");
    env.set("MSS_BACKUP_S3_SECRET_ACCESS_KEY", "s3cr3t-value");
    env.set("MSS_BACKUP_S3_ACCESS_KEY_ID", "AKIDVALUE");
    env.set("MSS_BACKUP_S3_ENDPOINT", "http://127.0.0.1:9");
    env.set("MSS_BACKUP_RETENTION", "7");
    env.expect(&["schedule", "install"], 0);
    let env_file = env.home.join(".config/mss-backup/env");

    // A fresh login shell: only the new retention is exported.
    for key in [
        "MSS_BACKUP_S3_BUCKET",
        "MSS_BACKUP_S3_SECRET_ACCESS_KEY",
        "MSS_BACKUP_S3_ACCESS_KEY_ID",
        "MSS_BACKUP_S3_ENDPOINT",
    ] {
        env.unset(key);
    }
    env.set("MSS_BACKUP_RETENTION", "3");
    let out = env.expect(&["schedule", "install", "--at", "01:30"], 0);
    let text = stdout(&out);
    let vars = fs::read_to_string(&env_file).unwrap();
    for line in [
        "MSS_BACKUP_S3_BUCKET='mss-bucket'",
        "MSS_BACKUP_S3_SECRET_ACCESS_KEY='s3cr3t-value'",
        "MSS_BACKUP_RETENTION='3'",
    ] {
        assert!(vars.contains(line), "{line} kept in:\n{vars}");
    }
    assert!(
        text.contains("changed  MSS_BACKUP_RETENTION=3 (was 7)"),
        "{text}"
    );
    assert!(
        text.contains("kept     MSS_BACKUP_S3_BUCKET=mss-bucket"),
        "{text}"
    );
    assert!(
        text.contains("kept     MSS_BACKUP_S3_SECRET_ACCESS_KEY=(set, hidden)"),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t-value") && !text.contains("AKIDVALUE"),
        "{text}"
    );
    assert!(
        stdout(&env.expect(&["config"], 0)).contains("s3:"),
        "S3 still on"
    );

    // --replace: the shell alone, and it says what it drops.
    let out = env.expect(&["schedule", "install", "--replace"], 0);
    let text = stdout(&out);
    assert!(
        text.contains("dropped  MSS_BACKUP_S3_BUCKET (was mss-bucket)"),
        "{text}"
    );
    assert!(
        text.contains("dropped  MSS_BACKUP_S3_SECRET_ACCESS_KEY (was (set, hidden))"),
        "{text}"
    );
    let vars = fs::read_to_string(&env_file).unwrap();
    assert!(!vars.contains("S3_BUCKET"), "{vars}");
    assert!(vars.contains("MSS_BACKUP_RETENTION='3'"), "{vars}");
}
