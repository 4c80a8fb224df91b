//! Waiting on a running `mss-backup` without making a speed claim: a test
//! waits for an event (a file, a lock, bytes through a proxy) or for the
//! run's end, and a watchdog far beyond any honest run fails it only if it
//! hangs, so a slow or busy machine never fails a test that a hang would.

use std::process::{Child, Output};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Far longer than any run in these tests takes on a loaded CI machine:
/// reaching it means a hang, not slowness.
pub const WATCHDOG: Duration = Duration::from_secs(600);

/// Waits until `ready()` holds while `child` runs. Fails if the run ended
/// first (the moment the test waits for never came) or hung.
pub fn wait_while_running(child: &mut Child, what: &str, mut ready: impl FnMut() -> bool) {
    let give_up = Instant::now() + WATCHDOG;
    while !ready() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            panic!("hung: still running after {WATCHDOG:?}, and never {what}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The run's output once it ends; kills it and fails if it hangs.
pub fn finish(child: Child, what: &str) -> Output {
    let pid = child.id();
    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match ended.recv_timeout(WATCHDOG) {
        Ok(output) => output.expect("wait for mss-backup"),
        Err(_) => {
            // SAFETY: `pid` is our own child, not reaped yet (its waiter
            // is still blocked), so the number names no other process.
            unsafe { libc::kill(i32::try_from(pid).unwrap(), libc::SIGKILL) };
            panic!("hung: {what} did not end within {WATCHDOG:?}");
        }
    }
}
