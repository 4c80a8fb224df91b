//! Printing that survives a reader who stopped reading. std's `println!`
//! panics (exit 101) when stdout is a pipe whose reader is gone
//! (`mss-backup config | head -1`). Restoring SIGPIPE's default would end
//! the process quietly, but it would also kill it on a socket the S3 or
//! ping server reset, or on the pipe to a dying rsync, in the middle of a
//! backup: Rust ignores SIGPIPE so that those are errors, and they must
//! stay errors. So only our own output changes: these macros shadow
//! `println!`/`print!`/`eprintln!`/`eprint!` in every module declared after
//! this one, and a closed pipe makes the rest of the output go nowhere
//! while the command finishes its work and exits as it would have. Other
//! write errors still panic, as std does.

use std::fmt;
use std::io::{self, Write};

macro_rules! println {
    () => { $crate::out::stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

macro_rules! print {
    ($($arg:tt)*) => { $crate::out::stdout(format_args!($($arg)*)) };
}

macro_rules! eprintln {
    () => { $crate::out::stderr(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}

macro_rules! eprint {
    ($($arg:tt)*) => { $crate::out::stderr(format_args!($($arg)*)) };
}

pub fn stdout(args: fmt::Arguments<'_>) {
    ignore_closed_pipe(io::stdout().lock().write_fmt(args), "stdout");
}

pub fn stderr(args: fmt::Arguments<'_>) {
    ignore_closed_pipe(io::stderr().lock().write_fmt(args), "stderr");
}

/// Writes `bytes` to stdout (the man page, a completion script), a closed
/// pipe being no error.
pub fn stdout_bytes(bytes: &[u8]) -> io::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

fn ignore_closed_pipe(result: io::Result<()>, stream: &str) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("failed printing to {stream}: {e}"),
    }
}
