//! `mss-backup`: backups for MSS, the sound-machine server. This binary is
//! thin: it parses the command line, loads the configuration, chooses the
//! targets, calls `mss-backup-core`, and prints. Exit codes: 0 ok,
//! 1 backup/restore/verify failed, 75 another run holds the lock,
//! 78 configuration error, 128 + the signal for a run a signal stopped
//! (130 Ctrl-C, 143 `systemctl stop`).

// First: its printing macros, which a closed pipe does not panic, are in
// scope for every module after it.
#[macro_use]
mod out;

mod backup_run;
mod cli;
mod commands;
mod config;
mod crypt;
mod display;
mod fleet;
mod guard;
mod interrupted;
mod logging;
mod manual;
mod monitor;
mod network;
mod progress;
mod registry;
mod schedule;
mod service;
mod source;
mod targets;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

/// Exit code when a backup, restore or check failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code when another run holds the lock (EX_TEMPFAIL).
pub const EXIT_LOCKED: u8 = 75;
/// Exit code for a configuration error (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    mss_backup_core::durable::private_umask();
    let cli = cli::Cli::parse();
    match commands::run(cli) {
        Ok(code) => code,
        Err(err) => {
            // A step without its own words for an interruption failed
            // because of it: the signal is the cause to report.
            if let Some(signal) = interrupted::received() {
                let _ = writeln!(std::io::stderr(), "mss-backup: {signal} ({err:#})");
                return ExitCode::from(signal.exit_code());
            }
            eprintln!("mss-backup: {err:#}");
            if err.downcast_ref::<config::ConfigError>().is_some() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::from(EXIT_FAILED)
            }
        }
    }
}
