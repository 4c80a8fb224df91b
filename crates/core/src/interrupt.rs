//! Ctrl-C (SIGINT), `systemctl stop` (SIGTERM) and a closed terminal
//! (SIGHUP) stop a run through its ordinary failure paths, so that what an
//! interrupted run leaves is what a failed one leaves: nothing. The signal
//! handler only records which signal came; the long loops (the archive
//! writer's reads, the read-back, encryption and decryption, the gzip
//! reader of verify and restore, the database snapshot's busy wait, the
//! targets' copies) call [`check`], which turns the record into an I/O
//! error. That error unwinds like a full disk or a read error through the
//! cleanup that already exists for those (partial files removed, staging
//! dirs and decrypted copies dropped), and the binary, seeing
//! [`received`], reports one line and exits 128 + the signal.
//!
//! Why cooperative rather than cleaning up from the handler or a signal
//! thread: the paths to remove are known only deep in the code that made
//! them, and the cleanup that runs on failure is tested code already; a
//! second, handler-side cleanup would be a copy that drifts. What cannot
//! poll (a child process such as rsync or a stop command) is waited for
//! by [`output`], which stops the child when a signal comes.
//!
//! A second signal outside a critical section ends the process at once,
//! like a crash: every write here already survives a `kill -9` (hidden
//! partial names, the sidecar before the archive's rename), and the next
//! run removes the hidden leftovers. Inside a [`Critical`] section (a
//! restore's swap) signals are only recorded, so the swap is never cut
//! half-way; the caller sees [`received`] when it is over.

use std::fmt;
use std::io::{self, Read};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::time::Duration;

/// The first stopping signal received, 0 while none came.
static SIGNAL: AtomicI32 = AtomicI32::new(0);
/// How many critical sections are open (a second signal waits for them).
static CRITICAL: AtomicUsize = AtomicUsize::new(0);

/// The signals that ask a run to stop.
const STOPPING: [libc::c_int; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// Installs the handler for SIGINT, SIGTERM and SIGHUP. A signal that is
/// ignored when the process starts (`nohup`, a background job of a
/// non-interactive shell) stays ignored, as the caller asked.
pub fn install() -> io::Result<()> {
    for signal in STOPPING {
        // SAFETY: sigaction is given a zeroed, then filled struct, and reads
        // the old action into another; the handler only touches atomics and
        // calls the async-signal-safe write(2) and _exit(2).
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            if old.sa_sigaction == libc::SIG_IGN {
                continue;
            }
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            // Restarted system calls: every loop polls `check`, and a read
            // that fails with EINTR in some library would be a new failure.
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

extern "C" fn on_signal(signal: libc::c_int) {
    let first = SIGNAL
        .compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok();
    if first || CRITICAL.load(Ordering::SeqCst) > 0 {
        return;
    }
    const LINE: &[u8] = b"mss-backup: second signal, stopping at once; hidden leftovers are removed by the next run\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; LINE is static.
    unsafe {
        libc::write(2, LINE.as_ptr().cast(), LINE.len());
        libc::_exit(128 + signal);
    }
}

/// A signal that asked the run to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted(pub i32);

impl Interrupted {
    /// `SIGINT`, `SIGTERM`, `SIGHUP`.
    pub fn name(self) -> &'static str {
        match self.0 {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            libc::SIGHUP => "SIGHUP",
            _ => "a signal",
        }
    }

    /// The shell's convention: 128 + the signal (130 for SIGINT, 143 for
    /// SIGTERM).
    pub fn exit_code(self) -> u8 {
        u8::try_from(128 + self.0).unwrap_or(u8::MAX)
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", self.name())
    }
}

impl std::error::Error for Interrupted {}

/// The signal that asked this run to stop, if one did.
pub fn received() -> Option<Interrupted> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(Interrupted(signal)),
    }
}

/// `Err` once a stopping signal came: called by every long loop, whose
/// error path then removes what the loop was making.
pub fn check() -> io::Result<()> {
    match received() {
        None => Ok(()),
        // Not ErrorKind::Interrupted: std's read and write loops retry that.
        Some(signal) => Err(io::Error::other(signal)),
    }
}

/// Holds signals back from ending the process while it lives: a second
/// signal is recorded, not acted on, until every section is over.
pub struct Critical(());

impl Critical {
    pub fn enter() -> Self {
        CRITICAL.fetch_add(1, Ordering::SeqCst);
        Critical(())
    }
}

impl Drop for Critical {
    fn drop(&mut self) {
        CRITICAL.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Bytes [`copy_file`] copies between two looks at the signal record.
const COPY_CHUNK: u64 = 16 << 20;

/// `io::copy` from one file to another that stops, with the [`check`]
/// error, soon after a signal. Copies in chunks of `io::copy` itself, so
/// the kernel still does the copying (copy_file_range) where it can.
pub fn copy_file(input: &std::fs::File, output: &mut std::fs::File) -> io::Result<u64> {
    let mut total = 0;
    loop {
        check()?;
        let n = io::copy(&mut input.take(COPY_CHUNK), output)?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// How often a wait on a child or on the terminal looks at the signal
/// record: short enough to feel immediate, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(25);

/// [`Command::output`] that stops the child when a signal comes: the
/// child gets SIGTERM (rsync then drops its temp file; a Ctrl-C at the
/// terminal reached it already), is waited for, and the result is the
/// [`check`] error. stdin is null; stdout and stderr are captured.
pub fn output(command: &mut Command) -> io::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait(&mut child);
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(Output {
        status: status?,
        stdout,
        stderr,
    })
}

fn wait(child: &mut Child) -> io::Result<std::process::ExitStatus> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if let Err(e) = check() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: kill only sends a signal to our own child, which
                // has not been waited for, so its pid is still ours.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            child.wait()?;
            return Err(e);
        }
        std::thread::sleep(POLL);
    }
}

/// Waits until standard input has something to read (or is closed);
/// `Err` from [`check`] if a signal comes first. For a prompt: a blocking
/// read would just be restarted after Ctrl-C.
pub fn wait_for_stdin() -> io::Result<()> {
    loop {
        check()?;
        let mut fd = libc::pollfd {
            fd: 0,
            events: libc::POLLIN,
            revents: 0,
        };
        let timeout = libc::c_int::try_from(POLL.as_millis()).unwrap_or(25);
        // SAFETY: poll reads and writes the one pollfd it is given.
        let ready = unsafe { libc::poll(&mut fd, 1, timeout) };
        if ready > 0 {
            return Ok(());
        }
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // No test here raises a signal: the record is process-wide, and every
    // other test in this binary would then see an interruption. The
    // binary's tests (tests/interrupt.rs) send real signals to real runs.

    #[test]
    fn names_and_exit_codes_follow_the_shell() {
        assert_eq!(Interrupted(libc::SIGINT).exit_code(), 130);
        assert_eq!(Interrupted(libc::SIGTERM).exit_code(), 143);
        assert_eq!(
            Interrupted(libc::SIGTERM).to_string(),
            "interrupted by SIGTERM"
        );
    }

    #[test]
    fn a_child_runs_to_its_end_when_no_signal_comes() {
        let out =
            output(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"])).unwrap();
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }
}
