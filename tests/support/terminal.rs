//! A run on a real pseudo-terminal (util-linux `script`), for what only
//! shows at a terminal: progress bars, the restore prompt.

use std::io::Write;
use std::process::Stdio;

use super::{BIN, TestEnv};

/// Runs `mss-backup ARGS` on a pseudo-terminal, with the environment of
/// [`TestEnv::cmd`] and `TERM=xterm`, typing `typed` ahead (the terminal
/// holds the line until a prompt reads it). Returns the exit code and
/// everything the terminal showed.
pub fn on_a_terminal(env: &TestEnv, args: &str, typed: &str) -> (i32, String) {
    let mut child = env
        .command("script")
        .args(["-qec", &format!("'{BIN}' {args}"), "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux script must be installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
