//! Kill points and the oracles that judge them: `strace` kills a run at
//! the entry of a named system call, a seeded generator picks random
//! delays (`MSS_FAULTS_SEED` replays them), and `assert_nothing_lost` /
//! `assert_next_run_cleans_up` say what must hold after any kill.

use std::fs::{self, File};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use super::*;

/// `MSS_FAULTS_LONG=1` (set by `cargo xtask faults`): the long variants.
pub fn long() -> bool {
    std::env::var("MSS_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// The seed of every random choice here: `MSS_FAULTS_SEED`, or a fixed one.
pub fn seed() -> u64 {
    std::env::var("MSS_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_811)
}

/// splitmix64: small, seeded, the same on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Runs `mss-backup ARGS` under strace, which kills it with SIGKILL at the
/// entry of the `when`-th `syscall` (that touches `path`, if given).
pub fn strace_kill(
    env: &TestEnv,
    syscall: &str,
    path: Option<&Path>,
    when: u32,
    args: &[&str],
) -> Output {
    strace_signal_at(env, None, "SIGKILL", syscall, path, when, args)
}

/// Runs `mss-backup ARGS` under strace, which sends `signal` to it at the
/// entry of the `when`-th `syscall` (that touches `path`, if given), with
/// the wall clock frozen at `clock` (`faketime`) if given, so that the new
/// backup's name, and its partial's, are known ahead.
pub fn strace_signal_at(
    env: &TestEnv,
    clock: Option<&str>,
    signal: &str,
    syscall: &str,
    path: Option<&Path>,
    when: u32,
    args: &[&str],
) -> Output {
    let trace = format!("trace={syscall}");
    let inject = format!("inject={syscall}:signal={signal}:when={when}");
    let path = path.map(|p| p.to_str().unwrap().to_string());
    let mut wrapper = vec!["strace", "-f", "-qq", "-o", "/dev/null"];
    if let Some(p) = &path {
        wrapper.extend(["-P", p.as_str()]);
    }
    wrapper.extend(["-e", &trace, "-e", &inject, "--"]);
    if let Some(clock) = clock {
        wrapper.extend(["faketime", "-f", clock]);
    }
    let mut cmd = wrapped(env, &wrapper, args);
    // Only the wall clock is faked: timeouts keep working.
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    cmd.output()
        .expect("strace and faketime must be installed (cargo xtask test installs them)")
}

/// Whether the run was killed by SIGKILL (strace passes the signal on).
pub fn was_killed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGKILL) || out.status.code() == Some(128 + libc::SIGKILL)
}

pub fn assert_killed(out: &Output, what: &str) {
    assert!(
        was_killed(out),
        "{what}: the run was not killed ({:?}); stderr: {}",
        out.status,
        stderr(out)
    );
}

/// Whether nobody holds the run lock. A process forked by the killed run
/// (the inventory runs `git`, `docker`, `du`) shares the lock's open file
/// until its exec closes it; so a held lock is looked at again, for a
/// bounded while, before it counts as held, and the message names every
/// process that still has the lock file open.
pub fn lock_is_free(env: &TestEnv) -> bool {
    let path = env.backup_dir.join(".lock");
    let free = || {
        let Ok(file) = File::open(&path) else {
            return true;
        };
        let free = file.try_lock().is_ok();
        let _ = file.unlock();
        free
    };
    let started = Instant::now();
    while !free() {
        if started.elapsed() > Duration::from_secs(10) {
            eprintln!("the lock is held by: {:?}", holders(&path));
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Processes with `path` open, as `pid: command line`.
fn holders(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for proc_entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = proc_entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fds = fs::read_dir(proc_entry.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .into_iter()
            .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l == path))
        {
            let cmd = fs::read(proc_entry.path().join("cmdline")).unwrap_or_default();
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            ));
        }
    }
    found
}

/// What must hold right after any kill of a backup: no file under a
/// backup's name is incomplete (each archive has its sidecar and matches
/// it), `latest` resolves to a backup that passes `verify`, the lock is
/// free.
pub fn assert_nothing_lost(env: &TestEnv, what: &str) {
    assert!(lock_is_free(env), "{what}: the lock is still held");
    let dir = env.archive_dir();
    for name in env.archives() {
        let sidecar = format!("{name}.sha256");
        assert!(
            dir.join(&sidecar).is_file(),
            "{what}: {name} is under a backup's name without its sidecar: {:?}",
            entries(&dir)
        );
        let check = tool("sha256sum", &["-c", &sidecar], &dir);
        assert!(check.contains(": OK"), "{what}: {check}");
    }
    if fs::symlink_metadata(env.latest()).is_ok() {
        let out = env.run(&["verify"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: latest does not verify: {}",
            stderr(&out)
        );
    }
}

/// The next run succeeds and leaves a tidy archive dir: no hidden
/// leftovers, no staging dir, archives and sidecars in pairs.
pub fn assert_next_run_cleans_up(env: &TestEnv, what: &str) {
    let out = env.run(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: the next run failed: {}",
        stderr(&out)
    );
    let names = entries(&env.archive_dir());
    let left = hidden_leftovers(&env.archive_dir());
    assert!(
        left.is_empty(),
        "{what}: leftovers after the next run: {left:?} in {names:?}"
    );
    for name in &names {
        if let Some(archive) = name.strip_suffix(".sha256") {
            assert!(
                names.iter().any(|n| n == archive),
                "{what}: lone sidecar {name}"
            );
        }
    }
    assert!(
        entries(&env.backup_dir)
            .iter()
            .all(|n| !n.starts_with(".staging-")),
        "{what}: staging dir left"
    );
    assert_nothing_lost(env, what);
}
