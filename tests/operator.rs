//! Small things an operator sees: output into a closed pipe, the headline
//! of a run whose offsite copy failed, `doctor` on a fresh install and on a
//! config file others can read, and the help and man page of `restore`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use crate::support::*;

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let env = TestEnv::new();
    env.backup_ok();
    for (args, code) in [
        (&["config"][..], 0),
        (&["list"], 0),
        (&["status"], 0),
        (&["man"], 0),
        (&["completions", "bash"], 0),
    ] {
        // `| head -1` after head has gone: the read end is closed before
        // the first write, so every write fails with EPIPE.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = env
            .cmd(args)
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let msg = stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {msg}");
        assert!(!msg.contains("panicked"), "{args:?}: {msg}");
        assert!(!msg.contains("Broken pipe"), "{args:?}: {msg}");
    }
}

#[test]
fn a_failed_offsite_copy_says_the_local_backup_is_fine() {
    let mut env = TestEnv::new();
    // A plain dir, not a mount: the USB copy fails, the backup does not.
    let stick = env.root.path().join("stick");
    fs::create_dir(&stick).unwrap();
    env.set("MSS_BACKUP_USB_PATH", stick.to_str().unwrap());
    env.set("MSS_BACKUP_USB_REQUIRED", "true");
    let out = env.expect(&[], 1);
    let msg = stderr(&out);
    let headline = msg.lines().next().unwrap_or_default();
    assert!(
        headline.starts_with("Backup OK locally; offsite ")
            && headline.contains(" FAILED: ")
            && headline.contains(&stick.display().to_string()),
        "{msg}"
    );
    assert!(!msg.contains("Backup FAILED"), "{msg}");
    assert_eq!(msg.matches("is not mounted").count(), 1, "said once: {msg}");
    assert_eq!(env.archives().len(), 1, "the local backup is there");
    assert_eq!(
        env.status()["status"],
        "failure",
        "exit code and status unchanged"
    );
}

#[test]
fn doctor_passes_a_fresh_install_and_warns_about_an_open_config_file() {
    let env = TestEnv::new();
    // Fresh: no backup yet, no timer (the README runs doctor first).
    let text = stdout(&env.expect(&["doctor"], 0));
    let line = doctor_line(&text, "timer");
    assert!(
        line.starts_with('!') && line.contains("mss-backup schedule install"),
        "{text}"
    );
    // A config file readable by everyone (it may hold the S3 keys).
    let file = env.home.join(".config/mss-backup/config.toml");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, "retention = 5\n").unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let text = stdout(&env.expect(&["doctor"], 0));
    let line = doctor_line(&text, "config file");
    assert!(
        line.starts_with('!') && line.contains(&format!("chmod 600 {}", file.display())),
        "{text}"
    );
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    let text = stdout(&env.expect(&["doctor"], 0));
    assert!(doctor_line(&text, "config file").starts_with('✓'), "{text}");
}

#[test]
fn restore_help_and_the_man_page_name_offsite_sources_and_no_missing_pages() {
    let env = TestEnv::empty();
    let help = stdout(&env.expect(&["restore", "--help"], 0));
    for source in ["s3:NAME", "usb:NAME", "rsync:NAME"] {
        assert!(help.contains(source), "{source} missing:\n{help}");
    }
    let page = stdout(&env.expect(&["man"], 0));
    // clap_mangen's own list points at mss-backup-restore(1) and the like,
    // which are not installed anywhere.
    let plain = page.replace("\\-", "-");
    for (at, _) in plain.match_indices("mss-backup-") {
        let rest = &plain[at + "mss-backup-".len()..];
        let end = rest
            .find(|c: char| !c.is_ascii_alphanumeric() && c != '-')
            .unwrap_or(rest.len());
        assert!(
            !rest[end..].starts_with('('),
            "a reference to a page that does not exist: mss-backup-{}",
            &rest[..end + 3.min(rest.len() - end)]
        );
    }
    for command in ["restore", "schedule install", "copy", "doctor", "list"] {
        assert!(
            page.contains(&format!(".SS \"mss-backup {command}\"")),
            "{command} missing:\n{page}"
        );
    }
    assert!(page.contains("s3:NAME"), "--from of restore:\n{page}");
}
