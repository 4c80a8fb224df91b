//! The fault matrix (issue 8): a backup tool is judged on its worst night,
//! so these tests break things on purpose and check that nothing is lost.
//! `kill -9` of a backup at random offsets and at named points, `kill -9`
//! of a restore at each step, a disk that fills mid-backup, unreadable and
//! vanishing files, a database written thousands of times a second, a
//! shrinking `cloud-data/`, two backups in one second and a clock set
//! back, hostile and damaged archives (a property test), and the security
//! rules (modes under a permissive umask, no secret in any output, another
//! user's backup dir, a symlinked `archive/`).
//!
//! Named kill points are hit exactly with `strace`'s fault injection
//! (`-e inject=SYSCALL:signal=SIGKILL:when=N`, optionally `-P PATH`), so the
//! process dies at the entry of a known system call, not after a guessed
//! delay. Random kill points use delays drawn from a seeded generator; the
//! seed is printed and `MSS_FAULTS_SEED` replays it. Fixed clocks use
//! Debian's `faketime`; another user is `nobody` through `setpriv`. These
//! tests run as root (mounts, chown), as CI does.
//!
//! `cargo xtask faults` sets `MSS_FAULTS_LONG=1`: more kill points, 20
//! backups under the database writer, more property cases.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

// ------------------------------------------------------------ helpers

/// `MSS_FAULTS_LONG=1` (set by `cargo xtask faults`): the long variants.
fn long() -> bool {
    std::env::var("MSS_FAULTS_LONG").is_ok_and(|v| v == "1")
}

/// The seed of every random choice here: `MSS_FAULTS_SEED`, or a fixed one.
fn seed() -> u64 {
    std::env::var("MSS_FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_260_811)
}

/// splitmix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `wrapper... mss-backup ARGS` with the same cleared environment as
/// `TestEnv::cmd`.
pub(crate) fn wrapped(env: &TestEnv, wrapper: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg(BIN)
        .args(args)
        .env_clear()
        .env("HOME", &env.home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("TMPDIR", env.root.path())
        .envs(env.vars.iter().map(|(k, v)| (k, v)));
    cmd
}

/// Runs `mss-backup ARGS` under strace, which kills it with SIGKILL at the
/// entry of the `when`-th `syscall` (that touches `path`, if given).
fn strace_kill(
    env: &TestEnv,
    syscall: &str,
    path: Option<&Path>,
    when: u32,
    args: &[&str],
) -> Output {
    let trace = format!("trace={syscall}");
    let inject = format!("inject={syscall}:signal=SIGKILL:when={when}");
    let path = path.map(|p| p.to_str().unwrap().to_string());
    let mut wrapper = vec!["strace", "-f", "-qq", "-o", "/dev/null"];
    if let Some(p) = &path {
        wrapper.extend(["-P", p.as_str()]);
    }
    wrapper.extend(["-e", &trace, "-e", &inject, "--"]);
    wrapped(env, &wrapper, args)
        .output()
        .expect("strace must be installed (cargo xtask test installs it)")
}

/// Whether the run was killed by SIGKILL (strace passes the signal on).
fn was_killed(out: &Output) -> bool {
    out.status.signal() == Some(libc::SIGKILL) || out.status.code() == Some(128 + libc::SIGKILL)
}

fn assert_killed(out: &Output, what: &str) {
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
fn lock_is_free(env: &TestEnv) -> bool {
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
pub(crate) fn assert_nothing_lost(env: &TestEnv, what: &str) {
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
pub(crate) fn assert_next_run_cleans_up(env: &TestEnv, what: &str) {
    let out = env.run(&[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: the next run failed: {}",
        stderr(&out)
    );
    let names = entries(&env.archive_dir());
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "{what}: leftovers after the next run: {names:?}"
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

/// A tmpfs mounted for one test, unmounted on drop (also on panic).
pub(crate) struct Tmpfs {
    pub(crate) path: PathBuf,
}

impl Tmpfs {
    pub(crate) fn mount(path: &Path, size: &str) -> Self {
        fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(path)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount a tmpfs (the fault tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// Locks the live database (rollback journal, `BEGIN EXCLUSIVE`): a backup
/// started now lists `cloud-data/`, passes its free-space check, makes its
/// staging dir and then waits for the database. A real way to reach the
/// moment between listing and reading, with no hook in the code.
pub(crate) fn lock_database(env: &TestEnv) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(env.db_path()).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=DELETE; BEGIN EXCLUSIVE; INSERT INTO trackpacks(name) VALUES ('held');",
    )
    .unwrap();
    conn
}

/// Waits until the backup `pid` made its staging dir (it then waits for
/// the locked database).
pub(crate) fn wait_for_staging(env: &TestEnv, child: &mut std::process::Child) {
    let staging = env.backup_dir.join(format!(".staging-{}", child.id()));
    let started = Instant::now();
    while !staging.is_dir() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the backup ended before reaching the database: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no staging dir"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(crate) fn wavs(env: &TestEnv) -> Vec<PathBuf> {
    let dir = env.data_dir.join("Sounds/uploads");
    let mut wavs: Vec<PathBuf> = entries(&dir)
        .into_iter()
        .filter(|n| n.ends_with(".wav"))
        .map(|n| dir.join(n))
        .collect();
    wavs.sort();
    wavs
}

// ------------------------------------------------------- kill -9: backup

/// Where a kill after a random delay landed, judged from what it left.
fn landed(env: &TestEnv, before: &BTreeSet<String>, finished: bool) -> &'static str {
    if finished {
        return "after the run had finished";
    }
    let names = entries(&env.archive_dir());
    let latest = fs::read_link(env.latest())
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_default();
    let new: Vec<&String> = names
        .iter()
        .filter(|n| is_backup_name(n) && !before.contains(*n))
        .collect();
    if let Some(new) = new.first() {
        if **new == latest {
            "after latest moved (retention, offsite, status)"
        } else {
            "after the archive got its name, before latest moved"
        }
    } else if names.iter().any(|n| {
        n.ends_with(".sha256") && !names.contains(&n.trim_end_matches(".sha256").to_string())
    }) {
        "after the sidecar, before the archive's rename"
    } else if names.iter().any(|n| n.ends_with(".partial")) {
        "while the archive was written or read back"
    } else if entries(&env.backup_dir)
        .iter()
        .any(|n| n.starts_with(".staging-"))
    {
        "before the partial existed (listing, database snapshot)"
    } else {
        "at start-up, before the staging dir"
    }
}

#[test]
fn kill_9_of_a_backup_at_random_offsets_loses_nothing() {
    let runs = if long() { 120 } else { 20 };
    let seed = seed();
    eprintln!(
        "kill -9 of a backup at {runs} random offsets, seed {seed} (MSS_FAULTS_SEED={seed} replays it)"
    );
    let mut env = TestEnv::with_audio(if long() { 24 } else { 6 });
    env.set("MSS_BACKUP_RETENTION", "3");
    let clock = Instant::now();
    env.backup_ok();
    let full = clock.elapsed();
    let mut rng = Rng(seed);
    let mut tally: BTreeMap<&str, u32> = BTreeMap::new();
    for run in 0..runs {
        let before: BTreeSet<String> = entries(&env.archive_dir()).into_iter().collect();
        // Squared, so the short early steps (listing, snapshot, publishing)
        // are hit as well as the long stream; a few land after the end.
        let u = rng.unit();
        let delay = full.mul_f64(u * u * 1.1);
        let mut child = env
            .cmd(&[])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let finished = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        let at = landed(&env, &before, finished);
        *tally.entry(at).or_default() += 1;
        let what = format!("run {run} (seed {seed}), killed after {delay:?}: {at}");
        eprintln!("{what}");
        assert_nothing_lost(&env, &what);
        assert_next_run_cleans_up(&env, &what);
    }
    eprintln!("kill -9 of a backup: where the {runs} kills landed: {tally:#?}");
}

#[test]
fn kill_9_of_a_backup_at_each_named_point_loses_nothing() {
    let mut env = TestEnv::with_audio(4);
    env.set("MSS_BACKUP_RETENTION", "3");
    for _ in 0..3 {
        env.backup_ok();
    }
    let db = env.db_path();
    let middle_wav = {
        let wavs = wavs(&env);
        wavs[wavs.len() / 2].clone()
    };
    let status_file = env.backup_dir.join("last_backup.json");
    // (what, syscall, path, when): each kills at the entry of that call.
    type Point = (&'static str, &'static str, Option<PathBuf>, u32);
    type PointAt<'a> = Box<dyn Fn(&TestEnv) -> Point + 'a>;
    let oldest = |env: &TestEnv| env.archive_dir().join(&env.archives()[0]);
    let points: Vec<PointAt> = vec![
        Box::new(|_| {
            (
                "before the partial exists (opening the live database)",
                "openat",
                Some(db.clone()),
                1,
            )
        }),
        Box::new(|_| {
            (
                "mid-stream (opening a WAV half-way through)",
                "openat",
                Some(middle_wav.clone()),
                1,
            )
        }),
        Box::new(|_| {
            (
                "written and read back, before the sidecar is named",
                "rename",
                None,
                1,
            )
        }),
        Box::new(|_| {
            (
                "after the sidecar, before the archive's rename",
                "rename",
                None,
                2,
            )
        }),
        Box::new(|_| {
            (
                "after the archive's rename, before latest moves",
                "symlink",
                None,
                1,
            )
        }),
        Box::new(move |env| {
            (
                "retention: before deleting the oldest archive",
                "unlink",
                Some(oldest(env)),
                1,
            )
        }),
        Box::new(move |env| {
            let mut sidecar = oldest(env).into_os_string();
            sidecar.push(".sha256");
            (
                "retention: between the oldest archive and its sidecar",
                "unlink",
                Some(PathBuf::from(sidecar)),
                1,
            )
        }),
        // Renames of a run: sidecar, archive, latest, last_backup.json.
        Box::new(|_| ("while replacing last_backup.json", "rename", None, 4)),
    ];
    for point in &points {
        let (what, syscall, path, when) = point(&env);
        let before = env.archives();
        let latest_before = fs::read_link(env.latest()).unwrap();
        let status_before = fs::read(&status_file).unwrap();
        let out = strace_kill(&env, syscall, path.as_deref(), when, &[]);
        assert_killed(&out, what);
        let names = entries(&env.archive_dir());
        // Each point left what it should, so the kill landed there.
        match (syscall, when, path.is_some()) {
            ("openat", _, _) => {
                assert_eq!(env.archives(), before, "{what}");
                assert_eq!(
                    names.iter().any(|n| n.ends_with(".partial")),
                    what.starts_with("mid-stream"),
                    "{what}: {names:?}"
                );
            }
            ("rename", 1, false) => {
                assert!(
                    names.iter().any(|n| n.ends_with(".partial")),
                    "{what}: {names:?}"
                );
                assert_eq!(env.archives(), before, "{what}");
            }
            ("rename", 2, false) => {
                let lone: Vec<&String> = names
                    .iter()
                    .filter(|n| {
                        n.ends_with(".sha256") && !names.contains(&n.replace(".sha256", ""))
                    })
                    .collect();
                assert_eq!(lone.len(), 1, "{what}: a lone sidecar: {names:?}");
                assert_eq!(env.archives(), before, "{what}");
            }
            ("symlink", _, _) => {
                assert_eq!(env.archives().len(), before.len() + 1, "{what}");
                assert_eq!(fs::read_link(env.latest()).unwrap(), latest_before);
            }
            ("unlink", _, _) => {
                assert_ne!(fs::read_link(env.latest()).unwrap(), latest_before);
            }
            _ => {
                assert_eq!(
                    fs::read(&status_file).unwrap(),
                    status_before,
                    "{what}: last_backup.json is the previous run's, whole"
                );
            }
        }
        assert_nothing_lost(&env, what);
        assert_next_run_cleans_up(&env, what);
        eprintln!("kill -9 {what}: nothing lost, next run clean");
    }
}

#[test]
fn kill_9_during_an_upload_to_a_usb_stick_leaves_nothing_under_a_backup_name() {
    let mut env = TestEnv::with_audio(4);
    let stick = Tmpfs::mount(&env.root.path().join("stick"), "64m");
    env.set("MSS_BACKUP_USB_PATH", stick.path.to_str().unwrap());
    env.backup_ok();
    let on_stick = stick.path.join("mss-backup");
    // Renames of a run: local sidecar, local archive, latest, then the
    // stick's sidecar (4) and archive (5), then the status file.
    for (when, what) in [
        (4, "while the sidecar is copied to the stick"),
        (
            5,
            "after the archive was copied and read back, before its name",
        ),
    ] {
        let before = entries(&on_stick);
        let out = strace_kill(&env, "rename", None, when, &[]);
        assert_killed(&out, what);
        let left = entries(&on_stick);
        assert!(
            left.iter()
                .any(|n| n.starts_with('.') && n.ends_with(".partial")),
            "{what}: a hidden partial shows the copy was under way: {left:?}"
        );
        let complete: Vec<&String> = left.iter().filter(|n| is_backup_name(n)).collect();
        assert_eq!(
            complete,
            before
                .iter()
                .filter(|n| is_backup_name(n))
                .collect::<Vec<_>>(),
            "{what}: no new archive under a backup's name on the stick"
        );
        assert_nothing_lost(&env, what);
        assert_next_run_cleans_up(&env, what);
        let now = entries(&on_stick);
        assert!(
            now.iter().all(|n| !n.starts_with('.')),
            "{what}: the next copy tidied the stick: {now:?}"
        );
        for name in now.iter().filter(|n| is_backup_name(n)) {
            let check = tool("sha256sum", &["-c", &format!("{name}.sha256")], &on_stick);
            assert!(check.contains(": OK"), "{check}");
        }
        for name in now.iter().filter(|n| n.ends_with(".sha256")) {
            assert!(now.contains(&name.replace(".sha256", "")), "lone {name}");
        }
    }
}

// ------------------------------------------------------ kill -9: restore

/// A tree as far as a restore must keep it (the database aside: its bytes
/// differ between a live file and a snapshot, its rows do not). Safety
/// nets are left out: they are where the old data goes.
pub(crate) fn data_tree(dir: &Path) -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        for name in entries(dir) {
            let rel = format!("{prefix}{name}");
            if name.contains(".pre-restore-") || rel.starts_with("data/sound_machine.db") {
                continue;
            }
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path).unwrap();
            let node = if meta.is_dir() {
                walk(&path, &format!("{rel}/"), out);
                format!("dir {:o}", meta.mode() & 0o7777)
            } else if meta.file_type().is_symlink() {
                format!("link {}", fs::read_link(&path).unwrap().display())
            } else {
                let mut hasher = DefaultHasher::new();
                fs::read(&path).unwrap().hash(&mut hasher);
                format!(
                    "file {:x} {:o} {}",
                    hasher.finish(),
                    meta.mode() & 0o7777,
                    meta.mtime()
                )
            };
            out.insert(rel, node);
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, "", &mut out);
    out
}

#[derive(Clone, PartialEq, Debug)]
struct LiveState {
    tree: BTreeMap<String, String>,
    rows: Option<i64>,
}

fn live_state(env: &TestEnv) -> LiveState {
    LiveState {
        tree: data_tree(&env.data_dir),
        rows: env
            .db_path()
            .is_file()
            .then(|| count_rows(&env.db_path(), "trackpacks")),
    }
}

/// The state a restore of `mode` produces from `old` (live now) and
/// `backup` (what the archive holds).
fn restored_state(mode: &str, old: &LiveState, backup: &LiveState) -> LiveState {
    match mode {
        "db" => LiveState {
            tree: old.tree.clone(),
            rows: backup.rows,
        },
        "sounds" => {
            let mut tree: BTreeMap<String, String> = old
                .tree
                .iter()
                .filter(|(k, _)| !k.starts_with("Sounds"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            tree.extend(
                backup
                    .tree
                    .iter()
                    .filter(|(k, _)| k.starts_with("Sounds"))
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
            LiveState {
                tree,
                rows: old.rows,
            }
        }
        _ => backup.clone(),
    }
}

/// A health endpoint on 127.0.0.1 that answers 200.
fn health_ok() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]");
        }
    });
    format!("http://127.0.0.1:{port}/api/trackpacks")
}

/// Hook scripts for stop and start: `kill` makes that hook kill the
/// restore (by the pid in the lock file), as a crash at that step would.
/// Live data moves on after the backup: a new upload and a new row.
/// Returns the state a restore would replace.
fn move_on_after_the_backup(env: &TestEnv) -> LiveState {
    fs::write(
        env.data_dir.join("Sounds/uploads/after-the-backup.wav"),
        b"RIFF new upload",
    )
    .unwrap();
    rusqlite::Connection::open(env.db_path())
        .unwrap()
        .execute(
            "INSERT INTO trackpacks(name) VALUES ('after the backup')",
            [],
        )
        .unwrap();
    live_state(env)
}

/// The database's side files a `restore MODE` moves first, one
/// `renameat2` each; then come the exchange and the old data's rename.
fn side_files(env: &TestEnv, mode: &str) -> u32 {
    if mode != "db" {
        return 0;
    }
    ["-wal", "-shm", "-journal"]
        .iter()
        .filter(|s| {
            let mut p = env.db_path().into_os_string();
            p.push(s);
            Path::new(&p).exists()
        })
        .count() as u32
}

/// `path` holds what `restore MODE` replaced: the old tree, the old
/// `Sounds/`, or the old database.
fn assert_holds_the_old_data(path: &Path, mode: &str, old: &LiveState, what: &str) {
    match mode {
        "all" => assert_eq!(data_tree(path), old.tree, "{what}"),
        "sounds" => {
            let old_sounds: BTreeMap<String, String> = old
                .tree
                .iter()
                .filter_map(|(k, v)| {
                    k.strip_prefix("Sounds/")
                        .map(|r| (r.to_string(), v.clone()))
                })
                .collect();
            assert_eq!(data_tree(path), old_sounds, "{what}");
        }
        _ => assert_eq!(count_rows(path, "trackpacks"), old.rows.unwrap(), "{what}"),
    }
}

fn hooks(env: &mut TestEnv, kill_in: Option<&str>) {
    let lock = env.backup_dir.join(".lock");
    for hook in ["stop", "start"] {
        let script = env.root.path().join(format!("{hook}.sh"));
        let body = if kill_in == Some(hook) {
            format!("kill -9 $(cut -d' ' -f1 '{}')\n", lock.display())
        } else {
            "exit 0\n".to_string()
        };
        fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
        env.set(
            &format!("MSS_BACKUP_{}_CMD", hook.to_uppercase()),
            &format!("sh '{}'", script.display()),
        );
    }
    let url = health_ok();
    env.set("MSS_BACKUP_HEALTH_URL", &url);
}

#[test]
fn kill_9_of_a_restore_at_each_step_leaves_the_old_state_or_the_new_one() {
    // (step, how it is killed, whether the swap had happened)
    let steps: [(&str, &str, bool); 5] = [
        ("staged and checked, before MSS is stopped", "syncfs", false),
        ("while MSS is being stopped", "stop hook", false),
        (
            "at the swap, side files moved aside, before the exchange",
            "renameat2 exchange",
            false,
        ),
        (
            "after the exchange, before the old data is named",
            "renameat2 net",
            true,
        ),
        ("while MSS is being started again", "start hook", true),
    ];
    for mode in ["db", "sounds", "all"] {
        for (step, how, swapped) in steps {
            let what = format!("restore {mode}, killed {step}");
            let mut env = TestEnv::with_audio(2);
            env.backup_ok();
            let backup = live_state(&env);
            let old = move_on_after_the_backup(&env);
            let new = restored_state(mode, &old, &backup);
            assert_ne!(old, new, "{what}: the restore changes something");
            let args = ["restore", mode, "--yes"];
            let out = match how {
                "stop hook" | "start hook" => {
                    hooks(&mut env, how.split(' ').next());
                    env.run(&args)
                }
                _ => {
                    let mut no_stop = args.to_vec();
                    no_stop.push("--no-stop");
                    let sides = side_files(&env, mode);
                    let (syscall, when) = match how {
                        "renameat2 exchange" => ("renameat2", sides + 1),
                        "renameat2 net" => ("renameat2", sides + 2),
                        _ => (how, 1),
                    };
                    strace_kill(&env, syscall, None, when, &no_stop)
                }
            };
            if how.ends_with("hook") {
                // The hook killed the restore: the run ends by SIGKILL.
                assert_eq!(
                    out.status.signal(),
                    Some(libc::SIGKILL),
                    "{what}: {}",
                    stderr(&out)
                );
            } else {
                assert_killed(&out, &what);
            }
            let now = live_state(&env);
            let expected = if swapped { &new } else { &old };
            assert!(
                now == *expected,
                "{what}: the live data is neither the old state nor the new one (expected the {} state; rows: old {:?}, new {:?})\nnow: {now:#?}",
                if swapped { "new" } else { "old" },
                old.rows,
                new.rows
            );
            assert!(lock_is_free(&env), "{what}: lock held");
            let log = fs::read_to_string(env.backup_dir.join("backup.log")).unwrap();
            if swapped {
                let line = log
                    .lines()
                    .find(|l| l.contains("goes to the safety net"))
                    .unwrap_or_else(|| panic!("{what}: the log names no safety net:\n{log}"));
                let net = line
                    .split("safety_net=")
                    .nth(1)
                    .and_then(|s| s.split_whitespace().next())
                    .map(PathBuf::from)
                    .unwrap_or_else(|| panic!("{what}: {line}"));
                // The next run (here a dry run) finishes the swap: the data
                // from before the restore is where the log said.
                let dry = env.expect(&["restore", mode, "--dry-run"], 0);
                if step.starts_with("after the exchange") {
                    assert!(
                        stdout(&dry).contains("killed after swapping")
                            || stderr(&dry).contains("killed after swapping"),
                        "{what}: the dry run reports what it finished: {}{}",
                        stdout(&dry),
                        stderr(&dry)
                    );
                }
                assert!(net.exists(), "{what}: safety net {} missing", net.display());
                assert_holds_the_old_data(&net, mode, &old, &what);
            }
            let leftovers: Vec<String> = entries(&env.project_dir)
                .into_iter()
                .filter(|n| n.starts_with(".mss-restore-"))
                .collect();
            if swapped {
                assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
            }
            // A full restore works afterwards and leaves nothing behind.
            let mut env = env;
            hooks(&mut env, None);
            env.expect(&["restore", mode, "--yes"], 0);
            assert_eq!(
                live_state(&env),
                restored_state(mode, &now, &backup),
                "{what}"
            );
            let leftovers: Vec<String> = entries(&env.project_dir)
                .into_iter()
                .filter(|n| n.starts_with(".mss-restore-"))
                .collect();
            assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
            assert!(lock_is_free(&env));
            eprintln!(
                "{what}: {} state, nothing lost",
                if swapped { "new" } else { "old" }
            );
        }
    }
}

/// After the exchange, the old data cannot be moved to the safety net and
/// the exchange back fails too (both `renameat2` calls fail with ENOSPC,
/// injected by strace). The restore stops, says where the old data is and
/// how to keep it, and that data is still there; the next run moves it to
/// the safety net.
#[test]
fn a_swap_stuck_half_way_keeps_the_old_data_where_it_says() {
    for mode in ["db", "sounds"] {
        let what = format!("restore {mode}, stuck after the exchange");
        let env = TestEnv::with_audio(2);
        env.backup_ok();
        let backup = live_state(&env);
        let old = move_on_after_the_backup(&env);
        let inject = format!(
            "inject=renameat2:error=ENOSPC:when={}+",
            side_files(&env, mode) + 2
        );
        let wrapper = [
            "strace",
            "-f",
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "trace=renameat2",
            "-e",
            &inject,
            "--",
        ];
        let out = wrapped(&env, &wrapper, &["restore", mode, "--yes", "--no-stop"])
            .output()
            .expect("strace must be installed (cargo xtask test installs it)");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        let mv = err
            .split("keep it with: mv ")
            .nth(1)
            .unwrap_or_else(|| panic!("{what}: no mv to keep the old data: {err}"));
        let mut words = mv.split_whitespace();
        let (at, net) = match (words.next(), words.next()) {
            (Some(at), Some(net)) => (PathBuf::from(at), PathBuf::from(net)),
            _ => panic!("{what}: {err}"),
        };
        assert!(
            at.exists(),
            "{what}: the old data is gone from {}",
            at.display()
        );
        assert_holds_the_old_data(&at, mode, &old, &what);
        assert_eq!(
            live_state(&env),
            restored_state(mode, &old, &backup),
            "{what}"
        );
        assert!(lock_is_free(&env), "{what}: lock held");

        // The next run finishes what the stuck one could not.
        let dry = env.expect(&["restore", mode, "--dry-run"], 0);
        assert!(
            format!("{}{}", stdout(&dry), stderr(&dry)).contains("killed after swapping"),
            "{what}: the next run reports what it finished: {}{}",
            stdout(&dry),
            stderr(&dry)
        );
        assert_holds_the_old_data(&net, mode, &old, &what);
        let leftovers: Vec<String> = entries(&env.project_dir)
            .into_iter()
            .filter(|n| n.starts_with(".mss-restore-"))
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
        eprintln!("{what}: the old data kept, then moved to the safety net");
    }
}

// ------------------------------------------------------------ disk full

#[test]
fn a_disk_that_fills_mid_backup_fails_clearly_and_keeps_the_older_backups() {
    let mut env = TestEnv::with_audio(8);
    let disk = Tmpfs::mount(&env.root.path().join("small-disk"), "40m");
    let backup_dir = disk.path.join("mss");
    env.set("MSS_BACKUP_DIR", backup_dir.to_str().unwrap());
    env.backup_dir = backup_dir.clone();
    env.backup_ok();
    let db_size = fs::metadata(env.db_path()).unwrap().len();
    for (when, leave) in [
        ("while the archive is written", db_size + (1 << 20)),
        ("while the database is copied", 16 << 10),
    ] {
        let good = env.archives();
        let good_latest = fs::read_link(env.latest()).unwrap();
        // The backup passes its free-space check, then waits for the
        // database; meanwhile another writer fills the disk.
        let db = lock_database(&env);
        let mut child = env.cmd(&[]).stderr(Stdio::piped()).spawn().unwrap();
        wait_for_staging(&env, &mut child);
        let filler = disk.path.join("filler");
        let free = mss_backup_core::durable::fs_space(&disk.path)
            .unwrap()
            .available;
        fs::write(&filler, vec![0x5a; (free - leave) as usize]).unwrap();
        db.execute_batch("COMMIT").unwrap();
        drop(db);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{when}: {}", stderr(&out));
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "The disk holding {} filled up during the backup; the partial archive was removed",
                env.archive_dir().display()
            )),
            "{when}: {msg}"
        );
        let names = entries(&env.archive_dir());
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "{when}: partial gone: {names:?}"
        );
        assert!(
            entries(&env.backup_dir)
                .iter()
                .all(|n| !n.starts_with(".staging-")),
            "{when}: staging gone"
        );
        assert_eq!(env.archives(), good, "{when}: older backups intact");
        assert_eq!(fs::read_link(env.latest()).unwrap(), good_latest);
        env.expect(&["verify"], 0);
        let status = env.status();
        assert_eq!(status["status"], "failure", "{when}");
        assert!(
            status["error"].as_str().unwrap().contains("filled up"),
            "{when}: {status}"
        );
        fs::remove_file(&filler).unwrap();
        env.backup_ok();
        assert_eq!(env.archives().len(), good.len() + 1);
    }
}

// ------------------------------------------------------------ read errors

#[test]
fn an_unreadable_file_or_dir_fails_the_backup_naming_it() {
    let env = TestEnv::new();
    let wav = wavs(&env)[0].clone();
    let locked_dir = env.data_dir.join("Sounds/uploads/locked");
    fs::create_dir(&locked_dir).unwrap();
    fs::write(locked_dir.join("inside.wav"), b"RIFF").unwrap();
    for (path, what) in [(&wav, "file"), (&locked_dir, "dir")] {
        chown_to_nobody(&env);
        fs::set_permissions(path, fs::Permissions::from_mode(0o000)).unwrap();
        let out = as_nobody(&env, &[]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", stderr(&out));
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "cannot read {}: Permission denied",
                path.display()
            )),
            "{what}: {msg}"
        );
        let status = env.status();
        assert_eq!(status["status"], "failure");
        assert!(
            status["error"]
                .as_str()
                .unwrap()
                .contains(&path.display().to_string()),
            "{status}"
        );
        assert!(env.archives().is_empty(), "no backup without the {what}");
        assert!(
            entries(&env.archive_dir())
                .iter()
                .all(|n| !n.starts_with('.')),
            "no partial left"
        );
        let mode = if what == "dir" { 0o755 } else { 0o644 };
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }
    chown_to_nobody(&env);
    let out = as_nobody(&env, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_file_that_vanishes_between_listing_and_reading_is_a_warning_naming_it() {
    let env = TestEnv::new();
    let gone = wavs(&env)[1].clone();
    let rel = gone
        .strip_prefix(&env.data_dir)
        .unwrap()
        .display()
        .to_string();
    let db = lock_database(&env);
    let mut child = env.cmd(&[]).stderr(Stdio::piped()).spawn().unwrap();
    wait_for_staging(&env, &mut child);
    fs::remove_file(&gone).unwrap();
    db.execute_batch("COMMIT").unwrap();
    drop(db);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = format!("{rel} vanished during the backup");
    assert!(stderr(&out).contains(&warning), "{}", stderr(&out));
    let warnings = env.status()["warnings"].to_string();
    assert!(warnings.contains(&warning), "{warnings}");
    let members = tool(
        "tar",
        &["-tzf", env.latest().to_str().unwrap()],
        &env.backup_dir,
    );
    assert!(!members.contains(&rel), "{members}");
    env.expect(&["verify"], 0);
}

// ---------------------------------------------------- busy database

#[test]
fn every_backup_of_a_database_under_a_heavy_writer_passes_integrity_check() {
    let backups = if long() { 20 } else { 4 };
    let env = TestEnv::with_audio(2);
    let db = env.db_path();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch(
            "PRAGMA journal_mode=WAL; CREATE TABLE ticks(n INTEGER PRIMARY KEY, at TEXT, pad BLOB);",
        )
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, committed, db) = (stop.clone(), committed.clone(), db.clone());
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            conn.execute_batch("PRAGMA synchronous=NORMAL").unwrap();
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                conn.execute(
                    "INSERT INTO ticks(n, at, pad) VALUES (?1, datetime('now'), randomblob(200))",
                    [n],
                )
                .unwrap();
                if n % 500 == 0 {
                    // MSS's own checkpoints, racing the backup's reads.
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                        .unwrap();
                }
                committed.store(n, Ordering::SeqCst);
            }
        })
    };
    let clock = Instant::now();
    let mut checked = 0;
    for i in 0..backups {
        let before = committed.load(Ordering::SeqCst);
        env.backup_ok();
        let name = env.status()["archive"].as_str().unwrap().to_string();
        let out = env.expect(&["verify", &name], 0);
        assert!(
            stdout(&out).contains("database integrity_check ok"),
            "{}",
            stdout(&out)
        );
        let after = committed.load(Ordering::SeqCst);
        assert!(after > before, "backup {i}: the writer kept committing");
        checked += 1;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let total = committed.load(Ordering::SeqCst);
    eprintln!(
        "{checked} backups under a writer: {total} transactions in {:.1} s ({:.0}/s), every archived database passed integrity_check",
        clock.elapsed().as_secs_f64(),
        total as f64 / clock.elapsed().as_secs_f64()
    );
    assert_eq!(integrity(&db), "ok");
}

// ------------------------------------------------------------ shrink guard

#[test]
fn an_emptied_sounds_dir_warns_and_keeps_the_last_good_backup_beyond_retention() {
    let mut env = TestEnv::with_audio(4);
    env.set("MSS_BACKUP_RETENTION", "2");
    env.backup_ok();
    let good = env.status()["archive"].as_str().unwrap().to_string();
    let uploads = env.data_dir.join("Sounds/uploads");
    let saved = env.root.path().join("saved-uploads");
    fs::rename(&uploads, &saved).unwrap();
    fs::create_dir(&uploads).unwrap();

    let out = env.backup_ok();
    let msg = stderr(&out);
    assert!(
        msg.contains("under 50% of the previous backup") && msg.contains(&good),
        "{msg}"
    );
    let status = env.status();
    assert_eq!(status["status"], "success");
    assert_eq!(status["shrink_guard"]["kept"][0]["archive"], good.as_str());
    let shown = env.expect(&["status"], 0);
    assert!(
        stdout(&shown).contains(&format!("shrink guard: keeping {good}")),
        "{}",
        stdout(&shown)
    );
    // A week of small backups: the last good one stays, the small ones
    // rotate as usual.
    for _ in 0..4 {
        let out = env.backup_ok();
        assert!(
            !stderr(&out).contains("under 50%"),
            "only the drop itself warns"
        );
        let names = env.archives();
        assert!(names.contains(&good), "{names:?}");
        assert_eq!(
            names.len(),
            3,
            "2 kept by retention + the held one: {names:?}"
        );
    }
    // The data comes back: the guard lets go and retention takes it.
    fs::remove_dir(&uploads).unwrap();
    fs::rename(&saved, &uploads).unwrap();
    env.backup_ok();
    let names = env.archives();
    assert!(!names.contains(&good), "{names:?}");
    assert_eq!(names.len(), 2);
    assert!(
        env.status()["shrink_guard"]["kept"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Configurable: off means no warning and no hold.
    env.set("MSS_BACKUP_SHRINK_GUARD", "off");
    fs::rename(&uploads, &saved).unwrap();
    fs::create_dir(&uploads).unwrap();
    let out = env.backup_ok();
    assert!(!stderr(&out).contains("under"), "{}", stderr(&out));
    env.set("MSS_BACKUP_SHRINK_GUARD", "2");
    let out = env.expect(&[], 78);
    assert!(
        stderr(&out).contains("MSS_BACKUP_SHRINK_GUARD=2 is not valid"),
        "{}",
        stderr(&out)
    );
}

// --------------------------------------------------------- odd clocks

/// `mss-backup ARGS` with the clock frozen at `time` (local time).
fn at_time(env: &TestEnv, time: &str, args: &[&str]) -> Output {
    let mut cmd = wrapped(env, &["faketime", "-f", time], args);
    // Only the wall clock is faked: timeouts keep working.
    cmd.env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    cmd.output()
        .expect("faketime must be installed (cargo xtask test installs it)")
}

#[test]
fn two_backups_in_the_same_second_never_overwrite_one_another() {
    let env = TestEnv::new();
    let second = "2026-03-01 03:15:00";
    let first = at_time(&env, second, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first_name = "mss-backup-2026-03-01_031500.tar.gz";
    assert_eq!(env.archives(), [first_name]);
    let bytes = fs::read(env.archive_dir().join(first_name)).unwrap();
    for _ in 0..2 {
        let out = at_time(&env, second, &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    assert_eq!(
        env.archives(),
        [
            first_name,
            "mss-backup-2026-03-01_031501.tar.gz",
            "mss-backup-2026-03-01_031502.tar.gz"
        ]
    );
    assert_eq!(
        fs::read(env.archive_dir().join(first_name)).unwrap(),
        bytes,
        "the first archive is untouched"
    );
    for name in env.archives() {
        env.expect(&["verify", &name], 0);
    }
}

/// The same with local encryption, where a backup leaves only its `.age`
/// file and sidecar: a second encrypted run in that second must not take
/// its name (it would replace it, here and offsite), nor a plain run.
#[test]
fn an_encrypted_backup_in_the_same_second_is_never_overwritten() {
    let mut env = TestEnv::new();
    let (_identity, public) = crate::encrypt::keygen(&env);
    env.set("MSS_BACKUP_ENCRYPT_RECIPIENTS", &public);
    env.set("MSS_BACKUP_ENCRYPT_LOCAL", "true");
    let second = "2026-03-01 03:15:00";
    let backups = |env: &TestEnv| -> Vec<String> {
        let mut names: Vec<String> = entries(&env.archive_dir())
            .into_iter()
            .filter(|n| n.starts_with("mss-backup-2") && !n.ends_with(".sha256"))
            .collect();
        names.sort();
        names
    };
    let first = at_time(&env, second, &[]);
    assert_eq!(first.status.code(), Some(0), "{}", stderr(&first));
    let first_name = "mss-backup-2026-03-01_031500.tar.gz.age";
    assert_eq!(backups(&env), [first_name]);
    let bytes = fs::read(env.archive_dir().join(first_name)).unwrap();
    let out = at_time(&env, second, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.unset("MSS_BACKUP_ENCRYPT_LOCAL");
    let out = at_time(&env, second, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        backups(&env),
        [
            first_name,
            "mss-backup-2026-03-01_031501.tar.gz.age",
            "mss-backup-2026-03-01_031502.tar.gz"
        ]
    );
    assert_eq!(
        fs::read(env.archive_dir().join(first_name)).unwrap(),
        bytes,
        "the first archive is untouched"
    );
}

#[test]
fn a_clock_set_back_never_lets_retention_delete_the_newest_backup() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTION", "2");
    for day in ["10", "11", "12"] {
        let out = at_time(&env, &format!("2026-03-{day} 03:15:00"), &[]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    // The clock jumps back nine days (a dead RTC battery, a bad NTP step).
    let out = at_time(&env, "2026-03-01 03:15:00", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let just_made = "mss-backup-2026-03-01_031500.tar.gz";
    assert_eq!(
        env.archives(),
        [just_made, "mss-backup-2026-03-12_031500.tar.gz"],
        "the backup just made survives although its name sorts oldest"
    );
    assert_eq!(fs::read_link(env.latest()).unwrap(), Path::new(just_made));
    env.expect(&["verify"], 0);
    let out = at_time(&env, "2026-03-01 03:15:00", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        env.archives()
            .contains(&"mss-backup-2026-03-01_031501.tar.gz".to_string())
    );
    env.expect(&["verify"], 0);
}

// ------------------------------------------------------------ security

#[test]
fn everything_is_created_private_even_under_a_permissive_umask() {
    let env = TestEnv::new();
    let out = wrapped(&env, &["sh", "-c", "umask 000; exec \"$0\" \"$@\""], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A restore under the same umask: staging, safety net, restored files.
    let out = wrapped(
        &env,
        &["sh", "-c", "umask 000; exec \"$0\" \"$@\""],
        &["restore", "sounds", "--yes", "--no-stop"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let name = &env.archives()[0];
    for dir in [env.backup_dir.clone(), env.archive_dir()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        env.archive_dir().join(name),
        env.archive_dir().join(format!("{name}.sha256")),
        env.backup_dir.join("last_backup.json"),
        env.backup_dir.join("backup.log"),
        env.backup_dir.join(".lock"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    let wav = wavs(&env)[0].clone();
    assert_eq!(mode(&wav) & 0o022, 0, "restored files keep their mode");
}

#[test]
fn a_planted_secret_appears_in_no_output() {
    let mut env = TestEnv::new();
    let s3_secret = "Pl4nted-S3-S3cret-0bf5e2";
    let wifi_secret = "Pl4nted-WiFi-Passphrase-77a1";
    env.set("MSS_BACKUP_S3_BUCKET", "mss-backups");
    // Nothing listens there (loopback): the S3 copy fails and says so.
    env.set("MSS_BACKUP_S3_ENDPOINT", "http://127.0.0.1:9");
    env.set("MSS_BACKUP_S3_REGION", "us-east-1");
    env.set("MSS_BACKUP_S3_ACCESS_KEY_ID", "AKIAPLANTEDKEYID");
    env.set("MSS_BACKUP_S3_SECRET_ACCESS_KEY", s3_secret);
    env.set("AWS_SECRET_ACCESS_KEY", s3_secret);
    let wifi = env.data_dir.join("config/wifi.conf");
    let mut conf = fs::read_to_string(&wifi).unwrap();
    conf.push_str(&format!("psk={wifi_secret}\n"));
    fs::write(&wifi, conf).unwrap();

    let mut outputs = vec![("backup", env.run(&[]))];
    for args in [
        &["status"][..],
        &["status", "--json"],
        &["config"],
        &["list"],
        &["verify"],
        &["restore", "db", "--dry-run"],
    ] {
        outputs.push((args[0], env.run(args)));
    }
    let mut texts: Vec<(String, String)> = outputs
        .iter()
        .map(|(what, out)| {
            (
                format!("{what} output"),
                format!("{}{}", stdout(out), stderr(out)),
            )
        })
        .collect();
    assert!(
        texts[0].1.contains("127.0.0.1:9"),
        "the S3 copy failed with a message: {}",
        texts[0].1
    );
    for file in ["backup.log", "last_backup.json"] {
        texts.push((
            file.to_string(),
            fs::read_to_string(env.backup_dir.join(file)).unwrap(),
        ));
    }
    let x = env.root.path().join("x");
    fs::create_dir_all(&x).unwrap();
    tool(
        "tar",
        &[
            "-xzf",
            env.latest().to_str().unwrap(),
            "-C",
            x.to_str().unwrap(),
            "inventory.txt",
        ],
        &x,
    );
    texts.push((
        "inventory.txt".to_string(),
        fs::read_to_string(x.join("inventory.txt")).unwrap(),
    ));
    for (what, text) in &texts {
        for secret in [s3_secret, wifi_secret] {
            assert!(!text.contains(secret), "{what} holds a secret:\n{text}");
        }
    }
}

#[test]
fn another_users_backup_dir_is_refused_unless_allowed() {
    let mut env = TestEnv::new();
    env.backup_ok();
    let backup_dir = env.backup_dir.clone();
    let chown = |spec: &str| {
        let ok = Command::new("chown")
            .arg(spec)
            .arg(&backup_dir)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    chown("65534:65534");
    let log = fs::read(env.backup_dir.join("backup.log")).unwrap();
    let status = fs::read(env.backup_dir.join("last_backup.json")).unwrap();
    for args in [&[][..], &["restore", "db", "--yes", "--no-stop"]] {
        let out = env.expect(args, 78);
        let msg = stderr(&out);
        assert!(
            msg.contains(&format!(
                "the backup dir {} belongs to nobody, but mss-backup runs as root",
                env.backup_dir.display()
            )) && msg.contains("MSS_BACKUP_ALLOW_OTHER_OWNER=true"),
            "{msg}"
        );
        assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    }
    assert_eq!(
        fs::read(env.backup_dir.join("backup.log")).unwrap(),
        log,
        "nothing written"
    );
    assert_eq!(
        fs::read(env.backup_dir.join("last_backup.json")).unwrap(),
        status
    );
    assert_eq!(env.archives().len(), 1);
    env.set("MSS_BACKUP_ALLOW_OTHER_OWNER", "true");
    env.backup_ok();
    assert_eq!(env.archives().len(), 2);
    chown("0:0");
}

#[test]
fn a_symlinked_archive_dir_is_never_followed_out_of_the_backup_dir() {
    let mut env = TestEnv::new();
    env.set("MSS_BACKUP_RETENTION", "1");
    env.backup_ok();
    // Someone's other directory, holding complete backups of its own.
    let elsewhere = env.root.path().join("elsewhere");
    fs::rename(env.archive_dir(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.archive_dir()).unwrap();
    let before = entries(&elsewhere);
    let out = env.expect(&[], 1);
    let msg = stderr(&out);
    assert!(
        msg.contains(&format!(
            "{} is a symlink: mss-backup never follows archive/ out of the backup dir",
            env.archive_dir().display()
        )),
        "{msg}"
    );
    assert_eq!(
        entries(&elsewhere),
        before,
        "nothing written or deleted there"
    );
    assert_eq!(env.status()["status"], "failure");
}

// ------------------------------------------------ hostile archives

mod hostile {
    //! A property test: tar streams built byte by byte (so every field can
    //! lie), with traversal names, links, device nodes, huge, negative and
    //! garbage sizes, bad checksums, truncation anywhere, and garbage or
    //! damaged gzip, fed to `verify` and to the staging step of every
    //! restore mode. Nothing may panic, nothing may be written outside the
    //! staging dir (the whole sandbox is compared before and after, and an
    //! absolute-path canary must not appear), and every refusal is one line
    //! that names a path.

    use std::collections::BTreeMap;
    use std::fs;
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicUsize, Ordering};

    use mss_backup_core::gz::{GzOptions, ParallelGz};
    use mss_backup_core::manifest;
    use mss_backup_core::restore::{self, Mode};
    use mss_backup_core::verify;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    static PANICS: AtomicUsize = AtomicUsize::new(0);

    /// Where an absolute-path member would land if extraction followed it.
    fn canary() -> PathBuf {
        std::env::temp_dir().join(format!("mss-hostile-canary-{}", std::process::id()))
    }

    #[derive(Debug, Clone)]
    struct Member {
        name: String,
        kind: u8,
        size: SizeField,
        data: Vec<u8>,
        link: String,
        good_checksum: bool,
    }

    #[derive(Debug, Clone)]
    enum SizeField {
        True,
        Huge,
        Base256Negative,
        Base256Huge,
        Garbage,
        Short(u8),
    }

    #[derive(Debug, Clone)]
    enum Wrapping {
        Gzip,
        Garbage(Vec<u8>),
        HeaderThenGarbage(Vec<u8>),
        Truncated(usize),
        FlippedByte(usize),
    }

    #[derive(Debug, Clone)]
    struct Case {
        members: Vec<Member>,
        manifest: bool,
        end_blocks: bool,
        cut_tar_at: Option<usize>,
        wrapping: Wrapping,
        good_sidecar: bool,
    }

    fn names() -> impl Strategy<Value = String> {
        let canary = canary().join("pwned").display().to_string();
        prop_oneof![
            Just("data/sound_machine.db".to_string()),
            Just("Sounds/uploads/a.wav".to_string()),
            Just("Sounds".to_string()),
            Just("Sounds/uploads".to_string()),
            Just("config/wifi.conf".to_string()),
            Just("../../outside".to_string()),
            Just("Sounds/../../outside".to_string()),
            Just("./Sounds/./uploads/b.wav".to_string()),
            Just("..".to_string()),
            Just("".to_string()),
            Just("/".to_string()),
            Just(canary),
            Just("Sounds/uploads/link/evil.wav".to_string()),
            Just("Sounds/uploads/".to_string() + &"x".repeat(150)),
            "[a-zA-Z0-9/._-]{1,40}",
        ]
    }

    fn links() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("../../../etc/passwd".to_string()),
            Just("/etc/passwd".to_string()),
            Just(".".to_string()),
            Just("..".to_string()),
            Just("Sounds/uploads/a.wav".to_string()),
            Just("a.wav".to_string()),
            Just("../..".to_string()),
            Just(String::new()),
            "[a-z./]{1,20}",
        ]
    }

    fn members() -> impl Strategy<Value = Member> {
        (
            names(),
            prop_oneof![
                Just(b'0'),
                Just(b'5'),
                Just(b'2'),
                Just(b'1'),
                Just(b'3'),
                Just(b'4'),
                Just(b'6'),
                Just(b'L'),
                Just(b'x'),
                Just(b'g'),
                Just(b'S'),
                any::<u8>(),
            ],
            prop_oneof![
                6 => Just(SizeField::True),
                1 => Just(SizeField::Huge),
                1 => Just(SizeField::Base256Negative),
                1 => Just(SizeField::Base256Huge),
                1 => Just(SizeField::Garbage),
                1 => any::<u8>().prop_map(SizeField::Short),
            ],
            proptest::collection::vec(any::<u8>(), 0..1500),
            links(),
            proptest::bool::weighted(0.85),
        )
            .prop_map(|(name, kind, size, data, link, good_checksum)| Member {
                name,
                kind,
                size,
                data,
                link,
                good_checksum,
            })
    }

    fn cases() -> impl Strategy<Value = Case> {
        (
            proptest::collection::vec(members(), 0..8),
            any::<bool>(),
            proptest::bool::weighted(0.8),
            proptest::option::weighted(0.2, 0usize..20_000),
            prop_oneof![
                6 => Just(Wrapping::Gzip),
                1 => proptest::collection::vec(any::<u8>(), 0..600).prop_map(Wrapping::Garbage),
                1 => proptest::collection::vec(any::<u8>(), 0..600)
                    .prop_map(Wrapping::HeaderThenGarbage),
                1 => (0usize..5000).prop_map(Wrapping::Truncated),
                1 => (0usize..5000).prop_map(Wrapping::FlippedByte),
            ],
            proptest::bool::weighted(0.85),
        )
            .prop_map(
                |(members, manifest, end_blocks, cut_tar_at, wrapping, good_sidecar)| Case {
                    members,
                    manifest,
                    end_blocks,
                    cut_tar_at,
                    wrapping,
                    good_sidecar,
                },
            )
    }

    fn octal(field: &mut [u8], value: u64) {
        let text = format!("{value:0width$o}", width = field.len() - 1);
        let bytes = text.as_bytes();
        let width = field.len() - 1;
        let start = bytes.len().saturating_sub(width);
        field[..width].copy_from_slice(&bytes[start..]);
        field[width] = 0;
    }

    /// One 512-byte ustar header, every field as the case says.
    fn header(m: &Member) -> [u8; 512] {
        let mut h = [0u8; 512];
        let name = m.name.as_bytes();
        h[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
        octal(&mut h[100..108], 0o644);
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        match m.size {
            SizeField::True => octal(&mut h[124..136], m.data.len() as u64),
            SizeField::Huge => octal(&mut h[124..136], 0o77_777_777_777),
            SizeField::Base256Negative => {
                h[124..136].copy_from_slice(&[0xff; 12]);
            }
            SizeField::Base256Huge => {
                h[124] = 0x80;
                h[125..136].copy_from_slice(&[0x7f; 11]);
            }
            SizeField::Garbage => h[124..136].copy_from_slice(b"12x4-\x01zzzzz\0"),
            SizeField::Short(b) => h[124..136].copy_from_slice(&[b; 12]),
        }
        octal(&mut h[136..148], 1_700_000_000);
        h[156] = m.kind;
        let link = m.link.as_bytes();
        h[157..157 + link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let sum = if m.good_checksum { sum } else { sum ^ 0x15 };
        octal(&mut h[148..155], u64::from(sum));
        h[155] = b' ';
        h
    }

    fn tar_bytes(case: &Case) -> Vec<u8> {
        let mut out = Vec::new();
        let push = |m: &Member, out: &mut Vec<u8>| {
            out.extend_from_slice(&header(m));
            out.extend_from_slice(&m.data);
            out.resize(out.len().div_ceil(512) * 512, 0);
        };
        let mut lines = String::new();
        for m in &case.members {
            push(m, &mut out);
            if m.kind == b'0' {
                let (hash, _) = manifest::sha256_of(&m.data[..]).unwrap();
                lines.push_str(&manifest::sha256sum_line(&hash, &m.name));
            }
        }
        if case.manifest {
            let m = Member {
                name: "MANIFEST.sha256".to_string(),
                kind: b'0',
                size: SizeField::True,
                data: lines.into_bytes(),
                link: String::new(),
                good_checksum: true,
            };
            push(&m, &mut out);
        }
        if case.end_blocks {
            out.extend_from_slice(&[0u8; 1024]);
        }
        if let Some(cut) = case.cut_tar_at {
            out.truncate(cut.min(out.len()));
        }
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = ParallelGz::new(
            Vec::new(),
            GzOptions {
                chunk_size: 4096,
                threads: 1,
                dense_level: 1,
                media_level: 1,
            },
        );
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn archive_bytes(case: &Case) -> Vec<u8> {
        let tar = tar_bytes(case);
        match &case.wrapping {
            Wrapping::Gzip => gzip(&tar),
            Wrapping::Garbage(g) => g.clone(),
            Wrapping::HeaderThenGarbage(g) => {
                let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
                out.extend_from_slice(g);
                out
            }
            Wrapping::Truncated(at) => {
                let mut gz = gzip(&tar);
                gz.truncate(*at % (gz.len() + 1));
                gz
            }
            Wrapping::FlippedByte(at) => {
                let mut gz = gzip(&tar);
                if !gz.is_empty() {
                    let i = at % gz.len();
                    gz[i] ^= 0x40;
                }
                gz
            }
        }
    }

    /// Every path under `dir` with its size and kind.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (bool, u64)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap().flatten() {
                let meta = fs::symlink_metadata(entry.path()).unwrap();
                if meta.is_dir() {
                    stack.push(entry.path());
                }
                out.insert(entry.path(), (meta.is_dir(), meta.len()));
            }
        }
        out
    }

    fn one_line_naming_a_path(msg: &str, sandbox: &Path) -> Result<(), TestCaseError> {
        prop_assert!(!msg.trim().is_empty(), "an empty error");
        prop_assert!(!msg.contains('\n'), "more than one line: {msg}");
        prop_assert!(
            msg.contains(&sandbox.display().to_string()),
            "the error names no path: {msg}"
        );
        Ok(())
    }

    fn check(case: &Case) -> Result<(), TestCaseError> {
        let sandbox = tempfile::tempdir().unwrap();
        let root = sandbox.path();
        let project = root.join("project");
        let data = project.join("cloud-data");
        fs::create_dir_all(data.join("Sounds/uploads")).unwrap();
        fs::write(data.join("Sounds/uploads/live.wav"), b"live audio").unwrap();
        fs::create_dir_all(data.join("data")).unwrap();
        fs::write(data.join("data/sound_machine.db"), b"live database").unwrap();
        let archive = root.join("mss-backup-2026-01-01_000000.tar.gz");
        let bytes = archive_bytes(case);
        fs::write(&archive, &bytes).unwrap();
        let (hash, _) = manifest::sha256_of(&bytes[..]).unwrap();
        let hash = if case.good_sidecar {
            hash
        } else {
            "0".repeat(64)
        };
        fs::write(
            verify::sidecar_path(&archive),
            manifest::sha256sum_line(&hash, "mss-backup-2026-01-01_000000.tar.gz"),
        )
        .unwrap();
        let scratch = root.join("scratch");
        fs::create_dir(&scratch).unwrap();
        let before = snapshot(root);

        let panics = PANICS.load(Ordering::SeqCst);
        match verify::verify(&archive, &scratch) {
            Ok(v) => prop_assert!(false, "verify accepted a hostile archive: {v:?}"),
            Err(e) => one_line_naming_a_path(&e.to_string(), root)?,
        }
        for mode in [Mode::Db, Mode::Sounds, Mode::All] {
            match restore::stage(&archive, mode, &data) {
                // A well-formed, safe archive may stage: whatever it wrote
                // is inside the staging dir, which goes with it.
                Ok(staged) => {
                    let dir = staged.staging_dir().map(Path::to_path_buf);
                    prop_assert!(dir.is_some_and(|d| d.starts_with(&project)));
                }
                Err(e) => one_line_naming_a_path(&e.to_string(), root)?,
            }
            prop_assert_eq!(
                &snapshot(root),
                &before,
                "{:?}: something outside staging changed or was left",
                mode
            );
        }
        prop_assert!(!canary().exists(), "an absolute member escaped");
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), panics, "a thread panicked");
        Ok(())
    }

    #[test]
    fn hostile_and_damaged_archives_end_in_a_clear_error_and_write_nothing_outside_staging() {
        let default_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default_hook(info);
        }));
        let count = if super::long() { 1024 } else { 64 };
        let mut runner = TestRunner::new(Config {
            cases: count,
            failure_persistence: None,
            rng_algorithm: proptest::test_runner::RngAlgorithm::ChaCha,
            ..Config::default()
        });
        let seed = super::seed();
        let mut seed_bytes = [0u8; 32];
        seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
        runner = TestRunner::new_with_rng(
            runner.config().clone(),
            proptest::test_runner::TestRng::from_seed(
                proptest::test_runner::RngAlgorithm::ChaCha,
                &seed_bytes,
            ),
        );
        eprintln!("hostile archives: {count} cases, seed {seed}");
        let result = runner.run(&cases(), |case| check(&case));
        let _ = fs::remove_dir_all(canary());
        if let Err(e) = result {
            panic!("{e}");
        }
    }
}
