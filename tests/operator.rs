//! Small things an operator sees: output into a closed pipe, the headline
//! of a run whose offsite copy failed, `doctor` on a fresh install and on a
//! config file others can read, and the help and man page of `restore`.

use std::fs;
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
    assert_eq!(env.archives().len(), 1, "the local backup is there");
    assert_eq!(
        env.status()["status"],
        "failure",
        "exit code and status unchanged"
    );
}
