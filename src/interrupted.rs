//! How a run that a signal stopped ends: core's loops turn the signal into
//! an error whose cleanup removes what the run was making (see
//! `mss_backup_core::interrupt`); here the commands that do long work
//! install the handler, and say in one line, on stderr and in
//! `backup.log`, what the interruption left, then exit 128 + the signal
//! (130 for Ctrl-C, 143 for `systemctl stop`). Commands that do not poll
//! keep the default: a signal ends them at once, as before.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

pub use mss_backup_core::interrupt::{Interrupted, received};

/// Lets SIGINT, SIGTERM and SIGHUP stop the run through its cleanup.
pub fn install() {
    if let Err(e) = mss_backup_core::interrupt::install() {
        // Without the handler a signal still stops the run, only without
        // the cleanup: not worth refusing to work for.
        tracing::warn!("cannot install the signal handler: {e}");
    }
}

/// Prints `mss-backup: interrupted by SIGINT; OUTCOME`, writes it to
/// `backup.log` in `backup_dir` (when that dir exists), and returns the
/// exit code for `signal`.
pub fn report(signal: Interrupted, backup_dir: &Path, outcome: &str) -> ExitCode {
    let line = format!("{signal}; {outcome}");
    if backup_dir.is_dir() {
        // Already set up by most commands; `verify` logs only this.
        let _ = crate::logging::to_backup_log(backup_dir);
    }
    tracing::error!("{line}");
    // The terminal may be gone (SIGHUP): never panic on stderr here.
    let _ = writeln!(std::io::stderr(), "mss-backup: {line}");
    ExitCode::from(signal.exit_code())
}

/// [`report`] if a signal stopped the run: `Some(exit code)` after the
/// line is out, `None` (nothing said) when no signal came.
pub fn stopped(backup_dir: &Path, outcome: &str) -> Option<ExitCode> {
    received().map(|signal| report(signal, backup_dir, outcome))
}
