//! Small things an operator sees: output into a closed pipe, the headline
//! of a run whose offsite copy failed, `doctor` on a fresh install and on a
//! config file others can read, and the help and man page of `restore`.

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
